//! One variant's economics and eligibility, unrounded, and its rounded row.
//!
//! Eligibility is decided on point estimates (DESIGN §5). Beside it, each variant records which
//! of its passing rules do not hold at the 95% bound (failure rate upper bound above the limit,
//! quality lower bound below the floor) and how many dispatches would settle them: the verdict
//! names a winner only when the leader's eligibility holds at the bounds.
//!
//! Decisions are taken on the unrounded figures; only the row is rounded, so rounding can never
//! flip a verdict.

use super::input::{Thresholds, VariantEvidence};
use super::output::{CostBounds, LatencyMs, MoneyHudRow};
use super::stats::{
    round_to, score_mean_lower_95, wilson_interval, wilson_trials_to_exclude, CostEvidence,
    CpsBounds, MAX_DATA_MULTIPLIER, PCT_DECIMALS, RATE_DECIMALS, USD_DECIMALS, Z_95,
};
use super::text::{pct_pair, score_pair};

/// Inputs are sums of floats: a mean that equals its floor up to float rounding meets it, and a
/// rate equal to its limit is within it.
const THRESHOLD_TOLERANCE: f64 = 1e-9;

/// Steps allowed to correct the closed-form settlement count for float rounding (one or two are
/// ever needed).
const SETTLE_ADJUST_STEPS: usize = 16;

/// A rule an eligible variant passes on its point estimate but not at its 95% bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BoundCrossing {
    /// The failure rate is within the limit; its Wilson upper bound is above it.
    FailureRate { rate: f64, upper: f64, limit: f64 },
    /// The quality mean meets the floor; its lower bound (see
    /// [`score_mean_lower_95`]) is below it.
    Quality { mean: f64, lower: f64, floor: f64 },
}

impl BoundCrossing {
    /// `(estimate, threshold)`.
    pub fn estimate_and_threshold(&self) -> (f64, f64) {
        match *self {
            BoundCrossing::FailureRate { rate, limit, .. } => (rate, limit),
            BoundCrossing::Quality { mean, floor, .. } => (mean, floor),
        }
    }

    /// Whether the point estimate equals its threshold (up to float rounding of the inputs):
    /// its bound then straddles the threshold at any sample size.
    pub fn on_threshold(&self) -> bool {
        let (estimate, threshold) = self.estimate_and_threshold();
        (estimate - threshold).abs() <= THRESHOLD_TOLERANCE
    }
}

/// What would make a variant's eligibility hold at its bounds, at the observed rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SettleNeed {
    /// Dispatches in total (more than now) at which every crossing bound clears its threshold.
    Dispatches(u64),
    /// More than `MAX_DATA_MULTIPLIER` times the current dispatches: the estimate sits so close
    /// to its threshold that no benchmark anyone will run settles it.
    BeyondCap,
    /// A point estimate equals its threshold: its bound straddles it at any sample size.
    OnThreshold,
}

#[derive(Debug, Clone)]
pub struct VariantAnalysis<'a> {
    pub evidence: &'a VariantEvidence,
    pub thresholds: Thresholds,
    pub failure_rate: Option<f64>,
    pub failure_rate_upper_95: Option<f64>,
    pub cost_unknown_dispatches: u64,
    /// `None` when any dispatch's cost is unknown, or there were no dispatches.
    pub cost: Option<CostEvidence>,
    pub cost_per_success: Option<f64>,
    pub bounds: Option<CpsBounds>,
    pub quality_mean: Option<f64>,
    /// Wilson 95% lower bound of the quality mean ([`score_mean_lower_95`]).
    pub quality_lower_95: Option<f64>,
    /// Rules passed on the point estimate whose 95% bound crosses the threshold.
    pub bound_crossings: Vec<BoundCrossing>,
    pub margin_per_success: Option<f64>,
    pub margin_pct: Option<f64>,
    pub excluded_because: Vec<String>,
}

impl<'a> VariantAnalysis<'a> {
    pub fn new(evidence: &'a VariantEvidence, thresholds: &Thresholds) -> Self {
        let dispatches = evidence.dispatches;
        let succeeded = evidence.succeeded.min(dispatches);
        let failed = dispatches - succeeded;
        let failure_rate = (dispatches > 0).then(|| failed as f64 / dispatches as f64);
        let failure_rate_upper_95 = wilson_interval(succeeded as f64, dispatches as f64, Z_95)
            .map(|(success_lower, _)| 1.0 - success_lower);
        let cost_unknown_dispatches = dispatches.saturating_sub(evidence.cost_known);
        let cost = (dispatches > 0 && cost_unknown_dispatches == 0).then(|| CostEvidence {
            dispatches: dispatches as f64,
            succeeded: succeeded as f64,
            mean_attempt_cost: evidence.cost_usd_total / dispatches as f64,
        });
        let cost_per_success = cost.and_then(|c| c.cost_per_success());
        let bounds = cost.and_then(|c| c.cps_bounds(Z_95));
        let quality_mean =
            (evidence.quality_n > 0).then(|| evidence.quality_sum / evidence.quality_n as f64);
        let quality_lower_95 =
            quality_mean.and_then(|mean| score_mean_lower_95(mean, evidence.quality_n as f64));
        let price = evidence.price.as_ref().map(|p| p.price_usd);
        let margin_per_success = price.zip(cost_per_success).map(|(p, c)| p - c);
        let margin_pct = price
            .zip(margin_per_success)
            .filter(|(p, _)| *p != 0.0)
            .map(|(p, m)| m / p * 100.0);

        let mut excluded_because = Vec::new();
        if dispatches == 0 {
            excluded_because.push("no completed dispatches".to_string());
        }
        if cost_unknown_dispatches > 0 {
            excluded_because.push(format!(
                "cost unknown for {cost_unknown_dispatches} of {dispatches} dispatches"
            ));
        }
        if succeeded < thresholds.min_successes {
            excluded_because.push(format!(
                "{succeeded} successful dispatches, below the minimum of {}",
                thresholds.min_successes
            ));
        } else if succeeded == 0 && dispatches > 0 {
            excluded_because
                .push("no successful dispatches, so cost per success is unknown".to_string());
        }
        if let Some(rate) = failure_rate {
            if rate > thresholds.max_failure_rate + THRESHOLD_TOLERANCE {
                let (value, limit) = pct_pair(rate, thresholds.max_failure_rate);
                excluded_because.push(format!(
                    "failure rate {value} ({failed} of {dispatches} dispatches) is above the \
                     {limit} limit"
                ));
            }
        }
        match quality_mean {
            None => excluded_because.push("no quality evaluations".to_string()),
            Some(mean) if mean < thresholds.min_score - THRESHOLD_TOLERANCE => {
                let (value, floor) = score_pair(mean, thresholds.min_score);
                excluded_because.push(format!(
                    "quality mean {value} over {} evaluations is below the {floor} floor",
                    evidence.quality_n
                ));
            }
            Some(_) => {}
        }

        let mut bound_crossings = Vec::new();
        let limit = thresholds.max_failure_rate;
        if let (Some(rate), Some(upper)) = (failure_rate, failure_rate_upper_95) {
            if rate <= limit + THRESHOLD_TOLERANCE && upper > limit + THRESHOLD_TOLERANCE {
                bound_crossings.push(BoundCrossing::FailureRate { rate, upper, limit });
            }
        }
        let floor = thresholds.min_score;
        if let (Some(mean), Some(lower)) = (quality_mean, quality_lower_95) {
            if mean >= floor - THRESHOLD_TOLERANCE && lower < floor - THRESHOLD_TOLERANCE {
                bound_crossings.push(BoundCrossing::Quality { mean, lower, floor });
            }
        }

        VariantAnalysis {
            evidence,
            thresholds: *thresholds,
            failure_rate,
            failure_rate_upper_95,
            cost_unknown_dispatches,
            cost,
            cost_per_success,
            bounds,
            quality_mean,
            quality_lower_95,
            bound_crossings,
            margin_per_success,
            margin_pct,
            excluded_because,
        }
    }

    /// Dispatches that would make the crossing bounds clear their thresholds, with the observed
    /// failure rate, quality mean and share of judged outputs unchanged. `None` when nothing
    /// crosses.
    ///
    /// Closed form per rule ([`wilson_trials_to_exclude`]; quality evaluations grow with the
    /// dispatches in their observed proportion), rounded up and checked against the bound
    /// functions themselves, so the count is the smallest whole number that settles it.
    pub fn settle_need(&self) -> Option<SettleNeed> {
        if self.bound_crossings.is_empty() {
            return None;
        }
        let n = self.evidence.dispatches as f64;
        let judged_per_dispatch = self.evidence.quality_n as f64 / n;
        let mut needed = n;
        for crossing in &self.bound_crossings {
            if crossing.on_threshold() {
                return Some(SettleNeed::OnThreshold);
            }
            let (estimate, threshold) = crossing.estimate_and_threshold();
            let per_dispatch = match crossing {
                BoundCrossing::FailureRate { .. } => 1.0,
                BoundCrossing::Quality { .. } => judged_per_dispatch,
            };
            match wilson_trials_to_exclude(estimate, threshold) {
                Some(trials) if per_dispatch > 0.0 => needed = needed.max(trials / per_dispatch),
                _ => return Some(SettleNeed::OnThreshold),
            }
        }
        if needed > MAX_DATA_MULTIPLIER * n {
            return Some(SettleNeed::BeyondCap);
        }
        let current = self.evidence.dispatches;
        let mut total = (needed.ceil() as u64).max(current + 1);
        for _ in 0..SETTLE_ADJUST_STEPS {
            if self.holds_at(total) {
                break;
            }
            total += 1;
        }
        for _ in 0..SETTLE_ADJUST_STEPS {
            if total - 1 > current && self.holds_at(total - 1) {
                total -= 1;
            } else {
                break;
            }
        }
        Some(SettleNeed::Dispatches(total))
    }

    /// Whether the crossing bounds would clear their thresholds with `total` dispatches at the
    /// observed rates.
    fn holds_at(&self, total: u64) -> bool {
        let k = total as f64 / self.evidence.dispatches as f64;
        self.bound_crossings.iter().all(|crossing| match *crossing {
            BoundCrossing::FailureRate { rate, limit, .. } => {
                let trials = total as f64;
                wilson_interval((1.0 - rate) * trials, trials, Z_95)
                    .is_some_and(|(lower, _)| 1.0 - lower <= limit + THRESHOLD_TOLERANCE)
            }
            BoundCrossing::Quality { mean, floor, .. } => {
                score_mean_lower_95(mean, self.evidence.quality_n as f64 * k)
                    .is_some_and(|lower| lower >= floor - THRESHOLD_TOLERANCE)
            }
        })
    }

    pub fn id(&self) -> &'a str {
        &self.evidence.variant_id
    }

    /// Eligible variants always have a cost per success and bounded intervals: they have
    /// successes (at least `min_successes`, and at least one) and every cost is known.
    pub fn eligible(&self) -> bool {
        self.excluded_because.is_empty()
            && self.cost_per_success.is_some()
            && self.bounds.is_some_and(|b| b.upper.is_some())
    }

    pub fn success_rate(&self) -> Option<f64> {
        self.failure_rate.map(|f| 1.0 - f)
    }

    pub fn row(&self) -> MoneyHudRow {
        let e = self.evidence;
        let usd = |x: Option<f64>| x.and_then(|v| round_to(v, USD_DECIMALS));
        let rate = |x: Option<f64>| x.and_then(|v| round_to(v, RATE_DECIMALS));
        let two = |x: Option<f64>| x.and_then(|v| round_to(v, PCT_DECIMALS));
        MoneyHudRow {
            variant_id: e.variant_id.clone(),
            dispatches: e.dispatches,
            succeeded: e.succeeded,
            failure_rate: rate(self.failure_rate),
            failure_rate_upper_95: rate(self.failure_rate_upper_95),
            latency_ms: LatencyMs {
                p50: two(e.latency_p50_ms),
                p95: two(e.latency_p95_ms),
            },
            cost_usd_total: usd((self.cost_unknown_dispatches == 0).then_some(e.cost_usd_total)),
            cost_unknown_dispatches: self.cost_unknown_dispatches,
            cost_per_success_usd: usd(self.cost_per_success),
            cost_per_success_bounds_95: CostBounds {
                lower: usd(self.bounds.map(|b| b.lower)),
                upper: usd(self.bounds.and_then(|b| b.upper)),
            },
            quality_mean: rate(self.quality_mean),
            quality_mean_lower_95: rate(self.quality_lower_95),
            quality_n: e.quality_n,
            price_usd: usd(e.price.as_ref().map(|p| p.price_usd)),
            price_position: e.price.as_ref().map(|p| p.position),
            margin_per_success_usd: usd(self.margin_per_success),
            margin_pct: two(self.margin_pct),
            eligible: self.eligible(),
            excluded_because: self.excluded_because.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::input::Price;
    use super::*;

    fn evidence(dispatches: u64, succeeded: u64, cost_usd_total: f64) -> VariantEvidence {
        VariantEvidence {
            variant_id: "v".to_string(),
            dispatches,
            succeeded,
            cost_known: dispatches,
            cost_usd_total,
            latency_p50_ms: Some(1200.0),
            latency_p95_ms: Some(3400.0),
            quality_sum: 0.9 * succeeded as f64,
            quality_n: succeeded,
            price: None,
        }
    }

    fn row(e: &VariantEvidence) -> MoneyHudRow {
        VariantAnalysis::new(e, &Thresholds::default()).row()
    }

    #[test]
    fn failed_attempts_count_in_cost_per_success() {
        // 100 attempts at $0.01 each, 80 succeeded: each success cost $1.00 / 80.
        let r = row(&evidence(100, 80, 1.0));
        assert_eq!(r.cost_usd_total, Some(1.0));
        assert_eq!(r.cost_per_success_usd, Some(0.0125));
        let b = r.cost_per_success_bounds_95;
        assert!(b.lower.unwrap() < 0.0125 && 0.0125 < b.upper.unwrap());
    }

    #[test]
    fn unknown_cost_is_null_and_excludes_the_variant() {
        let mut e = evidence(50, 50, 0.4);
        e.cost_known = 47;
        let r = row(&e);
        assert_eq!(r.cost_usd_total, None);
        assert_eq!(r.cost_per_success_usd, None);
        assert_eq!(r.cost_per_success_bounds_95.lower, None);
        assert_eq!(r.margin_per_success_usd, None);
        assert_eq!(r.cost_unknown_dispatches, 3);
        assert!(!r.eligible);
        assert_eq!(r.excluded_because, ["cost unknown for 3 of 50 dispatches"]);
    }

    #[test]
    fn missing_quality_is_null_and_excludes_the_variant() {
        let mut e = evidence(50, 50, 0.4);
        e.quality_sum = 0.0;
        e.quality_n = 0;
        let r = row(&e);
        assert_eq!(r.quality_mean, None);
        assert!(!r.eligible);
        assert_eq!(r.excluded_because, ["no quality evaluations"]);
    }

    #[test]
    fn every_failed_rule_is_listed_with_its_numbers() {
        let mut e = evidence(29, 20, 0.29);
        e.succeeded = 19;
        e.quality_sum = 0.6 * 19.0;
        e.quality_n = 19;
        let r = row(&e);
        assert_eq!(
            r.excluded_because,
            [
                "19 successful dispatches, below the minimum of 20",
                "failure rate 34.5% (10 of 29 dispatches) is above the 5.0% limit",
                "quality mean 0.600 over 19 evaluations is below the 0.700 floor",
            ]
        );
        assert_eq!(r.failure_rate, Some(0.3448));
        assert!(r.failure_rate_upper_95.unwrap() > 0.3448);
    }

    #[test]
    fn a_failure_rate_exactly_at_the_limit_is_within_it() {
        // 1 − 19/20 is 0.05000000000000004 in floating point; 1/20 is 0.05.
        let r = row(&evidence(20, 19, 0.2));
        assert!(r.excluded_because.iter().all(|x| !x.contains("failure")));
    }

    #[test]
    fn no_price_leaves_margin_null_without_affecting_eligibility() {
        let r = row(&evidence(100, 100, 1.0));
        assert_eq!(
            (r.price_usd, r.margin_per_success_usd, r.margin_pct),
            (None, None, None)
        );
        assert!(r.eligible);
    }

    #[test]
    fn margin_is_price_minus_cost_per_success_and_keeps_its_price_position() {
        let mut e = evidence(100, 80, 1.0);
        e.price = Some(Price {
            price_usd: 0.05,
            position: 42,
        });
        let r = row(&e);
        assert_eq!(r.margin_per_success_usd, Some(0.0375));
        assert_eq!(r.margin_pct, Some(75.0));
        assert_eq!(r.price_position, Some(42));
        e.price = Some(Price {
            price_usd: 0.0,
            position: 43,
        });
        assert_eq!(row(&e).margin_pct, None);
    }

    #[test]
    fn eligibility_on_point_estimates_keeps_the_bounds_beside_it() {
        // 3 of 100 failed: within the 5.0% limit, but the upper bound is 8.45%. Quality 0.72
        // over 97: within the 0.700 floor, but the lower bound is 0.624.
        let mut e = evidence(100, 97, 1.0);
        e.quality_sum = 0.72 * 97.0;
        let t = Thresholds::default();
        let a = VariantAnalysis::new(&e, &t);
        let r = a.row();
        assert!(r.eligible);
        assert!(r.excluded_because.is_empty());
        assert_eq!(r.failure_rate_upper_95, Some(0.0845));
        assert_eq!(r.quality_mean_lower_95, Some(0.6236));
        assert!(matches!(
            a.bound_crossings.as_slice(),
            [
                BoundCrossing::FailureRate { .. },
                BoundCrossing::Quality { .. }
            ]
        ));
    }

    #[test]
    fn settle_need_is_the_smallest_dispatch_count_that_clears_every_crossing_bound() {
        let t = Thresholds::default();
        let mut e = evidence(100, 97, 1.0);
        e.quality_sum = 0.72 * 97.0;
        let a = VariantAnalysis::new(&e, &t);
        let Some(SettleNeed::Dispatches(total)) = a.settle_need() else {
            panic!("expected a dispatch count");
        };
        // Quality needs more than the failure rate: 3.8415 × 0.21 / 0.02² = 2016.8 judged
        // outputs at 0.97 per dispatch (the failure rate alone would need 457).
        assert_eq!(total, 2080);
        assert!(a.holds_at(total));
        assert!(!a.holds_at(total - 1));
        // Nothing to settle when the bounds hold.
        let sure = evidence(1000, 1000, 10.0);
        assert_eq!(VariantAnalysis::new(&sure, &t).settle_need(), None);
    }

    #[test]
    fn an_estimate_on_its_threshold_can_never_be_settled() {
        let t = Thresholds::default();
        let on_limit = evidence(100, 95, 1.0);
        assert_eq!(
            VariantAnalysis::new(&on_limit, &t).settle_need(),
            Some(SettleNeed::OnThreshold)
        );
        let mut on_floor = evidence(10_000, 10_000, 100.0);
        on_floor.quality_sum = 0.7 * 10_000.0;
        assert_eq!(
            VariantAnalysis::new(&on_floor, &t).settle_need(),
            Some(SettleNeed::OnThreshold)
        );
    }

    #[test]
    fn no_success_leaves_cost_per_success_null() {
        let r = row(&evidence(30, 0, 0.3));
        assert_eq!(r.cost_per_success_usd, None);
        assert_eq!(r.cost_per_success_bounds_95.upper, None);
        assert_eq!(r.failure_rate_upper_95, Some(1.0));
        assert!(!r.eligible);
    }
}
