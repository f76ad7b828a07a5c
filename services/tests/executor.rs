//! The executor engine against a local HTTP provider over real sockets, recorded in a real
//! SQLite log and read back through the `load_tests` projection.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use eventlog::catalogue::{
    stage_of_seq, EventPayload, RunCreated, RunMode, RunStarted, Stage, StopConditions,
};
use eventlog::ids::DispatchId;
use eventlog::{EventLog, RecordedEvent, ValidatedEvent};
use projector::{ReadDb, Runner, StatusBoard};
use serde_json::{json, Value};
use services::executor::{execute, EngineOptions, RunEnded, RunSpec};
use services::providers::{DispatchInput, HttpProvider, Provider};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const VARIANT: &str = "er:fx:wf:w:env:e:stage:render:provider:local:exp:x";
/// How long the `/ok` endpoint takes to answer.
const SERVER_SLEEP: Duration = Duration::from_millis(20);
/// How long the `/slow` endpoint takes: longer than the arrival interval of the slow test.
const SLOW_SLEEP: Duration = Duration::from_millis(150);
const COST_USD: f64 = 0.01;

/// The runs are timing-sensitive (an arrival more than 100 ms late is counted missed): one at a
/// time, so they do not compete with each other for the two cores.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bodies the server received, in arrival order.
type Seen = Arc<Mutex<Vec<Value>>>;

struct ProviderServer {
    base: String,
    seen: Seen,
    server: tokio::task::JoinHandle<()>,
}

impl ProviderServer {
    async fn start() -> Self {
        async fn answer(seen: &Seen, body: Value, sleep: Duration) -> Json<Value> {
            let id = body["dispatch_id"].as_str().unwrap_or_default().to_owned();
            seen.lock().unwrap().push(body);
            tokio::time::sleep(sleep).await;
            Json(json!({"output_uri": format!("s3://out/{id}.png"), "cost_usd": COST_USD}))
        }
        async fn ok(State(seen): State<Seen>, Json(body): Json<Value>) -> Json<Value> {
            answer(&seen, body, SERVER_SLEEP).await
        }
        async fn slow(State(seen): State<Seen>, Json(body): Json<Value>) -> Json<Value> {
            answer(&seen, body, SLOW_SLEEP).await
        }
        async fn unavailable(
            State(seen): State<Seen>,
            Json(body): Json<Value>,
        ) -> impl IntoResponse {
            seen.lock().unwrap().push(body);
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        }

        let seen = Seen::default();
        let router = Router::new()
            .route("/ok", post(ok))
            .route("/slow", post(slow))
            .route("/unavailable", post(unavailable))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { base, seen, server }
    }

    fn provider(&self, path: &str) -> Arc<dyn Provider> {
        Arc::new(
            HttpProvider::new(
                "local",
                &format!("{}{path}", self.base),
                Duration::from_secs(5),
                None,
            )
            .unwrap(),
        )
    }

    fn received(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ProviderServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn stage(name: &str, duration_s: u64, target_rps: f64) -> Stage {
    Stage {
        name: name.into(),
        duration_s,
        target_rps,
    }
}

fn run_created(run_id: &str, stages: Vec<Stage>, stop_conditions: StopConditions) -> RunCreated {
    RunCreated {
        run_id: run_id.into(),
        name: "engine test".into(),
        effect_revision_id: "fx".into(),
        environment_id: "e".into(),
        variant_id: VARIANT.into(),
        input_fixture: "fixture".into(),
        stages,
        stop_conditions,
        estimated_cost_usd: None,
        approval_ref: None,
    }
}

fn input() -> DispatchInput {
    DispatchInput {
        input_id: "in-1".into(),
        uri: "s3://in/1.png".into(),
    }
}

/// A fresh SQLite log holding the run as created and started, as the command side leaves it.
async fn log_with_run(run: &RunCreated) -> (Arc<dyn EventLog>, String, tempfile::TempDir) {
    let (url, dir) = eventlog::testkit::sqlite_url();
    let log = eventlog::open(&url, true).await.unwrap();
    let event = |payload: EventPayload| ValidatedEvent::from_payload(&payload, "test", Utc::now());
    log.append(vec![
        event(EventPayload::RunCreated(run.clone())),
        event(EventPayload::RunStarted(RunStarted {
            run_id: run.run_id.clone(),
            mode: RunMode::Inline,
            executor: None,
        })),
    ])
    .await
    .unwrap();
    (log, url, dir)
}

/// The run as the `load_tests` projection shows it, after catching up with the whole log.
async fn projected(url: &str, log: Arc<dyn EventLog>, run_id: &str) -> Value {
    let db = ReadDb::connect(url).await.unwrap();
    let mut runner = Runner::new(
        db.clone(),
        log,
        projector::all_projections(),
        Arc::new(StatusBoard::default()),
    );
    runner.catch_up().await.unwrap();
    let mut snap = projector::query::Snapshot::open(&db, &["load_tests"])
        .await
        .unwrap();
    projector::query::load_test_run(&mut snap, run_id)
        .await
        .unwrap()
        .expect("the run is projected")
}

async fn all_events(log: &Arc<dyn EventLog>) -> Vec<RecordedEvent> {
    log.read_all(0, 1_000_000).await.unwrap()
}

fn dispatch_ids(events: &[RecordedEvent], event_type: &str) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e.event_type == event_type)
        .map(|e| e.payload["dispatch_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every submitted dispatch has exactly one completion, stored after it.
fn assert_every_submission_completed(events: &[RecordedEvent]) {
    let submitted = dispatch_ids(events, "load_test.dispatch_submitted");
    let completed = dispatch_ids(events, "load_test.dispatch_completed");
    assert_eq!(submitted, completed);
    let completions = events
        .iter()
        .filter(|e| e.event_type == "load_test.dispatch_completed")
        .count();
    assert_eq!(completions, completed.len(), "one completion per dispatch");
    for done in events
        .iter()
        .filter(|e| e.event_type == "load_test.dispatch_completed")
    {
        let id = &done.payload["dispatch_id"];
        let sent = events
            .iter()
            .find(|e| {
                e.event_type == "load_test.dispatch_submitted" && &e.payload["dispatch_id"] == id
            })
            .unwrap();
        assert!(
            sent.position < done.position,
            "{id} completed before it was submitted"
        );
    }
}

fn no_cancel() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_stage_run_dispatches_its_plan_at_the_planned_rates() {
    let _serial = ONE_RUN_AT_A_TIME.lock().await;
    let server = ProviderServer::start().await;
    let run = run_created(
        "lt_two_stages",
        vec![stage("warm", 2, 20.0), stage("peak", 2, 40.0)],
        StopConditions::default(),
    );
    let (log, url, _dir) = log_with_run(&run).await;
    let (_cancel_tx, cancel_rx) = no_cancel();

    let ended = execute(
        log.clone(),
        RunSpec { run: run.clone() },
        server.provider("/ok"),
        input(),
        EngineOptions::default(),
        cancel_rx,
    )
    .await
    .unwrap();
    assert_eq!(ended, RunEnded::Completed);

    let received = server.received();
    let mut received_per_stage = [0u64; 2];
    for body in &received {
        let id = DispatchId::parse(body["dispatch_id"].as_str().unwrap()).unwrap();
        received_per_stage[stage_of_seq(&run.stages, id.seq).unwrap()] += 1;
        assert_eq!(body["variant_id"], VARIANT);
        assert_eq!(body["input"]["uri"], "s3://in/1.png");
    }
    assert_eq!(received_per_stage, [40, 80]);

    let view = projected(&url, log.clone(), &run.run_id).await;
    assert_eq!(view["status"], "completed", "{view:#}");
    for (i, planned) in [(0, 40u64), (1, 80)] {
        let s = &view["stages"][i];
        assert_eq!(s["dispatched"], planned, "stage {i}: {s:#}");
        assert_eq!(s["dispatched"], received_per_stage[i], "stage {i}");
        assert_eq!(s["succeeded"], planned, "stage {i}: {s:#}");
        assert_eq!(s["missed"], 0, "stage {i}: {s:#}");
        let target = s["target_rps"].as_f64().unwrap();
        let achieved = s["achieved_rps"].as_f64().unwrap();
        assert!(
            (achieved - target).abs() <= 0.1 * target,
            "stage {i}: {achieved} rps for a target of {target}"
        );
        let p50 = s["latency_ms"]["p50"].as_f64().unwrap();
        assert!(
            p50 >= SERVER_SLEEP.as_millis() as f64,
            "stage {i}: p50 {p50} ms"
        );
    }
    let total_cost = view["totals"]["cost_usd"].as_f64().unwrap();
    assert!(
        (total_cost - received.len() as f64 * COST_USD).abs() < 1e-9,
        "total cost {total_cost}"
    );

    let events = all_events(&log).await;
    assert_every_submission_completed(&events);
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "load_test.stage_started")
            .count(),
        2
    );
    assert_eq!(types.last(), Some(&"load_test.run_completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_sending_and_records_what_was_in_flight() {
    let _serial = ONE_RUN_AT_A_TIME.lock().await;
    let server = ProviderServer::start().await;
    let run = run_created(
        "lt_cancelled",
        vec![stage("long", 5, 20.0)],
        StopConditions::default(),
    );
    let (log, url, _dir) = log_with_run(&run).await;
    let (cancel_tx, cancel_rx) = watch::channel(false);

    let engine = tokio::spawn(execute(
        log.clone(),
        RunSpec { run: run.clone() },
        server.provider("/ok"),
        input(),
        EngineOptions::default(),
        cancel_rx,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cancelled_at = Instant::now();
    cancel_tx.send(true).unwrap();
    let ended = engine.await.unwrap().unwrap();
    let took = cancelled_at.elapsed();
    assert_eq!(ended, RunEnded::Cancelled);
    assert!(took <= Duration::from_millis(1500), "took {took:?} to end");

    let view = projected(&url, log.clone(), &run.run_id).await;
    let dispatched = view["totals"]["dispatched"].as_u64().unwrap();
    assert!(
        dispatched > 0 && dispatched < 100,
        "{dispatched} dispatched"
    );
    assert_eq!(server.received().len() as u64, dispatched);
    let events = all_events(&log).await;
    assert_every_submission_completed(&events);
    assert!(!events
        .iter()
        .any(|e| e.event_type == "load_test.run_completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_against_a_failing_provider_stops_on_its_stop_condition() {
    let _serial = ONE_RUN_AT_A_TIME.lock().await;
    let server = ProviderServer::start().await;
    let run = run_created(
        "lt_failing",
        vec![stage("steady", 10, 30.0)],
        StopConditions {
            max_failure_rate: 0.2,
            sustained_s: 2,
        },
    );
    let (log, url, _dir) = log_with_run(&run).await;
    let (_cancel_tx, cancel_rx) = no_cancel();
    let options = EngineOptions {
        stop_evaluation_every: Duration::from_millis(200),
        ..EngineOptions::default()
    };

    let started = Instant::now();
    let ended = execute(
        log.clone(),
        RunSpec { run: run.clone() },
        server.provider("/unavailable"),
        input(),
        options,
        cancel_rx,
    )
    .await
    .unwrap();
    let RunEnded::Stopped(breach) = ended else {
        panic!("expected the run to stop, it ended {ended:?}");
    };
    assert!(breach.failure_rate > 0.2, "{breach:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stopped too late"
    );

    let events = all_events(&log).await;
    let breached: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "load_test.stop_condition_breached")
        .collect();
    assert_eq!(breached.len(), 1);
    assert_eq!(breached[0].payload["window_s"], 2);
    assert_every_submission_completed(&events);

    let view = projected(&url, log.clone(), &run.run_id).await;
    assert_eq!(view["status"], "stopped", "{view:#}");
    let dispatched = view["totals"]["dispatched"].as_u64().unwrap();
    assert!(dispatched < 300, "{dispatched} dispatched after the stop");
    assert_eq!(view["totals"]["failed"], dispatched);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_beyond_max_in_flight_are_counted_missed_not_delayed() {
    let _serial = ONE_RUN_AT_A_TIME.lock().await;
    let server = ProviderServer::start().await;
    let run = run_created(
        "lt_missed",
        vec![stage("crowded", 2, 20.0)],
        StopConditions::default(),
    );
    let (log, url, _dir) = log_with_run(&run).await;
    let (_cancel_tx, cancel_rx) = no_cancel();
    let options = EngineOptions {
        max_in_flight: 1,
        ..EngineOptions::default()
    };

    let ended = execute(
        log.clone(),
        RunSpec { run: run.clone() },
        server.provider("/slow"),
        input(),
        options,
        cancel_rx,
    )
    .await
    .unwrap();
    assert_eq!(ended, RunEnded::Completed);

    let view = projected(&url, log.clone(), &run.run_id).await;
    let s = &view["stages"][0];
    let dispatched = s["dispatched"].as_u64().unwrap();
    let missed = s["missed"].as_u64().unwrap();
    assert!(missed > 0, "{s:#}");
    assert!(dispatched > 0, "{s:#}");
    assert_eq!(dispatched + missed, 40, "{s:#}");
    assert_eq!(server.received().len() as u64, dispatched);
    // Each dispatch was sent on time: its latency is about the server's, not a queue's.
    let max = s["latency_ms"]["max"].as_f64().unwrap();
    // A queued arrival would wait for every one before it (seconds); a sent one only for itself.
    assert!(max < SLOW_SLEEP.as_millis() as f64 + 850.0, "{s:#}");
    assert_every_submission_completed(&all_events(&log).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_provider_at_500_per_second_is_sent_and_recorded_in_batches() {
    let _serial = ONE_RUN_AT_A_TIME.lock().await;
    use services::providers::{SimulatedProvider, SimulatedSettings};
    let run = run_created(
        "lt_simulated",
        vec![stage("busy", 2, 500.0)],
        StopConditions::default(),
    );
    let (log, url, _dir) = log_with_run(&run).await;
    let (_cancel_tx, cancel_rx) = no_cancel();
    let provider = SimulatedProvider::new(
        "sim",
        SimulatedSettings {
            latency_ms: 40.0,
            jitter_ms: 10.0,
            failure_rate: 0.0,
            cost_usd: 0.001,
            seed: 7,
        },
    )
    .with_time_scale(1.0);

    let ended = execute(
        log.clone(),
        RunSpec { run: run.clone() },
        Arc::new(provider),
        input(),
        EngineOptions::default(),
        cancel_rx,
    )
    .await
    .unwrap();
    assert_eq!(ended, RunEnded::Completed);

    let view = projected(&url, log.clone(), &run.run_id).await;
    let s = &view["stages"][0];
    let (dispatched, missed) = (
        s["dispatched"].as_u64().unwrap(),
        s["missed"].as_u64().unwrap(),
    );
    assert_eq!(dispatched + missed, 1000, "{s:#}");
    // Generous for a debug build on a busy 2-core machine; the benchmark measures the real figure.
    assert!(missed <= 250, "{s:#}");
    let p50 = s["latency_ms"]["p50"].as_f64().unwrap();
    assert!((30.0..250.0).contains(&p50), "{s:#}");
    let events = all_events(&log).await;
    assert_every_submission_completed(&events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_actual_cost_passes_its_estimate_by_half_stops_on_the_cost_guard() {
    let _serial = ONE_RUN_AT_A_TIME.lock().await;
    let server = ProviderServer::start().await;
    // 10 s × 20/s = 200 arrivals, estimated at a tenth of what the provider charges (COST_USD
    // each): the guard must stop it once the spend passes 200 × COST_USD / 10 × 1.5 = 0.03 USD,
    // i.e. on the 4th completion.
    let mut run = run_created(
        "lt_costly",
        vec![stage("steady", 10, 20.0)],
        StopConditions::default(),
    );
    let estimate = 200.0 * COST_USD / 10.0;
    run.estimated_cost_usd = Some(estimate);
    let (log, url, _dir) = log_with_run(&run).await;
    let (_cancel_tx, cancel_rx) = no_cancel();

    let ended = execute(
        log.clone(),
        RunSpec { run: run.clone() },
        server.provider("/ok"),
        input(),
        EngineOptions::default(),
        cancel_rx,
    )
    .await
    .unwrap();
    let RunEnded::CostExceeded(overrun) = ended else {
        panic!("expected the cost guard to stop the run, it ended {ended:?}");
    };
    assert!((overrun.estimated_cost_usd - estimate).abs() < 1e-12);
    assert_eq!(overrun.limit_factor, 1.5);
    assert!(overrun.actual_cost_usd > estimate * 1.5, "{overrun:?}");

    let events = all_events(&log).await;
    let breached: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "load_test.stop_condition_breached")
        .collect();
    assert_eq!(breached.len(), 1, "one stop, recorded once");
    assert_eq!(
        breached[0].payload["cost_overrun"]["estimated_cost_usd"]
            .as_f64()
            .unwrap(),
        estimate
    );
    assert!(!events
        .iter()
        .any(|e| e.event_type == "load_test.run_completed"));
    assert_every_submission_completed(&events);
    let completed = events
        .iter()
        .filter(|e| e.event_type == "load_test.dispatch_completed")
        .count();
    assert!(
        completed < 200,
        "the run stopped before its plan ended ({completed} completions)"
    );

    let view = projected(&url, log.clone(), &run.run_id).await;
    assert_eq!(view["status"], "stopped", "{view:#}");
    let reason = view["stop_reason"].as_str().unwrap();
    assert!(
        reason.contains("passed the estimate") && reason.contains("50%"),
        "{reason}"
    );
}
