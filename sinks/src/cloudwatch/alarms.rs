//! The alarms there should be, as pure functions: deterministic names within CloudWatch's
//! 255 characters, the specs derived from the read models and settings, the plan that
//! turns what CloudWatch has into what it should have, and which state transitions (read from
//! DescribeAlarmHistory, or implied by DescribeAlarms) the log does not hold yet.

use super::config::CloudWatchSettings;
use super::mapping::{DEAD_LETTERS, PROJECTION_LAG, RUN_FAILURE_RATE};
use eventlog::catalogue::AlarmState;
use std::collections::HashMap;

pub const MAX_ALARM_NAME_LEN: usize = 255;
/// Longest idempotency key the log accepts.
const MAX_KEY_LEN: usize = eventlog::envelope::MAX_TAG_LEN;
pub const RUN_ALARM_PERIOD_S: i32 = 60;
pub const RUN_ALARM_EVALUATION_PERIODS: i32 = 10;

/// An alarm as it should be.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSpec {
    pub name: String,
    pub description: String,
    pub metric_name: String,
    pub dimensions: Vec<(String, String)>,
    pub statistic: &'static str,
    pub period: i32,
    pub evaluation_periods: i32,
    pub threshold: f64,
    pub comparison: &'static str,
    pub treat_missing_data: &'static str,
}

/// An alarm as CloudWatch has it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingAlarm {
    pub spec: AlarmSpec,
    pub state: Option<AlarmState>,
    pub state_reason: String,
    pub state_updated_ms: Option<i64>,
}

/// The last state change the log holds for one alarm: its new state and transition time
/// (the event's `occurred_at`; `None` if that did not parse).
pub type RecordedState = (AlarmState, Option<i64>);

/// One state transition of an alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTransition {
    /// When it happened, in milliseconds since the epoch: the idempotency key's timestamp.
    pub at_ms: i64,
    pub old_state: AlarmState,
    pub new_state: AlarmState,
    pub reason: String,
}

pub fn parse_alarm_state(s: &str) -> Option<AlarmState> {
    match s {
        "OK" => Some(AlarmState::Ok),
        "ALARM" => Some(AlarmState::Alarm),
        "INSUFFICIENT_DATA" => Some(AlarmState::InsufficientData),
        _ => None,
    }
}

/// The transition a `StateUpdate` history item describes, from its `HistoryData` JSON
/// (`{"oldState": {"stateValue"}, "newState": {"stateValue", "stateReason"}}`) and its
/// timestamp. `None` when the JSON does not say both states.
pub fn parse_state_update(history_data: &str, at_ms: i64) -> Option<StateTransition> {
    let data: serde_json::Value = serde_json::from_str(history_data).ok()?;
    let state = |side: &str| {
        data.get(side)?
            .get("stateValue")?
            .as_str()
            .and_then(parse_alarm_state)
    };
    Some(StateTransition {
        at_ms,
        old_state: state("oldState")?,
        new_state: state("newState")?,
        reason: data["newState"]["stateReason"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// The history transitions the log does not hold yet, oldest first: those after the last
/// recorded transition time (all of them when nothing is recorded). The sort is stable, so
/// items an emulator returns in one millisecond keep their order.
pub fn unrecorded_transitions(
    recorded: Option<RecordedState>,
    mut history: Vec<StateTransition>,
) -> Vec<StateTransition> {
    let since = recorded.and_then(|(_, at)| at);
    history.retain(|t| t.old_state != t.new_state && since.is_none_or(|s| t.at_ms > s));
    history.sort_by_key(|t| t.at_ms);
    history
}

/// The transition DescribeAlarms implies for `alarm` beyond `recorded`: its listed state when
/// that differs from the last recorded one. When history was read (`history_read`), a listed
/// state no newer than the last recorded transition is already covered by it (history was
/// read after the listing) and implies nothing.
pub fn listed_transition(
    alarm: &ExistingAlarm,
    recorded: Option<RecordedState>,
    history_read: bool,
    now_ms: i64,
) -> Option<StateTransition> {
    let new_state = alarm.state?;
    // A new alarm starts in INSUFFICIENT_DATA; that is not a change.
    let old_state = recorded.map_or(AlarmState::InsufficientData, |(s, _)| s);
    if new_state == old_state {
        return None;
    }
    let at_ms = alarm.state_updated_ms.unwrap_or(now_ms);
    if history_read && recorded.and_then(|(_, at)| at).is_some_and(|r| at_ms <= r) {
        return None;
    }
    Some(StateTransition {
        at_ms,
        old_state,
        new_state,
        reason: alarm.state_reason.clone(),
    })
}

/// 64-bit FNV-1a: a stable short fingerprint for names that must be cut.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `s` cut to `max` bytes with a fingerprint of the whole, so distinct long inputs stay distinct.
fn fit_name(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let tail = format!("-{:016x}", fnv1a(s));
    let keep = super::log_batch::truncate_utf8(s, max - tail.len());
    format!("{keep}{tail}")
}

/// The failure-rate alarm of one run: `<prefix>load-test-failure-rate-<run_id>`, at most 255
/// characters.
pub fn run_alarm_name(settings: &CloudWatchSettings, run_id: &str) -> String {
    fit_name(
        &format!("{}load-test-failure-rate-{run_id}", settings.alarm_prefix),
        MAX_ALARM_NAME_LEN,
    )
}

pub fn projection_lag_alarm_name(settings: &CloudWatchSettings) -> String {
    fit_name(
        &format!("{}projection-lag", settings.alarm_prefix),
        MAX_ALARM_NAME_LEN,
    )
}

pub fn dead_letters_alarm_name(settings: &CloudWatchSettings) -> String {
    fit_name(
        &format!("{}dead-letters", settings.alarm_prefix),
        MAX_ALARM_NAME_LEN,
    )
}

/// The idempotency key of one state change: alarm name and transition time (DescribeAlarms'
/// `StateUpdatedTimestamp`, or the `StateUpdate` history item's `Timestamp`).
pub fn state_change_key(alarm_name: &str, state_updated_ms: i64) -> String {
    fit_name(
        &format!("cloudwatch-alarm:{alarm_name}@{state_updated_ms}"),
        MAX_KEY_LEN,
    )
}

/// The alarms there should be, given the running load tests `(run_id, max_failure_rate)`.
pub fn desired_alarms(settings: &CloudWatchSettings, running: &[(String, f64)]) -> Vec<AlarmSpec> {
    let mut out: Vec<AlarmSpec> = running
        .iter()
        .map(|(run_id, max_failure_rate)| AlarmSpec {
            name: run_alarm_name(settings, run_id),
            description: format!(
                "Load test {run_id}: failure rate above {:.1}% for {RUN_ALARM_EVALUATION_PERIODS} one-minute periods (its stop condition). \
                 Cancel it: POST /admin/studio/load-test-runs/{run_id}/cancel {{\"reason\": \"...\"}}.",
                max_failure_rate * 100.0
            ),
            metric_name: RUN_FAILURE_RATE.into(),
            dimensions: vec![("RunId".into(), run_id.clone())],
            statistic: "Average",
            period: RUN_ALARM_PERIOD_S,
            evaluation_periods: RUN_ALARM_EVALUATION_PERIODS,
            threshold: *max_failure_rate,
            comparison: "GreaterThanThreshold",
            // No dispatch in a minute says nothing about failures.
            treat_missing_data: "notBreaching",
        })
        .collect();
    out.push(AlarmSpec {
        name: projection_lag_alarm_name(settings),
        description: format!(
            "A projection is more than {} events behind the log head for {} minutes: see GET /admin/studio/observability/projections.",
            settings.projection_lag_threshold, settings.projection_lag_periods
        ),
        metric_name: PROJECTION_LAG.into(),
        dimensions: Vec::new(),
        statistic: "Maximum",
        period: 60,
        evaluation_periods: settings.projection_lag_periods.max(1),
        threshold: settings.projection_lag_threshold,
        comparison: "GreaterThanThreshold",
        treat_missing_data: "missing",
    });
    out.push(AlarmSpec {
        name: dead_letters_alarm_name(settings),
        description: "Events wait in dead letters: list them with `studio dead-letters` and replay once fixed.".into(),
        metric_name: DEAD_LETTERS.into(),
        dimensions: Vec::new(),
        statistic: "Maximum",
        period: 60,
        evaluation_periods: 1,
        threshold: settings.dead_letters_threshold,
        comparison: "GreaterThanThreshold",
        treat_missing_data: "missing",
    });
    out
}

/// What to put and what to delete so that `existing` becomes `desired`.
pub fn reconcile_plan(
    desired: &[AlarmSpec],
    existing: &[ExistingAlarm],
) -> (Vec<AlarmSpec>, Vec<String>) {
    let have: HashMap<&str, &AlarmSpec> = existing
        .iter()
        .map(|e| (e.spec.name.as_str(), &e.spec))
        .collect();
    let put = desired
        .iter()
        .filter(|d| have.get(d.name.as_str()).is_none_or(|h| !same_alarm(h, d)))
        .cloned()
        .collect();
    let delete = existing
        .iter()
        .filter(|e| !desired.iter().any(|d| d.name == e.spec.name))
        .map(|e| e.spec.name.clone())
        .collect();
    (put, delete)
}

/// Equal in what CloudWatch evaluates (descriptions aside).
fn same_alarm(a: &AlarmSpec, b: &AlarmSpec) -> bool {
    a.metric_name == b.metric_name
        && a.dimensions == b.dimensions
        && a.statistic == b.statistic
        && a.period == b.period
        && a.evaluation_periods == b.evaluation_periods
        && (a.threshold - b.threshold).abs() < 1e-9
        && a.comparison == b.comparison
        && a.treat_missing_data == b.treat_missing_data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CloudWatchSettings {
        CloudWatchSettings::default()
    }

    fn existing_of(spec: &AlarmSpec) -> ExistingAlarm {
        ExistingAlarm {
            spec: spec.clone(),
            state: Some(AlarmState::Ok),
            state_reason: String::new(),
            state_updated_ms: Some(1),
        }
    }

    #[test]
    fn a_running_run_gets_a_failure_rate_alarm_at_its_stop_condition_over_ten_minutes() {
        let alarms = desired_alarms(&settings(), &[("lt_42".into(), 0.2)]);
        let run = &alarms[0];
        assert_eq!(run.name, "studio-load-test-failure-rate-lt_42");
        assert_eq!(run.metric_name, "RunFailureRate");
        assert_eq!(
            run.dimensions,
            vec![("RunId".to_string(), "lt_42".to_string())]
        );
        assert_eq!((run.period, run.evaluation_periods), (60, 10));
        assert_eq!(run.threshold, 0.2);
        assert_eq!(run.statistic, "Average");
        assert_eq!(run.comparison, "GreaterThanThreshold");
        let names: Vec<&str> = alarms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "studio-load-test-failure-rate-lt_42",
                "studio-projection-lag",
                "studio-dead-letters"
            ]
        );
    }

    #[test]
    fn names_stay_within_255_characters_and_distinct() {
        let long_a = format!("lt_{}a", "x".repeat(300));
        let long_b = format!("lt_{}b", "x".repeat(300));
        let a = run_alarm_name(&settings(), &long_a);
        let b = run_alarm_name(&settings(), &long_b);
        assert_eq!(a.len(), MAX_ALARM_NAME_LEN);
        assert_eq!(b.len(), MAX_ALARM_NAME_LEN);
        assert_ne!(a, b);
        assert_eq!(a, run_alarm_name(&settings(), &long_a), "deterministic");
        let key = state_change_key(&a, 1_764_000_000_000);
        assert!(key.len() <= MAX_KEY_LEN);
        assert_ne!(key, state_change_key(&a, 1_764_000_000_001));
    }

    fn flip(at_ms: i64, old_state: AlarmState, new_state: AlarmState) -> StateTransition {
        StateTransition {
            at_ms,
            old_state,
            new_state,
            reason: format!("r{at_ms}"),
        }
    }

    #[test]
    fn a_state_update_history_item_parses_into_a_transition() {
        let data = r#"{"version": "1.0", "oldState": {"stateValue": "OK", "stateReason": "fine"},
            "newState": {"stateValue": "ALARM", "stateReason": "Threshold Crossed", "stateReasonData": null}}"#;
        assert_eq!(
            parse_state_update(data, 7),
            Some(StateTransition {
                at_ms: 7,
                old_state: AlarmState::Ok,
                new_state: AlarmState::Alarm,
                reason: "Threshold Crossed".into(),
            })
        );
        assert_eq!(
            parse_state_update(r#"{"newState": {"stateValue": "OK"}}"#, 7),
            None
        );
        assert_eq!(parse_state_update("not json", 7), None);
    }

    #[test]
    fn only_transitions_after_the_last_recorded_one_are_unrecorded_oldest_first() {
        use AlarmState::{Alarm, InsufficientData, Ok};
        let history = vec![
            flip(40, Alarm, Ok),
            flip(10, InsufficientData, Ok),
            flip(50, Ok, Alarm),
            flip(20, Ok, Alarm),
        ];
        let all = unrecorded_transitions(None, history.clone());
        let at: Vec<i64> = all.iter().map(|t| t.at_ms).collect();
        assert_eq!(at, vec![10, 20, 40, 50]);
        let after = unrecorded_transitions(Some((Alarm, Some(20))), history.clone());
        let at: Vec<i64> = after.iter().map(|t| t.at_ms).collect();
        assert_eq!(at, vec![40, 50]);
        assert!(unrecorded_transitions(Some((Alarm, Some(50))), history).is_empty());
    }

    #[test]
    fn the_listed_state_adds_a_transition_only_when_history_has_not_covered_it() {
        let spec = desired_alarms(&settings(), &[]).remove(0);
        let listed = ExistingAlarm {
            state: Some(AlarmState::Alarm),
            state_reason: "crossed".into(),
            state_updated_ms: Some(100),
            ..existing_of(&spec)
        };
        // Without history (unreadable): any change from the recorded state.
        let t = listed_transition(&listed, Some((AlarmState::Ok, Some(150))), false, 0);
        assert_eq!(
            t.map(|t| (t.old_state, t.at_ms)),
            Some((AlarmState::Ok, 100))
        );
        // With history: only a listing newer than what history recorded.
        assert_eq!(
            listed_transition(&listed, Some((AlarmState::Ok, Some(150))), true, 0),
            None
        );
        assert!(listed_transition(&listed, Some((AlarmState::Ok, Some(90))), true, 0).is_some());
        assert_eq!(
            listed_transition(&listed, Some((AlarmState::Alarm, Some(90))), false, 0),
            None
        );
        // A new alarm in INSUFFICIENT_DATA is no change.
        let fresh = ExistingAlarm {
            state: Some(AlarmState::InsufficientData),
            ..listed
        };
        assert_eq!(listed_transition(&fresh, None, false, 0), None);
    }

    #[test]
    fn reconciling_puts_missing_and_changed_alarms_and_deletes_those_of_ended_runs() {
        let s = settings();
        let before = desired_alarms(&s, &[("lt_a".into(), 0.2), ("lt_b".into(), 0.2)]);
        let existing: Vec<ExistingAlarm> = before.iter().map(existing_of).collect();
        // lt_a ended, lt_b's threshold changed, lt_c started.
        let after = desired_alarms(&s, &[("lt_b".into(), 0.1), ("lt_c".into(), 0.3)]);
        let (put, delete) = reconcile_plan(&after, &existing);
        let put: Vec<&str> = put.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            put,
            vec![
                "studio-load-test-failure-rate-lt_b",
                "studio-load-test-failure-rate-lt_c"
            ]
        );
        assert_eq!(
            delete,
            vec!["studio-load-test-failure-rate-lt_a".to_string()]
        );
        // Nothing to do once CloudWatch matches.
        let now: Vec<ExistingAlarm> = after.iter().map(existing_of).collect();
        assert_eq!(reconcile_plan(&after, &now), (vec![], vec![]));
    }
}
