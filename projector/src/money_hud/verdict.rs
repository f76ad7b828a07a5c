//! The decision: which eligible variant wins, with what confidence, or why none does.
//!
//! A winner is named only when the evidence supports it twice over: the leader (cheapest
//! eligible variant on point estimates) is eligible beyond its own uncertainty (failure rate
//! upper bound within the limit, quality lower bound at or above the floor), and its
//! cost-per-success interval lies wholly below every other eligible variant's. Otherwise the
//! verdict is `inconclusive` and `gather_more_data` says what would settle it.
//!
//! Only the leader's eligibility must hold at its bounds. Another eligible variant whose
//! eligibility is doubtful can only be a competitor that drops out: if the leader is cheaper
//! beyond doubt than a variant that may not qualify, it is the cheapest qualifying one either
//! way, and if their intervals overlap the verdict is already inconclusive.

use std::cmp::Ordering;

use super::analysis::{SettleNeed, VariantAnalysis};
use super::input::HudInput;
use super::output::{Confidence, MoneyHud, Verdict, Winner};
use super::recommendations::recommendations;
use super::stats::{CpsBounds, SeparationNeed};
use super::text::{pct_pair, score_pair, usd};

/// Evaluates a benchmark run's evidence into the Money HUD answer. Pure and deterministic: the
/// same input (in any variant order) gives the same bytes.
pub fn evaluate(input: &HudInput) -> MoneyHud {
    let mut analyses: Vec<VariantAnalysis> = input
        .variants
        .iter()
        .map(|v| VariantAnalysis::new(v, &input.thresholds))
        .collect();
    analyses.sort_by(|a, b| a.id().cmp(b.id()));
    let decision = decide(&analyses);
    let recommendations = recommendations(&analyses, &decision, input.current_binding.as_deref());
    MoneyHud {
        rows: analyses.iter().map(VariantAnalysis::row).collect(),
        verdict: decision.verdict(),
        winner: decision.winner(analyses.len()),
        recommendations,
    }
}

/// What the evidence supports, with the analyses it rests on.
#[derive(Debug)]
pub enum Decision<'v, 'a> {
    NoEligibleVariant,
    SoleEligible {
        winner: &'v VariantAnalysis<'a>,
    },
    /// `ranked` holds every eligible variant, cheapest first; its head's interval lies wholly
    /// below every other's.
    Confident {
        ranked: Vec<&'v VariantAnalysis<'a>>,
    },
    /// The leader's eligibility does not hold at its 95% bounds, or its interval overlaps at
    /// least one other eligible variant's, or both.
    Inconclusive {
        ranked: Vec<&'v VariantAnalysis<'a>>,
        /// Eligible variants whose interval overlaps the leader's, with what would separate
        /// each from it (possibly none).
        contenders: Vec<(&'v VariantAnalysis<'a>, SeparationNeed)>,
        /// When the leader's eligibility does not hold at its bounds: what would settle it.
        unsettled: Option<SettleNeed>,
    },
}

impl Decision<'_, '_> {
    fn verdict(&self) -> Verdict {
        match self {
            Decision::NoEligibleVariant => Verdict::NoEligibleVariant,
            Decision::SoleEligible { .. } | Decision::Confident { .. } => Verdict::Winner,
            Decision::Inconclusive { .. } => Verdict::Inconclusive,
        }
    }

    fn winner(&self, variants: usize) -> Option<Winner> {
        match self {
            Decision::SoleEligible { winner } => Some(Winner {
                variant_id: winner.id().to_string(),
                reason: format!(
                    "the only eligible variant of {variants}: {} per successful output (95% \
                     {}); {}",
                    usd(cps(winner)),
                    bounds_text(winner),
                    holds_text(winner)
                ),
                confidence: Confidence::SoleEligible,
            }),
            Decision::Confident { ranked } => {
                let (winner, runner_up) = (ranked[0], ranked[1]);
                Some(Winner {
                    variant_id: winner.id().to_string(),
                    reason: format!(
                        "lowest cost per successful output of {} eligible variants: {} (95% {}) \
                         against {} (95% {}) for runner-up {}; the intervals do not overlap; {}",
                        ranked.len(),
                        usd(cps(winner)),
                        bounds_text(winner),
                        usd(cps(runner_up)),
                        bounds_text(runner_up),
                        runner_up.id(),
                        holds_text(winner)
                    ),
                    confidence: Confidence::High,
                })
            }
            Decision::NoEligibleVariant | Decision::Inconclusive { .. } => None,
        }
    }
}

/// Ranks eligible variants, checks that the leader's eligibility holds at its 95% bounds, and
/// compares the leader's interval with every other's. The spec compares with the runner-up;
/// comparing with all of them also catches a pricier variant whose wide interval (few
/// dispatches) still reaches below the leader.
pub fn decide<'v, 'a>(analyses: &'v [VariantAnalysis<'a>]) -> Decision<'v, 'a> {
    let mut ranked: Vec<&VariantAnalysis> = analyses.iter().filter(|a| a.eligible()).collect();
    ranked.sort_by(|a, b| rank(a, b));
    let Some(&leader) = ranked.first() else {
        return Decision::NoEligibleVariant;
    };
    let unsettled = leader.settle_need();
    let contenders: Vec<_> = ranked[1..]
        .iter()
        .copied()
        .filter(|other| bounds(leader).overlaps(&bounds(other)))
        .map(|other| {
            let need = match (leader.cost, other.cost) {
                (Some(a), Some(b)) => super::stats::separating_multiplier(&a, &b),
                _ => SeparationNeed::BeyondCap,
            };
            (other, need)
        })
        .collect();
    match (unsettled, contenders.is_empty(), ranked.len()) {
        (None, true, 1) => Decision::SoleEligible { winner: leader },
        (None, true, _) => Decision::Confident { ranked },
        _ => Decision::Inconclusive {
            ranked,
            contenders,
            unsettled,
        },
    }
}

/// Lower cost per success first, then higher success rate, then variant id.
fn rank(a: &VariantAnalysis, b: &VariantAnalysis) -> Ordering {
    cps(a)
        .total_cmp(&cps(b))
        .then_with(|| {
            let rate = |x: &VariantAnalysis| x.success_rate().unwrap_or(0.0);
            rate(b).total_cmp(&rate(a))
        })
        .then_with(|| a.id().cmp(b.id()))
}

/// Cost per success of an eligible variant (always known, see [`VariantAnalysis::eligible`]).
pub fn cps(a: &VariantAnalysis) -> f64 {
    a.cost_per_success.unwrap_or(f64::INFINITY)
}

fn bounds(a: &VariantAnalysis) -> CpsBounds {
    a.bounds.unwrap_or(CpsBounds {
        lower: 0.0,
        upper: None,
    })
}

/// "eligibility holds at the 95% bounds: failure rate at most 1.2% (limit 5.0%), quality at
/// least 0.812 (floor 0.700)", for a variant whose eligibility holds there.
fn holds_text(a: &VariantAnalysis) -> String {
    let t = a.thresholds;
    let (upper, limit) = pct_pair(a.failure_rate_upper_95.unwrap_or(1.0), t.max_failure_rate);
    let (lower, floor) = score_pair(a.quality_lower_95.unwrap_or(0.0), t.min_score);
    format!(
        "eligibility holds at the 95% bounds: failure rate at most {upper} (limit {limit}), \
         quality at least {lower} (floor {floor})"
    )
}

/// `$0.0120–$0.0127`, or `$0.0120–unbounded`.
pub fn bounds_text(a: &VariantAnalysis) -> String {
    let b = bounds(a);
    match b.upper {
        Some(upper) => format!("{}–{}", usd(b.lower), usd(upper)),
        None => format!("{}–unbounded", usd(b.lower)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::analysis::SettleNeed;
    use super::super::input::{Price, Thresholds, VariantEvidence};
    use super::super::output::{Action, Recommendation};
    use super::super::stats::{score_mean_lower_95, wilson_interval, CostEvidence, Z_95};
    use super::*;

    /// A variant with `dispatches` attempts at `attempt_cost` each, `succeeded` of them judged
    /// at 0.9.
    fn variant(id: &str, dispatches: u64, succeeded: u64, attempt_cost: f64) -> VariantEvidence {
        VariantEvidence {
            variant_id: id.to_string(),
            dispatches,
            succeeded,
            cost_known: dispatches,
            cost_usd_total: attempt_cost * dispatches as f64,
            latency_p50_ms: Some(900.0),
            latency_p95_ms: Some(2100.0),
            quality_sum: 0.9 * succeeded as f64,
            quality_n: succeeded,
            price: None,
        }
    }

    fn input(variants: Vec<VariantEvidence>, current_binding: Option<&str>) -> HudInput {
        HudInput {
            variants,
            current_binding: current_binding.map(str::to_string),
            thresholds: Thresholds::default(),
        }
    }

    fn actions(hud: &MoneyHud) -> Vec<(Action, &str)> {
        hud.recommendations
            .iter()
            .map(|r| (r.action, r.variant_id.as_str()))
            .collect()
    }

    fn recommendation(hud: &MoneyHud, action: Action, id: &str) -> Recommendation {
        hud.recommendations
            .iter()
            .find(|r| r.action == action && r.variant_id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {action:?} for {id} in {:#?}", hud.recommendations))
    }

    #[test]
    fn clearly_cheaper_eligible_variant_wins_with_high_confidence() {
        let hud = evaluate(&input(
            vec![
                variant("b", 1000, 990, 0.010),
                variant("a", 1000, 995, 0.020),
            ],
            None,
        ));
        assert_eq!(hud.verdict, Verdict::Winner);
        let winner = hud.winner.as_ref().unwrap();
        assert_eq!(winner.variant_id, "b");
        assert_eq!(winner.confidence, Confidence::High);
        assert!(winner.reason.contains("runner-up a"), "{}", winner.reason);
        assert_eq!(hud.rows[0].variant_id, "a");
        assert_eq!(actions(&hud), [(Action::Route, "b")]);
    }

    #[test]
    fn a_single_eligible_variant_wins_as_sole_eligible() {
        let hud = evaluate(&input(
            vec![
                variant("good", 1000, 995, 0.01),
                variant("flaky", 100, 69, 0.001),
            ],
            None,
        ));
        let winner = hud.winner.as_ref().unwrap();
        assert_eq!(
            (winner.variant_id.as_str(), winner.confidence),
            ("good", Confidence::SoleEligible)
        );
        assert!(
            winner.reason.contains(
                "eligibility holds at the 95% bounds: failure rate at most 1.2% (limit 5.0%), \
                 quality at least 0.880 (floor 0.700)"
            ),
            "{}",
            winner.reason
        );
        assert_eq!(
            actions(&hud),
            [(Action::Route, "good"), (Action::Exclude, "flaky")]
        );
        let route = recommendation(&hud, Action::Route, "good");
        assert_eq!(route.saving_per_1k_outputs_usd, None);
        let exclude = recommendation(&hud, Action::Exclude, "flaky");
        assert!(
            exclude
                .text
                .contains("failure rate 31.0% (31 of 100 dispatches) is above the 5.0% limit"),
            "{}",
            exclude.text
        );
    }

    #[test]
    fn no_eligible_variant_names_no_winner_and_excludes_every_variant() {
        let mut unjudged = variant("unjudged", 100, 100, 0.01);
        unjudged.quality_n = 0;
        unjudged.quality_sum = 0.0;
        let hud = evaluate(&input(vec![unjudged, variant("few", 10, 10, 0.01)], None));
        assert_eq!(hud.verdict, Verdict::NoEligibleVariant);
        assert_eq!(hud.winner, None);
        assert_eq!(
            actions(&hud),
            [(Action::Exclude, "few"), (Action::Exclude, "unjudged")]
        );
    }

    #[test]
    fn overlapping_bounds_are_inconclusive_and_say_how_much_more_data() {
        // Both hold eligibility at their bounds (failure-rate upper bounds 1.2% and 1.5%): only
        // the cost comparison is open.
        let a = variant("a", 1000, 995, 0.0100);
        let b = variant("b", 600, 597, 0.01005);
        let hud = evaluate(&input(vec![a.clone(), b.clone()], None));
        assert_eq!(hud.verdict, Verdict::Inconclusive);
        assert_eq!(hud.winner, None);
        assert_eq!(
            actions(&hud),
            [(Action::GatherMoreData, "a"), (Action::GatherMoreData, "b")]
        );
        let more_a = recommendation(&hud, Action::GatherMoreData, "a");
        let more_b = recommendation(&hud, Action::GatherMoreData, "b");
        let (extra_a, extra_b) = (
            more_a.additional_dispatches.unwrap(),
            more_b.additional_dispatches.unwrap(),
        );
        assert!(more_a.text.contains(&format!("add {extra_a} dispatches")));

        // With that much more data at the same observed rates and costs, the intervals no
        // longer overlap.
        let grown = |v: &VariantEvidence, extra: u64| {
            let n = v.dispatches as f64;
            CostEvidence {
                dispatches: n,
                succeeded: v.succeeded as f64,
                mean_attempt_cost: v.cost_usd_total / n,
            }
            .scaled((n + extra as f64) / n)
            .cps_bounds(Z_95)
            .unwrap()
        };
        assert!(!grown(&a, extra_a).overlaps(&grown(&b, extra_b)));
        assert!(grown(&a, extra_a / 2).overlaps(&grown(&b, extra_b / 2)));
    }

    #[test]
    fn equal_leaders_cannot_be_separated_and_say_so() {
        let hud = evaluate(&input(
            vec![variant("x", 200, 198, 0.01), variant("y", 200, 198, 0.01)],
            None,
        ));
        assert_eq!(hud.verdict, Verdict::Inconclusive);
        let more = recommendation(&hud, Action::GatherMoreData, "x");
        assert_eq!(more.additional_dispatches, None);
        assert!(
            more.text
                .contains("cannot be separated: the leaders cost the same per success"),
            "{}",
            more.text
        );
    }

    #[test]
    fn ties_on_cost_break_by_success_rate_then_id() {
        // Same cost per success; "late" has the higher success rate. Bounds overlap, so the
        // tie-break decides who leads the gather_more_data pair, not a winner.
        let analyses_input = input(
            vec![
                variant("early", 100, 96, 0.0096),
                variant("late", 100, 100, 0.0100),
            ],
            None,
        );
        let analyses: Vec<VariantAnalysis> = analyses_input
            .variants
            .iter()
            .map(|v| VariantAnalysis::new(v, &analyses_input.thresholds))
            .collect();
        let Decision::Inconclusive { ranked, .. } = decide(&analyses) else {
            panic!("expected inconclusive");
        };
        assert_eq!(ranked[0].id(), "late");
    }

    #[test]
    fn winner_saving_is_against_the_current_binding() {
        let hud = evaluate(&input(
            vec![
                variant("cheap", 1000, 1000, 0.010),
                variant("mid", 1000, 1000, 0.015),
                variant("bound", 1000, 1000, 0.030),
            ],
            Some("bound"),
        ));
        let route = recommendation(&hud, Action::Route, "cheap");
        assert_eq!(route.saving_per_1k_outputs_usd, Some(20.0));
        assert!(
            route.text.contains("instead of the current binding bound"),
            "{}",
            route.text
        );
        assert!(
            route.text.contains("saves $20.00 per 1,000 outputs"),
            "{}",
            route.text
        );
    }

    #[test]
    fn without_a_binding_the_saving_is_against_the_runner_up() {
        let hud = evaluate(&input(
            vec![
                variant("cheap", 1000, 1000, 0.010),
                variant("mid", 1000, 1000, 0.015),
            ],
            None,
        ));
        let route = recommendation(&hud, Action::Route, "cheap");
        assert_eq!(route.saving_per_1k_outputs_usd, Some(5.0));
        assert!(route.text.contains("runner-up mid"), "{}", route.text);
        assert!(
            route.text.contains("there is no current binding"),
            "{}",
            route.text
        );
    }

    #[test]
    fn when_the_winner_is_the_current_binding_keep_routing_saves_nothing() {
        let hud = evaluate(&input(
            vec![
                variant("cheap", 1000, 1000, 0.010),
                variant("mid", 1000, 1000, 0.015),
            ],
            Some("cheap"),
        ));
        let route = recommendation(&hud, Action::Route, "cheap");
        assert_eq!(route.saving_per_1k_outputs_usd, Some(0.0));
        assert!(
            route.text.starts_with("Keep routing to cheap"),
            "{}",
            route.text
        );
    }

    #[test]
    fn an_ineligible_cheaper_binding_shows_the_extra_cost_and_why() {
        let mut bound = variant("bound", 1000, 1000, 0.005);
        bound.quality_sum = 0.5 * 1000.0;
        let hud = evaluate(&input(
            vec![bound, variant("good", 1000, 1000, 0.010)],
            Some("bound"),
        ));
        let route = recommendation(&hud, Action::Route, "good");
        assert_eq!(route.saving_per_1k_outputs_usd, Some(-5.0));
        assert!(
            route.text.contains("costs $5.00 more per 1,000 outputs"),
            "{}",
            route.text
        );
        let exclude = recommendation(&hud, Action::Exclude, "bound");
        assert!(
            exclude.text.contains("It is the current binding"),
            "{}",
            exclude.text
        );
    }

    #[test]
    fn route_text_states_the_margin_at_the_recorded_price() {
        let mut cheap = variant("cheap", 1000, 1000, 0.010);
        cheap.price = Some(Price {
            price_usd: 0.04,
            position: 7,
        });
        let hud = evaluate(&input(vec![cheap], None));
        let route = recommendation(&hud, Action::Route, "cheap");
        assert!(
            route
                .text
                .contains("margin of $0.030000 per output (75.0%)"),
            "{}",
            route.text
        );
    }

    #[test]
    fn same_input_gives_byte_identical_json() {
        let variants = vec![
            variant("c", 500, 490, 0.012),
            variant("a", 400, 399, 0.011),
            variant("b", 50, 30, 0.001),
        ];
        let forward = input(variants.clone(), Some("c"));
        let mut reversed = forward.clone();
        reversed.variants.reverse();
        let first = serde_json::to_string(&evaluate(&forward)).unwrap();
        assert_eq!(first, serde_json::to_string(&evaluate(&forward)).unwrap());
        assert_eq!(first, serde_json::to_string(&evaluate(&reversed)).unwrap());
    }

    #[test]
    fn json_uses_the_design_field_names_and_null_for_unknowns() {
        let mut unknown = variant("u", 10, 0, 0.01);
        unknown.cost_known = 9;
        unknown.quality_n = 0;
        unknown.quality_sum = 0.0;
        let json = serde_json::to_value(evaluate(&input(vec![unknown], None))).unwrap();
        assert_eq!(json["verdict"], "no_eligible_variant");
        assert!(json["winner"].is_null());
        let row = &json["rows"][0];
        for field in [
            "cost_usd_total",
            "cost_per_success_usd",
            "quality_mean",
            "price_usd",
            "price_position",
            "margin_per_success_usd",
            "margin_pct",
        ] {
            assert!(row[field].is_null(), "{field} should be null: {row}");
        }
        assert_eq!(row["latency_ms"]["p50"], 900.0);
        assert!(row["cost_per_success_bounds_95"]["upper"].is_null());
        assert_eq!(json["recommendations"][0]["action"], "exclude");
        assert!(json["recommendations"][0]["saving_per_1k_outputs_usd"].is_null());
    }

    /// The additional dispatches `rec` asks of `v` settle its failure-rate bound at the observed
    /// rate, and one fewer does not.
    fn failure_bound_settles_exactly(v: &VariantEvidence, more: u64) {
        let rate = 1.0 - v.succeeded as f64 / v.dispatches as f64;
        let upper = |total: u64| {
            let n = total as f64;
            1.0 - wilson_interval((1.0 - rate) * n, n, Z_95).unwrap().0
        };
        let limit = Thresholds::default().max_failure_rate;
        assert!(upper(v.dispatches + more) <= limit);
        assert!(upper(v.dispatches + more - 1) > limit);
    }

    #[test]
    fn a_leader_whose_failure_rate_bound_crosses_the_limit_is_not_named_winner() {
        // "risky" is cheapest and eligible on point estimates (3.0% failures, limit 5.0%), but
        // 3 of 100 leaves its failure-rate upper bound at 8.5%. "steady" is clearly pricier, so
        // the cost comparison alone would have named "risky" with high confidence.
        let risky = variant("risky", 100, 97, 0.005);
        let hud = evaluate(&input(
            vec![risky.clone(), variant("steady", 2000, 1998, 0.02)],
            None,
        ));
        assert_eq!(hud.verdict, Verdict::Inconclusive);
        assert_eq!(hud.winner, None);
        // Rows keep point-estimate eligibility, with the bound beside it.
        let row = &hud.rows[0];
        assert_eq!(row.variant_id, "risky");
        assert!(row.eligible);
        assert_eq!(row.failure_rate, Some(0.03));
        assert_eq!(row.failure_rate_upper_95, Some(0.0845));
        // Only the leader is asked for data; nothing is routed.
        assert_eq!(actions(&hud), [(Action::GatherMoreData, "risky")]);
        let more = recommendation(&hud, Action::GatherMoreData, "risky");
        assert!(
            more.text.contains(
                "its eligibility does not hold at the 95% bounds: failure rate upper bound 8.5% \
                 is above the 5.0% limit (observed 3.0%: 3 of 100 dispatches)"
            ),
            "{}",
            more.text
        );
        // 3.8415 × 0.05 × 0.95 / 0.02² = 456.2 dispatches at a 3% failure rate.
        assert_eq!(more.additional_dispatches, Some(357));
        assert!(
            more.text
                .contains("Add 357 dispatches to risky (to 457 in total, 4.57× the current"),
            "{}",
            more.text
        );
        failure_bound_settles_exactly(&risky, 357);
    }

    #[test]
    fn a_sole_eligible_variant_whose_quality_bound_crosses_the_floor_is_not_named_winner() {
        // Quality mean 0.720 over 200 judged outputs (one in five dispatches judged): the
        // lower bound is 0.654, below the 0.700 floor.
        let mut judged = variant("judged", 1000, 1000, 0.01);
        judged.quality_n = 200;
        judged.quality_sum = 0.72 * 200.0;
        let hud = evaluate(&input(vec![judged], None));
        assert_eq!(hud.verdict, Verdict::Inconclusive);
        assert_eq!(hud.winner, None);
        assert!(hud.rows[0].eligible);
        assert_eq!(hud.rows[0].quality_mean_lower_95, Some(0.6541));
        let more = recommendation(&hud, Action::GatherMoreData, "judged");
        assert!(
            more.text.contains(
                "quality lower bound 0.654 is below the 0.700 floor (mean 0.720 over 200 \
                 evaluations)"
            ),
            "{}",
            more.text
        );
        assert!(
            more.text.contains("its quality bound clears the floor"),
            "{}",
            more.text
        );
        // 3.8415 × 0.7 × 0.3 / 0.02² = 2016.8 judged outputs, at 0.2 per dispatch.
        let extra = more.additional_dispatches.unwrap();
        let lower = |total: u64| score_mean_lower_95(0.72, total as f64 * 0.2).unwrap();
        assert!(lower(1000 + extra) >= 0.7);
        assert!(lower(1000 + extra - 1) < 0.7);
        assert_eq!(extra, 9084);
    }

    #[test]
    fn a_leader_on_the_failure_limit_is_told_more_data_will_not_settle_it() {
        // 5 of 100 is exactly the 5.0% limit: eligible, but its bound straddles the limit at
        // any sample size.
        let hud = evaluate(&input(vec![variant("edge", 100, 95, 0.01)], None));
        assert_eq!(hud.verdict, Verdict::Inconclusive);
        let more = recommendation(&hud, Action::GatherMoreData, "edge");
        assert_eq!(more.additional_dispatches, None);
        assert!(
            more.text.contains(
                "Its failure rate 5.0% equals the 5.0% limit, so the 95% bound straddles the \
                 threshold at any number of dispatches"
            ),
            "{}",
            more.text
        );
    }

    #[test]
    fn a_leader_just_inside_the_limit_is_told_settling_it_is_beyond_the_cap() {
        // 499 of 10,000 failed (4.99%): settling needs ~18 million dispatches, over 1000×.
        let hud = evaluate(&input(vec![variant("close", 10_000, 9_501, 0.01)], None));
        assert_eq!(hud.verdict, Verdict::Inconclusive);
        let more = recommendation(&hud, Action::GatherMoreData, "close");
        assert_eq!(more.additional_dispatches, None);
        assert!(
            more.text.contains(
                "failure rate upper bound 5.4% is above the 5.0% limit (observed 4.99%: 499 of \
                 10000 dispatches)"
            ),
            "{}",
            more.text
        );
        assert!(
            more.text
                .contains("Settling it would take more than 1000× the current dispatches"),
            "{}",
            more.text
        );
    }

    #[test]
    fn an_unsettled_leader_that_also_overlaps_asks_for_the_larger_amount() {
        // "lead" has a failure-rate bound just over the limit (4 of 200: 5.03%) and an interval
        // overlapping "next"'s: one recommendation for "lead" covers both, asking for the
        // larger number of dispatches; "next" gets the separation request alone.
        let lead = variant("lead", 200, 196, 0.0100);
        let hud = evaluate(&input(
            vec![lead.clone(), variant("next", 200, 199, 0.0102)],
            None,
        ));
        assert_eq!(hud.verdict, Verdict::Inconclusive);
        assert_eq!(
            actions(&hud),
            [
                (Action::GatherMoreData, "lead"),
                (Action::GatherMoreData, "next")
            ]
        );
        let lead_analysis = VariantAnalysis::new(&lead, &Thresholds::default());
        let Some(SettleNeed::Dispatches(settle_total)) = lead_analysis.settle_need() else {
            panic!("expected a dispatch count");
        };
        let next_more = recommendation(&hud, Action::GatherMoreData, "next")
            .additional_dispatches
            .unwrap();
        let lead_rec = recommendation(&hud, Action::GatherMoreData, "lead");
        let lead_more = lead_rec.additional_dispatches.unwrap();
        // Both have 200 dispatches, so the separation asks the same of each.
        assert_eq!(lead_more, (settle_total - 200).max(next_more));
        assert!(
            lead_rec.text.contains("failure rate upper bound 5.03%"),
            "{}",
            lead_rec.text
        );
        assert!(
            lead_rec.text.contains("stop overlapping"),
            "{}",
            lead_rec.text
        );
        assert!(
            lead_rec
                .text
                .contains(&format!("In all, add {lead_more} dispatches to lead")),
            "{}",
            lead_rec.text
        );
    }

    #[test]
    fn a_runner_up_whose_eligibility_is_doubtful_does_not_block_a_clear_leader() {
        // "spare" is eligible on point estimates but its failure-rate bound crosses the limit;
        // it can only drop out, and "cheap" is cheaper than it beyond doubt either way.
        let hud = evaluate(&input(
            vec![
                variant("cheap", 1000, 1000, 0.010),
                variant("spare", 100, 97, 0.030),
            ],
            None,
        ));
        assert_eq!(hud.verdict, Verdict::Winner);
        let winner = hud.winner.unwrap();
        assert_eq!(
            (winner.variant_id.as_str(), winner.confidence),
            ("cheap", Confidence::High)
        );
    }
}
