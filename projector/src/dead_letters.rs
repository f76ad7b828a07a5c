//! Dead letters of a log reader: events a projection or a sink gave up on, kept per reader and
//! position until an operator replays them. Projections and sinks each have a table of the same
//! shape (`projection_dead_letters`, `sink_dead_letters`); [`DeadLetterTable`] is the one set of
//! statements over either.

use crate::checkpoint::now_text;
use crate::db::{ReadDb, ReadTx};
use eventlog::FoldEvent;
use std::collections::HashMap;

/// A dead-letter table and the column naming the reader that owns each row.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterTable {
    pub table: &'static str,
    pub owner: &'static str,
}

pub const PROJECTIONS: DeadLetterTable = DeadLetterTable {
    table: "projection_dead_letters",
    owner: "projection",
};

pub const SINKS: DeadLetterTable = DeadLetterTable {
    table: "sink_dead_letters",
    owner: "sink",
};

/// A dead letter as stored; `owner` is the projection or sink.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub owner: String,
    pub position: i64,
    pub event_id: String,
    pub event_type: String,
    pub error: String,
    pub attempts: i64,
    pub status: String,
    pub recorded_at: String,
}

impl DeadLetterTable {
    /// Records (or, for a position already dead, updates) a dead letter, inside `tx`.
    pub async fn record(
        &self,
        tx: &mut ReadTx,
        owner: &str,
        event: &FoldEvent,
        error: &str,
        attempts: u32,
    ) -> Result<(), sqlx::Error> {
        let (table, column) = (self.table, self.owner);
        tx.execute(
            &format!(
                "INSERT INTO {table} ({column}, position, event_id, event_type, error, attempts, status, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'dead', $7) \
                 ON CONFLICT ({column}, position) DO UPDATE SET error = excluded.error, attempts = excluded.attempts, status = 'dead'"
            ),
            &[
                owner.into(),
                event.position.into(),
                event.event_id.to_string().into(),
                event.event_type.to_string().into(),
                error.into(),
                i64::from(attempts).into(),
                now_text().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Dead letters of one owner (or all), open ones only unless `include_replayed`, by owner
    /// and position.
    pub async fn list(
        &self,
        db: &ReadDb,
        owner: Option<&str>,
        include_replayed: bool,
    ) -> Result<Vec<DeadLetterRow>, sqlx::Error> {
        let (table, column) = (self.table, self.owner);
        let sql = format!(
            "SELECT {column} AS owner, position, event_id, event_type, error, attempts, status, recorded_at \
             FROM {table} WHERE ($1 = '' OR {column} = $1) AND ($2 = 1 OR status = 'dead') \
             ORDER BY {column}, position"
        );
        crate::on_db!(db, pool =>
            sqlx::query_as::<_, DeadLetterRow>(&sql)
                .bind(owner.unwrap_or(""))
                .bind(i64::from(include_replayed))
                .fetch_all(pool)
                .await)
    }

    /// Open dead letters per owner.
    pub async fn counts(&self, db: &ReadDb) -> Result<HashMap<String, i64>, sqlx::Error> {
        let (table, column) = (self.table, self.owner);
        let sql = format!(
            "SELECT {column}, COUNT(*) FROM {table} WHERE status = 'dead' GROUP BY {column}"
        );
        let rows: Vec<(String, i64)> = crate::on_db!(db, pool =>
            sqlx::query_as(&sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().collect())
    }
}
