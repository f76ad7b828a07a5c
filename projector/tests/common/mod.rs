//! What the projector's integration tests share: real stores (a SQLite file in a temporary
//! directory, a fresh PostgreSQL database from the eventlog testkit), events stamped with a
//! deterministic clock, and a driver that runs a [`Runner`] until the log holds nothing new.
//!
//! Each test file pulls this in with `#[macro_use] mod common;` and lists its tests in
//! [`on_both_stores!`], so every test runs on SQLite and on PostgreSQL.

#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use eventlog::catalogue::{self, EventPayload};
use eventlog::ids::{DispatchId, VariantId};
use eventlog::{EventLog, ValidatedEvent};
use projector::runner::{RetryPolicy, Stepped};
use projector::{ReadDb, Runner, StatusBoard};
use std::sync::Arc;
use std::time::Duration;

/// The two backends every test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

/// Runs each listed `async fn name(store: Store)` once per store, as `sqlite::name` and
/// `postgres::name`.
#[allow(unused_macros)]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Store::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Store::Postgres).await } )*
        }
    };
}

/// A fresh event log and the read side on the same database.
pub struct TestDb {
    pub url: String,
    pub log: Arc<dyn EventLog>,
    pub db: ReadDb,
    /// Shared by every runner [`TestDb::runner`] makes, so a test can read their errors.
    pub status: Arc<StatusBoard>,
    _dir: Option<tempfile::TempDir>,
}

/// Where the deterministic clock starts.
pub fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

/// `at(0)` plus a number of milliseconds, as the log formats timestamps.
pub fn timestamp_ms(millis: i64) -> String {
    eventlog::envelope::format_timestamp(at(0) + chrono::Duration::milliseconds(millis))
}

/// An event a producer in this process would publish, refusing payloads the catalogue would
/// refuse over HTTP (a test that appends an invalid event tests nothing).
pub fn event(payload: &EventPayload, occurred_at: DateTime<Utc>) -> ValidatedEvent {
    if let Err(err) = payload.check() {
        panic!(
            "test built an invalid {} event: {err}\n{payload:?}",
            payload.event_type()
        );
    }
    ValidatedEvent::from_payload(payload, "projector-tests", occurred_at)
}

impl TestDb {
    pub async fn open(store: Store) -> Self {
        let (url, dir) = match store {
            Store::Sqlite => {
                let (url, dir) = eventlog::testkit::sqlite_url();
                (url, Some(dir))
            }
            Store::Postgres => (eventlog::testkit::postgres_database().await, None),
        };
        let log = eventlog::open(&url, true)
            .await
            .expect("open the event log (migrated)");
        let db = ReadDb::connect(&url).await.expect("connect the read side");
        Self {
            url,
            log,
            db,
            status: Arc::new(StatusBoard::default()),
            _dir: dir,
        }
    }

    pub async fn head(&self) -> i64 {
        self.log.head().await.expect("log head")
    }

    /// Appends events in one atomic call; returns their positions.
    pub async fn append(&self, events: Vec<ValidatedEvent>) -> Vec<i64> {
        if events.is_empty() {
            return Vec::new();
        }
        let answers = self.log.append(events).await.expect("append");
        answers.iter().map(|a| a.event().position).collect()
    }

    /// Appends payloads stamped one second apart after the current head.
    pub async fn append_payloads(&self, payloads: &[EventPayload]) -> Vec<i64> {
        let head = self.head().await;
        let events = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| event(p, at(head + i as i64)))
            .collect();
        self.append(events).await
    }

    /// A runner over every projection, retrying poison quickly.
    pub fn runner(&self) -> Runner {
        Runner::new(
            self.db.clone(),
            self.log.clone(),
            projector::all_projections(),
            self.status.clone(),
        )
        .with_retry(RetryPolicy {
            attempts: 2,
            first_backoff: Duration::from_millis(1),
        })
    }

    /// Steps the runner until the log holds nothing new for it, sleeping out back-offs.
    pub async fn drive(&self, runner: &mut Runner) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the runner did not become idle within 60 s"
            );
            match runner.step().await {
                Stepped::Applied => {}
                Stepped::Idle => return,
                Stepped::Backoff(pause) => tokio::time::sleep(pause).await,
                Stepped::NotOwner => {
                    panic!("the only runner of this database does not own its projections")
                }
            }
        }
    }

    /// The last error each projection's runner reported, if any.
    pub fn runner_errors(&self) -> Vec<(String, String)> {
        self.status
            .snapshot()
            .into_iter()
            .filter_map(|(name, s)| s.last_error.map(|e| (name, e)))
            .collect()
    }

    /// Every projection's checkpoint, by name.
    pub async fn checkpoints(&self) -> std::collections::HashMap<String, i64> {
        projector::checkpoint::positions(&self.db)
            .await
            .expect("checkpoints")
    }

    pub async fn close(self) {
        self.log.close().await;
        match &self.db {
            ReadDb::Sqlite(pool) => pool.close().await,
            ReadDb::Postgres(pool) => pool.close().await,
        }
    }
}

/// After a runner was dropped without `stop()` (a crash), waits until PostgreSQL ended its
/// session and so released its projection locks, as it does for a dead process. On SQLite
/// there are no such locks.
pub async fn wait_until_projection_locks_are_free(db: &ReadDb) {
    let ReadDb::Postgres(pool) = db else { return };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(pool)
        .await
        .expect("read pg_locks");
        if held == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a dropped runner's projection locks were not released within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A variant id in a scope (`er`, `stage`), distinguished by provider.
pub fn variant_id(er: &str, stage: &str, provider: &str) -> String {
    format!("er:{er}:wf:wf-1:env:staging:stage:{stage}:provider:{provider}:exp:e1")
}

pub fn registered(variant: &str, unit_cost_usd: Option<f64>) -> EventPayload {
    let id = VariantId::parse(variant).expect("test variant id");
    EventPayload::VariantRegistered(catalogue::variant_registered(&id, unit_cost_usd))
}

/// A load-test dispatch id whose uuid is derived from `run_id` and `seq`, so runs are
/// reproducible.
pub fn load_dispatch_id(run_id: &str, seq: u64) -> String {
    let salt = run_id.bytes().fold(0u128, |h, b| {
        h.wrapping_mul(131).wrapping_add(u128::from(b))
    });
    DispatchId {
        run_id: run_id.to_string(),
        seq,
        uuid: uuid::Uuid::from_u128((salt << 32) ^ u128::from(seq)),
    }
    .to_string()
}

/// A benchmark run id (`bm_<uuid>`) derived from a number.
pub fn benchmark_run_id(n: u64) -> String {
    format!(
        "bm_{}",
        uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 | u128::from(n))
            .as_hyphenated()
    )
}
