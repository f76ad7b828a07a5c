//! Money HUD: per-variant economics of a benchmark run and the routing decision they support.
//!
//! Pure: no I/O, no clock, no randomness outside the seeded simulation. The projection folds
//! the log into [`HudInput`]; [`evaluate`] turns it into the answer of
//! `GET /economics/money-hud`; [`simulate`] measures how often that answer is right.
//!
//! - `input.rs`: evidence, prices and thresholds
//! - `output.rs`: the answer's shape (DESIGN §5)
//! - `stats.rs`: Wilson intervals (success rate, quality mean), cost-per-success bounds, the
//!   separating multiplier, the trials that settle a bound, rounding
//! - `analysis.rs`: one variant's figures, eligibility (on point estimates), the rules whose
//!   95% bound crosses its threshold and the dispatches that would settle them, and its row
//! - `verdict.rs`: winner (only when the leader's eligibility holds at its bounds and its cost
//!   interval is separated), confidence and verdict
//! - `recommendations.rs`: route, gather more data (settle eligibility, separate leaders),
//!   exclude
//! - `text.rs`: number formats for sentences
//! - `prng.rs`, `simulation.rs`, `simulation_report.rs`: the decision-quality simulation

mod analysis;
mod input;
mod output;
mod prng;
mod recommendations;
mod simulation;
mod simulation_report;
mod stats;
mod text;
mod verdict;

pub use input::{HudInput, Price, Thresholds, VariantEvidence};
pub use output::{
    Action, Confidence, CostBounds, LatencyMs, MoneyHud, MoneyHudRow, Recommendation, Verdict,
    Winner,
};
pub use prng::SplitMix64;
pub use simulation::{simulate, simulate_scenario, Scenario};
pub use simulation_report::{OutcomeCounts, SimulationReport};
pub use stats::{wilson_interval, MAX_DATA_MULTIPLIER, Z_95};
pub use verdict::evaluate;
