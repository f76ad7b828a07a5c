//! Reading and acknowledging action logs: what `GET /action-logs`, `POST …/acknowledge` and
//! `studio action-logs list|ack` share.

use super::sink::ACTION_LOG_SINK;
use eventlog::catalogue::ActionLogAcknowledged;
use eventlog::{EventLog, EventPayload, Severity, StoreError, ValidatedEvent, ValidationError};
use projector::db::ReadDb;
use serde::Serialize;
use serde_json::Value;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1_000;
/// The actor recorded when an acknowledgement does not name one.
pub const DEFAULT_ACTOR: &str = "admin";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionLogFilter {
    pub severity: Option<Severity>,
    pub kind: Option<String>,
    pub subject: Option<String>,
    pub unacknowledged: bool,
    /// Only rows whose latest event is after this position (`last_position > N`), oldest
    /// first: a script tails with the largest `last_position` it saw. Without it, newest first.
    pub since_position: Option<i64>,
    pub limit: usize,
}

/// An action log as listed (DESIGN §5, plus the grouping and acknowledgement fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionLog {
    pub action_log_id: String,
    pub kind: String,
    pub severity: String,
    pub title: String,
    pub subject: String,
    pub instructions: String,
    pub event_id: String,
    pub position: i64,
    pub last_event_id: String,
    pub last_position: i64,
    pub first_occurred_at: String,
    pub last_occurred_at: String,
    pub correlation_id: Option<String>,
    pub occurrences: i64,
    pub acknowledged: bool,
    pub acknowledged_by: Option<String>,
    pub ack_note: Option<String>,
    pub acknowledged_position: Option<i64>,
    pub context: Value,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    action_log_id: String,
    kind: String,
    severity: String,
    title: String,
    subject: String,
    instructions: String,
    event_id: String,
    position: i64,
    last_event_id: String,
    last_position: i64,
    first_occurred_at: String,
    last_occurred_at: String,
    correlation_id: Option<String>,
    occurrences: i64,
    acknowledged: i64,
    acknowledged_by: Option<String>,
    ack_note: Option<String>,
    acknowledged_position: Option<i64>,
    context: String,
}

impl From<Row> for ActionLog {
    fn from(r: Row) -> Self {
        ActionLog {
            action_log_id: r.action_log_id,
            kind: r.kind,
            severity: r.severity,
            title: r.title,
            subject: r.subject,
            instructions: r.instructions,
            event_id: r.event_id,
            position: r.position,
            last_event_id: r.last_event_id,
            last_position: r.last_position,
            first_occurred_at: r.first_occurred_at,
            last_occurred_at: r.last_occurred_at,
            correlation_id: r.correlation_id,
            occurrences: r.occurrences,
            acknowledged: r.acknowledged != 0,
            acknowledged_by: r.acknowledged_by,
            ack_note: r.ack_note,
            acknowledged_position: r.acknowledged_position,
            context: serde_json::from_str(&r.context).unwrap_or(Value::Null),
        }
    }
}

const COLUMNS: &str = "action_log_id, kind, severity, title, subject, instructions, event_id, \
    position, last_event_id, last_position, first_occurred_at, last_occurred_at, correlation_id, \
    occurrences, acknowledged, acknowledged_by, ack_note, acknowledged_position, context";

/// A page of action logs and the action-log sink's checkpoint it reflects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionLogPage {
    pub action_logs: Vec<ActionLog>,
    pub as_of_position: i64,
}

/// Action logs matching `filter`, read in one snapshot with the sink checkpoint.
pub async fn list_action_logs(
    db: &ReadDb,
    filter: &ActionLogFilter,
) -> Result<ActionLogPage, sqlx::Error> {
    let order = if filter.since_position.is_some() {
        "ASC"
    } else {
        "DESC"
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM action_logs WHERE ($1 = '' OR severity = $1) AND ($2 = '' OR kind = $2) \
         AND ($3 = '' OR subject = $3) AND ($4 = 0 OR acknowledged = 0) AND last_position > $5 \
         ORDER BY last_position {order}, action_log_id {order} LIMIT $6"
    );
    let limit = if filter.limit == 0 {
        DEFAULT_LIMIT
    } else {
        filter.limit.min(MAX_LIMIT)
    };
    let mut tx = db.begin_read().await?;
    let as_of_position = tx
        .int(
            "SELECT position FROM sink_checkpoints WHERE sink = $1",
            &[ACTION_LOG_SINK.into()],
        )
        .await?
        .unwrap_or(0);
    let rows: Vec<Row> = projector::on_tx!(&mut tx, conn => sqlx::query_as::<_, Row>(&sql)
        .bind(filter.severity.map(|s| s.as_str()).unwrap_or(""))
        .bind(filter.kind.as_deref().unwrap_or(""))
        .bind(filter.subject.as_deref().unwrap_or(""))
        .bind(i64::from(filter.unacknowledged))
        .bind(filter.since_position.unwrap_or(-1))
        .bind(limit as i64)
        .fetch_all(conn)
        .await)?;
    tx.commit().await?;
    Ok(ActionLogPage {
        action_logs: rows.into_iter().map(ActionLog::from).collect(),
        as_of_position,
    })
}

pub async fn get_action_log(db: &ReadDb, id: &str) -> Result<Option<ActionLog>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM action_logs WHERE action_log_id = $1");
    let row: Option<Row> = projector::on_db!(db, pool =>
        sqlx::query_as::<_, Row>(&sql).bind(id).fetch_optional(pool).await)?;
    Ok(row.map(ActionLog::from))
}

/// What an acknowledgement appended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Acknowledged {
    pub action_log_id: String,
    pub acknowledged: bool,
    pub actor: String,
    pub note: Option<String>,
    pub event_id: String,
    pub position: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("no action log {0:?} (list them with GET /admin/studio/action-logs)")]
    NotFound(String),
    #[error("action log {id:?} is already acknowledged{}", by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default())]
    AlreadyAcknowledged { id: String, by: Option<String> },
    #[error("invalid acknowledgement: {0}")]
    Invalid(ValidationError),
    #[error("event log: {0}")]
    Store(StoreError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Appends `action_log.acknowledged` for an existing, unacknowledged action log. The event goes
/// to the stream `action_log-<id>` with expected version 0, so of two operators acknowledging
/// at once exactly one succeeds; the action-log sink applies it to the row.
pub async fn acknowledge(
    db: &ReadDb,
    log: &dyn EventLog,
    id: &str,
    actor: &str,
    note: Option<String>,
) -> Result<Acknowledged, AckError> {
    let row = get_action_log(db, id)
        .await?
        .ok_or_else(|| AckError::NotFound(id.to_string()))?;
    if row.acknowledged {
        return Err(AckError::AlreadyAcknowledged {
            id: id.to_string(),
            by: row.acknowledged_by,
        });
    }
    let payload = EventPayload::ActionLogAcknowledged(ActionLogAcknowledged {
        action_log_id: id.to_string(),
        actor: actor.to_string(),
        note: note.clone(),
    });
    payload.check().map_err(AckError::Invalid)?;
    let event = ValidatedEvent::from_payload(&payload, "studio-sinks", chrono::Utc::now())
        .with_expected_version(0);
    let appended = match log.append(vec![event]).await {
        Ok(mut a) => a.remove(0).into_event(),
        Err(StoreError::Conflict { .. }) => {
            return Err(AckError::AlreadyAcknowledged {
                id: id.to_string(),
                by: None,
            })
        }
        Err(e) => return Err(AckError::Store(e)),
    };
    Ok(Acknowledged {
        action_log_id: id.to_string(),
        acknowledged: true,
        actor: actor.to_string(),
        note,
        event_id: appended.event_id.to_string(),
        position: appended.position,
    })
}
