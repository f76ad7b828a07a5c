//! Sink checkpoints and sink dead letters: the bookkeeping the runner and dead-letter replays
//! share. Same database as the log, portable `$N` SQL through projector's [`ReadDb`].

use eventlog::RecordedEvent;
use projector::db::{ReadDb, ReadTx};
use projector::dead_letters::{self, DeadLetterRow};
use serde::Serialize;
use std::collections::HashMap;

pub use projector::checkpoint::now_text;

/// A sink's checkpoint, creating the row at 0 for a sink that never ran.
pub async fn ensure(db: &ReadDb, sink: &str) -> Result<i64, sqlx::Error> {
    let mut tx = db.begin_write().await?;
    tx.execute(
        "INSERT INTO sink_checkpoints (sink, position, updated_at) VALUES ($1, 0, $2) \
         ON CONFLICT (sink) DO NOTHING",
        &[sink.into(), now_text().into()],
    )
    .await?;
    let position = read(&mut tx, sink).await?.unwrap_or(0);
    tx.commit().await?;
    Ok(position)
}

pub async fn read(tx: &mut ReadTx, sink: &str) -> Result<Option<i64>, sqlx::Error> {
    tx.int(
        "SELECT position FROM sink_checkpoints WHERE sink = $1",
        &[sink.into()],
    )
    .await
}

/// Every sink's checkpoint, by name.
pub async fn positions(db: &ReadDb) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = projector::on_db!(db, pool =>
        sqlx::query_as("SELECT sink, position FROM sink_checkpoints").fetch_all(pool).await)?;
    Ok(rows.into_iter().collect())
}

pub async fn position(db: &ReadDb, sink: &str) -> Result<i64, sqlx::Error> {
    let row: Option<i64> = projector::on_db!(db, pool =>
        sqlx::query_scalar("SELECT position FROM sink_checkpoints WHERE sink = $1")
            .bind(sink)
            .fetch_optional(pool)
            .await)?;
    Ok(row.unwrap_or(0))
}

/// Moves a checkpoint from `from` to `to` only if it is still at `from`: a second runner (on
/// SQLite, where there are no ownership locks) or an operator's reset is noticed, never
/// overwritten. Returns false when the checkpoint moved under the caller.
pub async fn advance(tx: &mut ReadTx, sink: &str, from: i64, to: i64) -> Result<bool, sqlx::Error> {
    let updated = tx
        .execute(
            "UPDATE sink_checkpoints SET position = $1, updated_at = $2 WHERE sink = $3 AND position = $4",
            &[to.into(), now_text().into(), sink.into(), from.into()],
        )
        .await?;
    Ok(updated == 1)
}

/// Sets a sink's checkpoint (an operator's reset: the sink re-delivers everything after it,
/// which its idempotency by event id makes harmless). Meant for a stopped sink; a running owner
/// notices at its next checkpoint write (the compare-and-set fails) and reloads.
pub async fn reset(db: &ReadDb, sink: &str, position: i64) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    tx.execute(
        "INSERT INTO sink_checkpoints (sink, position, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (sink) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
        &[sink.into(), position.into(), now_text().into()],
    )
    .await?;
    tx.commit().await
}

/// Records a sink's dead letter inside `tx` (see [`projector::dead_letters`]).
pub async fn record_dead_letter(
    tx: &mut ReadTx,
    sink: &str,
    event: &RecordedEvent,
    error: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    dead_letters::SINKS
        .record(tx, sink, &event.into(), error, attempts)
        .await
}

/// A sink dead letter as listed to operators (`studio dead-letters list --sink`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SinkDeadLetter {
    pub sink: String,
    pub position: i64,
    pub event_id: String,
    pub event_type: String,
    pub error: String,
    pub attempts: i64,
    pub status: String,
    pub recorded_at: String,
}

impl From<DeadLetterRow> for SinkDeadLetter {
    fn from(row: DeadLetterRow) -> Self {
        Self {
            sink: row.owner,
            position: row.position,
            event_id: row.event_id,
            event_type: row.event_type,
            error: row.error,
            attempts: row.attempts,
            status: row.status,
            recorded_at: row.recorded_at,
        }
    }
}

/// Dead letters of one sink (or all), open ones only unless `include_replayed`.
pub async fn list_dead_letters(
    db: &ReadDb,
    sink: Option<&str>,
    include_replayed: bool,
) -> Result<Vec<SinkDeadLetter>, sqlx::Error> {
    let rows = dead_letters::SINKS.list(db, sink, include_replayed).await?;
    Ok(rows.into_iter().map(SinkDeadLetter::from).collect())
}

/// Open dead letters per sink.
pub async fn dead_letter_counts(db: &ReadDb) -> Result<HashMap<String, i64>, sqlx::Error> {
    dead_letters::SINKS.counts(db).await
}
