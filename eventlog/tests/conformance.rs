//! One conformance suite, every backend: the same tests run against SQLite and PostgreSQL.

use chrono::Utc;
use eventlog::catalogue::{EventPayload, RunCancelled, RunCompleted};
use eventlog::{testkit, wait_for_position, Appended, EventLog, StoreError, ValidatedEvent};
use std::sync::Arc;
use std::time::Duration;

/// A store under test plus whatever keeps it alive (the SQLite temp dir).
struct Backend {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    async fn sqlite() -> Self {
        let (url, dir) = testkit::sqlite_url();
        Self {
            url,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Self {
        Self {
            url: testkit::postgres_database().await,
            _dir: None,
        }
    }

    async fn open(&self) -> Arc<dyn EventLog> {
        eventlog::open(&self.url, true).await.expect("open store")
    }
}

fn completed(run_id: &str) -> ValidatedEvent {
    ValidatedEvent::from_payload(
        &EventPayload::RunCompleted(RunCompleted {
            run_id: run_id.into(),
        }),
        "test",
        Utc::now(),
    )
}

fn cancelled(run_id: &str) -> ValidatedEvent {
    let payload = RunCancelled {
        run_id: run_id.into(),
        reason: "test".into(),
        actor: "op".into(),
    };
    ValidatedEvent::from_payload(&EventPayload::RunCancelled(payload), "test", Utc::now())
}

fn positions(answers: &[Appended]) -> Vec<i64> {
    answers.iter().map(|a| a.event().position).collect()
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::sqlite().await).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::postgres().await).await } )*
        }
    };
}

conformance!(
    appends_get_gap_free_increasing_positions,
    a_repeated_idempotency_key_returns_the_stored_event_and_appends_nothing,
    a_repeated_batch_is_answered_from_the_log,
    a_repeated_producer_event_id_is_a_duplicate,
    stale_expected_version_is_a_conflict_and_stores_nothing,
    expected_versions_within_a_batch_count_earlier_events_of_the_batch,
    a_conflict_in_one_request_leaves_concurrent_requests_alone,
    streams_read_back_in_version_order,
    older_schema_versions_are_upcast_on_read,
    events_survive_reopening_the_store,
    an_unmigrated_database_is_not_ready,
    a_waiting_reader_wakes_on_append,
    concurrent_appenders_and_a_tailing_reader_never_see_positions_go_backwards,
    two_writers_on_one_stream_see_each_others_versions,
);

/// Two store instances (as two processes would) take turns on one stream: each must see the
/// versions the other wrote, whatever it remembers from its own last commit.
async fn two_writers_on_one_stream_see_each_others_versions(backend: Backend) {
    let (a, b) = (backend.open().await, backend.open().await);
    for version in 0..6i64 {
        let writer = if version % 2 == 0 { &a } else { &b };
        let answer = writer
            .append(vec![completed("lt_shared").with_expected_version(version)])
            .await;
        assert_eq!(answer.unwrap()[0].event().stream_version, version + 1);
        let other = if version % 2 == 0 { &b } else { &a };
        let stale = other
            .append(vec![completed("lt_shared").with_expected_version(version)])
            .await;
        assert!(
            matches!(stale, Err(StoreError::Conflict { actual, .. }) if actual == version + 1),
            "{stale:?}"
        );
    }
}

async fn appends_get_gap_free_increasing_positions(backend: Backend) {
    let log = backend.open().await;
    assert_eq!(log.head().await.unwrap(), 0);
    let first = log
        .append(vec![completed("lt_a"), completed("lt_b")])
        .await
        .unwrap();
    let second = log.append(vec![completed("lt_c")]).await.unwrap();
    assert_eq!(positions(&first), [1, 2]);
    assert_eq!(positions(&second), [3]);
    assert!(first.iter().chain(&second).all(Appended::is_new));
    assert_eq!(log.head().await.unwrap(), 3);
    let all = log.read_all(0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(log.read_all(2, 100).await.unwrap()[0].position, 3);
    assert_eq!(log.read_all(0, 1).await.unwrap().len(), 1);
}

async fn a_repeated_idempotency_key_returns_the_stored_event_and_appends_nothing(backend: Backend) {
    let log = backend.open().await;
    let original = log
        .append(vec![completed("lt_a").with_idempotency_key("k1")])
        .await
        .unwrap();
    // A retry carries a new event id (the producer did not choose one) but the same key.
    let retry = log
        .append(vec![completed("lt_a").with_idempotency_key("k1")])
        .await
        .unwrap();
    assert!(original[0].is_new());
    assert!(matches!(&retry[0], Appended::Duplicate(e) if e == original[0].event()));
    assert_eq!(log.head().await.unwrap(), 1);
    assert_eq!(log.stream_version("load_test_run-lt_a").await.unwrap(), 1);
}

async fn a_repeated_batch_is_answered_from_the_log(backend: Backend) {
    let log = backend.open().await;
    let batch = || {
        vec![
            completed("lt_a").with_idempotency_key("b1"),
            completed("lt_b").with_idempotency_key("b2"),
            completed("lt_a").with_idempotency_key("b3"),
        ]
    };
    let first = log.append(batch()).await.unwrap();
    for _ in 0..3 {
        let again = log.append(batch()).await.unwrap();
        assert!(again.iter().all(|a| !a.is_new()));
        assert_eq!(positions(&again), positions(&first));
    }
    // A batch mixing a repeat, a new event and a repeat inside the batch itself.
    let mixed = log
        .append(vec![
            completed("lt_b").with_idempotency_key("b2"),
            completed("lt_c").with_idempotency_key("b4"),
            completed("lt_c").with_idempotency_key("b4"),
        ])
        .await
        .unwrap();
    assert_eq!(
        mixed.iter().map(Appended::is_new).collect::<Vec<_>>(),
        [false, true, false]
    );
    assert_eq!(positions(&mixed), [2, 4, 4]);
    assert_eq!(log.head().await.unwrap(), 4);
}

async fn a_repeated_producer_event_id_is_a_duplicate(backend: Backend) {
    let log = backend.open().await;
    let mut event = completed("lt_a");
    event.event_id_supplied = true;
    let first = log.append(vec![event.clone()]).await.unwrap();
    let again = log.append(vec![event.clone()]).await.unwrap();
    assert!(first[0].is_new() && !again[0].is_new());
    assert_eq!(again[0].event().position, 1);
    // The same id under a different idempotency key is another event claiming a stored id.
    let collision = log
        .append(vec![event.with_idempotency_key("other"), completed("lt_b")])
        .await;
    assert!(
        matches!(collision, Err(StoreError::IdCollision(_))),
        "{collision:?}"
    );
    assert_eq!(log.head().await.unwrap(), 1);
    // The log still appends after the refusal.
    assert_eq!(
        log.append(vec![completed("lt_b")]).await.unwrap()[0]
            .event()
            .position,
        2
    );
}

async fn stale_expected_version_is_a_conflict_and_stores_nothing(backend: Backend) {
    let log = backend.open().await;
    log.append(vec![completed("lt_a").with_expected_version(0)])
        .await
        .unwrap();
    let stale = log
        .append(vec![
            completed("lt_b"),
            cancelled("lt_a").with_expected_version(0),
            completed("lt_c"),
        ])
        .await;
    match stale {
        Err(StoreError::Conflict {
            index,
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(
                (index, stream.as_str(), expected, actual),
                (1, "load_test_run-lt_a", 0, 1)
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        log.head().await.unwrap(),
        1,
        "a refused batch stores nothing"
    );
    assert_eq!(log.stream_version("load_test_run-lt_b").await.unwrap(), 0);
    let ok = log
        .append(vec![cancelled("lt_a").with_expected_version(1)])
        .await
        .unwrap();
    assert_eq!(ok[0].event().stream_version, 2);
}

async fn expected_versions_within_a_batch_count_earlier_events_of_the_batch(backend: Backend) {
    let log = backend.open().await;
    let answers = log
        .append(vec![
            completed("lt_a").with_expected_version(0),
            cancelled("lt_a").with_expected_version(1),
            completed("lt_a").with_expected_version(2),
        ])
        .await
        .unwrap();
    assert_eq!(
        answers
            .iter()
            .map(|a| a.event().stream_version)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let wrong = log
        .append(vec![
            completed("lt_b").with_expected_version(0),
            cancelled("lt_b").with_expected_version(0),
        ])
        .await;
    assert!(
        matches!(wrong, Err(StoreError::Conflict { index: 1, .. })),
        "{wrong:?}"
    );
    assert_eq!(log.head().await.unwrap(), 3);
}

async fn a_conflict_in_one_request_leaves_concurrent_requests_alone(backend: Backend) {
    let log = backend.open().await;
    log.append(vec![completed("lt_hot")]).await.unwrap();
    // Many requests at once land in shared group transactions; the stale ones must be refused
    // alone.
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let event = if i % 3 == 0 {
                    completed("lt_hot").with_expected_version(0)
                } else {
                    completed(&format!("lt_{i}"))
                };
                (i, log.append(vec![event]).await)
            })
        })
        .collect();
    let mut appended = 0;
    for task in tasks {
        let (i, result) = task.await.unwrap();
        if i % 3 == 0 {
            assert!(
                matches!(result, Err(StoreError::Conflict { .. })),
                "request {i}: {result:?}"
            );
        } else {
            assert!(result.unwrap()[0].is_new());
            appended += 1;
        }
    }
    assert_eq!(log.head().await.unwrap(), 1 + appended);
    let all = log.read_all(0, 1000).await.unwrap();
    assert!(all.windows(2).all(|w| w[1].position == w[0].position + 1));
}

async fn streams_read_back_in_version_order(backend: Backend) {
    let log = backend.open().await;
    for i in 0..5 {
        log.append(vec![completed("lt_s"), completed(&format!("lt_other_{i}"))])
            .await
            .unwrap();
    }
    let stream = log.read_stream("load_test_run-lt_s", 0, 100).await.unwrap();
    assert_eq!(
        stream.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(stream.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(
        log.read_stream("load_test_run-lt_s", 3, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(log.stream_version("load_test_run-lt_s").await.unwrap(), 5);
    assert_eq!(log.stream_version("load_test_run-nobody").await.unwrap(), 0);
}

async fn older_schema_versions_are_upcast_on_read(backend: Backend) {
    let log = backend.open().await;
    let dispatch_id = eventlog::ids::DispatchId::new("lt_u", 1).to_string();
    let published = serde_json::json!({
        "type": "load_test.dispatch_completed",
        "schema_version": 1,
        "occurred_at": "2026-11-24T10:00:00Z",
        "payload": {"run_id": "lt_u", "dispatch_id": dispatch_id, "outcome": "succeeded",
                    "latency_ms": 12.0, "cost_usd": 0.01, "error": null}
    });
    let event = ValidatedEvent::parse(&published).unwrap();
    log.append(vec![event]).await.unwrap();
    let read = &log.read_all(0, 10).await.unwrap()[0];
    assert_eq!(read.schema_version, 2);
    assert_eq!(read.payload["service_time_ms"], serde_json::Value::Null);
    assert!(matches!(
        read.typed().unwrap(),
        EventPayload::LoadDispatchCompleted(_)
    ));
}

async fn events_survive_reopening_the_store(backend: Backend) {
    let log = backend.open().await;
    log.append(vec![
        completed("lt_a").with_correlation_id("corr-1"),
        completed("lt_b"),
    ])
    .await
    .unwrap();
    let before = log.read_all(0, 10).await.unwrap();
    log.close().await;
    assert!(matches!(
        log.append(vec![completed("lt_c")]).await,
        Err(StoreError::Closed)
    ));
    drop(log);
    let reopened = backend.open().await;
    assert_eq!(reopened.read_all(0, 10).await.unwrap(), before);
    assert_eq!(before[0].correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(
        reopened.append(vec![completed("lt_c")]).await.unwrap()[0]
            .event()
            .position,
        3
    );
}

async fn an_unmigrated_database_is_not_ready(backend: Backend) {
    let log = eventlog::open(&backend.url, false).await.unwrap();
    assert!(matches!(log.ready().await, Err(StoreError::NotMigrated(_))));
    drop(log);
    let log = backend.open().await;
    log.ready().await.unwrap();
}

async fn a_waiting_reader_wakes_on_append(backend: Backend) {
    let log = backend.open().await;
    let reader = {
        let log = log.clone();
        tokio::spawn(
            async move { wait_for_position(log.as_ref(), 0, Duration::from_secs(20)).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.append(vec![completed("lt_a")]).await.unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), 1);
    // Nothing new: the wait ends at its timeout with the head unchanged.
    assert_eq!(
        wait_for_position(log.as_ref(), 1, Duration::from_millis(50))
            .await
            .unwrap(),
        1
    );
}

/// 8 appenders spread over two store instances (two writers competing for the same database,
/// as two processes would) and a tailing reader that checks it never sees a position below one
/// it already saw, and never skips one.
async fn concurrent_appenders_and_a_tailing_reader_never_see_positions_go_backwards(
    backend: Backend,
) {
    const APPENDERS: usize = 8;
    const BATCHES: usize = 25;
    let logs = [backend.open().await, backend.open().await];
    let expected_total: i64 = (0..APPENDERS)
        .map(|a| (0..BATCHES).map(|b| ((a + b) % 4 + 1) as i64).sum::<i64>())
        .sum();
    let reader = {
        let log = logs[0].clone();
        tokio::spawn(async move {
            let mut last = 0i64;
            let mut seen = 0i64;
            while seen < expected_total {
                wait_for_position(log.as_ref(), last, Duration::from_millis(200))
                    .await
                    .unwrap();
                for event in log.read_all(last, 37).await.unwrap() {
                    assert_eq!(
                        event.position,
                        last + 1,
                        "reader saw {} after {last}",
                        event.position
                    );
                    last = event.position;
                    seen += 1;
                }
            }
            last
        })
    };
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|a| {
            let log = logs[a % 2].clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for b in 0..BATCHES {
                    let batch = (0..(a + b) % 4 + 1)
                        .map(|i| completed(&format!("lt_{a}_{b}_{i}")))
                        .collect();
                    mine.extend(positions(&log.append(batch).await.unwrap()));
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in appenders {
        let mine = task.await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "one appender's positions go forward"
        );
        all.extend(mine);
    }
    all.sort();
    assert_eq!(
        all,
        (1..=expected_total).collect::<Vec<_>>(),
        "every position exactly once"
    );
    let last = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("reader finishes")
        .unwrap();
    assert_eq!(last, expected_total);
}
