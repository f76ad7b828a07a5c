//! What to do and what it is worth: route to the winner (saving per 1,000 outputs), gather more
//! data on a leader whose eligibility does not hold at its bounds or on overlapping leaders (how
//! many dispatches), exclude ineligible variants (why).

use super::analysis::{BoundCrossing, SettleNeed, VariantAnalysis};
use super::output::{Action, Recommendation};
use super::stats::{
    additional_dispatches, round_to, SeparationNeed, MAX_DATA_MULTIPLIER, USD_DECIMALS,
};
use super::text::{pct, pct_pair, score, score_pair, usd};
use super::verdict::{bounds_text, cps, Decision};

const OUTPUTS_PER_SAVING: f64 = 1000.0;

/// Recommendations in their fixed order: `route`, then `gather_more_data`, then `exclude`, each
/// by variant id (`analyses` are sorted by id).
pub fn recommendations(
    analyses: &[VariantAnalysis],
    decision: &Decision,
    current_binding: Option<&str>,
) -> Vec<Recommendation> {
    let mut out = Vec::new();
    match decision {
        Decision::SoleEligible { winner } => {
            out.push(route(winner, None, analyses, current_binding));
        }
        Decision::Confident { ranked } => {
            out.push(route(ranked[0], Some(ranked[1]), analyses, current_binding));
        }
        Decision::Inconclusive {
            ranked,
            contenders,
            unsettled,
        } => {
            if !contenders.is_empty() {
                out.extend(gather_more_data(ranked[0], contenders));
            }
            if let Some(need) = unsettled {
                settle_eligibility(ranked[0], *need, &mut out);
            }
        }
        Decision::NoEligibleVariant => {}
    }
    for a in analyses.iter().filter(|a| !a.eligible()) {
        out.push(exclude(a, current_binding));
    }
    out.sort_by(|a, b| (a.action, &a.variant_id).cmp(&(b.action, &b.variant_id)));
    out
}

fn route(
    winner: &VariantAnalysis,
    runner_up: Option<&VariantAnalysis>,
    analyses: &[VariantAnalysis],
    current_binding: Option<&str>,
) -> Recommendation {
    let id = winner.id();
    let winner_cps = cps(winner);
    let margin = margin_text(winner);
    let saving = |other: f64| round_to((other - winner_cps) * OUTPUTS_PER_SAVING, USD_DECIMALS);

    if current_binding == Some(id) {
        return Recommendation {
            action: Action::Route,
            variant_id: id.to_string(),
            text: format!(
                "Keep routing to {id}: it is already the current binding and the cheapest \
                 eligible variant at {} per successful output; saving 0.{margin}",
                usd(winner_cps)
            ),
            saving_per_1k_outputs_usd: Some(0.0),
            additional_dispatches: None,
        };
    }

    let current = current_binding.map(|b| (b, analyses.iter().find(|a| a.id() == b)));
    if let Some((binding, Some(bound))) = current {
        if let Some(bound_cps) = bound.cost_per_success {
            let per_1k = (bound_cps - winner_cps) * OUTPUTS_PER_SAVING;
            let worth = if per_1k >= 0.0 {
                format!("saves {} per 1,000 outputs", usd(per_1k))
            } else {
                format!(
                    "costs {} more per 1,000 outputs, because {binding} is not eligible ({})",
                    usd(-per_1k),
                    bound.excluded_because.join("; ")
                )
            };
            return Recommendation {
                action: Action::Route,
                variant_id: id.to_string(),
                text: format!(
                    "Route to {id} instead of the current binding {binding}: {} against {} per \
                     successful output {worth}.{margin}",
                    usd(winner_cps),
                    usd(bound_cps)
                ),
                saving_per_1k_outputs_usd: saving(bound_cps),
                additional_dispatches: None,
            };
        }
    }

    let why_runner_up = match current {
        None => "there is no current binding".to_string(),
        Some((binding, None)) => format!("the current binding {binding} is not in this benchmark"),
        Some((binding, Some(_))) => {
            format!("the current binding {binding} has no known cost per success")
        }
    };
    let (text, saving_usd) = match runner_up {
        Some(r) => (
            format!(
                "Route to {id}: {} against {} per successful output for the runner-up {} saves \
                 {} per 1,000 outputs (compared with the runner-up because {why_runner_up}).\
                 {margin}",
                usd(winner_cps),
                usd(cps(r)),
                r.id(),
                usd((cps(r) - winner_cps) * OUTPUTS_PER_SAVING)
            ),
            saving(cps(r)),
        ),
        None => (
            format!(
                "Route to {id}, the only eligible variant, at {} per successful output; no \
                 saving can be stated because {why_runner_up} and no other variant is eligible.\
                 {margin}",
                usd(winner_cps)
            ),
            None,
        ),
    };
    Recommendation {
        action: Action::Route,
        variant_id: id.to_string(),
        text,
        saving_per_1k_outputs_usd: saving_usd,
        additional_dispatches: None,
    }
}

/// One recommendation per variant involved: the leader and every contender whose interval
/// overlaps it. All of them scale by the same multiplier (the largest any pair needs), so the
/// request is one benchmark, not several.
fn gather_more_data(
    leader: &VariantAnalysis,
    contenders: &[(&VariantAnalysis, SeparationNeed)],
) -> Vec<Recommendation> {
    let mut involved = vec![leader];
    involved.extend(contenders.iter().map(|(c, _)| *c));
    let described: Vec<String> = involved
        .iter()
        .map(|x| {
            format!(
                "{} ({} per success, 95% {})",
                x.id(),
                usd(cps(x)),
                bounds_text(x)
            )
        })
        .collect();
    let names = match described.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    let (first_contender, _) = contenders[0];
    let worth = (cps(first_contender) - cps(leader)) * OUTPUTS_PER_SAVING;

    let same_cost = contenders
        .iter()
        .find(|(_, need)| *need == SeparationNeed::SameCost);
    let beyond_cap = contenders
        .iter()
        .find(|(_, need)| *need == SeparationNeed::BeyondCap);
    let multiplier = contenders
        .iter()
        .filter_map(|(_, need)| match need {
            SeparationNeed::Multiplier(k) => Some(*k),
            _ => None,
        })
        .fold(1.0_f64, f64::max);

    involved
        .iter()
        .map(|a| {
            let (text, additional) = if let Some((other, _)) = same_cost {
                (
                    format!(
                        "{} and {} cannot be separated: the leaders cost the same per success \
                         ({}), so more dispatches will not name a winner; choose between them on \
                         quality, latency or margin.",
                        leader.id(),
                        other.id(),
                        usd(cps(leader))
                    ),
                    None,
                )
            } else if let Some((other, _)) = beyond_cap {
                (
                    format!(
                        "{} and {} cannot be separated within {MAX_DATA_MULTIPLIER}× the current \
                         dispatches: the leaders cost nearly the same per success ({} against {}, \
                         a difference of {} per 1,000 outputs); treat them as equal on cost and \
                         choose on quality, latency or margin.",
                        leader.id(),
                        other.id(),
                        usd(cps(leader)),
                        usd(cps(other)),
                        usd((cps(other) - cps(leader)) * OUTPUTS_PER_SAVING)
                    ),
                    None,
                )
            } else {
                let dispatches = a.evidence.dispatches;
                let more = additional_dispatches(dispatches, multiplier);
                (
                    format!(
                        "Gather more data on {}: add {more} dispatches (to {} in total, {:.2}× the \
                         current evidence, the same for every leader) so the 95% cost-per-success \
                         intervals of {names} stop overlapping at the observed rates; {} leads \
                         {} by {} per 1,000 outputs at the observed costs.",
                        a.id(),
                        dispatches + more,
                        multiplier,
                        leader.id(),
                        first_contender.id(),
                        usd(worth)
                    ),
                    Some(more),
                )
            };
            Recommendation {
                action: Action::GatherMoreData,
                variant_id: a.id().to_string(),
                text,
                saving_per_1k_outputs_usd: None,
                additional_dispatches: additional,
            }
        })
        .collect()
}

/// The leader's `gather_more_data` when its eligibility does not hold at its 95% bounds: which
/// bound crosses which threshold, and how many dispatches would settle it. Merged into the
/// leader's separation recommendation when there is one, asking for the larger number.
fn settle_eligibility(leader: &VariantAnalysis, need: SettleNeed, out: &mut Vec<Recommendation>) {
    let id = leader.id();
    let dispatches = leader.evidence.dispatches;
    let crossings: Vec<String> = leader
        .bound_crossings
        .iter()
        .map(|c| crossing_text(leader, c))
        .collect();
    let bounds = match leader.bound_crossings.as_slice() {
        [BoundCrossing::FailureRate { .. }] => "its failure-rate bound clears the limit",
        [BoundCrossing::Quality { .. }] => "its quality bound clears the floor",
        _ => "both bounds clear their thresholds",
    };
    let (settle, additional) = match need {
        SettleNeed::Dispatches(total) => {
            let more = total - dispatches;
            (
                format!(
                    "Add {more} dispatches to {id} (to {total} in total, {:.2}× the current \
                     evidence) and, at the observed rates, {bounds}.",
                    total as f64 / dispatches as f64
                ),
                Some(more),
            )
        }
        SettleNeed::OnThreshold => (
            format!(
                "Its {}, so the 95% bound straddles the threshold at any number of dispatches: \
                 more data at the observed rate will not settle it. Decide whether a variant at \
                 the threshold is acceptable, or improve {id} and benchmark it again.",
                on_threshold_text(leader)
            ),
            None,
        ),
        SettleNeed::BeyondCap => (
            format!(
                "Settling it would take more than {MAX_DATA_MULTIPLIER}× the current dispatches \
                 (over {} in total) at the observed rates: {id} is, in practice, at the \
                 threshold. Decide whether that is acceptable, or improve {id} and benchmark it \
                 again.",
                (dispatches as f64 * MAX_DATA_MULTIPLIER) as u64
            ),
            None,
        ),
    };
    let text = format!(
        "Gather more data on {id} before routing to it: it is the cheapest eligible variant on \
         point estimates ({} per successful output), but its eligibility does not hold at the \
         95% bounds: {}. {settle}",
        usd(cps(leader)),
        crossings.join("; ")
    );
    match out
        .iter_mut()
        .find(|r| r.action == Action::GatherMoreData && r.variant_id == id)
    {
        Some(separation) => {
            let both = additional.zip(separation.additional_dispatches);
            let in_all = match both {
                Some((settle_more, separate_more)) => format!(
                    " In all, add {} dispatches to {id}: enough for both.",
                    settle_more.max(separate_more)
                ),
                None => String::new(),
            };
            separation.text = format!("{text} {}{in_all}", separation.text);
            separation.additional_dispatches = both.map(|(a, b)| a.max(b));
        }
        None => out.push(Recommendation {
            action: Action::GatherMoreData,
            variant_id: id.to_string(),
            text,
            saving_per_1k_outputs_usd: None,
            additional_dispatches: additional,
        }),
    }
}

/// "failure rate upper bound 8.2% is above the 5.0% limit (observed 3.0%: 3 of 100
/// dispatches)", or the quality equivalent.
fn crossing_text(a: &VariantAnalysis, crossing: &BoundCrossing) -> String {
    let e = a.evidence;
    match *crossing {
        BoundCrossing::FailureRate { rate, upper, limit } => {
            let observed = if crossing.on_threshold() {
                pct(rate)
            } else {
                pct_pair(rate, limit).0
            };
            let (upper, limit_text) = pct_pair(upper, limit);
            format!(
                "failure rate upper bound {upper} is above the {limit_text} limit (observed \
                 {observed}: {} of {} dispatches)",
                e.dispatches - e.succeeded.min(e.dispatches),
                e.dispatches
            )
        }
        BoundCrossing::Quality { mean, lower, floor } => {
            let observed = if crossing.on_threshold() {
                score(mean)
            } else {
                score_pair(mean, floor).0
            };
            let (lower, floor_text) = score_pair(lower, floor);
            format!(
                "quality lower bound {lower} is below the {floor_text} floor (mean {observed} \
                 over {} evaluations)",
                e.quality_n
            )
        }
    }
}

/// The estimates of `a` that sit on their threshold, e.g. "failure rate 5.0% equals the 5.0%
/// limit".
fn on_threshold_text(a: &VariantAnalysis) -> String {
    let on: Vec<String> = a
        .bound_crossings
        .iter()
        .filter(|crossing| crossing.on_threshold())
        .map(|crossing| match *crossing {
            BoundCrossing::FailureRate { rate, limit, .. } => {
                format!("failure rate {} equals the {} limit", pct(rate), pct(limit))
            }
            BoundCrossing::Quality { mean, floor, .. } => {
                format!(
                    "quality mean {} equals the {} floor",
                    score(mean),
                    score(floor)
                )
            }
        })
        .collect();
    on.join(" and its ")
}

fn exclude(a: &VariantAnalysis, current_binding: Option<&str>) -> Recommendation {
    let bound_note = if current_binding == Some(a.id()) {
        " It is the current binding: move its traffic to an eligible variant."
    } else {
        ""
    };
    Recommendation {
        action: Action::Exclude,
        variant_id: a.id().to_string(),
        text: format!(
            "Exclude {} from routing: {}.{bound_note}",
            a.id(),
            a.excluded_because.join("; ")
        ),
        saving_per_1k_outputs_usd: None,
        additional_dispatches: None,
    }
}

/// ` At its price of $0.05 it earns $0.0375 per output (75.0%).`, or nothing without a price.
fn margin_text(a: &VariantAnalysis) -> String {
    match (a.evidence.price.as_ref(), a.margin_per_success) {
        (Some(price), Some(margin)) => {
            let pct = a
                .margin_pct
                .map(|p| format!(" ({p:.1}%)"))
                .unwrap_or_default();
            format!(
                " At its price of {} it earns a margin of {} per output{pct}.",
                usd(price.price_usd),
                usd(margin)
            )
        }
        _ => String::new(),
    }
}
