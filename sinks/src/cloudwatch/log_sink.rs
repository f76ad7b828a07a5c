//! `cloudwatch_logs`: every action log as a JSON log event in `/studio/action-logs`.
//!
//! The sink runs after the action-log writer (`after() = "action_logs"`), so when it gets a
//! batch of events, the rows those events created or grouped into are already in the
//! `action_logs` table: it reads the rows whose `last_position` lies in the batch's position
//! range and puts each one, as the row reads now, as one log event. A row that a later event
//! grouped into again (`occurrences` raised) is put again with that later batch: the log
//! stream is the history of the action log, one line per change of its `last_position`.
//!
//! It wants every event, not only warn/critical ones: the runner hands over only wanted
//! events, and a filtered batch would leave holes in the position ranges, where a row written
//! for a health signal (stalled projection, dead letters) would never be read.
//!
//! Exactly once, as far as a log can be: a retry of the same batch in this process skips the
//! rows an earlier attempt already put (a batch split over several calls can fail half-way),
//! and every message carries `action_log_id` and `last_position`, the key a reader dedups on
//! after the one case nobody can decide (a call that timed out after CloudWatch stored it).

use super::config::{CloudWatchClients, CloudWatchSettings};
use super::log_batch::{
    fit_log_timestamp, plan_keyed_log_batches, truncate_utf8, LogRecord, MAX_LOG_EVENT_BYTES,
};
use super::retry::{db_error, sink_error};
use crate::{MappingEntry, Sink, SinkError};
use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use chrono::{DateTime, Utc};
use eventlog::RecordedEvent;
use projector::ReadDb;
use serde_json::{Map, Value};
use sqlx::{Column, Row};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tracing::instrument;

pub const LOG_SINK_NAME: &str = "cloudwatch_logs";
/// The action-log writer's sink name, which this sink never passes.
pub const ACTION_LOG_SINK_NAME: &str = crate::action_logs::ACTION_LOG_SINK;
/// `(action_log_id, last_position)` keys remembered as put, for retries within this process.
const REMEMBERED_KEYS: usize = 100_000;

const ROWS_SQL: &str =
    "SELECT * FROM action_logs WHERE last_position >= $1 AND last_position <= $2 \
                        ORDER BY last_position, action_log_id";

/// One database row as a JSON object, whatever the backend and the column types.
macro_rules! row_json {
    ($row:expr) => {{
        let row = $row;
        let mut obj = Map::new();
        for column in row.columns() {
            let name = column.name();
            let value = if let Ok(v) = row.try_get::<Option<String>, _>(name) {
                v.map(Value::from).unwrap_or(Value::Null)
            } else if let Ok(v) = row.try_get::<Option<i64>, _>(name) {
                v.map(Value::from).unwrap_or(Value::Null)
            } else if let Ok(v) = row.try_get::<Option<bool>, _>(name) {
                v.map(Value::from).unwrap_or(Value::Null)
            } else if let Ok(v) = row.try_get::<Option<f64>, _>(name) {
                v.map(Value::from).unwrap_or(Value::Null)
            } else {
                Value::Null
            };
            obj.insert(name.to_string(), value);
        }
        obj
    }};
}

pub struct CloudWatchLogSink {
    clients: CloudWatchClients,
    settings: CloudWatchSettings,
    db: ReadDb,
    /// Set once the log group and stream are known to exist; cleared when CloudWatch says
    /// they are gone, so the next attempt creates them again.
    ensured: AtomicBool,
    /// Keys put by earlier calls. A std mutex: held only to look up and insert, never across
    /// an await.
    delivered: Mutex<DeliveredKeys>,
}

#[derive(Default)]
struct DeliveredKeys {
    set: HashSet<(String, i64)>,
    order: VecDeque<(String, i64)>,
}

impl DeliveredKeys {
    fn insert(&mut self, key: (String, i64)) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > REMEMBERED_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

impl CloudWatchLogSink {
    /// `db` is the read side on the same database as the log (where `action_logs` lives).
    pub fn new(clients: CloudWatchClients, settings: CloudWatchSettings, db: ReadDb) -> Self {
        Self {
            clients,
            settings,
            db,
            ensured: AtomicBool::new(false),
            delivered: Mutex::new(DeliveredKeys::default()),
        }
    }

    async fn rows(&self, from: i64, to: i64) -> Result<Vec<Map<String, Value>>, SinkError> {
        let rows = match &self.db {
            ReadDb::Sqlite(pool) => sqlx::query(ROWS_SQL)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await
                .map(|rows| rows.iter().map(|r| row_json!(r)).collect::<Vec<_>>()),
            ReadDb::Postgres(pool) => sqlx::query(ROWS_SQL)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await
                .map(|rows| rows.iter().map(|r| row_json!(r)).collect::<Vec<_>>()),
        };
        rows.map_err(|e| db_error("read action_logs", e))
    }

    async fn put(&self, batch: Vec<(LogRecord, (String, i64))>) -> Result<(), SinkError> {
        let (records, keys): (Vec<LogRecord>, Vec<(String, i64)>) = batch.into_iter().unzip();
        let events = records
            .iter()
            .map(|r| {
                InputLogEvent::builder()
                    .timestamp(r.timestamp_ms)
                    .message(r.message.clone())
                    .build()
                    .map_err(|e| SinkError::Permanent(format!("log event: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let answer = self
            .clients
            .logs
            .put_log_events()
            .log_group_name(&self.settings.log_group)
            .log_stream_name(&self.settings.log_stream)
            .set_log_events(Some(events))
            .send()
            .await;
        let out = match answer {
            Ok(out) => out,
            Err(err) => {
                let err = sink_error("PutLogEvents", &err);
                if err.to_string().contains("ResourceNotFoundException") {
                    self.ensured.store(false, Ordering::SeqCst);
                }
                return Err(err);
            }
        };
        // Timestamps were fitted into the accepted window, so a rejection here means a clock
        // far off: say so loudly instead of losing the events quietly.
        if let Some(rejected) = out.rejected_log_events_info() {
            let any = rejected.too_new_log_event_start_index().is_some()
                || rejected.too_old_log_event_end_index().is_some()
                || rejected.expired_log_event_end_index().is_some();
            if any {
                return Err(SinkError::Permanent(format!(
                    "PutLogEvents rejected events: {rejected:?} (check this host's clock)"
                )));
            }
        }
        let mut delivered = self.delivered.lock().expect("delivered keys lock");
        for key in keys {
            delivered.insert(key);
        }
        Ok(())
    }
}

/// Makes sure the log group and stream exist; "already exists" is success.
#[instrument(skip_all, fields(log_group = %group, log_stream = %stream), err)]
pub async fn ensure_log_destination(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
) -> Result<(), SinkError> {
    if let Err(err) = client.create_log_group().log_group_name(group).send().await {
        let exists = err
            .as_service_error()
            .is_some_and(|e| e.is_resource_already_exists_exception());
        if !exists {
            return Err(sink_error("CreateLogGroup", &err));
        }
    }
    if let Err(err) = client
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await
    {
        let exists = err
            .as_service_error()
            .is_some_and(|e| e.is_resource_already_exists_exception());
        if !exists {
            return Err(sink_error("CreateLogStream", &err));
        }
    }
    Ok(())
}

fn millis(rfc3339: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
}

/// The log event for one `action_logs` row: the row's columns (`acknowledged` as a boolean),
/// the time the event at its `last_position` occurred, and `retimed` when CloudWatch could not
/// take that time (see [`fit_log_timestamp`]).
pub fn action_log_record(
    mut row: Map<String, Value>,
    occurred_at: Option<&str>,
    now_ms: i64,
) -> LogRecord {
    if let Some(Value::Number(n)) = row.get("acknowledged") {
        let ack = n.as_i64().unwrap_or(0) != 0;
        row.insert("acknowledged".into(), Value::Bool(ack));
    }
    let occurred_ms = occurred_at.and_then(millis).unwrap_or(now_ms);
    if let Some(at) = occurred_at {
        row.insert("occurred_at".into(), Value::from(at));
    }
    let (timestamp_ms, retimed) = fit_log_timestamp(occurred_ms, now_ms);
    if let Some(reason) = retimed {
        row.insert(
            "retimed".into(),
            serde_json::json!({"reason": reason.as_str(), "original_timestamp_ms": occurred_ms}),
        );
    }
    LogRecord {
        timestamp_ms,
        message: fit_message(row),
    }
}

/// Serialises a row, shortening `instructions` (and saying so) when the message would exceed
/// CloudWatch's per-event limit; the full text stays in the database and the API.
pub fn fit_message(mut row: Map<String, Value>) -> String {
    let mut message = Value::Object(row.clone()).to_string();
    let mut budget = row
        .get("instructions")
        .and_then(Value::as_str)
        .map_or(0, str::len);
    while message.len() > MAX_LOG_EVENT_BYTES {
        let Some(instructions) = row.get("instructions").and_then(Value::as_str) else {
            break;
        };
        let overflow = message.len() - MAX_LOG_EVENT_BYTES;
        budget = budget.saturating_sub(overflow + 64);
        let cut = truncate_utf8(instructions, budget).to_string();
        row.insert("instructions".into(), Value::from(cut));
        row.insert("instructions_truncated".into(), Value::Bool(true));
        message = Value::Object(row.clone()).to_string();
        if budget == 0 {
            break;
        }
    }
    if message.len() > MAX_LOG_EVENT_BYTES {
        // Some other column is huge: keep the identifying fields, never drop the event.
        let keep = [
            "action_log_id",
            "kind",
            "severity",
            "title",
            "subject",
            "event_id",
            "position",
            "last_event_id",
            "last_position",
            "occurrences",
            "occurred_at",
        ];
        let mut small: Map<String, Value> = keep
            .iter()
            .filter_map(|k| row.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        for v in small.values_mut() {
            if let Value::String(s) = v {
                *s = truncate_utf8(s, 4096).to_string();
            }
        }
        small.insert("truncated".into(), Value::Bool(true));
        message = Value::Object(small).to_string();
    }
    message
}

fn row_key(row: &Map<String, Value>) -> (String, i64) {
    (
        row.get("action_log_id")
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .unwrap_or_default(),
        row.get("last_position")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    )
}

#[async_trait]
impl Sink for CloudWatchLogSink {
    fn name(&self) -> &'static str {
        LOG_SINK_NAME
    }

    fn after(&self) -> Option<&'static str> {
        Some(ACTION_LOG_SINK_NAME)
    }

    fn wants(&self, _event: &RecordedEvent) -> bool {
        true
    }

    #[instrument(skip_all, fields(sink = LOG_SINK_NAME, events = events.len()), err)]
    async fn deliver(&self, events: &[RecordedEvent]) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let rows = self.rows(first.position, last.position).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let occurred: HashMap<i64, &str> = events
            .iter()
            .map(|e| (e.position, e.occurred_at.as_str()))
            .collect();
        let now_ms = Utc::now().timestamp_millis();
        let pending: Vec<(LogRecord, (String, i64))> = {
            let delivered = self.delivered.lock().expect("delivered keys lock");
            rows.into_iter()
                .filter_map(|row| {
                    let key = row_key(&row);
                    if delivered.set.contains(&key) {
                        return None;
                    }
                    let at = occurred.get(&key.1).copied();
                    Some((action_log_record(row, at, now_ms), key))
                })
                .collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        if !self.ensured.load(Ordering::SeqCst) {
            ensure_log_destination(
                &self.clients.logs,
                &self.settings.log_group,
                &self.settings.log_stream,
            )
            .await?;
            self.ensured.store(true, Ordering::SeqCst);
        }
        for batch in plan_keyed_log_batches(pending, |(record, _)| record) {
            self.put(batch).await?;
        }
        Ok(())
    }

    fn mapping(&self) -> Vec<MappingEntry> {
        log_mapping(&self.settings)
    }
}

/// What the log sink turns into log events.
pub fn log_mapping(settings: &CloudWatchSettings) -> Vec<MappingEntry> {
    ["severity:warn", "severity:critical", "action_log:*"]
        .iter()
        .map(|event| MappingEntry {
            event: event.to_string(),
            destination: "log".into(),
            target: format!("{}:{}", settings.log_group, settings.log_stream),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(instructions: &str) -> Map<String, Value> {
        json!({
            "action_log_id": "al_1", "kind": "run_cancelled", "severity": "warn",
            "title": "t", "subject": "load_test_run-lt_1", "instructions": instructions,
            "event_id": "e", "position": 7, "last_event_id": "e2", "last_position": 9,
            "occurrences": 2, "acknowledged": 0, "correlation_id": null
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn a_row_becomes_json_with_its_columns_the_event_time_and_a_boolean_acknowledged() {
        let now = millis("2026-11-25T10:00:00Z").unwrap();
        let r = action_log_record(row("do x"), Some("2026-11-25T09:59:00Z"), now);
        assert_eq!(r.timestamp_ms, now - 60_000);
        let v: Value = serde_json::from_str(&r.message).unwrap();
        assert_eq!(v["action_log_id"], "al_1");
        assert_eq!(v["instructions"], "do x");
        assert_eq!(v["occurrences"], 2);
        assert_eq!(v["acknowledged"], false);
        assert_eq!(v["occurred_at"], "2026-11-25T09:59:00Z");
        assert!(v.get("retimed").is_none());
    }

    #[test]
    fn an_old_event_is_retimed_and_keeps_its_original_time_in_the_message() {
        let now = millis("2026-11-25T10:00:00Z").unwrap();
        let r = action_log_record(row("x"), Some("2026-01-01T00:00:00Z"), now);
        assert!(r.timestamp_ms > now - super::super::log_batch::MAX_LOG_EVENT_AGE_MS);
        let v: Value = serde_json::from_str(&r.message).unwrap();
        assert_eq!(v["occurred_at"], "2026-01-01T00:00:00Z");
        assert_eq!(v["retimed"]["reason"], "older_than_14_days");
        assert_eq!(
            v["retimed"]["original_timestamp_ms"],
            millis("2026-01-01T00:00:00Z").unwrap()
        );
    }

    #[test]
    fn oversized_instructions_are_shortened_to_the_event_limit_and_flagged() {
        let long = "é".repeat(MAX_LOG_EVENT_BYTES);
        let message = fit_message(row(&long));
        assert!(message.len() <= MAX_LOG_EVENT_BYTES);
        let v: Value = serde_json::from_str(&message).unwrap();
        assert_eq!(v["instructions_truncated"], true);
        assert_eq!(v["action_log_id"], "al_1");
        assert!(v["instructions"].as_str().unwrap().len() > MAX_LOG_EVENT_BYTES / 2);
    }

    #[test]
    fn a_small_row_is_not_touched() {
        let message = fit_message(row("short"));
        let v: Value = serde_json::from_str(&message).unwrap();
        assert!(v.get("instructions_truncated").is_none());
        assert_eq!(v["instructions"], "short");
    }
}
