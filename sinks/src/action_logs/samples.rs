//! One real example per kind, built through the catalogue (payloads that pass its checks,
//! turned into recorded events and classified by the rules): what [`super::check_templates`]
//! renders at start-up, and what the template tests render.

use super::health::{self, DeadLetterRow};
use super::rules::{classify, Finding, Kind};
use eventlog::catalogue::*;
use eventlog::{EventPayload, RecordedEvent};
use std::time::Duration;

const VARIANT: &str = "er:fx_portrait:wf:wf_1:env:prod:stage:render:provider:sim-cheap:exp:e1";
const PREVIOUS: &str = "er:fx_portrait:wf:wf_1:env:prod:stage:render:provider:fal-prod:exp:e1";
const RUN: &str = "lt_0193a1b2c3d4e5f60718293a4b5c6d7e";
const BENCHMARK: &str = "bm_0193a1b2-c3d4-7e5f-8071-8293a4b5c6d7";

/// The example run every load-test sample belongs to.
pub fn sample_run() -> RunCreated {
    RunCreated {
        run_id: RUN.into(),
        name: "portrait-soak".into(),
        effect_revision_id: "fx_portrait".into(),
        environment_id: "prod".into(),
        variant_id: VARIANT.into(),
        input_fixture: "fixtures/portrait.json".into(),
        stages: vec![Stage {
            name: "steady".into(),
            duration_s: 600,
            target_rps: 5.0,
        }],
        stop_conditions: StopConditions::default(),
        estimated_cost_usd: None,
        approval_ref: None,
    }
}

/// A payload as stored: checked by the catalogue, serialised, parsed back, recorded.
pub fn recorded(payload: &EventPayload, position: i64, occurred_at: &str) -> RecordedEvent {
    if let Err(err) = payload.check() {
        panic!(
            "sample {} is not a valid event: {err}",
            payload.event_type()
        );
    }
    let value = payload.to_value();
    let parsed = EventPayload::parse(payload.event_type(), &value)
        .unwrap_or_else(|e| panic!("sample {} does not parse: {e}", payload.event_type()));
    RecordedEvent {
        position,
        event_id: uuid::Uuid::from_u128(
            0x0193_a1b2_c3d4_7e5f_8071_0000_0000_0000 + position as u128,
        ),
        event_type: parsed.event_type().to_string(),
        schema_version: eventlog::upcast::current_version(parsed.event_type()),
        stream: parsed.stream(),
        stream_version: 1,
        idempotency_key: None,
        correlation_id: Some("corr-1".into()),
        causation_id: None,
        producer: Some("samples".into()),
        occurred_at: occurred_at.to_string(),
        recorded_at: occurred_at.to_string(),
        payload: value,
    }
}

/// The example payload of an event kind (`None` for health kinds).
pub fn sample_payload(kind: Kind) -> Option<EventPayload> {
    Some(match kind {
        Kind::RunnerFallback => EventPayload::RunnerFallback(RunnerFallback {
            run_id: RUN.into(),
            reason: "STUDIO_LOAD_TEST_RUNNER_COMMAND is not set".into(),
        }),
        Kind::ArrivalsMissed => EventPayload::ArrivalsMissed(ArrivalsMissed {
            run_id: RUN.into(),
            stage_index: 0,
            count: 12,
            reason: Some("in-flight limit reached".into()),
        }),
        Kind::StopConditionBreached => EventPayload::StopConditionBreached(StopConditionBreached {
            run_id: RUN.into(),
            failure_rate: 0.34,
            window_s: 600,
            alarm_name: None,
            cost_overrun: None,
        }),
        Kind::RunCancelled => EventPayload::RunCancelled(RunCancelled {
            run_id: RUN.into(),
            reason: "provider degraded".into(),
            actor: "ops@studio".into(),
        }),
        Kind::QualityFallback => EventPayload::EvaluationCompleted(EvaluationCompleted {
            benchmark_run_id: BENCHMARK.into(),
            evaluation_id: "ev_1".into(),
            item_id: "item_1".into(),
            variant_id: VARIANT.into(),
            dispatch_id: "d_1".into(),
            evaluator: Evaluator {
                provider: "heuristic".into(),
                model: "heuristic-v1".into(),
            },
            score: 0.62,
            criteria: [("fidelity".to_string(), 0.6)].into_iter().collect(),
            rationale: "heuristic fallback".into(),
            fallback: true,
            fallback_reason: Some("gemini answered 429 three times".into()),
        }),
        Kind::QualityEvaluationFailed => EventPayload::EvaluationFailed(EvaluationFailed {
            benchmark_run_id: BENCHMARK.into(),
            evaluation_id: "ev_2".into(),
            dispatch_id: "d_2".into(),
            reason: "safety block: HARM_CATEGORY_DANGEROUS_CONTENT".into(),
            item_id: None,
            variant_id: Some(VARIANT.into()),
        }),
        Kind::RoutingBindingApplied => EventPayload::BindingApplied(BindingApplied {
            effect_revision_id: "fx_portrait".into(),
            stage: "render".into(),
            variant_id: VARIANT.into(),
            previous_variant_id: Some(PREVIOUS.into()),
            binding_version: 3,
            reason: "money HUD winner".into(),
            actor: "ops@studio".into(),
            evidence: Some(Evidence {
                benchmark_run_id: BENCHMARK.into(),
            }),
        }),
        Kind::RoutingBindingRolledBack => EventPayload::BindingRolledBack(BindingRolledBack {
            effect_revision_id: "fx_portrait".into(),
            stage: "render".into(),
            from_variant_id: VARIANT.into(),
            to_variant_id: PREVIOUS.into(),
            binding_version: 4,
            reason: "failure rate up".into(),
            actor: "ops@studio".into(),
        }),
        Kind::Alarm | Kind::CriticalEvent => EventPayload::AlarmStateChanged(AlarmStateChanged {
            alarm_name: format!("studio-load-test-failure-rate-{RUN}"),
            old_state: AlarmState::Ok,
            new_state: AlarmState::Alarm,
            reason: "Threshold Crossed: 10 datapoints were greater than 0.2".into(),
        }),
        // Every warn type of the catalogue has a kind of its own today; the generic kinds are
        // there for types added later. Their samples use a real loud event all the same.
        Kind::WarnEvent => EventPayload::RunnerFallback(RunnerFallback {
            run_id: RUN.into(),
            reason: "runner not configured".into(),
        }),
        Kind::ProjectionDeadLetter | Kind::SinkDeadLetter | Kind::ProjectionStalled => return None,
    })
}

/// The finding of one kind's example, as the sink would fold it.
pub fn sample_finding(kind: Kind) -> Finding {
    let dead = DeadLetterRow {
        owner: if kind == Kind::SinkDeadLetter {
            "cloudwatch_metrics".into()
        } else {
            "quality".into()
        },
        position: 1_234,
        event_id: "0193a1b2-c3d4-7e5f-8071-000000000001".into(),
        event_type: "quality.evaluation_completed".into(),
        error: "criteria.fidelity: invalid type".into(),
        attempts: 3,
        status: "dead".into(),
        recorded_at: "2026-11-24T10:00:00Z".into(),
    };
    match kind {
        Kind::ProjectionDeadLetter => return health::projection_dead_letter(&dead).finding,
        Kind::SinkDeadLetter => return health::sink_dead_letter(&dead).finding,
        Kind::ProjectionStalled => {
            return health::projection_stalled(
                "load_tests",
                1_200,
                1_450,
                Duration::from_secs(420),
                "2026-11-24T10:07:00Z".into(),
            )
            .finding
        }
        _ => {}
    }
    let payload = sample_payload(kind).expect("event kind");
    let event = recorded(&payload, 1_234, "2026-11-24T10:00:00Z");
    let run = sample_run();
    let mut finding = classify(&event, &payload, Some(&run))
        .unwrap_or_else(|| panic!("sample of {} is not loud", kind.as_str()));
    // The generic kinds stand for catalogue types that have no kind of their own yet.
    if matches!(kind, Kind::WarnEvent | Kind::CriticalEvent) {
        finding.kind = kind;
        finding.context["type"] = event.event_type.clone().into();
        finding.context["payload_json"] = serde_json::to_string_pretty(&event.payload)
            .unwrap_or_default()
            .into();
    }
    finding
}
