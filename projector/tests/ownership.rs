//! One owner per projection, take-over when the owner dies, and a rebuild while the live runner
//! keeps applying: nothing is double-counted or skipped across the swap.

use chrono::{TimeZone, Utc};
use eventlog::catalogue::*;
use eventlog::ids::DispatchId;
use eventlog::{EventLog, EventPayload, ValidatedEvent};
use projector::runner::Stepped;
use projector::{ReadDb, Runner, StatusBoard};
use std::sync::Arc;
use std::time::Duration;

const VARIANT: &str = "er:fx:wf:w:env:e:stage:render:provider:sim:exp:x";

fn event(payload: EventPayload) -> ValidatedEvent {
    ValidatedEvent::from_payload(
        &payload,
        "test",
        Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap(),
    )
}

fn run_created(run_id: &str) -> ValidatedEvent {
    event(EventPayload::RunCreated(RunCreated {
        run_id: run_id.into(),
        name: "n".into(),
        effect_revision_id: "fx".into(),
        environment_id: "e".into(),
        variant_id: VARIANT.into(),
        input_fixture: "f".into(),
        stages: vec![Stage {
            name: "s".into(),
            duration_s: 1_000,
            target_rps: 10.0,
        }],
        stop_conditions: StopConditions::default(),
        estimated_cost_usd: None,
        approval_ref: None,
    }))
}

fn submitted(run_id: &str, seq: u64) -> ValidatedEvent {
    event(EventPayload::LoadDispatchSubmitted(LoadDispatchSubmitted {
        run_id: run_id.into(),
        dispatch_id: DispatchId::new(run_id, seq).to_string(),
        seq,
        stage_index: 0,
        variant_id: VARIANT.into(),
        scheduled_at: "2026-11-24T10:00:00Z".into(),
    }))
}

async fn dispatched(db: &ReadDb, run_id: &str) -> u64 {
    let mut s = projector::query::Snapshot::open(db, &["load_tests"])
        .await
        .unwrap();
    let run = projector::query::load_test_run(&mut s, run_id)
        .await
        .unwrap()
        .expect("run exists");
    run["totals"]["dispatched"].as_u64().unwrap()
}

async fn runner(url: &str, log: Arc<dyn EventLog>) -> (Runner, ReadDb) {
    let db = ReadDb::connect(url).await.unwrap();
    let r = Runner::new(
        db.clone(),
        log,
        projector::all_projections(),
        Arc::new(StatusBoard::default()),
    )
    .with_batch_events(50);
    (r, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_takes_over_when_the_owner_dies_on_postgres() {
    let url = eventlog::testkit::postgres_database().await;
    let log = eventlog::open(&url, true).await.unwrap();
    log.append(vec![run_created("lt_a"), submitted("lt_a", 1)])
        .await
        .unwrap();

    let (mut first, db) = runner(&url, log.clone()).await;
    let (mut second, _) = runner(&url, log.clone()).await;
    assert_eq!(first.step().await, Stepped::Applied);
    assert_eq!(
        second.step().await,
        Stepped::NotOwner,
        "the first instance owns every projection"
    );
    first.catch_up().await.unwrap();

    // The owner dies without letting go: its session ends and with it the advisory locks.
    drop(first);
    log.append(vec![submitted("lt_a", 2), submitted("lt_a", 3)])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match second.step().await {
            Stepped::Applied | Stepped::Idle => break,
            Stepped::NotOwner | Stepped::Backoff(_) => {
                assert!(tokio::time::Instant::now() < deadline, "no take-over");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    second.catch_up().await.unwrap();
    assert_eq!(dispatched(&db, "lt_a").await, 3);
}

async fn a_rebuild_while_the_runner_serves_neither_skips_nor_double_counts(url: String) {
    let log = eventlog::open(&url, true).await.unwrap();
    let mut events = vec![run_created("lt_r")];
    events.extend((1..=400).map(|seq| submitted("lt_r", seq)));
    log.append(events).await.unwrap();
    let (mut live, db) = runner(&url, log.clone()).await;
    live.catch_up().await.unwrap();

    // Appends and live batches keep going while the rebuild replays and swaps.
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            for seq in 401..=600 {
                log.append(vec![submitted("lt_r", seq)]).await.unwrap();
            }
        })
    };
    let rebuild_db = ReadDb::connect(&url).await.unwrap();
    let projections = projector::all_projections();
    let list: Vec<&dyn projector::Projection> = projections.iter().map(|p| p.as_ref()).collect();
    let rebuild = projector::rebuild::rebuild_all(&rebuild_db, log.as_ref(), &list, &|_| {});
    let serving = async {
        for _ in 0..40 {
            let _ = live.step().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (report, ()) = tokio::join!(rebuild, serving);
    report.unwrap();
    writer.await.unwrap();
    live.catch_up().await.unwrap();
    assert_eq!(dispatched(&db, "lt_r").await, 600);
    let positions = projector::checkpoint::positions(&db).await.unwrap();
    let head = log.head().await.unwrap();
    assert!(
        positions.values().all(|p| *p == head),
        "{positions:?} vs head {head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_the_runner_serves_neither_skips_nor_double_counts_on_sqlite() {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    a_rebuild_while_the_runner_serves_neither_skips_nor_double_counts(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_the_runner_serves_neither_skips_nor_double_counts_on_postgres() {
    a_rebuild_while_the_runner_serves_neither_skips_nor_double_counts(
        eventlog::testkit::postgres_database().await,
    )
    .await;
}
