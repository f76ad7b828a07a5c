//! What the Money HUD decides from: per-variant evidence folded from the log by the caller, the
//! scope's current binding and the `[economics]` thresholds.

use serde::{Deserialize, Serialize};

/// The price per successful output a variant's effect revision sells at, and the position of the
/// `pricing.price_set` event it came from, so every margin keeps the price it was computed with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub price_usd: f64,
    pub position: i64,
}

/// One variant's evidence from a benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantEvidence {
    pub variant_id: String,
    /// Completed attempts: succeeded + failed + timed out.
    pub dispatches: u64,
    pub succeeded: u64,
    /// Attempts whose `cost_usd` was known (not null).
    pub cost_known: u64,
    /// Sum of the known attempt costs, failed attempts included.
    pub cost_usd_total: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// Sum of judged scores in 0..1; unjudged outputs are not in it.
    pub quality_sum: f64,
    pub quality_n: u64,
    /// Price per successful output for the variant's effect revision, when one was set.
    pub price: Option<Price>,
}

/// Eligibility rules, from `[economics]` and `[quality]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub max_failure_rate: f64,
    pub min_successes: u64,
    pub min_score: f64,
}

impl Thresholds {
    pub const DEFAULT_MAX_FAILURE_RATE: f64 = 0.05;
    pub const DEFAULT_MIN_SUCCESSES: u64 = 20;
    pub const DEFAULT_MIN_SCORE: f64 = 0.7;
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_failure_rate: Self::DEFAULT_MAX_FAILURE_RATE,
            min_successes: Self::DEFAULT_MIN_SUCCESSES,
            min_score: Self::DEFAULT_MIN_SCORE,
        }
    }
}

/// Everything [`evaluate`](super::evaluate) needs. Variant ids are expected to be unique; the
/// order of `variants` does not matter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HudInput {
    pub variants: Vec<VariantEvidence>,
    /// The variant routed now for this scope, if any.
    pub current_binding: Option<String>,
    pub thresholds: Thresholds,
}
