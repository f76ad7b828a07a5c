//! `cloudwatch_alarms`: alarms reconciled from the read models, and their state changes read
//! back into the log.
//!
//! Every tick it works out the alarms there should be — one failure-rate alarm per running
//! load test (threshold: the run's `max_failure_rate`, 10 one-minute periods: the seed's "20 %
//! for 10 minutes"), one on projection lag, one on dead letters — lists the alarms under its
//! prefix, puts the missing or changed ones and deletes the rest (runs that ended). Names are
//! deterministic, so any instance that takes the sink over reconciles to the same set, and
//! calls are paced to a few per second because CloudWatch throttles its control plane.
//!
//! Then it closes the loop: every state transition of a listed alarm that the log (stream
//! `ops-<alarm>`) does not hold yet is appended as `ops.alarm_state_changed`, oldest first —
//! critical on `ALARM`, which the action-log writer turns into an action log. The idempotency
//! key is the alarm name and the transition time, so a restart, a second instance or a
//! repeated tick never appends the same change twice.
//!
//! **DescribeAlarmHistory is authoritative** for which transitions happened: it keeps every
//! `StateUpdate` (ALARM, then OK, then ALARM again between two ticks are three items), while
//! DescribeAlarms only shows the state at the moment of the listing, so an alarm that fires
//! and recovers within one tick interval would never page from it. DescribeAlarms stays as
//! the fallback when history cannot be read (any error; the tick goes on without it), and as
//! a consistency check when it can: a listed state that differs from the last recorded one
//! and is newer than every transition history gave is appended too, so a history that lags
//! the listing loses nothing. Both sources key a transition by the same instant on CloudWatch
//! (a `StateUpdate` item's `Timestamp` is the alarm's `StateUpdatedTimestamp` of that change);
//! and the cursor (the last recorded transition's time) keeps either source from appending
//! what the other already did.
//!
//! Emulator notes (LocalStack 4.13.1): DescribeAlarmHistory records SetAlarmState and
//! evaluation changes but ignores `HistoryItemType`, `ScanBy`, `MaxRecords` and pagination (one
//! page, oldest first), and answers a 500 to any `StartDate`; so history is read newest first
//! without `StartDate`, paginated until it reaches the last recorded transition, and filtered,
//! sorted and cut client-side. Its item `Timestamp` is the time the *old* state began, not the
//! time of the change, so there the two sources key one transition differently; the cursor
//! still keeps them from duplicating it.

pub use super::alarms::{
    dead_letters_alarm_name, desired_alarms, listed_transition, parse_alarm_state,
    parse_state_update, projection_lag_alarm_name, reconcile_plan, run_alarm_name,
    state_change_key, unrecorded_transitions, AlarmSpec, ExistingAlarm, RecordedState,
    StateTransition, MAX_ALARM_NAME_LEN, RUN_ALARM_EVALUATION_PERIODS, RUN_ALARM_PERIOD_S,
};
use super::config::{CloudWatchClients, CloudWatchSettings};
use super::mapping::{DEAD_LETTERS, PROJECTION_LAG, RUN_FAILURE_RATE};
use super::retry::{db_error, sink_error};
use crate::{MappingEntry, Sink, SinkError};
use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, HistoryItemType, MetricAlarm, ScanBy, Statistic,
};
use chrono::{TimeZone, Utc};
use eventlog::catalogue::AlarmStateChanged;
use eventlog::{EventLog, EventPayload, RecordedEvent, ValidatedEvent};
use projector::projections::load_tests::LoadTestRun;
use projector::query::Snapshot;
use projector::ReadDb;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::instrument;

pub const ALARM_SINK_NAME: &str = "cloudwatch_alarms";
/// Most alarm names one DeleteAlarms call takes.
const MAX_ALARMS_PER_DELETE: usize = 100;
/// Most items one DescribeAlarmHistory page returns.
const MAX_HISTORY_RECORDS: i32 = 100;
const PRODUCER: &str = "studio-sinks";

fn existing(alarm: &MetricAlarm) -> ExistingAlarm {
    let statistic = match alarm.statistic().map(|s| s.as_str()) {
        Some("Average") => "Average",
        Some("Maximum") => "Maximum",
        Some("Minimum") => "Minimum",
        Some("Sum") => "Sum",
        Some("SampleCount") => "SampleCount",
        _ => "",
    };
    let comparison = match alarm.comparison_operator().map(|c| c.as_str()) {
        Some("GreaterThanThreshold") => "GreaterThanThreshold",
        Some("GreaterThanOrEqualToThreshold") => "GreaterThanOrEqualToThreshold",
        Some("LessThanThreshold") => "LessThanThreshold",
        Some("LessThanOrEqualToThreshold") => "LessThanOrEqualToThreshold",
        _ => "",
    };
    let treat = match alarm.treat_missing_data() {
        Some("notBreaching") => "notBreaching",
        Some("breaching") => "breaching",
        Some("ignore") => "ignore",
        _ => "missing",
    };
    ExistingAlarm {
        spec: AlarmSpec {
            name: alarm.alarm_name().unwrap_or_default().to_string(),
            description: alarm.alarm_description().unwrap_or_default().to_string(),
            metric_name: alarm.metric_name().unwrap_or_default().to_string(),
            dimensions: alarm
                .dimensions()
                .iter()
                .map(|d| {
                    (
                        d.name().unwrap_or_default().to_string(),
                        d.value().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            statistic,
            period: alarm.period().unwrap_or(0),
            evaluation_periods: alarm.evaluation_periods().unwrap_or(0),
            threshold: alarm.threshold().unwrap_or(f64::NAN),
            comparison,
            treat_missing_data: treat,
        },
        state: alarm
            .state_value()
            .and_then(|s| parse_alarm_state(s.as_str())),
        state_reason: alarm.state_reason().unwrap_or_default().to_string(),
        state_updated_ms: alarm
            .state_updated_timestamp()
            .and_then(|t| t.to_millis().ok()),
    }
}

/// Spaces calls at least `gap` apart.
struct Pace {
    gap: Duration,
    /// When the last call went out; a tokio mutex because callers wait while holding it.
    last: Mutex<Option<Instant>>,
}

impl Pace {
    async fn wait(&self) {
        let mut last = self.last.lock().await;
        if let Some(at) = *last {
            tokio::time::sleep_until(at + self.gap).await;
        }
        *last = Some(Instant::now());
    }
}

pub struct CloudWatchAlarmSink {
    clients: CloudWatchClients,
    settings: CloudWatchSettings,
    db: ReadDb,
    log: Arc<dyn EventLog>,
    pace: Pace,
    /// Last transition recorded in the log per alarm (new state, transition time): the cursor
    /// history is read from. A tokio mutex: one tick at a time holds it across the appends it
    /// decides.
    recorded: Mutex<HashMap<String, RecordedState>>,
}

impl CloudWatchAlarmSink {
    pub fn new(
        clients: CloudWatchClients,
        settings: CloudWatchSettings,
        db: ReadDb,
        log: Arc<dyn EventLog>,
    ) -> Self {
        let per_second = settings.alarm_calls_per_second.max(1);
        Self {
            clients,
            pace: Pace {
                gap: Duration::from_millis(1_000 / u64::from(per_second)),
                last: Mutex::new(None),
            },
            settings,
            db,
            log,
            recorded: Mutex::new(HashMap::new()),
        }
    }

    /// Running load tests and their stop condition, from `load_test_runs`.
    async fn running_runs(&self) -> Result<Vec<(String, f64)>, SinkError> {
        let mut snapshot = Snapshot::open(&self.db, &["load_tests"])
            .await
            .map_err(|e| db_error("open a read snapshot", e))?;
        let runs: Vec<LoadTestRun> = snapshot
            .docs("status = $1", &["running".into()], "created_position")
            .await
            .map_err(|e| db_error("read load_test_runs", e))?;
        Ok(runs
            .into_iter()
            .map(|r| (r.run_id, r.stop_conditions.max_failure_rate))
            .collect())
    }

    /// Every alarm under this sink's prefix.
    pub async fn list_alarms(&self) -> Result<Vec<ExistingAlarm>, SinkError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.pace.wait().await;
            let page = self
                .clients
                .cloudwatch
                .describe_alarms()
                .alarm_name_prefix(&self.settings.alarm_prefix)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| sink_error("DescribeAlarms", &e))?;
            out.extend(page.metric_alarms().iter().map(existing));
            match page.next_token() {
                Some(t) if !t.is_empty() && Some(t) != token.as_deref() => {
                    token = Some(t.to_string())
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn put_alarm(&self, spec: &AlarmSpec) -> Result<(), SinkError> {
        self.pace.wait().await;
        let mut req = self
            .clients
            .cloudwatch
            .put_metric_alarm()
            .alarm_name(&spec.name)
            .alarm_description(&spec.description)
            .namespace(&self.settings.namespace)
            .metric_name(&spec.metric_name)
            .statistic(Statistic::from(spec.statistic))
            .period(spec.period)
            .evaluation_periods(spec.evaluation_periods)
            .threshold(spec.threshold)
            .comparison_operator(ComparisonOperator::from(spec.comparison))
            .treat_missing_data(spec.treat_missing_data);
        for (name, value) in &spec.dimensions {
            req = req.dimensions(Dimension::builder().name(name).value(value).build());
        }
        req.send()
            .await
            .map_err(|e| sink_error("PutMetricAlarm", &e))?;
        Ok(())
    }

    async fn delete_alarms(&self, names: &[String]) -> Result<(), SinkError> {
        for chunk in names.chunks(MAX_ALARMS_PER_DELETE) {
            self.pace.wait().await;
            self.clients
                .cloudwatch
                .delete_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| sink_error("DeleteAlarms", &e))?;
        }
        Ok(())
    }

    /// Puts and deletes alarms until CloudWatch matches the read models. Returns the alarms
    /// as listed before the changes.
    #[instrument(skip_all, fields(sink = ALARM_SINK_NAME), err)]
    pub async fn reconcile(&self) -> Result<Vec<ExistingAlarm>, SinkError> {
        let running = self.running_runs().await?;
        let desired = desired_alarms(&self.settings, &running);
        let existing = self.list_alarms().await?;
        let (put, delete) = reconcile_plan(&desired, &existing);
        for spec in &put {
            self.put_alarm(spec).await?;
        }
        self.delete_alarms(&delete).await?;
        if !put.is_empty() || !delete.is_empty() {
            tracing::info!(put = put.len(), deleted = delete.len(), "alarms reconciled");
        }
        Ok(existing)
    }

    /// The last state the log holds for `alarm`, read from its `ops-<alarm>` stream.
    async fn last_recorded(&self, alarm: &str) -> Result<Option<RecordedState>, SinkError> {
        let stream = format!("ops-{alarm}");
        let version = self
            .log
            .stream_version(&stream)
            .await
            .map_err(|e| db_error("read an alarm stream", e))?;
        if version == 0 {
            return Ok(None);
        }
        let last = self
            .log
            .read_stream(&stream, version - 1, 1)
            .await
            .map_err(|e| db_error("read an alarm stream", e))?;
        Ok(last.first().and_then(|e| match e.typed() {
            Ok(EventPayload::AlarmStateChanged(p)) => Some((
                p.new_state,
                chrono::DateTime::parse_from_rfc3339(&e.occurred_at)
                    .ok()
                    .map(|t| t.timestamp_millis()),
            )),
            _ => None,
        }))
    }

    /// The `StateUpdate` transitions of `alarm` from DescribeAlarmHistory, back to the first
    /// at or before `since_ms` (all of them without it), in no particular order.
    ///
    /// Read newest first and without `StartDate` (LocalStack 4.13.1 answers a 500 to it):
    /// paging stops at the page that reaches `since_ms`, so a tick usually costs one call per
    /// alarm. Item type and alarm name are checked here too, since the emulator ignores the
    /// filter.
    #[instrument(skip_all, fields(sink = ALARM_SINK_NAME, alarm), err)]
    pub async fn state_history(
        &self,
        alarm: &str,
        since_ms: Option<i64>,
    ) -> Result<Vec<StateTransition>, SinkError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.pace.wait().await;
            let page = self
                .clients
                .cloudwatch
                .describe_alarm_history()
                .alarm_name(alarm)
                .history_item_type(HistoryItemType::StateUpdate)
                .scan_by(ScanBy::TimestampDescending)
                .max_records(MAX_HISTORY_RECORDS)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| sink_error("DescribeAlarmHistory", &e))?;
            let mut reached_since = false;
            for item in page.alarm_history_items() {
                if item.history_item_type() != Some(&HistoryItemType::StateUpdate)
                    || item.alarm_name().is_some_and(|n| n != alarm)
                {
                    continue;
                }
                let at_ms = item.timestamp().and_then(|t| t.to_millis().ok());
                let parsed = at_ms
                    .zip(item.history_data())
                    .and_then(|(at, data)| parse_state_update(data, at));
                let Some(transition) = parsed else {
                    tracing::warn!(
                        alarm,
                        summary = item.history_summary().unwrap_or_default(),
                        "unreadable alarm history item skipped"
                    );
                    continue;
                };
                reached_since |= since_ms.is_some_and(|s| transition.at_ms <= s);
                out.push(transition);
            }
            match page.next_token() {
                Some(t) if !reached_since && !t.is_empty() && Some(t) != token.as_deref() => {
                    token = Some(t.to_string())
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Appends `ops.alarm_state_changed` for every transition of the listed `alarms` the log
    /// does not hold yet, oldest first per alarm: from DescribeAlarmHistory, then whatever the
    /// listing adds (the whole of it when history cannot be read; see the module docs).
    /// Returns the events newly appended.
    #[instrument(skip_all, fields(sink = ALARM_SINK_NAME, alarms = alarms.len()), err)]
    pub async fn record_state_changes(
        &self,
        alarms: &[ExistingAlarm],
    ) -> Result<Vec<RecordedEvent>, SinkError> {
        let mut recorded = self.recorded.lock().await;
        let mut appended = Vec::new();
        // After one failure, the rest of this tick goes without history: an emulator without
        // it should cost one failed call per tick, not one per alarm.
        let mut history_readable = true;
        for alarm in alarms {
            let name = &alarm.spec.name;
            let mut cursor = match recorded.get(name) {
                Some(k) => Some(*k),
                None => self.last_recorded(name).await?,
            };
            let mut transitions = Vec::new();
            let mut history_read = false;
            if history_readable {
                match self
                    .state_history(name, cursor.and_then(|(_, at)| at))
                    .await
                {
                    Ok(history) => {
                        transitions = unrecorded_transitions(cursor, history);
                        history_read = true;
                    }
                    Err(e) => {
                        tracing::warn!(alarm = %name, error = %e, "alarm history unreadable; falling back to the listed states");
                        history_readable = false;
                    }
                }
            }
            let after_history = transitions
                .last()
                .map(|t| (t.new_state, Some(t.at_ms)))
                .or(cursor);
            let now_ms = Utc::now().timestamp_millis();
            transitions.extend(listed_transition(
                alarm,
                after_history,
                history_read,
                now_ms,
            ));
            for transition in transitions {
                appended.extend(self.append_transition(name, &transition).await?);
                cursor = Some((transition.new_state, Some(transition.at_ms)));
            }
            if let Some(c) = cursor {
                recorded.insert(name.clone(), c);
            }
        }
        Ok(appended)
    }

    /// Appends one transition as `ops.alarm_state_changed`, keyed by alarm name and transition
    /// time. Returns the event when it is new (not when an earlier read already appended it).
    async fn append_transition(
        &self,
        name: &str,
        transition: &StateTransition,
    ) -> Result<Option<RecordedEvent>, SinkError> {
        let payload = EventPayload::AlarmStateChanged(AlarmStateChanged {
            alarm_name: name.to_string(),
            old_state: transition.old_state,
            new_state: transition.new_state,
            reason: if transition.reason.is_empty() {
                "no reason given".into()
            } else {
                transition.reason.clone()
            },
        });
        payload.check().map_err(|e| {
            SinkError::Permanent(format!("ops.alarm_state_changed for {name}: {e}"))
        })?;
        let occurred_at = Utc
            .timestamp_millis_opt(transition.at_ms)
            .single()
            .unwrap_or_else(Utc::now);
        let event = ValidatedEvent::from_payload(&payload, PRODUCER, occurred_at)
            .with_idempotency_key(state_change_key(name, transition.at_ms));
        let answer = self
            .log
            .append(vec![event])
            .await
            .map_err(|e| db_error("append ops.alarm_state_changed", e))?;
        Ok(answer
            .into_iter()
            .find(|a| a.is_new())
            .map(|a| a.into_event()))
    }
}

#[async_trait]
impl Sink for CloudWatchAlarmSink {
    fn name(&self) -> &'static str {
        ALARM_SINK_NAME
    }

    /// Alarms follow the read models on every tick; no event needs delivering.
    fn wants(&self, _event: &RecordedEvent) -> bool {
        false
    }

    async fn deliver(&self, _events: &[RecordedEvent]) -> Result<(), SinkError> {
        Ok(())
    }

    async fn tick(&self) -> Result<(), SinkError> {
        let before = self.reconcile().await?;
        // States are read from the listing made before this tick's changes: an alarm just
        // created has nothing to report yet, one just deleted had its last word recorded.
        self.record_state_changes(&before).await?;
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.settings.tick_interval())
    }

    fn mapping(&self) -> Vec<MappingEntry> {
        alarm_mapping(&self.settings)
    }
}

/// What the alarm sink watches and what it appends.
pub fn alarm_mapping(settings: &CloudWatchSettings) -> Vec<MappingEntry> {
    let entry = |event: &str, target: String| MappingEntry {
        event: event.into(),
        destination: "alarm".into(),
        target,
    };
    vec![
        entry(
            "load_test.run_started",
            format!(
                "{}load-test-failure-rate-<run_id> ({RUN_FAILURE_RATE}[RunId] Average > max_failure_rate, {RUN_ALARM_EVALUATION_PERIODS}×{RUN_ALARM_PERIOD_S}s)",
                settings.alarm_prefix
            ),
        ),
        entry(
            "load_test.run_completed",
            format!("{}load-test-failure-rate-<run_id> deleted", settings.alarm_prefix),
        ),
        entry(
            "load_test.run_cancelled",
            format!("{}load-test-failure-rate-<run_id> deleted", settings.alarm_prefix),
        ),
        entry(
            "tick:projection_checkpoints",
            format!(
                "{} ({PROJECTION_LAG} Maximum > {})",
                projection_lag_alarm_name(settings),
                settings.projection_lag_threshold
            ),
        ),
        entry(
            "tick:dead_letters",
            format!(
                "{} ({DEAD_LETTERS} Maximum > {})",
                dead_letters_alarm_name(settings),
                settings.dead_letters_threshold
            ),
        ),
        MappingEntry {
            event: "alarm state change".into(),
            destination: "log".into(),
            target: "ops.alarm_state_changed (critical on ALARM)".into(),
        },
    ]
}
