//! The alarms there should be, as pure functions: deterministic names within CloudWatch's
//! 255 characters, the specs derived from the read models and settings, and the plan that
//! turns what CloudWatch has into what it should have.

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

/// The idempotency key of one state change: alarm name and state-update time.
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
