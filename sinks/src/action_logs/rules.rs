//! Severity rules: which events (and which health findings) become action logs, under which
//! kind, about which subject, and the facts their template renders.
//!
//! Severity comes from the catalogue ([`EventPayload::severity`], DESIGN §4); this module only
//! chooses the kind. A warn or critical event type without a kind of its own still becomes an
//! action log (`warn_event` / `critical_event`), so a type added to the catalogue is never
//! silently dropped. Everything here is pure: the sink looks up the stream context (the run an
//! event belongs to) and passes it in.

use eventlog::catalogue::{AlarmState, RunCreated};
use eventlog::{EventPayload, RecordedEvent, Severity};
use serde_json::{json, Map, Value};

/// An action-log kind; each has `templates/<kind>.hbs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    RunnerFallback,
    ArrivalsMissed,
    StopConditionBreached,
    RunCancelled,
    QualityFallback,
    QualityEvaluationFailed,
    RoutingBindingApplied,
    RoutingBindingRolledBack,
    Alarm,
    WarnEvent,
    CriticalEvent,
    ProjectionDeadLetter,
    SinkDeadLetter,
    ProjectionStalled,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::RunnerFallback,
        Kind::ArrivalsMissed,
        Kind::StopConditionBreached,
        Kind::RunCancelled,
        Kind::QualityFallback,
        Kind::QualityEvaluationFailed,
        Kind::RoutingBindingApplied,
        Kind::RoutingBindingRolledBack,
        Kind::Alarm,
        Kind::WarnEvent,
        Kind::CriticalEvent,
        Kind::ProjectionDeadLetter,
        Kind::SinkDeadLetter,
        Kind::ProjectionStalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RunnerFallback => "runner_fallback",
            Kind::ArrivalsMissed => "arrivals_missed",
            Kind::StopConditionBreached => "stop_condition_breached",
            Kind::RunCancelled => "run_cancelled",
            Kind::QualityFallback => "quality_fallback",
            Kind::QualityEvaluationFailed => "quality_evaluation_failed",
            Kind::RoutingBindingApplied => "routing_binding_applied",
            Kind::RoutingBindingRolledBack => "routing_binding_rolled_back",
            Kind::Alarm => "alarm",
            Kind::WarnEvent => "warn_event",
            Kind::CriticalEvent => "critical_event",
            Kind::ProjectionDeadLetter => "projection_dead_letter",
            Kind::SinkDeadLetter => "sink_dead_letter",
            Kind::ProjectionStalled => "projection_stalled",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == name)
    }

    /// Health findings are not events: they group while their row is open (unacknowledged)
    /// rather than within a window of event time.
    pub fn is_health(self) -> bool {
        matches!(
            self,
            Kind::ProjectionDeadLetter | Kind::SinkDeadLetter | Kind::ProjectionStalled
        )
    }
}

/// What one event or health finding contributes to an action log.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: Kind,
    pub severity: Severity,
    /// What the action log is about; the same kind on the same subject groups.
    pub subject: String,
    pub title: String,
    /// The template's input (the store adds `action_log_id`, `kind`, `severity`, `subject`).
    pub context: Value,
}

/// The run a load-test event belongs to, from its stream's `load_test.run_created`.
pub fn run_context(run: Option<&RunCreated>) -> Value {
    match run {
        Some(r) => json!({
            "name": r.name,
            "variant_id": r.variant_id,
            "effect_revision_id": r.effect_revision_id,
            "environment_id": r.environment_id,
            "max_failure_rate_pct": percent(r.stop_conditions.max_failure_rate),
            "sustained_s": r.stop_conditions.sustained_s,
        }),
        None => json!({
            "name": null, "variant_id": null, "effect_revision_id": null,
            "environment_id": null, "max_failure_rate_pct": null, "sustained_s": null,
        }),
    }
}

/// The load-test run whose context a rule wants, if any.
pub fn run_id_of(payload: &EventPayload) -> Option<&str> {
    match payload {
        EventPayload::RunnerFallback(p) => Some(&p.run_id),
        EventPayload::ArrivalsMissed(p) => Some(&p.run_id),
        EventPayload::StopConditionBreached(p) => Some(&p.run_id),
        EventPayload::RunCancelled(p) => Some(&p.run_id),
        _ => None,
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// The run id an alarm's name carries (the CloudWatch sinks name run alarms after their run,
/// `…lt_<id>…`), so the instructions can name the run to look at or cancel.
pub fn run_id_in_alarm_name(alarm_name: &str) -> Option<String> {
    let start = alarm_name.find("lt_")?;
    let id: String = alarm_name[start..]
        .chars()
        .enumerate()
        .take_while(|(i, c)| *i < 3 || c.is_ascii_alphanumeric() || *c == '_')
        .map(|(_, c)| c)
        .collect();
    (id.len() > 3).then_some(id)
}

fn event_facts(event: &RecordedEvent) -> Value {
    json!({
        "event_id": event.event_id.to_string(),
        "type": event.event_type,
        "position": event.position,
        "stream": event.stream,
        "stream_version": event.stream_version,
        "occurred_at": event.occurred_at,
        "correlation_id": event.correlation_id,
    })
}

fn with_event(event: &RecordedEvent, facts: Value) -> Value {
    let mut map = match facts {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    map.insert("event".into(), event_facts(event));
    Value::Object(map)
}

/// The action log an event calls for, or `None` for info events (and alarms leaving ALARM).
/// `run` is the event's run when [`run_id_of`] names one.
pub fn classify(
    event: &RecordedEvent,
    payload: &EventPayload,
    run: Option<&RunCreated>,
) -> Option<Finding> {
    let severity = payload.severity();
    if severity == Severity::Info {
        return None;
    }
    let subject = event.stream.clone();
    let (kind, title, facts) = match payload {
        EventPayload::RunnerFallback(p) => (
            Kind::RunnerFallback,
            format!(
                "Load test {} runs inline: the runner is not available",
                p.run_id
            ),
            json!({"run_id": p.run_id, "reason": p.reason, "run": run_context(run)}),
        ),
        EventPayload::ArrivalsMissed(p) => (
            Kind::ArrivalsMissed,
            format!(
                "Load test {} missed {} arrival(s) in stage {}",
                p.run_id, p.count, p.stage_index
            ),
            json!({
                "run_id": p.run_id, "stage_index": p.stage_index, "count": p.count,
                "reason": p.reason, "run": run_context(run),
            }),
        ),
        EventPayload::StopConditionBreached(p) => (
            Kind::StopConditionBreached,
            format!(
                "Load test {} stopped: failure rate {}",
                p.run_id,
                percent(p.failure_rate)
            ),
            json!({
                "run_id": p.run_id,
                "failure_rate_pct": percent(p.failure_rate),
                "window_s": p.window_s,
                "alarm_name": p.alarm_name,
                "cost_overrun": p.cost_overrun.as_ref().map(|c| json!({
                    "actual_cost_usd": c.actual_cost_usd,
                    "estimated_cost_usd": c.estimated_cost_usd,
                    "limit_factor": c.limit_factor,
                })),
                "run": run_context(run),
            }),
        ),
        EventPayload::RunCancelled(p) => (
            Kind::RunCancelled,
            format!("Load test {} cancelled by {}", p.run_id, p.actor),
            json!({"run_id": p.run_id, "reason": p.reason, "actor": p.actor, "run": run_context(run)}),
        ),
        EventPayload::EvaluationCompleted(p) => (
            Kind::QualityFallback,
            format!(
                "Quality judge fell back to the heuristic for benchmark run {}",
                p.benchmark_run_id
            ),
            json!({
                "benchmark_run_id": p.benchmark_run_id,
                "evaluation_id": p.evaluation_id,
                "item_id": p.item_id,
                "variant_id": p.variant_id,
                "dispatch_id": p.dispatch_id,
                "evaluator_provider": p.evaluator.provider,
                "evaluator_model": p.evaluator.model,
                "score": p.score,
                "fallback_reason": p.fallback_reason.clone().unwrap_or_default(),
            }),
        ),
        EventPayload::EvaluationFailed(p) => (
            Kind::QualityEvaluationFailed,
            format!(
                "Output {} of benchmark run {} is unjudged",
                p.dispatch_id, p.benchmark_run_id
            ),
            json!({
                "benchmark_run_id": p.benchmark_run_id,
                "evaluation_id": p.evaluation_id,
                "dispatch_id": p.dispatch_id,
                "variant_id": p.variant_id,
                "reason": p.reason,
            }),
        ),
        // The rollback's expected_version is the binding's version as of this event: the
        // routing stream folded up to here. Rendering from the log alone keeps a rebuild of the
        // action logs byte-identical; a later change on the same scope re-renders the open row.
        EventPayload::BindingApplied(p) => (
            Kind::RoutingBindingApplied,
            format!(
                "Routing for {}:{} now sends traffic to {}",
                p.effect_revision_id, p.stage, p.variant_id
            ),
            json!({
                "effect_revision_id": p.effect_revision_id,
                "stage": p.stage,
                "variant_id": p.variant_id,
                "previous_variant_id": p.previous_variant_id,
                "binding_version": p.binding_version,
                "expected_version": p.binding_version,
                "reason": p.reason,
                "actor": p.actor,
                "benchmark_run_id": p.evidence.as_ref().map(|e| e.benchmark_run_id.clone()),
            }),
        ),
        EventPayload::BindingRolledBack(p) => (
            Kind::RoutingBindingRolledBack,
            format!(
                "Routing for {}:{} rolled back to {}",
                p.effect_revision_id, p.stage, p.to_variant_id
            ),
            json!({
                "effect_revision_id": p.effect_revision_id,
                "stage": p.stage,
                "from_variant_id": p.from_variant_id,
                "to_variant_id": p.to_variant_id,
                "binding_version": p.binding_version,
                "expected_version": p.binding_version,
                "reason": p.reason,
                "actor": p.actor,
            }),
        ),
        EventPayload::AlarmStateChanged(p) if p.new_state == AlarmState::Alarm => (
            Kind::Alarm,
            format!("Alarm {} is in ALARM", p.alarm_name),
            json!({
                "alarm_name": p.alarm_name,
                "old_state": state_name(p.old_state),
                "new_state": state_name(p.new_state),
                "reason": p.reason,
                "run_id": run_id_in_alarm_name(&p.alarm_name),
            }),
        ),
        other => {
            let kind = if severity == Severity::Critical {
                Kind::CriticalEvent
            } else {
                Kind::WarnEvent
            };
            (
                kind,
                format!("{} on {}", event.event_type, event.stream),
                json!({
                    "type": event.event_type,
                    "payload_json": serde_json::to_string_pretty(&other.to_value())
                        .unwrap_or_default(),
                }),
            )
        }
    };
    Some(Finding {
        kind,
        severity,
        subject,
        title,
        context: with_event(event, facts),
    })
}

fn state_name(state: AlarmState) -> &'static str {
    match state {
        AlarmState::Ok => "OK",
        AlarmState::Alarm => "ALARM",
        AlarmState::InsufficientData => "INSUFFICIENT_DATA",
    }
}

/// Whether the action-log sink wants `event` at all: a rule applies, or it acknowledges one.
pub fn wants(event: &RecordedEvent) -> bool {
    if event.event_type == "action_log.acknowledged" {
        return true;
    }
    match event.typed() {
        Ok(payload) => payload.severity() != Severity::Info,
        // A stored event the catalogue no longer parses: let delivery dead-letter it with the
        // reason, rather than skipping it silently.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action_logs::samples::{recorded, sample_payload, sample_run};
    use eventlog::catalogue::*;

    const AT: &str = "2026-11-24T10:00:00Z";

    fn classify_payload(payload: &EventPayload) -> Option<Finding> {
        let event = recorded(payload, 7, AT);
        classify(&event, payload, Some(&sample_run()))
    }

    #[test]
    fn every_warn_and_critical_type_of_the_catalogue_has_its_own_kind() {
        let expected = [
            (
                "load_test.runner_fallback",
                Kind::RunnerFallback,
                Severity::Warn,
            ),
            (
                "load_test.arrivals_missed",
                Kind::ArrivalsMissed,
                Severity::Warn,
            ),
            (
                "load_test.stop_condition_breached",
                Kind::StopConditionBreached,
                Severity::Critical,
            ),
            (
                "load_test.run_cancelled",
                Kind::RunCancelled,
                Severity::Warn,
            ),
            (
                "quality.evaluation_completed",
                Kind::QualityFallback,
                Severity::Warn,
            ),
            (
                "quality.evaluation_failed",
                Kind::QualityEvaluationFailed,
                Severity::Warn,
            ),
            (
                "routing.binding_applied",
                Kind::RoutingBindingApplied,
                Severity::Warn,
            ),
            (
                "routing.binding_rolled_back",
                Kind::RoutingBindingRolledBack,
                Severity::Warn,
            ),
            ("ops.alarm_state_changed", Kind::Alarm, Severity::Critical),
        ];
        for (event_type, kind, severity) in expected {
            let payload = sample_payload(kind).expect("event kind");
            assert_eq!(payload.event_type(), event_type);
            let finding =
                classify_payload(&payload).unwrap_or_else(|| panic!("{event_type} is loud"));
            assert_eq!(finding.kind, kind, "{event_type}");
            assert_eq!(finding.severity, severity, "{event_type}");
            assert_eq!(
                finding.severity,
                payload.severity(),
                "severity comes from the catalogue"
            );
        }
        // Every catalogue type is either listed above or is info whatever its payload.
        let listed: Vec<&str> = expected.iter().map(|(t, _, _)| *t).collect();
        let always_info = [
            "load_test.run_created",
            "load_test.run_started",
            "load_test.stage_started",
            "load_test.dispatch_submitted",
            "load_test.dispatch_completed",
            "load_test.run_completed",
            "variant.registered",
            "variant.retired",
            "benchmark.run_created",
            "benchmark.item_created",
            "benchmark.dispatch_submitted",
            "benchmark.dispatch_completed",
            "benchmark.artifact_recorded",
            "benchmark.item_completed",
            "benchmark.run_completed",
            "pricing.price_set",
            "action_log.acknowledged",
        ];
        for t in EVENT_TYPES {
            assert!(
                listed.contains(t) || always_info.contains(t),
                "{t} is new in the catalogue: give it a kind (and a template) or list it as info"
            );
        }
    }

    #[test]
    fn info_events_and_quiet_variants_of_loud_types_are_not_action_logs() {
        let completed = EventPayload::RunCompleted(RunCompleted {
            run_id: "lt_1".into(),
        });
        assert_eq!(classify_payload(&completed), None);
        let Some(EventPayload::EvaluationCompleted(mut judged)) =
            sample_payload(Kind::QualityFallback)
        else {
            unreachable!()
        };
        judged.fallback = false;
        judged.fallback_reason = None;
        assert_eq!(
            classify_payload(&EventPayload::EvaluationCompleted(judged)),
            None
        );
        for new_state in [AlarmState::Ok, AlarmState::InsufficientData] {
            let back = EventPayload::AlarmStateChanged(AlarmStateChanged {
                alarm_name: "studio-projection-lag".into(),
                old_state: AlarmState::Alarm,
                new_state,
                reason: "recovered".into(),
            });
            assert_eq!(
                classify_payload(&back),
                None,
                "{new_state:?} is not an action log"
            );
        }
    }

    #[test]
    fn the_subject_is_the_stream_so_one_run_or_scope_groups_together() {
        let f = classify_payload(&sample_payload(Kind::RoutingBindingApplied).unwrap()).unwrap();
        assert_eq!(f.subject, "routing-fx_portrait:render");
        assert_eq!(f.context["expected_version"], 3);
        let f = classify_payload(&sample_payload(Kind::RunCancelled).unwrap()).unwrap();
        assert_eq!(
            f.subject,
            "load_test_run-lt_0193a1b2c3d4e5f60718293a4b5c6d7e"
        );
        assert_eq!(f.context["run"]["name"], "portrait-soak");
    }

    #[test]
    fn an_unknown_run_still_gives_every_run_field_as_null() {
        let payload = sample_payload(Kind::RunnerFallback).unwrap();
        let event = recorded(&payload, 7, AT);
        let f = classify(&event, &payload, None).unwrap();
        assert!(f.context["run"]["name"].is_null());
        assert!(f.context["run"]
            .as_object()
            .unwrap()
            .contains_key("variant_id"));
    }

    #[test]
    fn an_alarm_name_carrying_a_run_id_names_the_run() {
        assert_eq!(
            run_id_in_alarm_name("studio-load-test-failure-rate-lt_0193abc"),
            Some("lt_0193abc".into())
        );
        assert_eq!(
            run_id_in_alarm_name("studio/lt_42/failure-rate"),
            Some("lt_42".into())
        );
        assert_eq!(run_id_in_alarm_name("studio-projection-lag"), None);
        assert_eq!(run_id_in_alarm_name("lt_"), None);
    }

    #[test]
    fn wants_loud_events_and_acknowledgements_only() {
        let loud = recorded(&sample_payload(Kind::Alarm).unwrap(), 1, AT);
        assert!(wants(&loud));
        let ack = recorded(
            &EventPayload::ActionLogAcknowledged(ActionLogAcknowledged {
                action_log_id: "al_x".into(),
                actor: "ops".into(),
                note: None,
            }),
            2,
            AT,
        );
        assert!(wants(&ack));
        let quiet = recorded(
            &EventPayload::RunCompleted(RunCompleted {
                run_id: "lt_1".into(),
            }),
            3,
            AT,
        );
        assert!(!wants(&quiet));
    }
}
