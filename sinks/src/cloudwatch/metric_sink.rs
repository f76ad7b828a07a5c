//! `cloudwatch_metrics`: pipeline metrics in `Studio/Pipeline` ([`super::mapping::METRICS`]).
//!
//! Delivered events become per-minute data (dispatches, failures, latency distributions, the
//! per-run failure rate, warn/critical events by severity); every tick reads the health of the
//! pipeline from the database (projection and sink lag against the log head, dead letters)
//! and publishes it as gauges, which the lag and dead-letter alarms watch.
//!
//! Metrics are sums: a batch delivered twice would count twice. A retry of a batch in this
//! process skips the calls an earlier attempt already made (the planning is deterministic, so
//! the same batch gives the same calls); a crash between a call and the runner's checkpoint
//! can still count a batch twice, which a metric tolerates far better than a lost alarm.

use super::config::{CloudWatchClients, CloudWatchSettings};
use super::mapping::{
    metric_mapping, ACTION_LOGS, DEAD_LETTERS, DISPATCHES, DISPATCH_EVENTS, DISPATCH_FAILURES,
    DISPATCH_LATENCY, PROJECTION_LAG, RUN_FAILURE_RATE, SINK_LAG,
};
use super::metric_batch::{plan_metric_batches, MetricAggregator, MetricDatumSpec};
use super::retry::{db_error, sink_error};
use crate::{MappingEntry, Sink, SinkError};
use async_trait::async_trait;
use aws_sdk_cloudwatch::primitives::DateTime as AwsDateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use chrono::{DateTime, Utc};
use eventlog::catalogue::Outcome;
use eventlog::{EventLog, EventPayload, RecordedEvent, Severity};
use projector::ReadDb;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::instrument;

pub const METRIC_SINK_NAME: &str = "cloudwatch_metrics";
/// Fingerprints of calls made, remembered for retries within this process.
const REMEMBERED_CALLS: usize = 10_000;

pub struct CloudWatchMetricSink {
    clients: CloudWatchClients,
    settings: CloudWatchSettings,
    db: ReadDb,
    log: Arc<dyn EventLog>,
    /// Calls already made (fingerprints). A std mutex: never held across an await.
    sent: Mutex<(HashSet<u64>, VecDeque<u64>)>,
}

fn millis(rfc3339: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
}

/// Folds one event into `agg` per the mapping. Pure: the sink's `deliver` is this plus I/O.
pub fn fold_event(agg: &mut MetricAggregator, event: &RecordedEvent, now_ms: i64) {
    let Ok(payload) = event.typed() else {
        return;
    };
    let ts = millis(&event.occurred_at)
        .or_else(|| millis(&event.recorded_at))
        .unwrap_or(now_ms);
    let dispatch = match &payload {
        EventPayload::LoadDispatchCompleted(p) => {
            Some(("load_test", p.run_id.as_str(), p.outcome, p.latency_ms))
        }
        EventPayload::BenchmarkDispatchCompleted(p) => Some((
            "benchmark",
            p.benchmark_run_id.as_str(),
            p.outcome,
            p.latency_ms,
        )),
        _ => None,
    };
    if let Some((source, run, outcome, latency_ms)) = dispatch {
        let failed = if outcome == Outcome::Succeeded {
            0.0
        } else {
            1.0
        };
        for dims in [
            &[("Source", source)][..],
            &[("Source", source), ("RunId", run)][..],
        ] {
            agg.count(DISPATCHES, dims, "Count", ts, 1.0);
            agg.count(DISPATCH_FAILURES, dims, "Count", ts, failed);
            agg.observe(DISPATCH_LATENCY, dims, "Milliseconds", ts, latency_ms);
        }
        if source == "load_test" {
            agg.observe(RUN_FAILURE_RATE, &[("RunId", run)], "None", ts, failed);
        }
    }
    let severity = payload.severity();
    if severity >= Severity::Warn {
        agg.count(
            ACTION_LOGS,
            &[("Severity", severity.as_str())],
            "Count",
            ts,
            1.0,
        );
    }
}

pub(crate) fn to_sdk(d: &MetricDatumSpec) -> MetricDatum {
    let mut b = MetricDatum::builder()
        .metric_name(&d.name)
        .timestamp(AwsDateTime::from_millis(d.timestamp_ms))
        .unit(StandardUnit::from(d.unit));
    for (name, value) in &d.dimensions {
        b = b.dimensions(Dimension::builder().name(name).value(value).build());
    }
    match d.value {
        Some(v) => b = b.value(v),
        None => {
            b = b
                .set_values(Some(d.values.clone()))
                .set_counts(Some(d.counts.clone()))
        }
    }
    b.build()
}

/// The pipeline's health as the database tells it: lag of every projection and sink behind
/// the log head, and dead letters waiting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineHealth {
    pub head: i64,
    pub projection_lag: Vec<(String, i64)>,
    pub sink_lag: Vec<(String, i64)>,
    pub projection_dead_letters: i64,
    pub sink_dead_letters: i64,
}

async fn table_exists(db: &ReadDb, table: &str) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin_read().await?;
    let exists = projector::checkpoint::table_exists(&mut tx, table).await?;
    tx.commit().await?;
    Ok(exists)
}

/// Reads [`PipelineHealth`]. Sink tables are read when present (they come with the sinks'
/// migration).
pub async fn pipeline_health(db: &ReadDb, log: &dyn EventLog) -> Result<PipelineHealth, SinkError> {
    let head = log
        .head()
        .await
        .map_err(|e| db_error("read the log head", e))?;
    let positions = projector::checkpoint::positions(db)
        .await
        .map_err(|e| db_error("read projection checkpoints", e))?;
    let mut projection_lag: Vec<(String, i64)> = projector::all_projections()
        .iter()
        .map(|p| {
            let at = positions.get(p.name()).copied().unwrap_or(0);
            (p.name().to_string(), (head - at).max(0))
        })
        .collect();
    projection_lag.sort();
    let projection_dead_letters = projector::checkpoint::dead_letter_counts(db)
        .await
        .map_err(|e| db_error("count projection dead letters", e))?
        .values()
        .sum();
    let mut sink_lag = Vec::new();
    let mut sink_dead_letters = 0;
    if table_exists(db, "sink_checkpoints")
        .await
        .map_err(|e| db_error("look for sink_checkpoints", e))?
    {
        let rows: Vec<(String, i64)> = projector::on_db!(db, pool =>
            sqlx::query_as("SELECT sink, position FROM sink_checkpoints ORDER BY sink")
                .fetch_all(pool)
                .await)
        .map_err(|e| db_error("read sink checkpoints", e))?;
        sink_lag = rows
            .into_iter()
            .map(|(sink, at)| (sink, (head - at).max(0)))
            .collect();
    }
    if table_exists(db, "sink_dead_letters")
        .await
        .map_err(|e| db_error("look for sink_dead_letters", e))?
    {
        sink_dead_letters = crate::checkpoint::dead_letter_counts(db)
            .await
            .map_err(|e| db_error("count sink dead letters", e))?
            .values()
            .sum();
    }
    Ok(PipelineHealth {
        head,
        projection_lag,
        sink_lag,
        projection_dead_letters,
        sink_dead_letters,
    })
}

/// Folds a health reading into gauges at `now_ms`.
pub fn fold_health(agg: &mut MetricAggregator, health: &PipelineHealth, now_ms: i64) {
    for (projection, lag) in &health.projection_lag {
        agg.gauge(
            PROJECTION_LAG,
            &[("Projection", projection)],
            "Count",
            now_ms,
            *lag as f64,
        );
    }
    let max_lag = health
        .projection_lag
        .iter()
        .map(|(_, l)| *l)
        .max()
        .unwrap_or(0);
    agg.gauge(PROJECTION_LAG, &[], "Count", now_ms, max_lag as f64);
    for (sink, lag) in &health.sink_lag {
        agg.gauge(SINK_LAG, &[("Sink", sink)], "Count", now_ms, *lag as f64);
    }
    agg.gauge(
        DEAD_LETTERS,
        &[("Kind", "projection")],
        "Count",
        now_ms,
        health.projection_dead_letters as f64,
    );
    agg.gauge(
        DEAD_LETTERS,
        &[("Kind", "sink")],
        "Count",
        now_ms,
        health.sink_dead_letters as f64,
    );
    agg.gauge(
        DEAD_LETTERS,
        &[],
        "Count",
        now_ms,
        (health.projection_dead_letters + health.sink_dead_letters) as f64,
    );
}

impl CloudWatchMetricSink {
    /// `db` is the read side on the log's database; `log` answers the head for lag.
    pub fn new(
        clients: CloudWatchClients,
        settings: CloudWatchSettings,
        db: ReadDb,
        log: Arc<dyn EventLog>,
    ) -> Self {
        Self {
            clients,
            settings,
            db,
            log,
            sent: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// Sends `agg`'s data, skipping calls this process already made.
    async fn publish(&self, agg: MetricAggregator) -> Result<(), SinkError> {
        if agg.is_empty() {
            return Ok(());
        }
        let batches = plan_metric_batches(agg.into_data()).map_err(SinkError::Permanent)?;
        for batch in batches {
            let mut h = DefaultHasher::new();
            format!("{batch:?}").hash(&mut h);
            let fingerprint = h.finish();
            if self
                .sent
                .lock()
                .expect("sent lock")
                .0
                .contains(&fingerprint)
            {
                continue;
            }
            self.clients
                .cloudwatch
                .put_metric_data()
                .namespace(&self.settings.namespace)
                .set_metric_data(Some(batch.iter().map(to_sdk).collect()))
                .send()
                .await
                .map_err(|e| sink_error("PutMetricData", &e))?;
            let mut sent = self.sent.lock().expect("sent lock");
            if sent.0.insert(fingerprint) {
                sent.1.push_back(fingerprint);
                while sent.1.len() > REMEMBERED_CALLS {
                    if let Some(old) = sent.1.pop_front() {
                        sent.0.remove(&old);
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for CloudWatchMetricSink {
    fn name(&self) -> &'static str {
        METRIC_SINK_NAME
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        DISPATCH_EVENTS.contains(&event.event_type.as_str())
            || event.typed().is_ok_and(|p| p.severity() >= Severity::Warn)
    }

    #[instrument(skip_all, fields(sink = METRIC_SINK_NAME, events = events.len()), err)]
    async fn deliver(&self, events: &[RecordedEvent]) -> Result<(), SinkError> {
        let now_ms = Utc::now().timestamp_millis();
        let mut agg = MetricAggregator::new(now_ms);
        for event in events {
            fold_event(&mut agg, event, now_ms);
        }
        self.publish(agg).await
    }

    #[instrument(skip_all, fields(sink = METRIC_SINK_NAME), err)]
    async fn tick(&self) -> Result<(), SinkError> {
        let health = pipeline_health(&self.db, self.log.as_ref()).await?;
        let now_ms = Utc::now().timestamp_millis();
        let mut agg = MetricAggregator::new(now_ms);
        fold_health(&mut agg, &health, now_ms);
        // Gauges carry the tick's own instant: two ticks never make the same call.
        self.publish(agg).await
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.settings.tick_interval())
    }

    fn mapping(&self) -> Vec<MappingEntry> {
        metric_mapping(&self.settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorded(event_type: &str, payload: serde_json::Value) -> RecordedEvent {
        RecordedEvent {
            position: 1,
            event_id: uuid::Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version: 1,
            stream: "s".into(),
            stream_version: 1,
            idempotency_key: None,
            correlation_id: None,
            causation_id: None,
            producer: None,
            occurred_at: "2026-11-25T10:00:30Z".into(),
            recorded_at: "2026-11-25T10:00:31Z".into(),
            payload,
        }
    }

    fn dispatch(outcome: &str, latency: f64) -> RecordedEvent {
        recorded(
            "load_test.dispatch_completed",
            json!({"run_id": "lt_1", "dispatch_id": "studio_load_test_lt_1_1_x", "outcome": outcome,
                   "latency_ms": latency, "service_time_ms": null, "cost_usd": null}),
        )
    }

    #[test]
    fn load_test_dispatches_become_counts_failures_latency_and_the_run_failure_rate() {
        let now = millis("2026-11-25T10:05:00Z").unwrap();
        let mut agg = MetricAggregator::new(now);
        for e in [
            dispatch("succeeded", 120.0),
            dispatch("failed", 900.0),
            dispatch("timed_out", 30_000.0),
        ] {
            fold_event(&mut agg, &e, now);
        }
        let data = agg.into_data();
        let find = |name: &str, dims: usize| {
            data.iter()
                .find(|d| d.name == name && d.dimensions.len() == dims)
                .unwrap_or_else(|| panic!("{name} with {dims} dimensions in {data:#?}"))
        };
        let minute = millis("2026-11-25T10:00:00Z").unwrap();
        let per_run = data
            .iter()
            .find(|d| d.name == DISPATCHES && d.dimensions.len() == 2)
            .unwrap();
        assert_eq!(per_run.value, Some(3.0));
        assert_eq!(per_run.timestamp_ms, minute);
        assert_eq!(
            per_run.dimensions,
            vec![
                ("Source".into(), "load_test".into()),
                ("RunId".into(), "lt_1".into())
            ]
        );
        assert_eq!(find(DISPATCH_FAILURES, 1).value, Some(2.0));
        let rate = find(RUN_FAILURE_RATE, 1);
        assert_eq!(rate.values, vec![0.0, 1.0]);
        assert_eq!(rate.counts, vec![1.0, 2.0]);
        let latency = find(DISPATCH_LATENCY, 1);
        assert_eq!(latency.values, vec![120.0, 900.0, 30_000.0]);
    }

    #[test]
    fn warn_and_critical_events_count_by_severity_and_info_does_not() {
        let now = millis("2026-11-25T10:05:00Z").unwrap();
        let mut agg = MetricAggregator::new(now);
        let cancelled = recorded(
            "load_test.run_cancelled",
            json!({"run_id": "lt_1", "reason": "r", "actor": "a"}),
        );
        let breached = recorded(
            "load_test.stop_condition_breached",
            json!({"run_id": "lt_1", "failure_rate": 0.5, "window_s": 600}),
        );
        let done = recorded("load_test.run_completed", json!({"run_id": "lt_1"}));
        for e in [&cancelled, &breached, &done] {
            fold_event(&mut agg, e, now);
        }
        let data = agg.into_data();
        let got: Vec<(String, f64)> = data
            .iter()
            .map(|d| (d.dimensions[0].1.clone(), d.value.unwrap()))
            .collect();
        assert_eq!(got, vec![("critical".into(), 1.0), ("warn".into(), 1.0)]);
    }

    #[test]
    fn health_becomes_per_projection_and_overall_gauges() {
        let mut agg = MetricAggregator::new(1_000_000);
        let health = PipelineHealth {
            head: 50,
            projection_lag: vec![("a".into(), 0), ("b".into(), 7)],
            sink_lag: vec![("cloudwatch_logs".into(), 3)],
            projection_dead_letters: 2,
            sink_dead_letters: 1,
        };
        fold_health(&mut agg, &health, 1_000_000);
        let data = agg.into_data();
        let value = |name: &str, dims: &[(&str, &str)]| {
            data.iter()
                .find(|d| {
                    d.name == name
                        && d.dimensions
                            == dims
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect::<Vec<_>>()
                })
                .and_then(|d| d.value)
        };
        assert_eq!(value(PROJECTION_LAG, &[]), Some(7.0));
        assert_eq!(value(PROJECTION_LAG, &[("Projection", "a")]), Some(0.0));
        assert_eq!(value(SINK_LAG, &[("Sink", "cloudwatch_logs")]), Some(3.0));
        assert_eq!(value(DEAD_LETTERS, &[]), Some(3.0));
        assert_eq!(value(DEAD_LETTERS, &[("Kind", "sink")]), Some(1.0));
    }
}
