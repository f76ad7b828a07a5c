//! What the engine is given and what it answers.

use crate::executor::aggregator::Breach;
use crate::executor::planner::PlanError;
use eventlog::catalogue::{CostOverrun, RunCreated};
use eventlog::StoreError;
use std::time::Duration;

/// The run to execute, exactly as `load_test.run_created` recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub run: RunCreated,
}

/// How the engine paces itself; [`Default`] gives the values of the executor's contract.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// Dispatches running at once; an arrival beyond it is missed, never queued.
    pub max_in_flight: usize,
    /// Buffered events are appended at least this often.
    pub flush_every: Duration,
    /// A buffer this large is appended at once, whatever `flush_every` says.
    pub max_batch: usize,
    /// An arrival the engine reaches later than its planned instant plus this is missed: sent
    /// that late, its latency would describe the executor, not the provider.
    pub late_after: Duration,
    /// Recorded as the producer of every event the engine appends.
    pub producer: String,
    /// How often the stop condition is evaluated.
    pub stop_evaluation_every: Duration,
    /// The cost guard: a run whose actual cost passes its estimate times this factor stops.
    pub cost_limit_factor: f64,
}

/// The executor's defaults: 256 in flight, a batch every 50 ms or 1,000 events, 100 ms of
/// tolerated lateness, the stop condition checked every second.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
pub const DEFAULT_FLUSH_EVERY: Duration = Duration::from_millis(50);
pub const DEFAULT_MAX_BATCH: usize = 1000;
pub const DEFAULT_LATE_AFTER: Duration = Duration::from_millis(100);
pub const DEFAULT_STOP_EVALUATION_EVERY: Duration = Duration::from_secs(1);
pub const DEFAULT_PRODUCER: &str = "services.executor";
/// A run stops when its actual cost passes its estimate by 50%.
pub const DEFAULT_COST_LIMIT_FACTOR: f64 = 1.5;

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            flush_every: DEFAULT_FLUSH_EVERY,
            max_batch: DEFAULT_MAX_BATCH,
            late_after: DEFAULT_LATE_AFTER,
            producer: DEFAULT_PRODUCER.to_owned(),
            stop_evaluation_every: DEFAULT_STOP_EVALUATION_EVERY,
            cost_limit_factor: DEFAULT_COST_LIMIT_FACTOR,
        }
    }
}

/// How a run ended; every dispatch it sent is recorded by then.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnded {
    /// The whole plan ran; `load_test.run_completed` is appended.
    Completed,
    /// The cancel signal turned true; the caller records `load_test.run_cancelled`.
    Cancelled,
    /// The stop condition held; `load_test.stop_condition_breached` is appended.
    Stopped(Breach),
    /// The actual cost passed the estimate times `cost_limit_factor`;
    /// `load_test.stop_condition_breached` with `cost_overrun` is appended.
    CostExceeded(CostOverrun),
}

/// Why a run could not be executed or recorded.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the run's stages cannot be planned: {0}")]
    Plan(#[from] PlanError),
    #[error("appending the run's events failed: {0}")]
    Append(#[from] StoreError),
    #[error("the event writer task ended abnormally: {0}")]
    Writer(String),
}
