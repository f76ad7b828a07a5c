//! Checkpoints, table creation and dead letters: the bookkeeping shared by the live runner,
//! rebuilds and dead-letter replays.

use crate::db::{ReadDb, ReadTx};
use crate::dead_letters::{self, DeadLetterRow};
use crate::docs::{Docs, DocsError, TableDef};
use crate::projection::Projection;
use eventlog::store::TypedEvent;
use eventlog::{FoldEvent, RecordedEvent, ValidationError};
use serde::Serialize;
use std::collections::HashMap;

/// Where a projection stands, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: i64,
    pub fingerprint: String,
    pub generation: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("read model: {0}")]
    Docs(#[from] DocsError),
    #[error("event log: {0}")]
    Log(#[from] eventlog::StoreError),
    /// The event at `position` cannot be applied by this projection.
    #[error("event at position {position} cannot be applied: {error}")]
    Poison { position: i64, error: String },
    /// Another runner or a rebuild moved the checkpoint under us.
    #[error("the checkpoint of {0} moved under this runner")]
    Moved(&'static str),
}

impl From<serde_json::Error> for StepError {
    fn from(e: serde_json::Error) -> Self {
        StepError::Docs(DocsError::Decode(e))
    }
}

pub fn now_text() -> String {
    eventlog::envelope::format_timestamp(chrono::Utc::now())
}

pub async fn read_checkpoint(
    tx: &mut ReadTx,
    projection: &str,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let row = crate::on_tx!(tx, conn => sqlx::query_as::<_, (i64, String, i64)>(
        "SELECT position, fingerprint, generation FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(conn)
    .await)?;
    Ok(row.map(|(position, fingerprint, generation)| Checkpoint {
        position,
        fingerprint,
        generation,
    }))
}

/// Every projection's checkpoint position, by name (0 for one that never ran).
pub async fn positions(db: &ReadDb) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = crate::on_db!(db, pool =>
        sqlx::query_as("SELECT projection, position FROM projection_checkpoints").fetch_all(pool).await)?;
    Ok(rows.into_iter().collect())
}

/// Advances a checkpoint only if it is still where this writer found it.
pub async fn advance(
    tx: &mut ReadTx,
    name: &'static str,
    from: &Checkpoint,
    to: i64,
) -> Result<(), StepError> {
    let updated = tx
        .execute(
            "UPDATE projection_checkpoints SET position = $1, updated_at = $2 \
             WHERE projection = $3 AND position = $4 AND generation = $5",
            &[
                to.into(),
                now_text().into(),
                name.into(),
                from.position.into(),
                from.generation.into(),
            ],
        )
        .await?;
    if updated == 1 {
        Ok(())
    } else {
        Err(StepError::Moved(name))
    }
}

pub async fn table_exists(tx: &mut ReadTx, name: &str) -> Result<bool, sqlx::Error> {
    let sql = match tx {
        ReadTx::Sqlite(..) => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
        }
        ReadTx::Postgres(_) => {
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1"
        }
    };
    Ok(tx.int(sql, &[name.into()]).await?.unwrap_or(0) > 0)
}

/// Creates a table under `physical` with its indexes. Index names carry a fresh suffix so a
/// table renamed by a rebuild swap never blocks the next rebuild's indexes.
pub async fn create_table(
    tx: &mut ReadTx,
    def: &TableDef,
    physical: &str,
) -> Result<(), sqlx::Error> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    for sql in def.create_sql(physical, &suffix[..8]) {
        tx.execute(&sql, &[]).await?;
    }
    Ok(())
}

/// Makes sure a projection's live tables and checkpoint row exist; returns the checkpoint.
pub async fn ensure_live(
    db: &ReadDb,
    projection: &dyn Projection,
) -> Result<Checkpoint, StepError> {
    let mut tx = db.begin_write().await?;
    for def in projection.tables() {
        if !table_exists(&mut tx, def.name).await? {
            create_table(&mut tx, def, def.name).await?;
        }
    }
    let checkpoint = match read_checkpoint(&mut tx, projection.name()).await? {
        Some(c) => c,
        None => {
            tx.execute(
                "INSERT INTO projection_checkpoints (projection, position, fingerprint, generation, updated_at) \
                 VALUES ($1, 0, $2, 0, $3)",
                &[projection.name().into(), projection.fingerprint().into(), now_text().into()],
            )
            .await?;
            Checkpoint {
                position: 0,
                fingerprint: projection.fingerprint(),
                generation: 0,
            }
        }
    };
    tx.commit().await?;
    Ok(checkpoint)
}

/// An event paired with its typed payload (or why it has none).
pub type Decoded = TypedEvent;

/// Events read by `read_all`, as a fold sees them (what a scan gives, see `scan_typed`).
pub fn decode_all(events: Vec<RecordedEvent>) -> Vec<Decoded> {
    events.into_iter().map(FoldEvent::typed).collect()
}

fn not_in_catalogue(err: &ValidationError) -> String {
    format!("payload does not match the catalogue: {err}")
}

/// Applies events to one projection's documents and writes them back: the step every runner,
/// rebuild and replay shares. Positions in `dead` are recorded as dead letters instead of
/// applied. The caller owns the transaction and the checkpoint.
pub async fn apply_step(
    projection: &dyn Projection,
    tx: &mut ReadTx,
    docs: &mut Docs,
    physical: &(dyn Fn(&str) -> String + Sync),
    events: &[&Decoded],
    dead: &HashMap<i64, (String, u32)>,
) -> Result<(), StepError> {
    fold_step(projection, tx, docs, physical, events, dead).await?;
    docs.flush(tx, physical, projection.tables()).await?;
    Ok(())
}

/// [`apply_step`] without the write-back: the changed documents stay in `docs` until a
/// [`Docs::flush`]. A rebuild folds page by page and writes back once per transaction.
pub async fn fold_step(
    projection: &dyn Projection,
    tx: &mut ReadTx,
    docs: &mut Docs,
    physical: &(dyn Fn(&str) -> String + Sync),
    events: &[&Decoded],
    dead: &HashMap<i64, (String, u32)>,
) -> Result<(), StepError> {
    for (event, payload) in events {
        if let (Ok(payload), false) = (payload, dead.contains_key(&event.position)) {
            projection.want(event, payload, docs);
        }
    }
    docs.load(tx, physical, projection.tables()).await?;
    for (event, payload) in events {
        if let Some((error, attempts)) = dead.get(&event.position) {
            record_dead_letter(tx, projection.name(), event, error, *attempts).await?;
            continue;
        }
        let applied = match payload {
            Ok(payload) => projection.apply(event, payload, docs),
            Err(error) => Err(not_in_catalogue(error)),
        };
        if let Err(error) = applied {
            return Err(StepError::Poison {
                position: event.position,
                error,
            });
        }
    }
    Ok(())
}

/// Records a projection's dead letter inside `tx` (see [`crate::dead_letters`]).
pub async fn record_dead_letter(
    tx: &mut ReadTx,
    projection: &str,
    event: &FoldEvent,
    error: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    dead_letters::PROJECTIONS
        .record(tx, projection, event, error, attempts)
        .await
}

/// A dead letter as listed to operators.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    pub projection: String,
    pub position: i64,
    pub event_id: String,
    pub event_type: String,
    pub error: String,
    pub attempts: i64,
    pub status: String,
    pub recorded_at: String,
}

impl From<DeadLetterRow> for DeadLetter {
    fn from(row: DeadLetterRow) -> Self {
        Self {
            projection: row.owner,
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

/// Dead letters of one projection (or all), open ones only unless `include_replayed`.
pub async fn dead_letters(
    db: &ReadDb,
    projection: Option<&str>,
    include_replayed: bool,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let rows = dead_letters::PROJECTIONS
        .list(db, projection, include_replayed)
        .await?;
    Ok(rows.into_iter().map(DeadLetter::from).collect())
}

/// Open dead letters per projection.
pub async fn dead_letter_counts(db: &ReadDb) -> Result<HashMap<String, i64>, sqlx::Error> {
    dead_letters::PROJECTIONS.counts(db).await
}
