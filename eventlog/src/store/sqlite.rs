//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! One writer connection runs every append group as `BEGIN IMMEDIATE … COMMIT`; with
//! `synchronous=FULL` the commit returns only after the WAL is fsync'd, so a group is durable
//! when its appenders are answered. `BEGIN IMMEDIATE` takes SQLite's write lock up front, so even
//! another process writing the same file cannot interleave positions. Readers use a separate
//! pool; WAL lets them read while the writer writes.
//!
//! Two clients, one SQLite: reads, migrations and the projector's and sinks' tables go through
//! sqlx; the hot paths of the log, the group-commit writer ([`SqliteGroupWriter`], on a thread
//! of its own) and the rebuild scan ([`SqliteScan`]), use rusqlite, which runs statements on the
//! calling thread and lends column text in place. Both link the same `libsqlite3-sys`. WAL
//! checkpoints run between groups on the writer's thread while it appends
//! ([`GroupWriter::after_group`]), on a thread of their own while it does not
//! ([`spawn_checkpointer`]), never inside a commit.

use super::group_commit::{self, AppendRequest, GroupWriter};
use super::scan::{self, RawEvent, TypedEvent, TypedScan};
use super::{AppendTx, Appended, EventLog, StoreError};
use crate::envelope::{RecordedEvent, StoredRow, ValidatedEvent};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, SqlitePool};
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Mutex, RwLock};
use tokio::task::JoinHandle;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

const COLUMNS: &str =
    "position, event_id, event_type, schema_version, stream, stream_version, idempotency_key, \
                       correlation_id, causation_id, producer, occurred_at, recorded_at, payload";
/// SQLite allows 32,766 bound variables per statement; 13 columns × 1,000 rows stays well below.
const ROWS_PER_INSERT: usize = 1_000;
/// Same bound for `IN (…)` look-ups.
const KEYS_PER_LOOKUP: usize = 10_000;
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the WAL is moved into the database file: by the writer between groups while it
/// appends, by the checkpointer thread while it does not (see [`spawn_checkpointer`]).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// WAL pages after which a committing connection checkpoints inline: SQLite's own automatic
/// checkpoint, kept as a backstop for a file no checkpointer looks after (SQLite's default is
/// 1,000 pages; with the writer checkpointing every [`CHECKPOINT_INTERVAL`] the WAL stays below
/// this).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;
const READ_CONNECTIONS: u32 = 4;
/// Events per page of a scan.
const SCAN_PAGE_ROWS: usize = 2_000;
/// The scan's own connection maps this much of the file.
const SCAN_MMAP_BYTES: u64 = 1 << 30;

pub struct SqliteEventLog {
    read_pool: SqlitePool,
    /// The database file; scans open a connection of their own to it (see [`SqliteScan`]).
    path: PathBuf,
    /// `None` once closed; appenders holding the read lock finish enqueuing before close takes it.
    queue: RwLock<Option<mpsc::Sender<AppendRequest>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    head_rx: watch::Receiver<i64>,
}

/// The in-process gate every writer to one SQLite file passes before `BEGIN IMMEDIATE`: the
/// log's group-commit writer, the projector and the sinks. SQLite has one write lock per file,
/// and a writer that finds it taken waits in SQLite's busy handler, which sleeps in growing steps
/// (1, 2, 5 … 100 ms) and retries. Under a steady stream of single-event appends the log's
/// writer holds the lock most of the time, so the others kept losing those retries and fell
/// behind by seconds. Queuing in-process writers on a FIFO mutex first makes them take turns;
/// the busy handler is left for writers in other processes.
pub fn write_gate(options: &SqliteConnectOptions) -> Arc<tokio::sync::Mutex<()>> {
    static GATES: std::sync::OnceLock<
        std::sync::Mutex<HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::OnceLock::new();
    let file = options.get_filename();
    let key = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    GATES
        .get_or_init(Default::default)
        .lock()
        .expect("write gates poisoned")
        .entry(key)
        .or_default()
        .clone()
}

/// Connection options every connection to the file shares.
pub fn connect_options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string()))
}

impl SqliteEventLog {
    pub async fn open(url: &str, migrate: bool) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        if migrate {
            let mut conn = options.connect().await?;
            MIGRATOR.run(&mut conn).await?;
            conn.close().await?;
        }
        let read_pool = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.clone().read_only(false))
            .await?;
        let head = if migrate || migrations_applied(&read_pool).await.is_ok() {
            current_head(&read_pool).await?
        } else {
            0
        };
        let (head_tx, head_rx) = watch::channel(head);
        let path = options.get_filename().to_path_buf();
        let writer = SqliteGroupWriter {
            path: path.clone(),
            conn: None,
            gate: write_gate(&options),
            turn: None,
            checkpointed: Instant::now(),
        };
        spawn_checkpointer(path.clone(), head_rx.clone()).map_err(sqlx::Error::Io)?;
        let (queue, handle) = group_commit::spawn_thread("studio-log-writer", writer, head_tx)
            .map_err(sqlx::Error::Io)?;
        Ok(Self {
            read_pool,
            path,
            queue: RwLock::new(Some(queue)),
            writer: Mutex::new(Some(handle)),
            head_rx,
        })
    }

    /// The reader pool, for projections that keep their tables in the same file.
    pub fn pool(&self) -> &SqlitePool {
        &self.read_pool
    }
}

async fn current_head(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(pool)
        .await
}

async fn migrations_applied(pool: &SqlitePool) -> Result<(), StoreError> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::NotMigrated(format!("{e}; run `studio migrate`")))?;
    super::check_migrations(&MIGRATOR, &applied)
}

fn stored_row(row: &SqliteRow) -> Result<StoredRow, sqlx::Error> {
    Ok(StoredRow {
        position: row.try_get("position")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        stream: row.try_get("stream")?,
        stream_version: row.try_get("stream_version")?,
        idempotency_key: row.try_get("idempotency_key")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        producer: row.try_get("producer")?,
        occurred_at: row.try_get("occurred_at")?,
        recorded_at: row.try_get("recorded_at")?,
        payload: row.try_get("payload")?,
    })
}

fn decode(rows: Vec<SqliteRow>) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.iter()
        .map(|r| stored_row(r)?.into_recorded())
        .collect()
}

#[async_trait]
impl EventLog for SqliteEventLog {
    async fn append(&self, events: Vec<ValidatedEvent>) -> Result<Vec<Appended>, StoreError> {
        group_commit::submit(&self.queue, events).await
    }

    async fn read_all(
        &self,
        after_position: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
        ))
        .bind(after_position)
        .bind(limit as i64)
        .fetch_all(&self.read_pool)
        .await?;
        decode(rows)
    }

    fn scan_typed(&self, after_position: i64, limit: usize) -> TypedScan<'_> {
        let mut reader = SqliteScan {
            path: self.path.clone(),
            conn: None,
            page_rows: limit.clamp(1, SCAN_PAGE_ROWS),
        };
        scan::read_ahead_blocking(after_position, move |after| reader.read_page(after))
    }

    async fn read_stream(
        &self,
        stream: &str,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE stream = ? AND stream_version > ? ORDER BY stream_version LIMIT ?"
        ))
        .bind(stream)
        .bind(after_version)
        .bind(limit as i64)
        .fetch_all(&self.read_pool)
        .await?;
        decode(rows)
    }

    async fn stream_version(&self, stream: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream = ?",
        )
        .bind(stream)
        .fetch_one(&self.read_pool)
        .await?)
    }

    async fn head(&self) -> Result<i64, StoreError> {
        Ok(current_head(&self.read_pool).await?)
    }

    fn watch(&self) -> watch::Receiver<i64> {
        self.head_rx.clone()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read_pool).await?;
        migrations_applied(&self.read_pool).await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn close(&self) {
        self.queue.write().await.take();
        if let Some(handle) = self.writer.lock().await.take() {
            let _ = handle.await;
        }
    }
}

/// A page of a scan. Rows are read in place by rusqlite on a blocking thread (see
/// [`SqliteScan`]), so `RawEvent` borrows each column's text from SQLite's own buffer.
const SCAN_PAGE_SQL: &str = "SELECT position, event_id, event_type, schema_version, occurred_at, \
    payload FROM events WHERE position > ?1 ORDER BY position LIMIT ?2";

/// Reads a scan's pages with rusqlite on a read-only connection of its own, opened on the first
/// read, on a thread of the blocking pool ([`scan::read_ahead_blocking`]).
///
/// Why not sqlx: sqlx's SQLite driver hands every column of every row over from its worker
/// thread as an owned copy through a channel. At 13 columns that cost several microseconds an
/// event, more than the fold itself. rusqlite steps the statement on the calling thread and
/// lends each text column straight out of SQLite's row buffer, which the decoder parses without
/// a copy. Both link the same `libsqlite3-sys`, so it is one SQLite. Each page is its own
/// statement (its own read transaction), so a long rebuild never pins a WAL snapshot and
/// checkpoints go on while it runs.
struct SqliteScan {
    path: PathBuf,
    conn: Option<rusqlite::Connection>,
    page_rows: usize,
}

impl SqliteScan {
    fn open(&self) -> Result<rusqlite::Connection, StoreError> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Map the file, so SQLite reads pages in place instead of copying each through `pread`
        // (measured ~10% faster on a 550 MB log).
        conn.pragma_update(None, "mmap_size", SCAN_MMAP_BYTES)?;
        Ok(conn)
    }

    fn read_page(&mut self, after_position: i64) -> Result<Vec<TypedEvent>, StoreError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = self.open()?;
                self.conn.insert(conn)
            }
        };
        let mut statement = conn.prepare_cached(SCAN_PAGE_SQL)?;
        let mut rows = statement.query((after_position, self.page_rows as i64))?;
        let mut events = Vec::with_capacity(self.page_rows);
        while let Some(row) = rows.next()? {
            let position: i64 = row.get(0)?;
            let text = |index: usize| -> Result<Option<&str>, StoreError> {
                row.get_ref(index)?
                    .as_str_or_null()
                    .map_err(|e| StoreError::Corrupt {
                        position,
                        what: format!("column {index}: {e}"),
                    })
            };
            let required = |index: usize| -> Result<&str, StoreError> {
                text(index)?.ok_or_else(|| StoreError::Corrupt {
                    position,
                    what: format!("column {index} is NULL"),
                })
            };
            let event = RawEvent {
                position,
                event_id: scan::parse_event_id(position, required(1)?)?,
                event_type: required(2)?,
                schema_version: row.get(3)?,
                occurred_at: required(4)?,
                payload: required(5)?,
            };
            events.push(event.into_typed()?);
        }
        Ok(events)
    }
}

/// The group-commit writer: one rusqlite connection, used only on the writer's own thread
/// ([`group_commit::spawn_thread`]), opened on the first group and again after an error, so a
/// broken connection heals.
///
/// Why rusqlite and not sqlx here: sqlx's SQLite driver runs every statement on a worker thread
/// of its own and hands it over and back through channels. A single-event append takes five
/// statements (`BEGIN IMMEDIATE`, the head, the insert, `COMMIT`, sometimes a version look-up),
/// and on this two-core VM each hand-over to a sleeping thread cost tens of microseconds: the
/// begin alone measured 176 µs at the median. Here the whole group runs on the thread that
/// received it.
struct SqliteGroupWriter {
    path: PathBuf,
    conn: Option<rusqlite::Connection>,
    /// This file's [`write_gate`], held from `BEGIN IMMEDIATE` to `COMMIT`/`ROLLBACK`.
    gate: Arc<tokio::sync::Mutex<()>>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// When this writer last checkpointed (see [`GroupWriter::after_group`]).
    checkpointed: Instant,
}

impl SqliteGroupWriter {
    fn conn(&mut self) -> &mut rusqlite::Connection {
        self.conn.as_mut().expect("begin() opens the connection")
    }
}

/// Opens a connection for writing with the settings of [`connect_options`]: the file exists and
/// is in WAL mode (a persistent setting), `synchronous` and the rest are per connection.
pub fn open_writer(path: &std::path::Path) -> Result<rusqlite::Connection, rusqlite::Error> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "full")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    // A group's multi-row INSERT runs with a statement journal (it may fail on a constraint
    // halfway and must then undo only itself), and so does each request's savepoint. SQLite
    // keeps such a journal in memory up to 64 KiB and then spills it to a new temporary file,
    // created and unlinked in the writer's path. With 64 clients each appending to its own
    // stream, a group rewrites one index page per stream, so nearly every second group spilled
    // (`strace`: ~1,800 `etilqs_*` files in 120 s of `bench ingest`); in memory, (c) rose from
    // 4.32 and 4.12 to 4.79 and 4.47 in alternating sets. The journal is bounded by the pages a
    // group touches and freed at its commit.
    conn.pragma_update(None, "temp_store", "memory")?;
    Ok(conn)
}

#[async_trait]
impl GroupWriter for SqliteGroupWriter {
    async fn begin(&mut self) -> Result<i64, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(open_writer(&self.path)?);
        }
        if self.turn.is_none() {
            self.turn = Some(self.gate.clone().lock_owned().await);
        }
        let conn = self.conn();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let head = conn
            .prepare_cached("SELECT COALESCE(MAX(position), 0) FROM events")?
            .query_row((), |row| row.get(0))?;
        Ok(head)
    }

    async fn commit(&mut self, _last_position: i64) -> Result<(), StoreError> {
        self.conn().execute_batch("COMMIT")?;
        self.turn = None;
        Ok(())
    }

    async fn abandon(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Closing the connection rolls back whatever is open; it is opened afresh.
            let _ = conn.execute_batch("ROLLBACK");
        }
        self.turn = None;
    }

    /// Checkpoints the WAL, at most every [`CHECKPOINT_INTERVAL`], between groups: after the
    /// last group was answered and before the next begins, so no append waits for the copy
    /// unless it arrives during it. Nothing else is committing meanwhile (other writers of the
    /// file are rare: projections, a migration), so the checkpoint copies every frame back and
    /// the next `BEGIN` starts the WAL over from its first frame.
    ///
    /// Why not leave this to a thread of its own, as before: a checkpoint that runs beside the
    /// writer never catches up with it. Appends committed while it copies stay behind, and
    /// SQLite starts the WAL over only once every frame is back in the database file; so the
    /// WAL grew to the [`WAL_AUTOCHECKPOINT_PAGES`] backstop (~40 MB) in every measurement,
    /// and every commit on the way extended the file, its fsync then also journalling the
    /// file's new size. Measured with `studio bench ingest --backend sqlite --runs 3`, one set
    /// before and two after: single appends from one client (goal b) p50 309 → 250 µs, p99
    /// 660 → 436–500 µs; 64 clients (goal c) no slower. A background checkpoint finished by
    /// the writer (the bulk copied beside it) gave a worse p99 (493–609 µs): its fsync of the
    /// database file slowed the commits' fsyncs.
    async fn after_group(&mut self) {
        if self.checkpointed.elapsed() < CHECKPOINT_INTERVAL {
            return;
        }
        self.checkpointed = Instant::now();
        if let Some(conn) = &self.conn {
            if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |_| Ok(())) {
                tracing::warn!(error = %err, path = %self.path.display(), "WAL checkpoint failed");
            }
        }
    }
}

#[async_trait]
impl AppendTx for SqliteGroupWriter {
    async fn savepoint(&mut self) -> Result<(), StoreError> {
        Ok(self.conn().execute_batch("SAVEPOINT append_request")?)
    }

    async fn release_savepoint(&mut self) -> Result<(), StoreError> {
        Ok(self
            .conn()
            .execute_batch("RELEASE SAVEPOINT append_request")?)
    }

    async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        Ok(self
            .conn()
            .execute_batch("ROLLBACK TO SAVEPOINT append_request")?)
    }

    async fn find_existing(
        &mut self,
        keys: &[String],
        event_ids: &[String],
    ) -> Result<Vec<StoredRow>, StoreError> {
        let conn = self.conn();
        let mut found = Vec::new();
        for (column, values) in [("idempotency_key", keys), ("event_id", event_ids)] {
            for chunk in values.chunks(KEYS_PER_LOOKUP) {
                let sql = format!(
                    "SELECT {COLUMNS} FROM events WHERE {column} IN ({})",
                    placeholders(chunk.len())
                );
                let mut statement = conn.prepare(&sql)?;
                let rows = statement.query_map(rusqlite::params_from_iter(chunk), |row| {
                    Ok(StoredRow {
                        position: row.get(0)?,
                        event_id: row.get(1)?,
                        event_type: row.get(2)?,
                        schema_version: row.get(3)?,
                        stream: row.get(4)?,
                        stream_version: row.get(5)?,
                        idempotency_key: row.get(6)?,
                        correlation_id: row.get(7)?,
                        causation_id: row.get(8)?,
                        producer: row.get(9)?,
                        occurred_at: row.get(10)?,
                        recorded_at: row.get(11)?,
                        payload: row.get(12)?,
                    })
                })?;
                for row in rows {
                    found.push(row?);
                }
            }
        }
        Ok(found)
    }

    async fn stream_versions(
        &mut self,
        streams: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let conn = self.conn();
        let mut versions = HashMap::new();
        for chunk in streams.chunks(KEYS_PER_LOOKUP) {
            let sql = format!(
                "SELECT stream, MAX(stream_version) FROM events WHERE stream IN ({}) GROUP BY stream",
                placeholders(chunk.len())
            );
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(chunk), |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (stream, version) = row?;
                versions.insert(stream, version);
            }
        }
        Ok(versions)
    }

    async fn insert(&mut self, rows: &[StoredRow]) -> Result<(), StoreError> {
        Ok(insert_rows(self.conn(), rows)?)
    }
}

/// Checkpoints the WAL of a quiet log on a thread of its own: every [`CHECKPOINT_INTERVAL`] in
/// which the log's writer appended nothing (while it appends, it checkpoints between groups,
/// see [`GroupWriter::after_group`]), `PASSIVE` (it never waits for a reader or a writer),
/// until the writer has ended. So the last appends before a pause, and what other connections
/// write to the file (projections), reach the database file without waiting for the next append.
///
/// SQLite's automatic checkpoint runs inside whichever `COMMIT` crosses 1,000 WAL pages: that
/// commit also writes the pages back and fsyncs the database file. Under a stream of
/// single-event appends that lands on every few hundredth append, squarely in the p99 an
/// appender waits. The connections' own automatic checkpoint stays on at
/// [`WAL_AUTOCHECKPOINT_PAGES`] only as a backstop.
fn spawn_checkpointer(path: PathBuf, mut head_rx: watch::Receiver<i64>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("studio-log-checkpoint".into())
        .spawn(move || {
            let mut conn: Option<rusqlite::Connection> = None;
            loop {
                std::thread::sleep(CHECKPOINT_INTERVAL);
                match head_rx.has_changed() {
                    Err(_) => return, // the writer (the watch's sender) is gone
                    Ok(true) => {
                        head_rx.borrow_and_update(); // the writer appended and checkpoints
                        continue;
                    }
                    Ok(false) => {}
                }
                let checkpoint = |conn: &mut Option<rusqlite::Connection>| {
                    let c = match conn {
                        Some(c) => c,
                        None => conn.insert(open_writer(&path)?),
                    };
                    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |_| Ok(()))
                };
                if let Err(err) = checkpoint(&mut conn) {
                    tracing::warn!(error = %err, path = %path.display(), "WAL checkpoint failed; trying again");
                    conn = None;
                }
            }
        })?;
    Ok(())
}

/// `?, ?, …`: `n` placeholders.
fn placeholders(n: usize) -> String {
    let mut list = "?, ".repeat(n);
    list.truncate(list.len().saturating_sub(2));
    list
}

/// Inserts rows as the store does: multi-row `INSERT`s of up to [`ROWS_PER_INSERT`] rows, each
/// statement prepared once per connection and size. Public so the ingest benchmark's raw
/// baseline runs the very same statement on the same client.
pub fn insert_rows(conn: &rusqlite::Connection, rows: &[StoredRow]) -> Result<(), rusqlite::Error> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let row = format!("({})", placeholders(13));
        let sql = format!(
            "INSERT INTO events ({COLUMNS}) VALUES {}",
            vec![row.as_str(); chunk.len()].join(", ")
        );
        let mut statement = conn.prepare_cached(&sql)?;
        let mut index = 0;
        let mut bind = |value: &dyn rusqlite::ToSql| {
            index += 1;
            statement.raw_bind_parameter(index, value)
        };
        for r in chunk {
            bind(&r.position)?;
            bind(&r.event_id)?;
            bind(&r.event_type)?;
            bind(&r.schema_version)?;
            bind(&r.stream)?;
            bind(&r.stream_version)?;
            bind(&r.idempotency_key)?;
            bind(&r.correlation_id)?;
            bind(&r.causation_id)?;
            bind(&r.producer)?;
            bind(&r.occurred_at)?;
            bind(&r.recorded_at)?;
            bind(&r.payload)?;
        }
        statement.raw_execute()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{EventPayload, RunCancelled};

    fn cancelled(n: usize) -> ValidatedEvent {
        let payload = EventPayload::RunCancelled(RunCancelled {
            run_id: format!("lt_{}", n % 50),
            reason: "x".repeat(300),
            actor: "ops".into(),
        });
        ValidatedEvent::from_payload(&payload, "test", chrono::Utc::now())
    }

    /// One group through the writer as the group-commit loop runs it, writing 20 KB.
    async fn write_group(writer: &mut SqliteGroupWriter) {
        writer.begin().await.unwrap();
        writer
            .conn()
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS filler (bytes BLOB); \
                 INSERT INTO filler VALUES (randomblob(20000))",
            )
            .unwrap();
        writer.commit(0).await.unwrap();
        writer.after_group().await;
    }

    /// The writer's statement journals stay in memory: a group that touches more than 64 KiB of
    /// pages would otherwise create (and unlink) a temporary file in the writer's path.
    #[test]
    fn the_writer_keeps_its_statement_journals_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("studio.db");
        rusqlite::Connection::open(&path).unwrap();
        let conn = open_writer(&path).unwrap();
        let temp_store: i64 = conn
            .query_row("PRAGMA temp_store", (), |row| row.get(0))
            .unwrap();
        assert_eq!(temp_store, 2, "PRAGMA temp_store: 2 is MEMORY");
    }

    /// The salts of the WAL's header: SQLite draws new ones each time it starts the WAL over
    /// from its first frame.
    fn wal_salts(db: &std::path::Path) -> [u8; 8] {
        use std::io::Read;
        let mut header = [0u8; 24];
        std::fs::File::open(db.with_extension("db-wal"))
            .unwrap()
            .read_exact(&mut header)
            .unwrap();
        header[16..].try_into().unwrap()
    }

    /// Between groups the writer checkpoints once [`CHECKPOINT_INTERVAL`] passed since its last
    /// checkpoint, so the next group starts the WAL over instead of extending the file; before
    /// that it leaves the WAL alone. (A checkpoint running beside a busy writer never lets the
    /// WAL start over: see `after_group`.)
    #[tokio::test]
    async fn the_writer_checkpoints_between_groups_so_the_wal_starts_over() {
        let (url, dir) = crate::testkit::sqlite_url();
        SqliteEventLog::open(&url, true)
            .await
            .unwrap()
            .close()
            .await;
        let db = dir.path().join("studio.db");
        let mut writer = SqliteGroupWriter {
            path: db.clone(),
            conn: None,
            gate: write_gate(&connect_options(&url).unwrap()),
            turn: None,
            checkpointed: Instant::now(),
        };
        write_group(&mut writer).await;
        let first = wal_salts(&db);
        write_group(&mut writer).await;
        assert_eq!(
            wal_salts(&db),
            first,
            "no checkpoint was due: the WAL goes on"
        );
        writer.checkpointed = Instant::now() - CHECKPOINT_INTERVAL;
        write_group(&mut writer).await; // ... and checkpoints after it
        assert_eq!(wal_salts(&db), first);
        write_group(&mut writer).await;
        assert_ne!(wal_salts(&db), first, "the WAL did not start over");
    }

    /// The checkpointer writes the WAL back into the database file while the log is open. The
    /// connections' own automatic checkpoint would not before 10,000 WAL pages (~40 MB), far
    /// more than this test writes, so a database file that grows is the checkpointer's work.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_moves_the_wal_into_the_database_file() {
        let (url, dir) = crate::testkit::sqlite_url();
        let log = SqliteEventLog::open(&url, true).await.unwrap();
        let db = dir.path().join("studio.db");
        let before = std::fs::metadata(&db).unwrap().len();
        for chunk in 0..10 {
            let events = (0..500).map(|n| cancelled(chunk * 500 + n)).collect();
            log.append(events).await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("studio.db-wal"))
            .unwrap()
            .len();
        assert!(wal > 2 << 20, "the appends went to the WAL: {wal} bytes");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let after = loop {
            let size = std::fs::metadata(&db).unwrap().len();
            if size > before + (2 << 20) || std::time::Instant::now() > deadline {
                break size;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            after > before + (2 << 20),
            "the database file stayed at {after} bytes (from {before}): nothing was checkpointed"
        );
        assert_eq!(log.head().await.unwrap(), 5_000);
        log.close().await;
    }

    #[test]
    fn placeholders_are_comma_separated() {
        assert_eq!(placeholders(0), "");
        assert_eq!(placeholders(1), "?");
        assert_eq!(placeholders(3), "?, ?, ?");
    }
}
