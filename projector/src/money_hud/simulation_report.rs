//! The simulation's outcome counts and their markdown table for BENCHMARKS.md.

use serde::Serialize;

use super::input::Thresholds;
use super::output::Confidence;
use super::simulation::{
    Scenario, COST_JITTER, JUDGE_CRITERIA, MAX_VARIANTS, MIN_VARIANTS, Z_POWER,
};

/// The goals: correct where the data suffices, and rarely confidently wrong anywhere.
pub const GOAL_MIN_CORRECT_WHERE_DATA_SUFFICES: f64 = 0.95;
pub const GOAL_MAX_CONFIDENTLY_WRONG: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct OutcomeCounts {
    pub matrices: usize,
    pub correct_winner: usize,
    pub correctly_no_eligible: usize,
    pub inconclusive: usize,
    pub no_eligible_though_one_qualifies: usize,
    pub wrong_winner_high_confidence: usize,
    pub wrong_winner_sole_eligible: usize,
    /// Wrong winners (either confidence) where the HUD had excluded the true best: the miss
    /// lies in point-estimate eligibility, not in the cost comparison.
    pub wrong_winner_true_best_excluded: usize,
    pub winner_when_none_qualifies: usize,
}

impl OutcomeCounts {
    pub fn correct(&self) -> usize {
        self.correct_winner + self.correctly_no_eligible
    }

    pub fn confidently_wrong(&self) -> usize {
        self.wrong_winner_high_confidence
            + self.wrong_winner_sole_eligible
            + self.winner_when_none_qualifies
    }

    /// `count` as a share of the matrices (0 when there are none).
    pub fn share(&self, count: usize) -> f64 {
        if self.matrices == 0 {
            0.0
        } else {
            count as f64 / self.matrices as f64
        }
    }

    pub(super) fn add(&mut self, outcome: Outcome) {
        self.matrices += 1;
        if let Outcome::WrongWinner {
            true_best_eligible: false,
            ..
        } = outcome
        {
            self.wrong_winner_true_best_excluded += 1;
        }
        *match outcome {
            Outcome::CorrectWinner => &mut self.correct_winner,
            Outcome::CorrectlyNoEligible => &mut self.correctly_no_eligible,
            Outcome::Inconclusive => &mut self.inconclusive,
            Outcome::NoEligibleThoughOneQualifies => &mut self.no_eligible_though_one_qualifies,
            Outcome::WrongWinner {
                confidence: Confidence::High,
                ..
            } => &mut self.wrong_winner_high_confidence,
            Outcome::WrongWinner {
                confidence: Confidence::SoleEligible,
                ..
            } => &mut self.wrong_winner_sole_eligible,
            Outcome::WinnerWhenNoneQualifies => &mut self.winner_when_none_qualifies,
        } += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulationReport {
    pub seed: u64,
    pub scenario: Scenario,
    pub thresholds: Thresholds,
    pub overall: OutcomeCounts,
    pub data_suffices: OutcomeCounts,
    pub data_short: OutcomeCounts,
}

impl SimulationReport {
    pub fn correct_share_where_data_suffices(&self) -> f64 {
        self.data_suffices.share(self.data_suffices.correct())
    }

    pub fn confidently_wrong_share(&self) -> f64 {
        self.overall.share(self.overall.confidently_wrong())
    }

    pub fn meets_goals(&self) -> bool {
        self.correct_share_where_data_suffices() >= GOAL_MIN_CORRECT_WHERE_DATA_SUFFICES
            && self.confidently_wrong_share() < GOAL_MAX_CONFIDENTLY_WRONG
    }

    /// A section for BENCHMARKS.md.
    pub fn to_markdown(&self) -> String {
        let t = &self.thresholds;
        let sc = &self.scenario;
        let mut md = format!(
            "### Money HUD decision quality: {name} (seed {seed}, {n} matrices)\n\n\
             Each matrix: {min_v}–{max_v} variants; true success rate uniform {s0}–{s1}, mean \
             attempt cost log-uniform ${c0}–${c1} with ±{jitter:.0}% per-attempt jitter, \
             quality mean uniform {q0}–{q1} judged on {criteria} pass/fail criteria, {n0}–{n1} \
             dispatches per variant (log-uniform). Thresholds: failure rate ≤ {fail:.1}%, ≥ \
             {min} successes, quality ≥ {score}. The HUD names a winner only when the leader \
             (cheapest eligible variant on point estimates) is eligible at its 95% bounds too \
             (failure-rate upper bound, quality lower bound) and its cost-per-success interval \
             overlaps no other eligible variant's; otherwise it answers inconclusive. \
             \"Data suffices\": every variant is at least \
             {z:.2} standard errors clear of the rules that decide it, and the true best's \
             cost-per-success interval at {z:.2} standard errors overlaps no other qualifying \
             variant's.\n\n\
             | outcome | overall | data suffices | data short |\n\
             | --- | ---: | ---: | ---: |\n",
            name = sc.name,
            seed = self.seed,
            n = self.overall.matrices,
            min_v = MIN_VARIANTS,
            max_v = MAX_VARIANTS,
            s0 = sc.success_rate.0,
            s1 = sc.success_rate.1,
            c0 = sc.mean_attempt_cost_usd.0,
            c1 = sc.mean_attempt_cost_usd.1,
            q0 = sc.quality_mean.0,
            q1 = sc.quality_mean.1,
            n0 = sc.dispatches.0,
            n1 = sc.dispatches.1,
            jitter = COST_JITTER * 100.0,
            criteria = JUDGE_CRITERIA,
            fail = t.max_failure_rate * 100.0,
            min = t.min_successes,
            score = t.min_score,
            z = Z_POWER,
        );
        let rows: [MarkdownRow; 11] = [
            ("matrices", |c| c.matrices),
            ("**correct** (winner or no eligible)", |c| c.correct()),
            ("of which: correct winner", |c| c.correct_winner),
            ("of which: correctly no eligible variant", |c| {
                c.correctly_no_eligible
            }),
            ("inconclusive", |c| c.inconclusive),
            ("no eligible variant, though one qualifies", |c| {
                c.no_eligible_though_one_qualifies
            }),
            ("**confidently wrong**", |c| c.confidently_wrong()),
            ("of which: wrong winner, confidence high", |c| {
                c.wrong_winner_high_confidence
            }),
            ("of which: wrong winner, sole eligible", |c| {
                c.wrong_winner_sole_eligible
            }),
            ("of which: winner named, none qualifies", |c| {
                c.winner_when_none_qualifies
            }),
            ("wrong winners where the HUD excluded the true best", |c| {
                c.wrong_winner_true_best_excluded
            }),
        ];
        for (label, count) in rows {
            let cell = |c: &OutcomeCounts| {
                if label == "matrices" {
                    count(c).to_string()
                } else {
                    format!("{} ({:.1}%)", count(c), 100.0 * c.share(count(c)))
                }
            };
            md.push_str(&format!(
                "| {label} | {} | {} | {} |\n",
                cell(&self.overall),
                cell(&self.data_suffices),
                cell(&self.data_short)
            ));
        }
        md.push_str(&format!(
            "\nGoals: ≥ {:.0}% correct where the data suffices ({:.1}%: {}); < {:.0}% \
             confidently wrong overall ({:.1}%: {}).\n",
            GOAL_MIN_CORRECT_WHERE_DATA_SUFFICES * 100.0,
            self.correct_share_where_data_suffices() * 100.0,
            met(self.correct_share_where_data_suffices() >= GOAL_MIN_CORRECT_WHERE_DATA_SUFFICES),
            GOAL_MAX_CONFIDENTLY_WRONG * 100.0,
            self.confidently_wrong_share() * 100.0,
            met(self.confidently_wrong_share() < GOAL_MAX_CONFIDENTLY_WRONG),
        ));
        md
    }
}

/// A table row: its label and the count it shows.
type MarkdownRow = (&'static str, fn(&OutcomeCounts) -> usize);

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// How one matrix's answer compares with the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    CorrectWinner,
    CorrectlyNoEligible,
    Inconclusive,
    NoEligibleThoughOneQualifies,
    WrongWinner {
        confidence: Confidence,
        true_best_eligible: bool,
    },
    WinnerWhenNoneQualifies,
}
