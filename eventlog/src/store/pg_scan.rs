//! The scan of a PostgreSQL log (see [`EventLog::scan_typed`](super::EventLog::scan_typed)):
//! several server processes each stream chunks of positions in the binary `COPY` format.
//!
//! # Chunks
//!
//! Positions have no gaps (see the crate docs on `event_log_head`), so the scan cuts the log
//! into chunks of `R` positions, `(after + kR, after + (k + 1)R]`, and [`SCAN_CONNECTIONS`]
//! readers, each on a thread and a connection of its own, each read and decode every `n`-th
//! chunk, as far ahead of the fold as [`PAGES_AHEAD`](super::scan::PAGES_AHEAD) allows. The scan takes the chunks in order,
//! round robin over the tasks. Positions commit in order, so a chunk read at any moment is a
//! prefix of its range: a full chunk is complete, and the first short one ends the fast part.
//! Chunks read after it are dropped. From there the scan reads pages of `R` events after the
//! last it gave until one comes back empty, so an unexpected gap costs speed, never events.
//!
//! # Binary `COPY`
//!
//! Through `SELECT` every row arrives as a `DataRow` that sqlx keeps as a `PgRow` (its own
//! buffer, column offsets, a handle on the statement's metadata) and decodes column by
//! column; through `COPY (SELECT …) TO STDOUT (FORMAT binary)` a chunk arrives as one run of
//! bytes that is split in place: a row is six length-prefixed fields (see [`COPY_COLUMNS`]).
//!
//! The chunk readers connect with bitmap and sequential scans off. Left to choose, the planner
//! read a 10,000-position range through a bitmap scan and a sort in twice the time of the
//! primary key's index scan (measured on 1,000,000 events).
//!
//! The format (PostgreSQL docs, "COPY … Binary Format"): an 11-byte signature, a 32-bit flags
//! word, a 32-bit header-extension length and that many bytes; then per row a 16-bit field
//! count, and per field a 32-bit length (`-1` for NULL) and that many bytes; then a 16-bit `-1`
//! trailer. All integers are big-endian.

use super::scan::RawEvent;
use super::scan::{TypedEvent, TypedScan, PAGES_AHEAD};
use super::StoreError;
use futures::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::Connection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Server processes a scan keeps busy at once; measured on two cores: 2 read ~45% faster than
/// 1, 3 no faster than 2.
pub(crate) const SCAN_CONNECTIONS: usize = 2;

/// A chunk's events, decoded by its reader (or the panic that stopped the decoding), and whether
/// it held its whole range.
struct Chunk {
    decoded: std::thread::Result<Result<Vec<TypedEvent>, StoreError>>,
    full: bool,
}

/// Every event after `after_position` to the end of the log, in chunks of `rows` positions.
pub(crate) fn scan(pool: PgPool, after_position: i64, rows: usize) -> TypedScan<'static> {
    let rows = rows.max(1);
    let mut readers = Vec::with_capacity(SCAN_CONNECTIONS);
    for first in 0..SCAN_CONNECTIONS {
        let (chunk_tx, chunk_rx) = mpsc::channel((PAGES_AHEAD / SCAN_CONNECTIONS).max(1));
        let options = (*pool.connect_options()).clone();
        spawn_reader(options, after_position, rows, first, chunk_tx);
        readers.push(chunk_rx);
    }
    let state = State {
        pool,
        rows,
        last: after_position,
        chunks: Some(readers),
        next: 0,
        done: false,
    };
    let batches = futures::stream::unfold(state, |mut state| async move {
        let batch = state.next_batch().await;
        if batch.is_err() {
            state.done = true;
        }
        batch.transpose().map(|batch| (batch, state))
    });
    TypedScan::new(batches.boxed())
}

/// Where each chunk reader sends its chunks. A reader stops at its next chunk once its
/// receiver is dropped.
type ChunkReaders = Vec<mpsc::Receiver<Result<Chunk, StoreError>>>;

struct State {
    pool: PgPool,
    rows: usize,
    /// The last position given to the caller (or where the scan started).
    last: i64,
    /// The chunk readers while the scan is in its fast part.
    chunks: Option<ChunkReaders>,
    /// The chunk to take next, counted from the start of the scan.
    next: usize,
    done: bool,
}

impl State {
    /// The next non-empty batch; `None` at the end of the log.
    async fn next_batch(&mut self) -> Result<Option<Vec<TypedEvent>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        while let Some(readers) = &mut self.chunks {
            let reader = &mut readers[self.next % SCAN_CONNECTIONS];
            let Some(chunk) = reader.recv().await else {
                return Err(StoreError::Closed); // a reader stops only after a short chunk
            };
            let chunk = chunk?;
            let events = chunk
                .decoded
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            self.next += 1;
            if !chunk.full {
                self.chunks = None; // stops the readers
            }
            if let Some((event, _)) = events.last() {
                self.last = event.position;
                return Ok(Some(events));
            }
        }
        // After the fast part: pages after the last event given, to the first empty one.
        let mut conn = self.pool.acquire().await?;
        let page = copy(&mut conn, &page_statement(self.last, self.rows), 0).await?;
        let events = decoded(tokio::task::spawn_blocking(move || page.decode())).await?;
        match events.last() {
            Some((event, _)) => {
                self.last = event.position;
                Ok(Some(events))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// The events of a page decoded on the blocking pool; a panic there goes on in the caller.
async fn decoded(
    decoding: JoinHandle<Result<Vec<TypedEvent>, StoreError>>,
) -> Result<Vec<TypedEvent>, StoreError> {
    match decoding.await {
        Ok(events) => events,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        // Only a runtime shutting down cancels a blocking task.
        Err(_) => Err(StoreError::Closed),
    }
}

/// Starts a chunk reader on a thread of its own, with a single-threaded runtime for its
/// connection. A reader decodes each chunk itself before it reads the next: measured on a
/// 1,000,000-event rebuild, decoding on the blocking pool and handing each chunk over between
/// threads cost ~6% (`studio bench rebuild --backend postgres`: 660k → 700k events/s), and a
/// reader of its own keeps the CPU-bound decoding off the caller's runtime workers.
fn spawn_reader(
    options: PgConnectOptions,
    after_position: i64,
    rows: usize,
    first: usize,
    chunk_tx: mpsc::Sender<Result<Chunk, StoreError>>,
) {
    let failed = chunk_tx.clone();
    let spawned = std::thread::Builder::new()
        .name("studio-pg-scan".to_string())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    runtime.block_on(read_chunks(options, after_position, rows, first, chunk_tx))
                }
                Err(err) => {
                    let _ = chunk_tx.blocking_send(Err(sqlx::Error::Io(err).into()));
                }
            }
        });
    if let Err(err) = spawned {
        // The channel has room: nothing else was sent on it yet.
        let _ = failed.try_send(Err(sqlx::Error::Io(err).into()));
    }
}

/// Reads chunks `first`, `first + SCAN_CONNECTIONS`, … until a short one or the scan is dropped.
async fn read_chunks(
    options: PgConnectOptions,
    after_position: i64,
    rows: usize,
    first: usize,
    chunk_tx: mpsc::Sender<Result<Chunk, StoreError>>,
) {
    // A connection of its own, closed with the reader, so the planner settings die with it.
    let options = options.options([("enable_bitmapscan", "off"), ("enable_seqscan", "off")]);
    let mut conn = match PgConnection::connect_with(&options).await {
        Ok(conn) => conn,
        Err(err) => {
            let _ = chunk_tx.send(Err(err.into())).await;
            return;
        }
    };
    let mut k = first;
    let mut size_hint = 0;
    loop {
        let from = after_position + (k * rows) as i64;
        let statement = format!(
            "COPY (SELECT {COPY_COLUMNS} FROM events WHERE position > {from} AND position <= {} \
             ORDER BY position) TO STDOUT (FORMAT binary)",
            from + rows as i64
        );
        let chunk = copy(&mut conn, &statement, size_hint).await.map(|page| {
            size_hint = page.bytes.len();
            Chunk {
                full: page.len() == rows,
                decoded: std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| page.decode())),
            }
        });
        let more = chunk.as_ref().is_ok_and(|chunk| chunk.full);
        if chunk_tx.send(chunk).await.is_err() || !more {
            return;
        }
        k += SCAN_CONNECTIONS;
    }
}

/// Runs a `COPY … TO STDOUT (FORMAT binary)` and indexes its rows. `size_hint` is the size of the
/// reader's previous page: its pages are alike, and growing a megabyte buffer from the server's
/// small messages would copy it several times.
async fn copy(
    conn: &mut PgConnection,
    statement: &str,
    size_hint: usize,
) -> Result<CopyPage, StoreError> {
    let mut chunks = conn.copy_out_raw(statement).await?;
    let mut bytes = Vec::with_capacity(size_hint + size_hint / 8);
    while let Some(chunk) = chunks.try_next().await? {
        bytes.extend_from_slice(&chunk);
    }
    drop(chunks);
    CopyPage::index(bytes)
}

/// The columns of a scan, in [`RawEvent`]'s order. In binary form a text or `json` column is its
/// UTF-8 bytes, a `bigint` 8 big-endian bytes and a `uuid` its 16 bytes: the server prints no
/// text (`event_id::text` and `payload::text` took ~40% of its time in a scan).
const COPY_COLUMNS: &str =
    "position, event_id, event_type, schema_version::bigint, occurred_at, payload";
const FIELDS: i16 = 6;
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// The `COPY` statement for the `rows` events after `after_position`.
fn page_statement(after_position: i64, rows: usize) -> String {
    format!(
        "COPY (SELECT {COPY_COLUMNS} FROM events WHERE position > {after_position} \
         ORDER BY position LIMIT {rows}) TO STDOUT (FORMAT binary)"
    )
}

/// The bytes of one `COPY` and where each of its rows starts.
struct CopyPage {
    bytes: Vec<u8>,
    /// Offset of each row's field count, with the row's position.
    rows: Vec<(usize, i64)>,
}

impl CopyPage {
    /// Checks the header and finds every row, reading only its position.
    fn index(bytes: Vec<u8>) -> Result<Self, StoreError> {
        let mut at = Cursor {
            bytes: &bytes,
            at: 0,
        };
        if at.take(SIGNATURE.len())? != SIGNATURE {
            return Err(corrupt("not a binary COPY (signature)"));
        }
        let _flags = at.i32()?;
        let extension = at.i32()?;
        at.take(usize::try_from(extension).map_err(|_| corrupt("header extension length"))?)?;
        let mut rows = Vec::new();
        loop {
            let start = at.at;
            let fields = at.i16()?;
            if fields == -1 {
                break;
            }
            if fields != FIELDS {
                return Err(corrupt(&format!("{fields} fields in a row, not {FIELDS}")));
            }
            let position = at.bigint(-1, "position")?;
            for _ in 1..FIELDS {
                at.field()?;
            }
            rows.push((start, position));
        }
        if at.at != bytes.len() {
            return Err(corrupt("bytes after the trailer"));
        }
        Ok(Self { bytes, rows })
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    /// Decodes every row. CPU only: runs on the blocking pool.
    fn decode(self) -> Result<Vec<TypedEvent>, StoreError> {
        // Sized up front: a `collect` through `Result` cannot know the length, and growing a
        // vector of events this large (hundreds of bytes each) copies them over and over.
        let mut events = Vec::with_capacity(self.rows.len());
        for &(start, position) in &self.rows {
            events.push(self.event(start, position)?.into_typed()?);
        }
        Ok(events)
    }

    fn event(&self, start: usize, position: i64) -> Result<RawEvent<'_>, StoreError> {
        let mut at = Cursor {
            bytes: &self.bytes,
            at: start + 2,
        };
        at.field()?; // the position, already read
        Ok(RawEvent {
            position,
            event_id: at.uuid(position)?,
            event_type: at.required_text(position, "event_type")?,
            schema_version: at.bigint(position, "schema_version")?,
            occurred_at: at.required_text(position, "occurred_at")?,
            payload: at.required_text(position, "payload")?,
        })
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| corrupt("a row runs past the end of the COPY data"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn i16(&mut self) -> Result<i16, StoreError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn i32(&mut self) -> Result<i32, StoreError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// A field's bytes; `None` for NULL.
    fn field(&mut self) -> Result<Option<&'a [u8]>, StoreError> {
        match self.i32()? {
            -1 => Ok(None),
            len => {
                let len = usize::try_from(len).map_err(|_| corrupt("negative field length"))?;
                self.take(len).map(Some)
            }
        }
    }

    /// A text field; `None` for NULL.
    fn text(&mut self, position: i64, name: &str) -> Result<Option<&'a str>, StoreError> {
        self.field()?
            .map(|bytes| {
                std::str::from_utf8(bytes).map_err(|_| StoreError::Corrupt {
                    position,
                    what: format!("{name} is not UTF-8"),
                })
            })
            .transpose()
    }

    /// A text field that may not be NULL.
    fn required_text(&mut self, position: i64, name: &str) -> Result<&'a str, StoreError> {
        self.text(position, name)?
            .ok_or_else(|| StoreError::Corrupt {
                position,
                what: format!("NULL {name}"),
            })
    }

    /// The event id, a `uuid` in its 16 bytes.
    fn uuid(&mut self, position: i64) -> Result<Uuid, StoreError> {
        let bytes = self.field()?.unwrap_or_default();
        Uuid::from_slice(bytes).map_err(|_| StoreError::Corrupt {
            position,
            what: format!("event_id is {} bytes, not a uuid", bytes.len()),
        })
    }

    /// A `bigint` field that may not be NULL.
    fn bigint(&mut self, position: i64, name: &str) -> Result<i64, StoreError> {
        let bytes = self.field()?.ok_or_else(|| StoreError::Corrupt {
            position,
            what: format!("NULL {name}"),
        })?;
        bytes
            .try_into()
            .map(i64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt {
                position,
                what: format!("{name} is not 8 bytes"),
            })
    }
}

/// A page that does not parse: no position can be named.
fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt {
        position: -1,
        what: format!("COPY data: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{EventPayload, RunCancelled};
    use crate::store::postgres::PostgresEventLog;
    use crate::store::EventLog;
    use crate::ValidatedEvent;

    fn cancelled(n: usize) -> ValidatedEvent {
        let payload = EventPayload::RunCancelled(RunCancelled {
            run_id: format!("lt_{n}"),
            reason: "test".into(),
            actor: "op".into(),
        });
        ValidatedEvent::from_payload(&payload, "test", chrono::Utc::now())
    }

    async fn scanned(log: &PostgresEventLog, after: i64, rows: usize) -> Vec<i64> {
        let mut scan = log.scan_typed(after, rows);
        let mut positions = Vec::new();
        while let Some(page) = scan.next().await {
            let page = page.unwrap();
            assert!(!page.is_empty(), "a scan gives no empty batch");
            positions.extend(page.iter().map(|(event, typed)| {
                assert!(typed.is_ok());
                event.position
            }));
        }
        positions
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_come_in_order_and_a_gap_costs_no_events() {
        let url = crate::testkit::postgres_database().await;
        let log = PostgresEventLog::open(&url, true).await.unwrap();
        log.append((0..23).map(cancelled).collect()).await.unwrap();
        for rows in [1, 2, 3, 5, 10, 23, 50] {
            assert_eq!(scanned(&log, 0, rows).await, (1..=23).collect::<Vec<_>>());
            assert_eq!(scanned(&log, 20, rows).await, vec![21, 22, 23]);
            assert!(scanned(&log, 23, rows).await.is_empty());
        }
        // Positions never have gaps, but a scan must not lose events if one ever did.
        sqlx::query("DELETE FROM events WHERE position IN (4, 5, 6, 12)")
            .execute(log.pool())
            .await
            .unwrap();
        let expected: Vec<i64> = (1..=23).filter(|p| ![4, 5, 6, 12].contains(p)).collect();
        for rows in [1, 2, 3, 5, 10] {
            assert_eq!(scanned(&log, 0, rows).await, expected, "chunks of {rows}");
        }
        log.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scan_beside_appenders_never_skips_or_repeats() {
        let url = crate::testkit::postgres_database().await;
        let log = std::sync::Arc::new(PostgresEventLog::open(&url, true).await.unwrap());
        log.append((0..50).map(cancelled).collect()).await.unwrap();
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                for n in 0..200 {
                    log.append(vec![cancelled(n)]).await.unwrap();
                }
            })
        };
        let mut ends = Vec::new();
        while !writer.is_finished() {
            let positions = scanned(&log, 0, 7).await;
            let n = positions.len() as i64;
            assert_eq!(positions, (1..=n).collect::<Vec<_>>());
            ends.push(n);
        }
        writer.await.unwrap();
        assert_eq!(scanned(&log, 0, 7).await.len(), 250);
        assert!(ends.iter().all(|&n| n >= 50), "{ends:?}");
        log.close().await;
    }

    fn page(rows: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend(0i32.to_be_bytes());
        bytes.extend(0i32.to_be_bytes());
        for row in rows {
            bytes.extend((row.len() as i16).to_be_bytes());
            for field in *row {
                match field {
                    Some(b) => {
                        bytes.extend((b.len() as i32).to_be_bytes());
                        bytes.extend(*b);
                    }
                    None => bytes.extend((-1i32).to_be_bytes()),
                }
            }
        }
        bytes.extend((-1i16).to_be_bytes());
        bytes
    }

    #[test]
    fn copy_data_that_does_not_parse_is_corrupt_not_a_panic() {
        let position = 7i64.to_be_bytes();
        let one = 1i64.to_be_bytes();
        let id = uuid::Uuid::nil();
        let good: Vec<Option<&[u8]>> = vec![
            Some(&position),
            Some(id.as_bytes()),
            Some(b"load_test.run_cancelled"),
            Some(&one),
            Some(b"2026-11-24T00:00:00Z"),
            Some(br#"{"run_id":"lt_1","reason":"r","actor":"a"}"#),
        ];
        let parsed = CopyPage::index(page(&[&good])).unwrap();
        let events = parsed.decode().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0.position, 7);
        assert!(events[0].1.is_ok());

        let mut bytes = page(&[&good]);
        bytes.truncate(bytes.len() - 5);
        assert!(matches!(
            CopyPage::index(bytes),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            CopyPage::index(page(&[&good[..5]])),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            CopyPage::index(b"PGCOPY\n".to_vec()),
            Err(StoreError::Corrupt { .. })
        ));
        let mut short_id = good.clone();
        short_id[1] = Some(b"0123");
        let parsed = CopyPage::index(page(&[&short_id])).unwrap();
        assert!(matches!(
            parsed.decode(),
            Err(StoreError::Corrupt { position: 7, .. })
        ));
        let mut null_occurred = good.clone();
        null_occurred[4] = None;
        let parsed = CopyPage::index(page(&[&null_occurred])).unwrap();
        assert!(matches!(
            parsed.decode(),
            Err(StoreError::Corrupt { position: 7, .. })
        ));
    }
}
