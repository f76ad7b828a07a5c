//! The `EventLog` trait and what both stores share: the group-commit writer and the append
//! algorithm (idempotency, expected versions, gap-free positions).

mod group_commit;
mod pg_scan;
pub mod postgres;
mod scan;
pub mod sqlite;

pub use group_commit::MAX_GROUP_EVENTS;
pub use scan::{TypedEvent, TypedScan};

use crate::envelope::{RecordedEvent, StoredRow, ValidatedEvent};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a waiting reader sleeps between checks of the store itself. Appends made by this
/// process wake readers at once through [`EventLog::watch`]; this slower check only picks up
/// appends made by other processes sharing the same database.
pub const CROSS_PROCESS_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An `expected_version` did not hold. `index` is the event's index in its append call.
    #[error(
        "stream {stream:?} is at version {actual}, but event {index} expected version {expected}"
    )]
    Conflict {
        index: usize,
        stream: String,
        expected: i64,
        actual: i64,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An error of the SQLite store's writer or scan, which use rusqlite (see the sqlite module).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The group this append was part of failed to commit; nothing of it was stored.
    #[error("the append was not stored: {0}")]
    NotStored(String),
    /// A producer-chosen event id is already stored under another idempotency key.
    #[error("an event id is already stored for a different event: {0}")]
    IdCollision(String),
    #[error("stored event at position {position} cannot be read: {what}")]
    Corrupt { position: i64, what: String },
    #[error("the database is not migrated: {0}")]
    NotMigrated(String),
    #[error("the event log is shut down")]
    Closed,
}

/// The answer for one event of an append call.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// Newly stored at the event's position.
    New(RecordedEvent),
    /// Its idempotency key (or producer-chosen event id) was already in the log: this is the
    /// stored event, and nothing was appended.
    Duplicate(RecordedEvent),
}

impl Appended {
    pub fn event(&self) -> &RecordedEvent {
        match self {
            Appended::New(e) | Appended::Duplicate(e) => e,
        }
    }

    pub fn into_event(self) -> RecordedEvent {
        match self {
            Appended::New(e) | Appended::Duplicate(e) => e,
        }
    }

    pub fn is_new(&self) -> bool {
        matches!(self, Appended::New(_))
    }
}

/// The one event log every producer writes and every reader tails.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends a batch atomically: every event is stored, or none is. Returns once the batch is
    /// durable. Events whose idempotency key is already stored come back as
    /// [`Appended::Duplicate`]; an `expected_version` that does not hold refuses the whole batch
    /// with [`StoreError::Conflict`]. Within a batch, later events see the versions earlier ones
    /// gave their stream.
    async fn append(&self, events: Vec<ValidatedEvent>) -> Result<Vec<Appended>, StoreError>;

    /// Events with `position > after_position`, in position order, at most `limit`.
    async fn read_all(
        &self,
        after_position: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Every event with `position > after_position` to the end of the log, in position order,
    /// in batches of at most `limit` (a store may choose smaller ones), each with its typed
    /// payload: the read path of a fold over the whole log, such as a rebuild. The scan ends at
    /// the first read that finds nothing more.
    ///
    /// Each event comes as the fold's view of it ([`FoldEvent`](crate::FoldEvent)): the same
    /// position, id, type and occurrence time as `read_all` gives, with the typed payload
    /// `RecordedEvent::typed` gives. The stores read only those columns, read ahead of the
    /// caller and decode off its task.
    fn scan_typed(&self, after_position: i64, limit: usize) -> TypedScan<'_> {
        scan::scan_by_pages(self, after_position, limit)
    }

    /// Events of one stream with `stream_version > after_version`, in order, at most `limit`.
    async fn read_stream(
        &self,
        stream: &str,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The current version of a stream (0 when it has no events).
    async fn stream_version(&self, stream: &str) -> Result<i64, StoreError>;

    /// The highest committed position (0 for an empty log), read from the store.
    async fn head(&self) -> Result<i64, StoreError>;

    /// The highest position this process knows to be committed; changes after every append.
    fn watch(&self) -> watch::Receiver<i64>;

    /// Ok when the store answers and every migration this build knows is applied.
    async fn ready(&self) -> Result<(), StoreError>;

    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Stops accepting appends, finishes the ones already queued, and returns when they are
    /// committed and answered.
    async fn close(&self);
}

/// Waits until the log holds a position above `after`, or `timeout` passes. Returns the head it
/// saw. Readers wake on this process's appends at once and check the store every
/// [`CROSS_PROCESS_POLL`] for appends made elsewhere, so nobody polls hot.
pub async fn wait_for_position(
    log: &dyn EventLog,
    after: i64,
    timeout: Duration,
) -> Result<i64, StoreError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = log.watch();
    loop {
        let known = *rx.borrow_and_update();
        if known > after {
            return Ok(known);
        }
        let head = log.head().await?;
        if head > after {
            return Ok(head);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(head.max(known));
        }
        let nap = (deadline - now).min(CROSS_PROCESS_POLL);
        // A closed sender only means the store shut down; the next head() answers for itself.
        let _ = tokio::time::timeout(nap, rx.changed()).await;
    }
}

/// Opens the store a database URL names (`sqlite://…` or `postgres://…`), running migrations
/// first when `migrate` is set.
pub async fn open(url: &str, migrate: bool) -> Result<Arc<dyn EventLog>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteEventLog::open(url, migrate).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(
            postgres::PostgresEventLog::open(url, migrate).await?,
        ))
    } else {
        Err(StoreError::Database(sqlx::Error::Configuration(
            format!("unsupported database URL {url:?}: use sqlite://PATH or postgres://…").into(),
        )))
    }
}

/// The statements an append needs, inside the open group transaction. Each store implements it
/// with its own SQL; [`append_request`] is the one algorithm over it. Every method works on a
/// whole request at once, so an append of 1,000 events costs a handful of statements, not
/// thousands.
#[async_trait]
pub(crate) trait AppendTx: Send {
    async fn savepoint(&mut self) -> Result<(), StoreError>;
    async fn release_savepoint(&mut self) -> Result<(), StoreError>;
    async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError>;
    /// Stored events whose idempotency key or event id is among those given.
    async fn find_existing(
        &mut self,
        keys: &[String],
        event_ids: &[String],
    ) -> Result<Vec<StoredRow>, StoreError>;
    /// Current versions of the given streams; streams without events are left out.
    async fn stream_versions(
        &mut self,
        streams: &[String],
    ) -> Result<HashMap<String, i64>, StoreError>;
    async fn insert(&mut self, rows: &[StoredRow]) -> Result<(), StoreError>;
}

/// What a group transaction tracks between requests: the next free position and the stream
/// versions it already looked up or advanced.
#[derive(Clone)]
pub(crate) struct GroupState {
    pub next_position: i64,
    pub recorded_at: String,
    pub stream_versions: HashMap<String, i64>,
}

/// Stored events found by idempotency key or producer-chosen event id; rows decided earlier in
/// the same group join them, so a later repeat is answered as a duplicate.
#[derive(Default)]
struct Known {
    by_key: HashMap<String, RecordedEvent>,
    by_id: HashMap<uuid::Uuid, RecordedEvent>,
}

impl Known {
    fn add(&mut self, recorded: RecordedEvent) {
        if let Some(key) = &recorded.idempotency_key {
            self.by_key.insert(key.clone(), recorded.clone());
        }
        self.by_id.insert(recorded.event_id, recorded);
    }

    fn repeat_of(&self, event: &ValidatedEvent) -> Option<&RecordedEvent> {
        match &event.idempotency_key {
            Some(key) => self.by_key.get(key),
            None if event.event_id_supplied => self.by_id.get(&event.event_id),
            None => None,
        }
    }
}

/// Keys and producer-chosen ids to look up for these events.
fn lookup_keys<'a>(events: impl Iterator<Item = &'a ValidatedEvent>) -> (Vec<String>, Vec<String>) {
    let (mut keys, mut ids) = (Vec::new(), Vec::new());
    for e in events {
        match &e.idempotency_key {
            Some(key) => keys.push(key.clone()),
            None if e.event_id_supplied => ids.push(e.event_id.to_string()),
            None => {}
        }
    }
    (keys, ids)
}

async fn load_known(
    tx: &mut dyn AppendTx,
    keys: &[String],
    ids: &[String],
) -> Result<Result<Known, StoreError>, StoreError> {
    let mut known = Known::default();
    if keys.is_empty() && ids.is_empty() {
        return Ok(Ok(known));
    }
    for row in tx.find_existing(keys, ids).await? {
        match row.into_recorded() {
            Ok(recorded) => known.add(recorded),
            Err(err) => return Ok(Err(err)),
        }
    }
    Ok(Ok(known))
}

/// Looks up the versions of streams this group has not seen yet.
async fn load_versions<'a>(
    tx: &mut dyn AppendTx,
    group: &mut GroupState,
    events: impl Iterator<Item = &'a ValidatedEvent>,
) -> Result<(), StoreError> {
    let mut unknown: Vec<String> = events
        .filter(|e| !group.stream_versions.contains_key(&e.stream))
        .map(|e| e.stream.clone())
        .collect();
    unknown.sort();
    unknown.dedup();
    if unknown.is_empty() {
        return Ok(());
    }
    let found = tx.stream_versions(&unknown).await?;
    for stream in unknown {
        let v = found.get(&stream).copied().unwrap_or(0);
        group.stream_versions.insert(stream, v);
    }
    Ok(())
}

/// Decides one request against the group so far: each event is a repeat, a conflict (which
/// refuses the whole request and leaves the group as it was), or a new row. On success the group
/// advances and the new rows are returned with the answers.
fn decide(
    group: &mut GroupState,
    known: &mut Known,
    events: &[ValidatedEvent],
) -> Result<(Vec<StoredRow>, Vec<Appended>), StoreError> {
    let mut next_position = group.next_position;
    let mut versions: HashMap<&str, i64> = HashMap::new();
    let mut added: Vec<RecordedEvent> = Vec::new();
    let mut rows = Vec::new();
    let mut answers = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let in_request = added.iter().find(|r| match &event.idempotency_key {
            Some(key) => r.idempotency_key.as_ref() == Some(key),
            None => event.event_id_supplied && r.event_id == event.event_id,
        });
        if let Some(stored) = in_request.or_else(|| known.repeat_of(event)) {
            answers.push(Appended::Duplicate(stored.clone()));
            continue;
        }
        let current = versions
            .get(event.stream.as_str())
            .copied()
            .unwrap_or(group.stream_versions[&event.stream]);
        if let Some(expected) = event.expected_version {
            if expected != current {
                return Err(StoreError::Conflict {
                    index,
                    stream: event.stream.clone(),
                    expected,
                    actual: current,
                });
            }
        }
        let row = StoredRow {
            position: next_position,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.to_string(),
            schema_version: i64::from(event.schema_version),
            stream: event.stream.clone(),
            stream_version: current + 1,
            idempotency_key: event.idempotency_key.clone(),
            correlation_id: event.correlation_id.clone(),
            causation_id: event.causation_id.clone(),
            producer: event.producer.clone(),
            occurred_at: event.occurred_at.clone(),
            recorded_at: group.recorded_at.clone(),
            payload: event.payload.to_string(),
        };
        let recorded = RecordedEvent {
            position: row.position,
            event_id: event.event_id,
            event_type: row.event_type.clone(),
            schema_version: crate::upcast::current_version(event.event_type),
            stream: row.stream.clone(),
            stream_version: row.stream_version,
            idempotency_key: row.idempotency_key.clone(),
            correlation_id: row.correlation_id.clone(),
            causation_id: row.causation_id.clone(),
            producer: row.producer.clone(),
            occurred_at: row.occurred_at.clone(),
            recorded_at: row.recorded_at.clone(),
            // Validated on the way in, so upcasting cannot fail; no need to re-parse the row.
            payload: crate::upcast::upcast(
                event.event_type,
                event.schema_version,
                event.payload.clone(),
            )
            .map_err(|e| StoreError::Corrupt {
                position: row.position,
                what: e.to_string(),
            })?,
        };
        if event.idempotency_key.is_some() || event.event_id_supplied {
            added.push(recorded.clone());
        }
        versions.insert(&event.stream, current + 1);
        next_position += 1;
        rows.push(row);
        answers.push(Appended::New(recorded));
    }
    group.next_position = next_position;
    for (stream, v) in versions {
        group.stream_versions.insert(stream.to_string(), v);
    }
    for recorded in added {
        known.add(recorded);
    }
    Ok((rows, answers))
}

/// Applies a whole group of requests with a handful of statements: one look-up of every key,
/// one of every stream version, one insert of every new row. Each request is still refused or
/// accepted on its own. Only a producer-chosen event id can make the insert fail (it collides
/// with a stored event under another key); then the group is redone request by request, each
/// behind a savepoint, so the colliding request alone is refused.
pub(crate) async fn append_group(
    tx: &mut dyn AppendTx,
    group: &mut GroupState,
    requests: &[&[ValidatedEvent]],
) -> Result<Vec<Result<Vec<Appended>, StoreError>>, StoreError> {
    let start = group.clone();
    let all = || requests.iter().flat_map(|r| r.iter());
    let (keys, ids) = lookup_keys(all());
    let mut known = match load_known(tx, &keys, &ids).await? {
        Ok(k) => k,
        Err(_) => return append_one_by_one(tx, group, requests).await,
    };
    load_versions(tx, group, all()).await?;
    let mut rows = Vec::new();
    let mut answers = Vec::with_capacity(requests.len());
    for events in requests {
        match decide(group, &mut known, events) {
            Ok((new_rows, answer)) => {
                rows.extend(new_rows);
                answers.push(Ok(answer));
            }
            Err(err) => answers.push(Err(err)),
        }
    }
    if rows.is_empty() {
        return Ok(answers);
    }
    let may_collide = all().any(|e| e.event_id_supplied);
    if !may_collide {
        tx.insert(&rows).await?;
        return Ok(answers);
    }
    tx.savepoint().await?;
    match tx.insert(&rows).await {
        Ok(()) => {
            tx.release_savepoint().await?;
            Ok(answers)
        }
        Err(err) if unique_violation(&err).is_some() => {
            tx.rollback_to_savepoint().await?;
            tx.release_savepoint().await?;
            *group = start;
            append_one_by_one(tx, group, requests).await
        }
        Err(other) => Err(other),
    }
}

async fn append_one_by_one(
    tx: &mut dyn AppendTx,
    group: &mut GroupState,
    requests: &[&[ValidatedEvent]],
) -> Result<Vec<Result<Vec<Appended>, StoreError>>, StoreError> {
    let mut answers = Vec::with_capacity(requests.len());
    for events in requests {
        answers.push(append_request(tx, group, events).await?);
    }
    Ok(answers)
}

/// Applies one request on its own, behind a savepoint: the slow path that isolates a request
/// whose producer-chosen event id collides with a stored event.
pub(crate) async fn append_request(
    tx: &mut dyn AppendTx,
    group: &mut GroupState,
    events: &[ValidatedEvent],
) -> Result<Result<Vec<Appended>, StoreError>, StoreError> {
    let (keys, ids) = lookup_keys(events.iter());
    let mut known = match load_known(tx, &keys, &ids).await? {
        Ok(k) => k,
        Err(err) => return Ok(Err(err)),
    };
    load_versions(tx, group, events.iter()).await?;
    let before = group.clone();
    let (rows, answers) = match decide(group, &mut known, events) {
        Ok(decided) => decided,
        Err(err) => return Ok(Err(err)),
    };
    if rows.is_empty() {
        return Ok(Ok(answers));
    }
    tx.savepoint().await?;
    match tx.insert(&rows).await {
        Ok(()) => {
            tx.release_savepoint().await?;
            Ok(Ok(answers))
        }
        Err(err) => match unique_violation(&err) {
            Some(message) => {
                tx.rollback_to_savepoint().await?;
                tx.release_savepoint().await?;
                *group = before;
                Ok(Err(StoreError::IdCollision(message)))
            }
            None => Err(err),
        },
    }
}

/// The database's message when an insert broke a unique constraint (a producer-chosen event id
/// already stored), whichever client the store writes with.
fn unique_violation(err: &StoreError) -> Option<String> {
    match err {
        StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            Some(db.message().to_string())
        }
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, message))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Some(message.clone().unwrap_or_else(|| e.to_string()))
        }
        _ => None,
    }
}

/// Compares the migrations a database has applied with those this build embeds.
pub(crate) fn check_migrations(
    migrator: &sqlx::migrate::Migrator,
    applied: &[i64],
) -> Result<(), StoreError> {
    let missing: Vec<String> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::NotMigrated(format!(
            "pending migrations: {}; run `studio migrate`",
            missing.join(", ")
        )))
    }
}
