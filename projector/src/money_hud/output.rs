//! The Money HUD answer, field names as in DESIGN §5 (`GET /economics/money-hud`). The caller
//! adds `as_of_position` and `benchmark_run_id`.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoneyHud {
    /// One row per variant, by `variant_id`.
    pub rows: Vec<MoneyHudRow>,
    pub verdict: Verdict,
    pub winner: Option<Winner>,
    /// `route` first, then `gather_more_data`, then `exclude`, each by `variant_id`.
    pub recommendations: Vec<Recommendation>,
}

/// A variant's economics. Unknown stays unknown: `null`, never 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoneyHudRow {
    pub variant_id: String,
    pub dispatches: u64,
    pub succeeded: u64,
    pub failure_rate: Option<f64>,
    /// Wilson 95% upper bound of the failure rate.
    pub failure_rate_upper_95: Option<f64>,
    pub latency_ms: LatencyMs,
    /// `null` when any dispatch's cost is unknown.
    pub cost_usd_total: Option<f64>,
    pub cost_unknown_dispatches: u64,
    /// Total cost, failed attempts included, over successful outputs.
    pub cost_per_success_usd: Option<f64>,
    pub cost_per_success_bounds_95: CostBounds,
    pub quality_mean: Option<f64>,
    /// 95% lower bound of the quality mean: Wilson, treating the mean as a proportion of
    /// `quality_n` trials (conservative: only the sum of scores is known, not their variance).
    pub quality_mean_lower_95: Option<f64>,
    pub quality_n: u64,
    pub price_usd: Option<f64>,
    /// Position of the `pricing.price_set` event the margin was computed with.
    pub price_position: Option<i64>,
    pub margin_per_success_usd: Option<f64>,
    pub margin_pct: Option<f64>,
    pub eligible: bool,
    /// Every failed eligibility rule, in words with numbers.
    pub excluded_because: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyMs {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

/// Mean attempt cost over the Wilson 95% success-rate bounds. `upper` is `null` when the success
/// rate may be 0 (no upper bound).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostBounds {
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Winner,
    /// Eligible variants exist, but the evidence does not settle which is best: the leader's
    /// eligibility does not hold at its 95% bounds, or its cost-per-success interval overlaps
    /// another eligible variant's.
    Inconclusive,
    NoEligibleVariant,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Winner {
    pub variant_id: String,
    pub reason: String,
    pub confidence: Confidence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// The winner's upper cost-per-success bound lies below every other eligible variant's lower
    /// bound, and its eligibility holds at its 95% bounds.
    High,
    /// The only eligible variant, whose eligibility holds at its 95% bounds: nothing to compare
    /// against.
    SoleEligible,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub action: Action,
    pub variant_id: String,
    pub text: String,
    /// For `route`: what routing to the winner saves per 1,000 successful outputs.
    pub saving_per_1k_outputs_usd: Option<f64>,
    /// For `gather_more_data`: dispatches to add to this variant (to settle its eligibility at
    /// the bounds, to separate it from the leader, or the larger of both); `null` when no
    /// amount within the cap would do.
    pub additional_dispatches: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Route,
    GatherMoreData,
    Exclude,
}
