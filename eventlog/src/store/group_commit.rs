//! Group commit: one writer task per store turns many concurrent append requests into one
//! transaction and one fsync, then answers each request. A request is answered only after the
//! transaction holding it committed, so an acknowledged event is durable.

use super::{append_group, AppendTx, Appended, GroupState, StoreError};
use crate::envelope::StoredRow;
use crate::envelope::{format_timestamp, ValidatedEvent};
use async_trait::async_trait;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Most events one group transaction takes before it commits. A single request larger than this
/// still goes in whole (requests are never split).
pub const MAX_GROUP_EVENTS: usize = 20_000;

/// Stream versions the writer remembers between groups (see [`VersionCache`]).
const MAX_CACHED_STREAMS: usize = 100_000;

/// How many requests may wait for the writer before appenders feel back-pressure.
pub(crate) const QUEUE_DEPTH: usize = 4_096;

pub(crate) type Reply = oneshot::Sender<Result<Vec<Appended>, StoreError>>;

pub(crate) struct AppendRequest {
    pub events: Vec<ValidatedEvent>,
    pub reply: Reply,
}

/// A store's side of the group transaction.
#[async_trait]
pub(crate) trait GroupWriter: AppendTx + Send + 'static {
    /// Begins the group transaction (taking whatever lock orders appends) and returns the
    /// highest committed position.
    async fn begin(&mut self) -> Result<i64, StoreError>;
    /// Commits; `last_position` is the highest position written in the group.
    async fn commit(&mut self, last_position: i64) -> Result<(), StoreError>;
    /// Abandons the group after an error (best effort; the connection is dropped after it).
    async fn abandon(&mut self);

    /// Whether the store can write a group in one statement that commits on its own
    /// ([`append_if_head`](Self::append_if_head)). Worth it where each statement is a network
    /// round trip (PostgreSQL); SQLite's writer is in process.
    fn one_statement_groups(&self) -> bool {
        false
    }

    /// Inserts `rows` (positions from `head + 1` on), advances the head and commits, in one
    /// statement outside any transaction, but only if the log's head is still `head`; `false`,
    /// with nothing written, if another writer appended since. Lookups made before it (through
    /// this writer's [`AppendTx`] methods, outside a transaction) are valid exactly when it
    /// returns `true`: every append moves the head.
    async fn append_if_head(&mut self, head: i64, rows: &[StoredRow]) -> Result<bool, StoreError> {
        let _ = (head, rows);
        Err(StoreError::NotStored(
            "this store writes no group in one statement".to_string(),
        ))
    }

    /// Upkeep between groups, after every request of the last one was answered.
    async fn after_group(&mut self) {}
}

/// Starts the writer as a task. It ends when every sender is dropped and the queue is drained.
pub(crate) fn spawn<W: GroupWriter>(
    writer: W,
    head_tx: watch::Sender<i64>,
) -> (mpsc::Sender<AppendRequest>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<AppendRequest>(QUEUE_DEPTH);
    let handle = tokio::spawn(async move {
        let mut writer = Writer::new(writer, head_tx);
        while let Some(first) = rx.recv().await {
            let group = gather(first, &mut rx);
            writer.write(group).await;
        }
    });
    (tx, handle)
}

/// Starts the writer on an OS thread of its own, for a store whose client blocks (SQLite through
/// rusqlite): every statement of a group then runs on this one thread, with no hand-over between
/// threads per statement, and the fsync blocks no task. The `GroupWriter`'s futures must not
/// need the Tokio runtime. The handle completes when the thread has ended.
pub(crate) fn spawn_thread<W: GroupWriter>(
    name: &str,
    writer: W,
    head_tx: watch::Sender<i64>,
) -> std::io::Result<(mpsc::Sender<AppendRequest>, JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<AppendRequest>(QUEUE_DEPTH);
    let (done_tx, done_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut writer = Writer::new(writer, head_tx);
            while let Some(first) = next_request(&mut rx) {
                let group = gather(first, &mut rx);
                futures::executor::block_on(writer.write(group));
            }
            drop(writer);
            let _ = done_tx.send(());
        })?;
    let handle = tokio::spawn(async move {
        let _ = done_rx.await;
    });
    Ok((tx, handle))
}

/// How long the writer thread looks for the next request before it sleeps. A sleeping thread
/// takes tens of microseconds to wake on these VMs, on the path of every append that finds the
/// writer idle; a thread that yields in a loop for a moment takes the next request at once.
/// Measured with `studio bench ingest --backend sqlite --runs 3`: single appends from one client
/// (goal b) p50 459 → 380 µs, p99 755 → 656 µs; 64 clients (goal c) unchanged. The cost is at
/// most this much yielding per commit, and nothing while appends come back to back.
const WRITER_SPIN: Duration = Duration::from_micros(300);

/// The next request for the writer thread: looked for in a `yield_now` loop for [`WRITER_SPIN`],
/// then waited for asleep. `None` once every sender is dropped and the queue is empty.
fn next_request(rx: &mut mpsc::Receiver<AppendRequest>) -> Option<AppendRequest> {
    let started = Instant::now();
    while started.elapsed() < WRITER_SPIN {
        match rx.try_recv() {
            Ok(request) => return Some(request),
            Err(mpsc::error::TryRecvError::Empty) => std::thread::yield_now(),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
        }
    }
    rx.blocking_recv()
}

/// The first request and whatever else is queued, up to [`MAX_GROUP_EVENTS`].
fn gather(first: AppendRequest, rx: &mut mpsc::Receiver<AppendRequest>) -> Vec<AppendRequest> {
    let mut size = first.events.len();
    let mut group = vec![first];
    while size < MAX_GROUP_EVENTS {
        match rx.try_recv() {
            Ok(next) => {
                size += next.events.len();
                group.push(next);
            }
            Err(_) => break,
        }
    }
    group
}

/// A writer between groups: the store's side, the head it publishes and the versions it knows.
struct Writer<W> {
    store: W,
    head_tx: watch::Sender<i64>,
    cache: VersionCache,
}

impl<W: GroupWriter> Writer<W> {
    fn new(store: W, head_tx: watch::Sender<i64>) -> Self {
        Self {
            store,
            head_tx,
            cache: VersionCache::default(),
        }
    }

    /// Writes one group in one transaction and answers each of its requests.
    async fn write(&mut self, group: Vec<AppendRequest>) {
        match write_group(&mut self.store, &group, &mut self.cache).await {
            Ok((answers, last)) => {
                self.head_tx.send_if_modified(|head| {
                    let advanced = last > *head;
                    *head = (*head).max(last);
                    advanced
                });
                for (request, answer) in group.into_iter().zip(answers) {
                    // The appender may have gone away (client disconnected); the events are
                    // stored all the same, and a retry with the same key will find them.
                    let _ = request.reply.send(answer);
                }
                self.store.after_group().await;
            }
            Err(err) => {
                self.cache.forget();
                let events: usize = group.iter().map(|r| r.events.len()).sum();
                tracing::error!(error = %err, requests = group.len(), events, "append group failed; nothing of it was stored");
                self.store.abandon().await;
                for request in group {
                    let _ = request
                        .reply
                        .send(Err(StoreError::NotStored(err.to_string())));
                }
            }
        }
    }
}

/// Stream versions as of the last commit of this writer. They stay valid only while nobody else
/// appended since: the next group checks that the head it finds is the head it left.
#[derive(Default)]
struct VersionCache {
    head: Option<i64>,
    versions: HashMap<String, i64>,
}

impl VersionCache {
    fn take_if_current(&mut self, head: i64) -> HashMap<String, i64> {
        if self.head == Some(head) {
            std::mem::take(&mut self.versions)
        } else {
            self.forget();
            HashMap::new()
        }
    }

    fn keep(&mut self, head: i64, mut versions: HashMap<String, i64>) {
        if versions.len() > MAX_CACHED_STREAMS {
            versions.clear();
        }
        self.head = Some(head);
        self.versions = versions;
    }

    fn forget(&mut self) {
        self.head = None;
        self.versions.clear();
    }
}

type GroupAnswers = (Vec<Result<Vec<Appended>, StoreError>>, i64);

async fn write_group<W: GroupWriter>(
    writer: &mut W,
    group: &[AppendRequest],
    cache: &mut VersionCache,
) -> Result<GroupAnswers, StoreError> {
    if let Some(written) = write_group_in_one_statement(writer, group, cache).await? {
        return Ok(written);
    }
    let head = writer.begin().await?;
    let mut state = GroupState {
        next_position: head + 1,
        recorded_at: format_timestamp(chrono::Utc::now()),
        stream_versions: cache.take_if_current(head),
    };
    let requests: Vec<&[ValidatedEvent]> = group.iter().map(|r| r.events.as_slice()).collect();
    let answers = append_group(writer, &mut state, &requests).await?;
    let last = state.next_position - 1;
    writer.commit(last).await?;
    cache.keep(last, state.stream_versions);
    Ok((answers, last))
}

/// The group written in one statement ([`GroupWriter::append_if_head`]): one round trip and one
/// commit instead of `BEGIN` with the head's lock, the insert and `COMMIT` (measured with
/// `studio bench ingest --backend postgres`, see BENCHMARKS.md). The writer decides the group
/// against the head and stream versions it left at its last commit; the statement checks that
/// head under its lock. `None` when this path does not apply and the group goes the usual way:
/// the store has no such statement, the writer does not know the head (first group, or after an
/// error), a producer chose an event id (a collision is isolated request by request, behind
/// savepoints, in a transaction), nothing is new (the answers would rest on unchecked lookups),
/// or another writer appended since.
async fn write_group_in_one_statement<W: GroupWriter>(
    writer: &mut W,
    group: &[AppendRequest],
    cache: &mut VersionCache,
) -> Result<Option<GroupAnswers>, StoreError> {
    if !writer.one_statement_groups() {
        return Ok(None);
    }
    let Some(head) = cache.head else {
        return Ok(None);
    };
    let ids_chosen = group
        .iter()
        .any(|r| r.events.iter().any(|e| e.event_id_supplied));
    if ids_chosen {
        return Ok(None);
    }
    let mut state = GroupState {
        next_position: head + 1,
        recorded_at: format_timestamp(chrono::Utc::now()),
        stream_versions: cache.take_if_current(head),
    };
    let requests: Vec<&[ValidatedEvent]> = group.iter().map(|r| r.events.as_slice()).collect();
    let mut deferred = Deferred {
        writer: &mut *writer,
        rows: Vec::new(),
        wanted_savepoint: false,
    };
    let answers = match append_group(&mut deferred, &mut state, &requests).await {
        Ok(answers) => answers,
        // A slow path of `append_group` (request by request, each behind a savepoint).
        Err(_) if deferred.wanted_savepoint => {
            cache.forget();
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let rows = deferred.rows;
    let last = state.next_position - 1;
    if rows.is_empty() || !writer.append_if_head(head, &rows).await? {
        cache.forget();
        return Ok(None);
    }
    cache.keep(last, state.stream_versions);
    Ok(Some((answers, last)))
}

/// A writer outside a transaction whose inserts are kept to be written in one statement. It
/// takes no savepoints: a group that needs one goes the usual way.
struct Deferred<'a, W> {
    writer: &'a mut W,
    rows: Vec<StoredRow>,
    wanted_savepoint: bool,
}

#[async_trait]
impl<W: GroupWriter> AppendTx for Deferred<'_, W> {
    async fn savepoint(&mut self) -> Result<(), StoreError> {
        self.wanted_savepoint = true;
        Err(no_savepoints())
    }

    async fn release_savepoint(&mut self) -> Result<(), StoreError> {
        Err(no_savepoints())
    }

    async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        Err(no_savepoints())
    }

    async fn find_existing(
        &mut self,
        keys: &[String],
        event_ids: &[String],
    ) -> Result<Vec<StoredRow>, StoreError> {
        self.writer.find_existing(keys, event_ids).await
    }

    async fn stream_versions(
        &mut self,
        streams: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        self.writer.stream_versions(streams).await
    }

    async fn insert(&mut self, rows: &[StoredRow]) -> Result<(), StoreError> {
        self.rows.extend_from_slice(rows);
        Ok(())
    }
}

fn no_savepoints() -> StoreError {
    StoreError::NotStored("a group written in one statement takes no savepoints".to_string())
}

/// Sends a request to the writer and waits for its answer.
pub(crate) async fn submit(
    queue: &tokio::sync::RwLock<Option<mpsc::Sender<AppendRequest>>>,
    events: Vec<ValidatedEvent>,
) -> Result<Vec<Appended>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let (reply, answer) = oneshot::channel();
    {
        let guard = queue.read().await;
        let sender = guard.as_ref().ok_or(StoreError::Closed)?;
        sender
            .send(AppendRequest { events, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
    }
    answer.await.map_err(|_| StoreError::Closed)?
}
