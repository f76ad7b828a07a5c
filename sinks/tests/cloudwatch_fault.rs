//! A CloudWatch outage while events flow: the emulator (a private LocalStack) is stopped, the
//! action-log writer keeps writing action logs to the database, the CloudWatch log sink backs
//! off without passing its checkpoint, the emulator comes back (empty, like a fresh service)
//! and the backlog is delivered — every action log exactly once, nothing dead-lettered.

use chrono::{DateTime, TimeZone, Utc};
use eventlog::{EventLog, EventPayload, RecordedEvent, ValidatedEvent};
use projector::ReadDb;
use serde_json::{json, Value};
use sinks::cloudwatch::testkit::{self, LocalStack};
use sinks::cloudwatch::{CloudWatchClients, CloudWatchLogSink, CloudWatchSettings};
use sinks::runner::RetryPolicy;
use sinks::{ActionLogConfig, ActionLogSink, Sink, SinkRunner, SinkStatusBoard, Templates};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn at(seconds: i64) -> DateTime<Utc> {
    let base = Utc::now() - chrono::Duration::hours(1);
    Utc.timestamp_opt(base.timestamp() + seconds, 0).unwrap()
}

fn payload(event_type: &str, body: Value) -> EventPayload {
    EventPayload::parse(event_type, &body).expect("a valid test payload")
}

/// A run created and cancelled: one `run_cancelled` action log per run.
fn cancelled_run(i: usize) -> Vec<EventPayload> {
    let run_id = format!(
        "lt_fault{i}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    vec![
        payload(
            "load_test.run_created",
            json!({
                "run_id": run_id, "name": format!("run {i}"), "effect_revision_id": "er_1",
                "environment_id": "env_1",
                "variant_id": "er:er_1:wf:wf_1:env:env_1:stage:prod:provider:sim-cheap:exp:exp_1",
                "input_fixture": "fixtures/a.json",
                "stages": [{"name": "ramp", "duration_s": 60, "target_rps": 1.0}]
            }),
        ),
        payload(
            "load_test.run_cancelled",
            json!({"run_id": run_id, "reason": "operator stop", "actor": "ops@example.com"}),
        ),
    ]
}

async fn append(log: &Arc<dyn EventLog>, payloads: Vec<EventPayload>) -> Vec<RecordedEvent> {
    let head = log.head().await.unwrap();
    let events = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| ValidatedEvent::from_payload(p, "fault-test", at(head + i as i64)))
        .collect();
    log.append(events)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.into_event())
        .collect()
}

/// `(action_log_id, last_position)` of every row in `action_logs`.
async fn action_log_rows(db: &ReadDb) -> Vec<(String, i64)> {
    let ReadDb::Sqlite(pool) = db else {
        unreachable!()
    };
    sqlx::query_as("SELECT action_log_id, last_position FROM action_logs ORDER BY last_position, action_log_id")
        .fetch_all(pool)
        .await
        .expect("read action_logs")
}

async fn checkpoint(db: &ReadDb, sink: &str) -> i64 {
    let ReadDb::Sqlite(pool) = db else {
        unreachable!()
    };
    sqlx::query_scalar::<_, i64>("SELECT position FROM sink_checkpoints WHERE sink = $1")
        .bind(sink)
        .fetch_optional(pool)
        .await
        .expect("read sink_checkpoints")
        .unwrap_or(0)
}

async fn dead_letters(db: &ReadDb) -> i64 {
    let ReadDb::Sqlite(pool) = db else {
        unreachable!()
    };
    sqlx::query_scalar("SELECT COUNT(*) FROM sink_dead_letters")
        .fetch_one(pool)
        .await
        .expect("count sink_dead_letters")
}

/// `(action_log_id, last_position)` of every log event in the test's stream, with repeats.
async fn delivered(
    clients: &CloudWatchClients,
    settings: &CloudWatchSettings,
) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = match clients
            .logs
            .filter_log_events()
            .log_group_name(&settings.log_group)
            .log_stream_names(&settings.log_stream)
            .set_next_token(token.clone())
            .send()
            .await
        {
            Ok(page) => page,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return out
            }
            Err(err) => panic!("FilterLogEvents: {err:?}"),
        };
        for e in page.events() {
            if e.log_stream_name() != Some(settings.log_stream.as_str()) {
                continue; // LocalStack ignores the stream filter at times: filter here.
            }
            let v: Value = serde_json::from_str(e.message().unwrap()).unwrap();
            out.push((
                v["action_log_id"].as_str().unwrap().to_string(),
                v["last_position"].as_i64().unwrap(),
            ));
        }
        match page.next_token() {
            Some(t) if Some(t) != token.as_deref() && !page.events().is_empty() => {
                token = Some(t.to_string())
            }
            _ => break,
        }
    }
    out.sort();
    out
}

fn repeats(items: &[(String, i64)]) -> Vec<(String, i64)> {
    let mut counts: BTreeMap<&(String, i64), usize> = BTreeMap::new();
    for i in items {
        *counts.entry(i).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudwatch_outage_delays_action_log_events_and_loses_or_repeats_none() {
    let mut emulator = tokio::task::spawn_blocking(LocalStack::start)
        .await
        .unwrap()
        .unwrap_or_else(|why| panic!("{why}"));
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let log = eventlog::open(&url, true).await.expect("open the log");
    let db = ReadDb::connect(&url).await.unwrap();
    let settings = testkit::settings(&emulator.url());
    let clients = testkit::clients(&settings).await;

    let action_logs = Arc::new(ActionLogSink::new(
        db.clone(),
        log.clone(),
        Arc::new(Templates::embedded().expect("templates")),
        ActionLogConfig {
            // No health findings in this test: only the events' own action logs.
            stall_after: Duration::from_secs(86_400),
            health_interval: Duration::from_secs(86_400),
            ..ActionLogConfig::default()
        },
    ));
    let cloudwatch = Arc::new(CloudWatchLogSink::new(
        clients.clone(),
        settings.clone(),
        db.clone(),
    ));
    let cloudwatch_name = cloudwatch.name();
    let sinks: Vec<Arc<dyn Sink>> = vec![action_logs, cloudwatch];
    let mut runner = SinkRunner::new(
        db.clone(),
        log.clone(),
        sinks,
        Arc::new(SinkStatusBoard::default()),
    )
    .with_retry(RetryPolicy {
        // The outage must not exhaust the budget: retried, never dead-lettered.
        attempts: 10_000,
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    })
    .with_batch_events(7);

    // Before the outage: five action logs, delivered.
    append(&log, (0..5).flat_map(cancelled_run).collect()).await;
    tokio::time::timeout(Duration::from_secs(120), runner.catch_up())
        .await
        .expect("catch up before the outage");
    let before = action_log_rows(&db).await;
    assert_eq!(before.len(), 5);
    assert_eq!(delivered(&clients, &settings).await, before);
    let delivered_up_to = checkpoint(&db, cloudwatch_name).await;
    assert_eq!(delivered_up_to, log.head().await.unwrap());

    // The outage: events keep coming, action logs keep being written.
    tokio::task::block_in_place(|| emulator.stop());
    append(&log, (5..17).flat_map(cancelled_run).collect()).await;
    let head = log.head().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut steps = 0;
    loop {
        runner.step().await;
        steps += 1;
        let written = action_log_rows(&db).await.len();
        if written == 17 && steps >= 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "action logs not written during the outage ({written})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        checkpoint(&db, "action_logs").await,
        head,
        "the writer is not held up"
    );
    assert_eq!(
        checkpoint(&db, cloudwatch_name).await,
        delivered_up_to,
        "the CloudWatch sink does not pass what it could not deliver"
    );
    assert_eq!(dead_letters(&db).await, 0);

    // CloudWatch comes back (empty: the emulator keeps no state), the backlog goes out.
    tokio::task::block_in_place(|| emulator.restart()).unwrap_or_else(|why| panic!("{why}"));
    tokio::time::timeout(Duration::from_secs(120), runner.catch_up())
        .await
        .expect("catch up after the outage");
    assert_eq!(checkpoint(&db, cloudwatch_name).await, head);
    assert_eq!(dead_letters(&db).await, 0, "nothing was dead-lettered");

    let all = action_log_rows(&db).await;
    let backlog: Vec<(String, i64)> = all
        .iter()
        .filter(|(_, p)| *p > delivered_up_to)
        .cloned()
        .collect();
    assert_eq!(backlog.len(), 12);
    let after = delivered(&clients, &settings).await;
    assert!(
        repeats(&after).is_empty(),
        "repeated: {:?}",
        repeats(&after)
    );
    // Exactly the backlog: nothing lost, and nothing delivered before the outage sent again.
    assert_eq!(after, backlog, "emulator log:\n{}", emulator.log());
    runner.stop().await;
}
