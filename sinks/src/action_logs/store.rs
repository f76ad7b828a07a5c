//! Writing action logs: folding a finding into its row (new, or grouped into the open row of the
//! same kind and subject), and applying acknowledgements. Every write goes with a row in
//! `action_log_events` in the same transaction; its primary key on the event id (or health key)
//! is what makes a re-delivery a no-op.

use super::rules::{Finding, Kind};
use super::templates::{TemplateError, Templates};
use eventlog::catalogue::ActionLogAcknowledged;
use eventlog::{RecordedEvent, Severity};
use projector::db::ReadTx;
use serde_json::Value;

/// When a finding joins the open row of its kind and subject instead of opening a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Within this much event time (`occurred_at`) of the row's latest occurrence. Event time,
    /// not the wall clock, so a rebuild from the log groups exactly as the live run did. The
    /// window slides: a signal that keeps flapping within it stays one row (hysteresis).
    Window(chrono::Duration),
    /// Health findings have no event time: they join the row while it is unacknowledged.
    WhileOpen,
}

/// One finding to fold.
#[derive(Debug, Clone)]
pub struct Fold<'a> {
    /// The event id, or a health finding's deterministic key.
    pub key: String,
    /// The position the finding is about (the event's own, for events).
    pub position: i64,
    /// The position readers that tail action logs see it at (the event's own, for events).
    pub last_position: i64,
    pub occurred_at: String,
    pub correlation_id: Option<String>,
    pub finding: &'a Finding,
    pub grouping: Grouping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folded {
    New(String),
    Grouped(String),
    /// Already folded (a re-delivery).
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// The action log id of a finding that opens a row: `al_` + the event id or health key.
pub fn action_log_id(key: &str) -> String {
    format!("al_{key}")
}

async fn folded_into(tx: &mut ReadTx, key: &str) -> Result<Option<String>, sqlx::Error> {
    Ok(tx
        .texts(
            "SELECT action_log_id FROM action_log_events WHERE event_id = $1",
            &[key.into()],
        )
        .await?
        .into_iter()
        .next())
}

async fn record_folded(
    tx: &mut ReadTx,
    key: &str,
    action_log_id: &str,
    position: i64,
) -> Result<(), sqlx::Error> {
    tx.execute(
        "INSERT INTO action_log_events (event_id, action_log_id, position) VALUES ($1, $2, $3)",
        &[key.into(), action_log_id.into(), position.into()],
    )
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
struct OpenRow {
    action_log_id: String,
    severity: String,
    last_occurred_at: String,
    last_position: i64,
    acknowledged: i64,
}

fn parse_time(t: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(t).ok()
}

/// Whether a finding at `occurred_at` joins a row last seen at `last_occurred_at`.
pub fn joins(grouping: Grouping, last_occurred_at: &str, occurred_at: &str) -> bool {
    match grouping {
        Grouping::WhileOpen => true,
        Grouping::Window(window) => match (parse_time(last_occurred_at), parse_time(occurred_at)) {
            (Some(last), Some(now)) => (now - last).abs() <= window,
            _ => false,
        },
    }
}

fn severity_of(text: &str) -> Severity {
    serde_json::from_value(Value::String(text.to_string())).unwrap_or(Severity::Info)
}

/// The template input: the finding's facts plus what the row knows about itself.
fn context_for(id: &str, fold: &Fold<'_>) -> Value {
    let mut context = fold.finding.context.clone();
    if let Value::Object(map) = &mut context {
        map.insert("action_log_id".into(), id.into());
        map.insert("kind".into(), fold.finding.kind.as_str().into());
        map.insert("severity".into(), fold.finding.severity.as_str().into());
        map.insert("subject".into(), fold.finding.subject.clone().into());
    }
    context
}

/// Folds one finding. Re-delivering the same key changes nothing.
pub async fn fold(
    tx: &mut ReadTx,
    templates: &Templates,
    fold: Fold<'_>,
) -> Result<Folded, FoldError> {
    if folded_into(tx, &fold.key).await?.is_some() {
        return Ok(Folded::Duplicate);
    }
    let f = fold.finding;
    let open: Option<OpenRow> = projector::on_tx!(tx, conn => sqlx::query_as::<_, OpenRow>(
        "SELECT action_log_id, severity, last_occurred_at, last_position, acknowledged FROM action_logs \
         WHERE kind = $1 AND subject = $2 ORDER BY last_position DESC, action_log_id DESC LIMIT 1",
    )
    .bind(f.kind.as_str())
    .bind(&f.subject)
    .fetch_optional(conn)
    .await)?;
    let open = open.filter(|row| {
        row.acknowledged == 0 && joins(fold.grouping, &row.last_occurred_at, &fold.occurred_at)
    });
    match open {
        Some(row) => {
            let context = context_for(&row.action_log_id, &fold);
            let instructions = templates.render(f.kind, &context)?;
            let severity = severity_of(&row.severity).max(f.severity);
            let later = match (
                parse_time(&row.last_occurred_at),
                parse_time(&fold.occurred_at),
            ) {
                (Some(last), Some(now)) => now >= last,
                _ => true,
            };
            let last_occurred_at = if later {
                fold.occurred_at.clone()
            } else {
                row.last_occurred_at.clone()
            };
            tx.execute(
                "UPDATE action_logs SET occurrences = occurrences + 1, last_event_id = $1, \
                 last_position = $2, last_occurred_at = $3, severity = $4, title = $5, \
                 instructions = $6, context = $7 WHERE action_log_id = $8",
                &[
                    fold.key.clone().into(),
                    fold.last_position.max(row.last_position).into(),
                    last_occurred_at.into(),
                    severity.as_str().into(),
                    f.title.clone().into(),
                    instructions.into(),
                    context.to_string().into(),
                    row.action_log_id.clone().into(),
                ],
            )
            .await?;
            record_folded(tx, &fold.key, &row.action_log_id, fold.position).await?;
            Ok(Folded::Grouped(row.action_log_id))
        }
        None => {
            let id = action_log_id(&fold.key);
            let context = context_for(&id, &fold);
            let instructions = templates.render(f.kind, &context)?;
            tx.execute(
                "INSERT INTO action_logs (action_log_id, kind, severity, title, subject, instructions, \
                 event_id, position, last_event_id, last_position, first_occurred_at, last_occurred_at, \
                 correlation_id, occurrences, acknowledged, context) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1, 0, $14)",
                &[
                    id.clone().into(),
                    f.kind.as_str().into(),
                    f.severity.as_str().into(),
                    f.title.clone().into(),
                    f.subject.clone().into(),
                    instructions.into(),
                    fold.key.clone().into(),
                    fold.position.into(),
                    fold.key.clone().into(),
                    fold.last_position.into(),
                    fold.occurred_at.clone().into(),
                    fold.occurred_at.clone().into(),
                    fold.correlation_id.clone().into(),
                    context.to_string().into(),
                ],
            )
            .await?;
            record_folded(tx, &fold.key, &id, fold.position).await?;
            Ok(Folded::New(id))
        }
    }
}

/// Applies an `action_log.acknowledged` event (once per event id). An acknowledgement of a
/// row already acknowledged keeps the first one's actor and note.
pub async fn apply_ack(
    tx: &mut ReadTx,
    event: &RecordedEvent,
    ack: &ActionLogAcknowledged,
) -> Result<bool, sqlx::Error> {
    let key = event.event_id.to_string();
    if folded_into(tx, &key).await?.is_some() {
        return Ok(false);
    }
    tx.execute(
        "UPDATE action_logs SET acknowledged = 1, acknowledged_by = $1, ack_note = $2, \
         acknowledged_position = $3 WHERE action_log_id = $4 AND acknowledged = 0",
        &[
            ack.actor.clone().into(),
            ack.note.clone().into(),
            event.position.into(),
            ack.action_log_id.clone().into(),
        ],
    )
    .await?;
    record_folded(tx, &key, &ack.action_log_id, event.position).await?;
    Ok(true)
}

/// The grouping rule for a kind.
pub fn grouping_for(kind: Kind, window: chrono::Duration) -> Grouping {
    if kind.is_health() {
        Grouping::WhileOpen
    } else {
        Grouping::Window(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_within_the_window_of_event_time_join_either_side() {
        let w = Grouping::Window(chrono::Duration::minutes(10));
        assert!(joins(w, "2026-11-24T10:00:00Z", "2026-11-24T10:09:59Z"));
        assert!(joins(w, "2026-11-24T10:00:00Z", "2026-11-24T10:10:00Z"));
        assert!(!joins(w, "2026-11-24T10:00:00Z", "2026-11-24T10:10:01Z"));
        assert!(
            joins(w, "2026-11-24T10:05:00Z", "2026-11-24T10:00:00Z"),
            "late arrivals in event time still group"
        );
        assert!(
            joins(w, "2026-11-24T10:00:00+00:00", "2026-11-24T11:05:00+01:00"),
            "offsets are honoured"
        );
    }

    #[test]
    fn health_findings_group_while_open_whatever_the_time() {
        assert!(joins(
            Grouping::WhileOpen,
            "2026-11-24T10:00:00Z",
            "2027-01-01T00:00:00Z"
        ));
        assert_eq!(
            grouping_for(Kind::ProjectionStalled, chrono::Duration::minutes(10)),
            Grouping::WhileOpen
        );
        assert_eq!(
            grouping_for(Kind::Alarm, chrono::Duration::minutes(10)),
            Grouping::Window(chrono::Duration::minutes(10))
        );
    }

    #[test]
    fn unparsable_times_never_group() {
        let w = Grouping::Window(chrono::Duration::minutes(10));
        assert!(!joins(w, "yesterday", "2026-11-24T10:00:00Z"));
    }
}
