//! Decision-quality simulation: how often is the Money HUD's answer right when the truth is
//! known?
//!
//! Each simulated benchmark matrix has 2–5 variants with true parameters drawn independently:
//!
//! - success rate uniform in 0.6–0.999 (failures cost like successes);
//! - mean attempt cost log-uniform in $0.001–$0.05, each attempt's cost that mean times a
//!   uniform jitter in ±[`COST_JITTER`] (so the observed mean cost is itself noisy);
//! - quality mean uniform in 0.5–0.95; a judge scores each successful output on
//!   [`JUDGE_CRITERIA`] pass/fail criteria, each passing with that probability, so one score is
//!   Binomial(10, q)/10: mean q, standard deviation √(q(1−q)/10), always in 0..1;
//! - dispatches log-uniform in 10–2,000 per variant (every order of magnitude equally likely).
//!
//! Observed evidence is sampled attempt by attempt with [`SplitMix64`], then [`evaluate`] runs
//! on it with the default thresholds. The truth: a variant *qualifies* when its true failure
//! rate ≤ `max_failure_rate` and its true quality mean ≥ `min_score` (`min_successes` is a rule
//! about evidence, not about the variant); the *true best* is the qualifying variant with the
//! lowest true cost per success (mean attempt cost / success rate).
//!
//! **Data suffices** for a matrix when a classic power analysis says its sample sizes can
//! settle the question: every comparison below must hold with `Z_POWER` = 2 × 1.959964 standard
//! errors (a two-sided 5% test with 97.5% power), computed from the true parameters and each
//! variant's dispatch count n (expected successes m = n·s):
//!
//! 1. every qualifying variant is clear of every rule: failure rate f + Z·√(f(1−f)/n) ≤ limit,
//!    quality q − Z·σ_q/√m ≥ floor (σ_q = √(q(1−q)/10)), and m − Z·√(n·s(1−s)) ≥
//!    `min_successes`;
//! 2. every non-qualifying variant is clearly out by at least one rule: f − Z·√(f(1−f)/n) >
//!    limit, or q + Z·σ_q/√m < floor, or m + Z·√(n·s(1−s)) < `min_successes`;
//! 3. the true best's cost-per-success interval does not overlap any other qualifying
//!    variant's, each interval being the HUD's own (mean cost over the Wilson interval of the
//!    success rate, at the true rate, with z = Z) widened by the cost jitter's own uncertainty
//!    (mean cost × (1 ± Z·σ_c/√n), σ_c = jitter/√3), because the HUD's observed mean cost is
//!    noisy too.
//!
//! Outcomes: correct winner; correctly no eligible variant (none qualifies); inconclusive;
//! no eligible variant although one qualifies (a miss, but not a confident one); and
//! *confidently wrong*: a winner named that is not the true best (split by confidence), or any
//! winner named when no variant qualifies.
//!
//! What moved the numbers: with eligibility on point estimates alone, about 5.0% of matrices
//! were confidently wrong (100,000 matrices, seed 42), 4.1 points of it a winner named when no
//! variant qualifies: a variant whose true failure rate or quality sits just on the wrong side
//! of a threshold passing it by chance. The HUD now names a winner only when the leader's
//! eligibility also holds at its 95% bounds. That brings confidently wrong to about 0.2%, at a
//! price: about 15% of matrices, nearly all short of data, turn from a named winner into
//! `inconclusive` with the dispatches that would settle it. In about two thirds of them the
//! leader was in truth the best, so correct winners fall from about 16% to 6% of matrices
//! (correct overall from 90% to 80%); where the data suffices, 98.7% stay correct.

use serde::Serialize;

use super::input::{HudInput, Thresholds, VariantEvidence};
use super::output::Verdict;
use super::prng::SplitMix64;
use super::simulation_report::{Outcome, OutcomeCounts, SimulationReport};
use super::stats::{CostEvidence, Z_95};
use super::verdict::evaluate;

/// Each attempt's cost is the variant's mean times a uniform factor in 1 ± this.
pub const COST_JITTER: f64 = 0.5;
/// Pass/fail criteria per judged output.
pub const JUDGE_CRITERIA: u32 = 10;
/// Standard errors a truth must clear for "data suffices": z(α/2 = 2.5%) + z(power 97.5%).
pub const Z_POWER: f64 = 2.0 * Z_95;

pub const MIN_VARIANTS: u64 = 2;
pub const MAX_VARIANTS: u64 = 5;

/// Where the true parameters are drawn from (ranges; see the module docs for the shapes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    /// Uniform.
    pub success_rate: (f64, f64),
    /// Log-uniform, USD.
    pub mean_attempt_cost_usd: (f64, f64),
    /// Uniform.
    pub quality_mean: (f64, f64),
    /// Log-uniform, rounded.
    pub dispatches: (f64, f64),
}

impl Scenario {
    /// The ranges the HUD is specified against; [`simulate`] uses them.
    pub const SPEC: Scenario = Scenario {
        name: "spec ranges",
        success_rate: (0.6, 0.999),
        mean_attempt_cost_usd: (0.001, 0.05),
        quality_mean: (0.5, 0.95),
        dispatches: (10.0, 2000.0),
    };

    /// A stress test of winner selection and confidence: every variant truly qualifies, so
    /// every matrix is a race on cost per success. Under [`Scenario::SPEC`] few matrices have
    /// two eligible variants and `inconclusive` is rare.
    pub const CONTESTED: Scenario = Scenario {
        name: "contested, every variant qualifies",
        success_rate: (0.95, 0.999),
        mean_attempt_cost_usd: (0.001, 0.05),
        quality_mean: (0.7, 0.95),
        dispatches: (10.0, 2000.0),
    };
}

/// A variant's true parameters.
#[derive(Debug, Clone)]
struct TrueVariant {
    id: String,
    success_rate: f64,
    mean_attempt_cost: f64,
    quality_mean: f64,
    dispatches: u64,
}

impl TrueVariant {
    fn draw(rng: &mut SplitMix64, scenario: &Scenario, index: usize) -> Self {
        let (s, c, q, n) = (
            scenario.success_rate,
            scenario.mean_attempt_cost_usd,
            scenario.quality_mean,
            scenario.dispatches,
        );
        TrueVariant {
            id: format!("v{index}"),
            success_rate: rng.uniform(s.0, s.1),
            mean_attempt_cost: rng.log_uniform(c.0, c.1),
            quality_mean: rng.uniform(q.0, q.1),
            dispatches: rng.log_uniform(n.0, n.1).round() as u64,
        }
    }

    fn cost_per_success(&self) -> f64 {
        self.mean_attempt_cost / self.success_rate
    }

    fn qualifies(&self, t: &Thresholds) -> bool {
        1.0 - self.success_rate <= t.max_failure_rate && self.quality_mean >= t.min_score
    }

    /// Runs the benchmark: every dispatch succeeds or fails, costs a jittered amount, and every
    /// success is judged.
    fn sample(&self, rng: &mut SplitMix64) -> VariantEvidence {
        let (mut succeeded, mut cost, mut quality_sum) = (0, 0.0, 0.0);
        for _ in 0..self.dispatches {
            cost += self.mean_attempt_cost * rng.uniform(1.0 - COST_JITTER, 1.0 + COST_JITTER);
            if rng.bernoulli(self.success_rate) {
                succeeded += 1;
                let passed = (0..JUDGE_CRITERIA)
                    .filter(|_| rng.bernoulli(self.quality_mean))
                    .count();
                quality_sum += passed as f64 / JUDGE_CRITERIA as f64;
            }
        }
        VariantEvidence {
            variant_id: self.id.clone(),
            dispatches: self.dispatches,
            succeeded,
            cost_known: self.dispatches,
            cost_usd_total: cost,
            latency_p50_ms: None,
            latency_p95_ms: None,
            quality_sum,
            quality_n: succeeded,
            price: None,
        }
    }

    /// Whether each rule's verdict on this variant is `Z_POWER` standard errors from its limit:
    /// `(clearly within every rule, clearly outside at least one)`.
    fn clearance(&self, t: &Thresholds) -> (bool, bool) {
        let n = self.dispatches as f64;
        let s = self.success_rate;
        let f = 1.0 - s;
        let m = n * s;
        let se_f = (f * s / n).sqrt();
        let se_q = (self.quality_mean * (1.0 - self.quality_mean) / f64::from(JUDGE_CRITERIA))
            .sqrt()
            / m.sqrt();
        let se_m = (n * s * f).sqrt();
        let min = t.min_successes as f64;
        let clearly_in = f + Z_POWER * se_f <= t.max_failure_rate
            && self.quality_mean - Z_POWER * se_q >= t.min_score
            && m - Z_POWER * se_m >= min;
        let clearly_out = f - Z_POWER * se_f > t.max_failure_rate
            || self.quality_mean + Z_POWER * se_q < t.min_score
            || m + Z_POWER * se_m < min;
        (clearly_in, clearly_out)
    }

    /// The HUD's interval at the true rates with z = `Z_POWER`, widened by the noise of the
    /// observed mean attempt cost.
    fn power_interval(&self) -> (f64, f64) {
        let n = self.dispatches as f64;
        let truth = CostEvidence {
            dispatches: n,
            succeeded: n * self.success_rate,
            mean_attempt_cost: self.mean_attempt_cost,
        };
        let rate_bounds = truth
            .cps_bounds(Z_POWER)
            .expect("a true success rate of at least 0.6 has a bounded interval");
        let cost_noise = Z_POWER * COST_JITTER / 3f64.sqrt() / n.sqrt();
        let upper = rate_bounds.upper.unwrap_or(f64::INFINITY);
        (
            rate_bounds.lower * (1.0 - cost_noise),
            upper * (1.0 + cost_noise),
        )
    }
}

/// The true best among qualifying variants: lowest true cost per success, ties by id.
fn true_best<'a>(variants: &'a [TrueVariant], t: &Thresholds) -> Option<&'a TrueVariant> {
    variants.iter().filter(|v| v.qualifies(t)).min_by(|a, b| {
        a.cost_per_success()
            .total_cmp(&b.cost_per_success())
            .then_with(|| a.id.cmp(&b.id))
    })
}

/// See the module docs for the definition.
fn data_suffices(variants: &[TrueVariant], t: &Thresholds) -> bool {
    let classified = variants.iter().all(|v| {
        let (clearly_in, clearly_out) = v.clearance(t);
        if v.qualifies(t) {
            clearly_in
        } else {
            clearly_out
        }
    });
    let separated = match true_best(variants, t) {
        None => true,
        Some(best) => {
            let (_, best_upper) = best.power_interval();
            variants
                .iter()
                .filter(|v| v.id != best.id && v.qualifies(t))
                .all(|v| best_upper < v.power_interval().0)
        }
    };
    classified && separated
}

fn classify(variants: &[TrueVariant], t: &Thresholds, rng: &mut SplitMix64) -> Outcome {
    let input = HudInput {
        variants: variants.iter().map(|v| v.sample(rng)).collect(),
        current_binding: None,
        thresholds: *t,
    };
    let hud = evaluate(&input);
    let best = true_best(variants, t);
    match (hud.verdict, hud.winner, best) {
        (Verdict::Winner, Some(w), Some(best)) if w.variant_id == best.id => Outcome::CorrectWinner,
        (Verdict::Winner, Some(w), Some(best)) => Outcome::WrongWinner {
            confidence: w.confidence,
            true_best_eligible: hud
                .rows
                .iter()
                .any(|r| r.variant_id == best.id && r.eligible),
        },
        (Verdict::Winner, _, None) => Outcome::WinnerWhenNoneQualifies,
        (Verdict::NoEligibleVariant, _, None) => Outcome::CorrectlyNoEligible,
        (Verdict::NoEligibleVariant, _, Some(_)) => Outcome::NoEligibleThoughOneQualifies,
        (Verdict::Inconclusive, _, _) => Outcome::Inconclusive,
        (Verdict::Winner, None, Some(_)) => unreachable!("a winner verdict always names one"),
    }
}

/// Simulates `matrices` benchmark matrices from `seed` under [`Scenario::SPEC`] and scores the
/// HUD's answers against the truth. Deterministic: the same arguments give the same report.
pub fn simulate(seed: u64, matrices: usize) -> SimulationReport {
    simulate_scenario(seed, matrices, Scenario::SPEC)
}

/// [`simulate`] with other parameter ranges.
pub fn simulate_scenario(seed: u64, matrices: usize, scenario: Scenario) -> SimulationReport {
    let thresholds = Thresholds::default();
    let mut rng = SplitMix64::new(seed);
    let mut report = SimulationReport {
        seed,
        scenario,
        thresholds,
        overall: OutcomeCounts::default(),
        data_suffices: OutcomeCounts::default(),
        data_short: OutcomeCounts::default(),
    };
    for _ in 0..matrices {
        let count = rng.range_inclusive(MIN_VARIANTS, MAX_VARIANTS) as usize;
        let variants: Vec<TrueVariant> = (0..count)
            .map(|i| TrueVariant::draw(&mut rng, &scenario, i))
            .collect();
        let outcome = classify(&variants, &thresholds, &mut rng);
        report.overall.add(outcome);
        if data_suffices(&variants, &thresholds) {
            report.data_suffices.add(outcome);
        } else {
            report.data_short.add(outcome);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::super::simulation_report::{
        GOAL_MAX_CONFIDENTLY_WRONG, GOAL_MIN_CORRECT_WHERE_DATA_SUFFICES,
    };
    use super::*;

    /// The brief's acceptance run: 99.6% correct where the data suffices and 0.1% confidently
    /// wrong. Over 100,000 matrices the figures are 98.7% and 0.2% (98.6–98.9% and 0.1–0.2% over
    /// 10,000-matrix runs with seeds 1, 2, 3, 42 and 99), so the goals hold with margin, not by
    /// luck; the last assertion guards that margin (before the leader's eligibility had to hold
    /// at its bounds this run gave 4.0%, and 5.0% over 100,000 matrices).
    #[test]
    fn the_hud_meets_its_decision_quality_goals_in_simulation() {
        let report = simulate(42, 1000);
        println!("{}", report.to_markdown());
        assert!(
            report.correct_share_where_data_suffices() >= GOAL_MIN_CORRECT_WHERE_DATA_SUFFICES,
            "{}",
            report.to_markdown()
        );
        assert!(
            report.confidently_wrong_share() < GOAL_MAX_CONFIDENTLY_WRONG,
            "{}",
            report.to_markdown()
        );
        assert!(report.data_suffices.matrices > 0);
        assert!(
            report.confidently_wrong_share() < 0.01,
            "{}",
            report.to_markdown()
        );
    }

    /// When every variant qualifies, the cost comparison itself (winner and confidence) is
    /// rarely wrong: wrong winners come from the true best being excluded (too few successes,
    /// or a failure rate just over the limit by chance), not from the intervals. (Blocking a
    /// winner whenever a cheaper excluded variant's bound reaches back inside the rules would
    /// catch most of these here, but under the spec ranges it turns about six correct winners
    /// into `inconclusive` for each wrong one it prevents, so the HUD does not.)
    #[test]
    fn confident_winners_are_wrong_only_when_eligibility_hid_the_true_best() {
        let report = simulate_scenario(42, 1000, Scenario::CONTESTED);
        let c = report.overall;
        let wrong_with_true_best_eligible = c.wrong_winner_high_confidence
            + c.wrong_winner_sole_eligible
            - c.wrong_winner_true_best_excluded;
        assert!(
            c.share(wrong_with_true_best_eligible) < 0.01,
            "{}",
            report.to_markdown()
        );
        assert!(c.inconclusive > 0, "{}", report.to_markdown());
    }

    #[test]
    fn the_simulation_is_deterministic_for_a_seed() {
        assert_eq!(simulate(7, 50), simulate(7, 50));
        assert_ne!(simulate(7, 50), simulate(8, 50));
    }

    #[test]
    fn outcome_counts_add_up() {
        let r = simulate(3, 200);
        for c in [r.overall, r.data_suffices, r.data_short] {
            assert_eq!(
                c.matrices,
                c.correct()
                    + c.inconclusive
                    + c.no_eligible_though_one_qualifies
                    + c.confidently_wrong()
            );
        }
        assert_eq!(
            r.overall.matrices,
            r.data_suffices.matrices + r.data_short.matrices
        );
    }
}
