//! Closed-form statistics for the Money HUD: Wilson intervals on success rates, cost-per-success
//! bounds, the data multiplier that would separate two leaders, and output rounding.
//!
//! Everything here is a pure function of counts and sums, so a rebuild of the read model gives
//! the same bytes: no resampling, no randomness, no clock.

/// Two-sided 95% normal quantile.
pub const Z_95: f64 = 1.959964;

/// `gather_more_data` searches up to this many times the current dispatches. Beyond it the two
/// leaders are, for routing purposes, equally expensive: say so instead of asking for a
/// benchmark nobody will run.
pub const MAX_DATA_MULTIPLIER: f64 = 1000.0;

/// Halving steps when searching the separating multiplier; 2^-60 of the bracket is far below
/// anything that changes the rounded-up dispatch count.
const BISECTION_STEPS: usize = 60;

/// Decimals kept for amounts in USD.
pub const USD_DECIMALS: i32 = 6;
/// Decimals kept for rates and quality means.
pub const RATE_DECIMALS: i32 = 4;
/// Decimals kept for percentages and latencies.
pub const PCT_DECIMALS: i32 = 2;

/// Rounds to `decimals` places so that serialized floats are short and stable. Non-finite values
/// have no JSON form and become `None`.
pub fn round_to(x: f64, decimals: i32) -> Option<f64> {
    if !x.is_finite() {
        return None;
    }
    let scale = 10f64.powi(decimals);
    let rounded = (x * scale).round() / scale;
    // Avoid "-0.0" in the output: it is the same number but not the same bytes.
    Some(if rounded == 0.0 { 0.0 } else { rounded })
}

/// Wilson score interval for a binomial proportion with `successes` of `trials`.
///
/// Counts are `f64` so the separation search can ask about fractional scale-ups. Returns `None`
/// without trials. The ends are exact at 0 and 1 observed successes so that "no success" gives a
/// lower bound of exactly 0 (and an unbounded cost per success), not a rounding residue.
pub fn wilson_interval(successes: f64, trials: f64, z: f64) -> Option<(f64, f64)> {
    if trials <= 0.0 || !trials.is_finite() {
        return None;
    }
    let p = (successes / trials).clamp(0.0, 1.0);
    let z2 = z * z;
    let denom = 1.0 + z2 / trials;
    let center = (p + z2 / (2.0 * trials)) / denom;
    let half = z / denom * (p * (1.0 - p) / trials + z2 / (4.0 * trials * trials)).sqrt();
    let lower = if successes <= 0.0 {
        0.0
    } else {
        (center - half).max(0.0)
    };
    let upper = if successes >= trials {
        1.0
    } else {
        (center + half).min(1.0)
    };
    Some((lower, upper))
}

/// Wilson 95% lower bound of a mean score in 0..1 over `judged` outputs, treating the mean as
/// the proportion of `judged` Bernoulli trials.
///
/// The log keeps only the sum of scores and their count, not their sum of squares, so the
/// scores' variance is unknown. A score in 0..1 with mean μ has variance at most μ(1 − μ)
/// (equality when every score is 0 or 1), so this interval is as wide as the true one can
/// be: exact for pass/fail scores, conservative for graded ones (a mean of ten pass/fail
/// criteria has a tenth of that variance, so the bound sits about √10 times further from the
/// mean than it needs to), and never narrower than the normal interval with the true
/// variance. `None` without evaluations. `judged` is real-valued so that the settlement
/// search can ask about fractional scale-ups.
pub fn score_mean_lower_95(mean: f64, judged: f64) -> Option<f64> {
    let mean = mean.clamp(0.0, 1.0);
    wilson_interval(mean * judged, judged, Z_95).map(|(lower, _)| lower)
}

/// Trials a Wilson 95% interval needs, at an observed proportion `p`, for `limit` to lie
/// outside it: the smallest `n` with `(limit − p)² ≥ z²·limit·(1 − limit)/n`, since the
/// interval is exactly the set of `u` with `(p − u)² ≤ z²·u(1 − u)/n`. Real-valued (round up
/// and check); `None` when `p` equals the limit, which no amount of data settles.
pub fn wilson_trials_to_exclude(p: f64, limit: f64) -> Option<f64> {
    let gap = limit - p;
    (gap != 0.0).then(|| Z_95 * Z_95 * limit * (1.0 - limit) / (gap * gap))
}

/// Bounds on cost per successful output: the mean attempt cost over the ends of the success-rate
/// interval. The upper end is `None` (unbounded) when the success rate may be 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpsBounds {
    pub lower: f64,
    pub upper: Option<f64>,
}

impl CpsBounds {
    /// Whether `self` lies wholly below `other`: the only case where the cheaper one is cheaper
    /// beyond the uncertainty of both.
    pub fn wholly_below(&self, other: &CpsBounds) -> bool {
        matches!(self.upper, Some(upper) if upper < other.lower)
    }

    pub fn overlaps(&self, other: &CpsBounds) -> bool {
        !self.wholly_below(other) && !other.wholly_below(self)
    }
}

/// The evidence that decides cost per success: dispatches, successes and mean attempt cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostEvidence {
    pub dispatches: f64,
    pub succeeded: f64,
    pub mean_attempt_cost: f64,
}

impl CostEvidence {
    /// Point estimate: total cost (failed attempts included) over successes.
    pub fn cost_per_success(&self) -> Option<f64> {
        (self.succeeded > 0.0).then(|| self.mean_attempt_cost * self.dispatches / self.succeeded)
    }

    /// `[c / p_hi, c / p_lo]` at the given normal quantile.
    pub fn cps_bounds(&self, z: f64) -> Option<CpsBounds> {
        let (p_lo, p_hi) = wilson_interval(self.succeeded, self.dispatches, z)?;
        if p_hi <= 0.0 {
            return None;
        }
        let c = self.mean_attempt_cost;
        Some(CpsBounds {
            lower: c / p_hi,
            upper: (p_lo > 0.0).then(|| c / p_lo),
        })
    }

    /// The same observed rates and mean cost with `k` times the dispatches.
    pub fn scaled(&self, k: f64) -> CostEvidence {
        CostEvidence {
            dispatches: self.dispatches * k,
            succeeded: self.succeeded * k,
            mean_attempt_cost: self.mean_attempt_cost,
        }
    }
}

/// How much more data would separate two variants' cost-per-success intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SeparationNeed {
    /// The 95% intervals already do not overlap.
    AlreadySeparated,
    /// Both variants need `multiplier` times their current dispatches (> 1).
    Multiplier(f64),
    /// Even `MAX_DATA_MULTIPLIER` times the dispatches leaves the intervals overlapping.
    BeyondCap,
    /// The point estimates are equal: no amount of data at these rates separates them.
    SameCost,
}

/// Smallest `k` such that both variants, with `k` times their dispatches at the same observed
/// success rates and mean attempt costs, have non-overlapping 95% cost-per-success intervals.
///
/// The intervals shrink monotonically towards the point estimates as `k` grows, so a doubling
/// search followed by a fixed number of bisection steps finds it deterministically.
pub fn separating_multiplier(a: &CostEvidence, b: &CostEvidence) -> SeparationNeed {
    let (Some(cps_a), Some(cps_b)) = (a.cost_per_success(), b.cost_per_success()) else {
        return SeparationNeed::BeyondCap;
    };
    if cps_a == cps_b {
        return SeparationNeed::SameCost;
    }
    let separated = |k: f64| match (a.scaled(k).cps_bounds(Z_95), b.scaled(k).cps_bounds(Z_95)) {
        (Some(x), Some(y)) => !x.overlaps(&y),
        _ => false,
    };
    if separated(1.0) {
        return SeparationNeed::AlreadySeparated;
    }
    let mut low = 1.0;
    let mut high = 2.0;
    while !separated(high) {
        if high >= MAX_DATA_MULTIPLIER {
            return SeparationNeed::BeyondCap;
        }
        low = high;
        high = (high * 2.0).min(MAX_DATA_MULTIPLIER);
    }
    for _ in 0..BISECTION_STEPS {
        let mid = 0.5 * (low + high);
        if separated(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    SeparationNeed::Multiplier(high)
}

/// Dispatches to add to `dispatches` to reach `multiplier` times as many (at least one).
pub fn additional_dispatches(dispatches: u64, multiplier: f64) -> u64 {
    let extra = (dispatches as f64 * (multiplier - 1.0)).ceil();
    (extra as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(dispatches: f64, succeeded: f64, mean_attempt_cost: f64) -> CostEvidence {
        CostEvidence {
            dispatches,
            succeeded,
            mean_attempt_cost,
        }
    }

    #[test]
    fn wilson_interval_matches_the_textbook_value() {
        // 81 of 263: Wilson 95% interval 0.2553–0.3662 (Newcombe 1998, method 3 style example).
        let (lo, hi) = wilson_interval(81.0, 263.0, Z_95).unwrap();
        assert!((lo - 0.2553).abs() < 5e-4, "{lo}");
        assert!((hi - 0.3662).abs() < 5e-4, "{hi}");
    }

    #[test]
    fn wilson_interval_is_exact_at_the_ends() {
        let (lo, hi) = wilson_interval(0.0, 10.0, Z_95).unwrap();
        assert_eq!(lo, 0.0);
        assert!(hi > 0.0 && hi < 1.0);
        let (lo, hi) = wilson_interval(10.0, 10.0, Z_95).unwrap();
        assert_eq!(hi, 1.0);
        assert!(lo > 0.0 && lo < 1.0);
        assert_eq!(wilson_interval(0.0, 0.0, Z_95), None);
    }

    #[test]
    fn cost_per_success_bounds_contain_the_point_estimate() {
        let e = evidence(100.0, 90.0, 0.01);
        let cps = e.cost_per_success().unwrap();
        let b = e.cps_bounds(Z_95).unwrap();
        assert!(b.lower < cps && cps < b.upper.unwrap());
    }

    #[test]
    fn no_success_leaves_cost_per_success_unbounded_above() {
        let b = evidence(10.0, 0.0, 0.01).cps_bounds(Z_95).unwrap();
        assert_eq!(b.upper, None);
        assert_eq!(evidence(10.0, 0.0, 0.01).cost_per_success(), None);
    }

    #[test]
    fn separation_multiplier_actually_separates_and_is_minimal() {
        let a = evidence(200.0, 190.0, 0.010);
        let b = evidence(200.0, 188.0, 0.0102);
        let SeparationNeed::Multiplier(k) = separating_multiplier(&a, &b) else {
            panic!("expected a multiplier");
        };
        assert!(k > 1.0);
        let bounds = |e: &CostEvidence, k: f64| e.scaled(k).cps_bounds(Z_95).unwrap();
        assert!(!bounds(&a, k).overlaps(&bounds(&b, k)));
        assert!(bounds(&a, k * 0.999).overlaps(&bounds(&b, k * 0.999)));
    }

    #[test]
    fn equal_costs_can_never_be_separated() {
        let a = evidence(100.0, 95.0, 0.010);
        assert_eq!(separating_multiplier(&a, &a), SeparationNeed::SameCost);
    }

    #[test]
    fn trials_to_exclude_put_the_limit_exactly_on_the_wilson_bound() {
        // Failure rate 3% against a 5% limit: the upper bound meets the limit at n*.
        let n = wilson_trials_to_exclude(0.03, 0.05).unwrap();
        assert!((n - 456.2).abs() < 0.1, "{n}");
        let (lower, _) = wilson_interval(0.97 * n, n, Z_95).unwrap();
        assert!((1.0 - lower - 0.05).abs() < 1e-12);
        // Quality mean 0.75 against a 0.7 floor: the lower bound meets the floor at n*.
        let n = wilson_trials_to_exclude(0.75, 0.7).unwrap();
        assert!((score_mean_lower_95(0.75, n).unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(wilson_trials_to_exclude(0.05, 0.05), None);
    }

    #[test]
    fn the_quality_bound_is_wilson_on_the_mean_as_a_proportion() {
        let (lower, _) = wilson_interval(90.0, 100.0, Z_95).unwrap();
        assert_eq!(score_mean_lower_95(0.9, 100.0), Some(lower));
        assert_eq!(score_mean_lower_95(0.9, 0.0), None);
        assert_eq!(score_mean_lower_95(0.0, 10.0), Some(0.0));
    }

    #[test]
    fn rounding_never_emits_negative_zero() {
        assert_eq!(round_to(-0.0000001, 4), Some(0.0));
        assert!(round_to(-0.0000001, 4).unwrap().is_sign_positive());
        assert_eq!(round_to(f64::INFINITY, 4), None);
        assert_eq!(round_to(0.123456789, 6), Some(0.123457));
    }
}
