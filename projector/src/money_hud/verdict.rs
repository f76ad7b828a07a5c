//! The decision: which eligible variant wins, with what confidence, or why none does.

use std::cmp::Ordering;

use super::analysis::VariantAnalysis;
use super::input::HudInput;
use super::output::{Confidence, MoneyHud, Verdict, Winner};
use super::recommendations::recommendations;
use super::stats::{CpsBounds, SeparationNeed};
use super::text::usd;

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
    /// The leader's interval overlaps at least one other eligible variant's.
    Inconclusive {
        ranked: Vec<&'v VariantAnalysis<'a>>,
        /// Eligible variants whose interval overlaps the leader's, with what would separate
        /// each from it.
        contenders: Vec<(&'v VariantAnalysis<'a>, SeparationNeed)>,
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
                    "the only eligible variant of {variants}: {} per successful output (95% {})",
                    usd(cps(winner)),
                    bounds_text(winner)
                ),
                confidence: Confidence::SoleEligible,
            }),
            Decision::Confident { ranked } => {
                let (winner, runner_up) = (ranked[0], ranked[1]);
                Some(Winner {
                    variant_id: winner.id().to_string(),
                    reason: format!(
                        "lowest cost per successful output of {} eligible variants: {} (95% {}) \
                         against {} (95% {}) for runner-up {}; the intervals do not overlap",
                        ranked.len(),
                        usd(cps(winner)),
                        bounds_text(winner),
                        usd(cps(runner_up)),
                        bounds_text(runner_up),
                        runner_up.id()
                    ),
                    confidence: Confidence::High,
                })
            }
            Decision::NoEligibleVariant | Decision::Inconclusive { .. } => None,
        }
    }
}

/// Ranks eligible variants and compares the leader's interval with every other's. The spec
/// compares with the runner-up; comparing with all of them also catches a pricier variant whose
/// wide interval (few dispatches) still reaches below the leader.
pub fn decide<'v, 'a>(analyses: &'v [VariantAnalysis<'a>]) -> Decision<'v, 'a> {
    let mut ranked: Vec<&VariantAnalysis> = analyses.iter().filter(|a| a.eligible()).collect();
    ranked.sort_by(|a, b| rank(a, b));
    match ranked.len() {
        0 => return Decision::NoEligibleVariant,
        1 => return Decision::SoleEligible { winner: ranked[0] },
        _ => {}
    }
    let leader = ranked[0];
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
    if contenders.is_empty() {
        Decision::Confident { ranked }
    } else {
        Decision::Inconclusive { ranked, contenders }
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
    use super::super::input::{Price, Thresholds, VariantEvidence};
    use super::super::output::{Action, Recommendation};
    use super::super::stats::{CostEvidence, Z_95};
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
                variant("good", 100, 99, 0.01),
                variant("flaky", 100, 69, 0.001),
            ],
            None,
        ));
        let winner = hud.winner.as_ref().unwrap();
        assert_eq!(
            (winner.variant_id.as_str(), winner.confidence),
            ("good", Confidence::SoleEligible)
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
        let a = variant("a", 100, 98, 0.0100);
        let b = variant("b", 60, 59, 0.0104);
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
}
