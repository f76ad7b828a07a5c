//! Load-test run commands over HTTP on a real socket: the command routes of `services` merged
//! with the read routes of `projector`, a live runner tailing a real SQLite log, the simulated
//! provider (time-scaled) executing runs inline.

use projector::http::ReadState;
use projector::money_hud::Thresholds;
use projector::{ReadDb, StatusBoard};
use reqwest::StatusCode;
use serde_json::{json, Value};
use services::executor::engine::EngineOptions;
use services::load_tests::{self, LoadTestService, INLINE_FALLBACK_REASON};
use services::providers::{Provider, SimulatedProvider, SimulatedSettings};
use services::variants::VariantRegistryService;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const ADMIN: &str = "admin-test-token";
const EXECUTOR: &str = "executor-test-secret";
/// Runs on provider `sim`, which the test configures.
const VARIANT: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:sim:exp:e1";
/// Runs on provider `x`, which nobody configures.
const VARIANT_NO_PROVIDER: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:x:exp:e1";
/// Same provider, but no unit cost: its runs cannot be estimated.
const VARIANT_NO_COST: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:sim:exp:e2";
/// Registered, then retired.
const VARIANT_RETIRED: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:sim:exp:old";
const RUNS: &str = "/admin/studio/load-test-runs";
const UNIT_COST: f64 = 0.01;

struct Api {
    base: String,
    log: Arc<dyn eventlog::EventLog>,
    client: reqwest::Client,
    shutdown: watch::Sender<bool>,
    runner: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Self {
        let (url, dir) = eventlog::testkit::sqlite_url();
        let log = eventlog::open(&url, true)
            .await
            .expect("open the event log");
        let registry = VariantRegistryService::new(log.clone());
        for (variant, cost) in [
            (VARIANT, Some(UNIT_COST)),
            (VARIANT_NO_PROVIDER, Some(UNIT_COST)),
            (VARIANT_NO_COST, None),
            (VARIANT_RETIRED, Some(UNIT_COST)),
        ] {
            registry.register(variant, cost, "tests").await.unwrap();
        }
        registry
            .retire(VARIANT_RETIRED, "superseded", "tests")
            .await
            .unwrap();
        let sim = SimulatedProvider::new(
            "sim",
            SimulatedSettings {
                latency_ms: 100.0,
                jitter_ms: 20.0,
                failure_rate: 0.0,
                cost_usd: UNIT_COST,
                seed: 7,
            },
        )
        .with_time_scale(0.1);
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        providers.insert("sim".into(), Arc::new(sim));
        let service = LoadTestService::new(
            log.clone(),
            providers,
            load_tests::DEFAULT_APPROVAL_THRESHOLD_USD,
            EngineOptions::default(),
        );

        let db = ReadDb::connect(&url).await.expect("connect the read side");
        let status = Arc::new(StatusBoard::default());
        let read_state = ReadState {
            db: db.clone(),
            log: log.clone(),
            status: status.clone(),
            thresholds: Thresholds::default(),
            max_wait: Duration::from_secs(2),
        };
        let tokens = ingest::Tokens::new(ADMIN, EXECUTOR).unwrap();
        let (shutdown, stop) = watch::channel(false);
        tokio::spawn(service.clone().watch_alarms(stop.clone()));
        let app = ingest::with_fallbacks(
            load_tests::router(service, tokens.clone())
                .merge(projector::http::router(read_state, tokens)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let runner = projector::Runner::new(db, log.clone(), projector::all_projections(), status);
        let runner = tokio::spawn(runner.run(stop));
        Self {
            base: format!("http://{addr}"),
            log,
            client: reqwest::Client::new(),
            shutdown,
            runner,
            server,
            _dir: dir,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered {status} with non-JSON {text:?}: {e}"));
        (status, body)
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body.to_string()))
            .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// Polls the run until `done` holds or `within` passes; answers the last view.
    async fn wait_for_run(
        &self,
        run_id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, run) = self.get(&format!("{RUNS}/{run_id}")).await;
            if status == StatusCode::OK && done(&run) {
                return run;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("run {run_id} did not get there within {within:?}: {status} {run}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.runner.await.unwrap();
        self.server.abort();
    }
}

fn run_body(variant_id: &str, stages: Value) -> Value {
    json!({
        "name": "smoke",
        "effect_revision_id": "er1",
        "environment_id": "prod",
        "variant_id": variant_id,
        "input_fixture": "s3://fixtures/in.png",
        "stages": stages,
    })
}

fn short_stages() -> Value {
    json!([
        {"name": "warm", "duration_s": 1, "target_rps": 10.0},
        {"name": "peak", "duration_s": 1, "target_rps": 20.0},
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_validates_the_variant_the_provider_and_the_cost_guard() {
    let api = Api::start().await;

    // Created, with its estimate: (10 + 20) arrivals × $0.01.
    let (status, created) = api.post(RUNS, &run_body(VARIANT, short_stages())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "created");
    assert!(created["run_id"].as_str().unwrap().starts_with("lt_"));
    let estimate = created["estimated_cost_usd"].as_f64().unwrap();
    assert!((estimate - 0.30).abs() < 1e-9, "{created}");
    assert_eq!(created["approval_threshold_usd"], 50.0);
    assert!(created["position"].as_i64().unwrap() > 0);

    // Unknown variant.
    let unknown = "er:er1:wf:wf1:env:prod:stage:render:provider:sim:exp:nope";
    let (status, err) = api.post(RUNS, &run_body(unknown, short_stages())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["path"], "variant_id");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not registered"),
        "{err}"
    );

    // A retired variant.
    let (status, err) = api
        .post(RUNS, &run_body(VARIANT_RETIRED, short_stages()))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["path"], "variant_id");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retired"),
        "{err}"
    );

    // A variant of another effect revision.
    let mut other_revision = run_body(VARIANT, short_stages());
    other_revision["effect_revision_id"] = json!("er2");
    let (status, err) = api.post(RUNS, &other_revision).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["path"], "effect_revision_id");

    // Provider without a [providers.x] entry.
    let (status, err) = api
        .post(RUNS, &run_body(VARIANT_NO_PROVIDER, short_stages()))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "provider_not_configured");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[providers.x]"),
        "{err}"
    );

    // The catalogue's checks name the field at fault.
    let (status, err) = api
        .post(
            RUNS,
            &run_body(
                VARIANT,
                json!([{"name": "s", "duration_s": 0, "target_rps": 5.0}]),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["path"], "stages[0].duration_s");

    // Unknown fields and malformed JSON.
    let mut body = run_body(VARIANT, short_stages());
    body["colour"] = json!("red");
    let (status, err) = api.post(RUNS, &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["path"], "colour");
    let (status, err) = api
        .send(reqwest::Method::POST, RUNS, Some("{nope".into()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");

    // Over the threshold: 3,600 s × 2 rps × $0.01 = $72 > $50.
    let expensive = json!([{"name": "long", "duration_s": 3600, "target_rps": 2.0}]);
    let (status, err) = api.post(RUNS, &run_body(VARIANT, expensive.clone())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "approval_required");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("$72.00") && message.contains("$50.00"),
        "{message}"
    );
    let mut approved = run_body(VARIANT, expensive);
    approved["approval_ref"] = json!("CHG-1234");
    let (status, created) = api.post(RUNS, &approved).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!((created["estimated_cost_usd"].as_f64().unwrap() - 72.0).abs() < 1e-9);

    // Unknown unit cost: no estimate, so an approval is required.
    let (status, err) = api
        .post(RUNS, &run_body(VARIANT_NO_COST, short_stages()))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "approval_required");
    assert!(
        err["error"]["details"][0]["estimated_cost_usd"].is_null(),
        "{err}"
    );
    let mut approved = run_body(VARIANT_NO_COST, short_stages());
    approved["approval_ref"] = json!("CHG-1235");
    let (status, created) = api.post(RUNS, &approved).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["estimated_cost_usd"].is_null());

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_run_executes_inline_and_completes_and_starts_only_once() {
    let api = Api::start().await;
    let (status, created) = api.post(RUNS, &run_body(VARIANT, short_stages())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let run_id = created["run_id"].as_str().unwrap().to_string();

    let (status, err) = api.post(&format!("{RUNS}/lt_nope/start"), &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");

    let (status, started) = api
        .post(&format!("{RUNS}/{run_id}/start"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["status"], "running");
    assert_eq!(started["mode"], "inline");
    assert_eq!(started["runner_fallback"], INLINE_FALLBACK_REASON);
    let position = started["position"].as_i64().unwrap();

    let (status, err) = api
        .post(&format!("{RUNS}/{run_id}/start"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "already_started");

    let (status, running) = api
        .get(&format!("{RUNS}/{run_id}?min_position={position}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{running}");
    assert_eq!(running["mode"], "inline");
    assert_eq!(running["runner_fallback_reason"], INLINE_FALLBACK_REASON);

    let run = api
        .wait_for_run(&run_id, Duration::from_secs(20), |r| {
            r["status"] == "completed"
        })
        .await;
    assert_eq!(run["mode"], "inline");
    assert_eq!(run["runner_fallback_reason"], INLINE_FALLBACK_REASON);
    let totals = &run["totals"];
    assert_eq!(
        totals["dispatched"].as_u64().unwrap() + totals["missed"].as_u64().unwrap(),
        30,
        "{run}"
    );
    assert_eq!(totals["dispatched"], 30, "{run}");

    // A completed run cannot be cancelled.
    let (status, err) = api
        .post(
            &format!("{RUNS}/{run_id}/cancel"),
            &json!({"reason": "too late"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "already_ended");

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_is_cancelled_once_and_never_completes() {
    let api = Api::start().await;
    let long = json!([{"name": "long", "duration_s": 60, "target_rps": 10.0}]);
    let (status, created) = api.post(RUNS, &run_body(VARIANT, long)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let run_id = created["run_id"].as_str().unwrap().to_string();

    let (status, err) = api
        .post(&format!("{RUNS}/lt_nope/cancel"), &json!({"reason": "x"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");

    let (status, started) = api
        .post(&format!("{RUNS}/{run_id}/start"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    api.wait_for_run(&run_id, Duration::from_secs(10), |r| {
        r["totals"]["dispatched"].as_u64().unwrap_or(0) > 0
    })
    .await;

    let (status, cancelled) = api
        .post(
            &format!("{RUNS}/{run_id}/cancel"),
            &json!({"reason": "enough", "actor": "alice"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["actor"], "alice");
    let position = cancelled["position"].as_i64().unwrap();

    let (status, err) = api
        .post(
            &format!("{RUNS}/{run_id}/cancel"),
            &json!({"reason": "again"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "already_ended");

    let (status, run) = api
        .get(&format!("{RUNS}/{run_id}?min_position={position}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "cancelled");

    // The engine stops within a second; the run stays cancelled and never completes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, run) = api.get(&format!("{RUNS}/{run_id}")).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(run["totals"]["dispatched"].as_u64().unwrap() < 600, "{run}");

    let (status, err) = api
        .post(&format!("{RUNS}/{run_id}/start"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_starts_of_one_run_cannot_both_win() {
    let api = Api::start().await;
    let (status, created) = api.post(RUNS, &run_body(VARIANT, short_stages())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let run_id = created["run_id"].as_str().unwrap().to_string();
    let path = format!("{RUNS}/{run_id}/start");
    let empty = json!({});
    let (a, b) = tokio::join!(api.post(&path, &empty), api.post(&path, &empty));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::ACCEPTED, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    api.wait_for_run(&run_id, Duration::from_secs(20), |r| {
        r["status"] == "completed"
    })
    .await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_alarm_stops_every_running_run_and_is_named_as_the_reason() {
    let api = Api::start().await;
    let long = json!([{"name": "long", "duration_s": 60, "target_rps": 10.0}]);
    let (status, created) = api.post(RUNS, &run_body(VARIANT, long)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let run_id = created["run_id"].as_str().unwrap().to_string();
    let (status, started) = api
        .post(&format!("{RUNS}/{run_id}/start"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    api.wait_for_run(&run_id, Duration::from_secs(10), |r| {
        r["totals"]["dispatched"].as_u64().unwrap_or(0) > 0
    })
    .await;

    // An alarm that only recovers stops nothing; one that goes to ALARM stops the run.
    let alarm = |new_state: eventlog::catalogue::AlarmState| {
        eventlog::ValidatedEvent::from_payload(
            &eventlog::EventPayload::AlarmStateChanged(eventlog::catalogue::AlarmStateChanged {
                alarm_name: "studio-ecs-cpu-critical".into(),
                old_state: eventlog::catalogue::AlarmState::InsufficientData,
                new_state,
                reason: "threshold crossed".into(),
            }),
            "tests",
            chrono::Utc::now(),
        )
    };
    api.log
        .append(vec![alarm(eventlog::catalogue::AlarmState::Ok)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, run) = api.get(&format!("{RUNS}/{run_id}")).await;
    assert_eq!(run["status"], "running", "{run}");

    api.log
        .append(vec![alarm(eventlog::catalogue::AlarmState::Alarm)])
        .await
        .unwrap();
    let run = api
        .wait_for_run(&run_id, Duration::from_secs(10), |r| {
            r["status"] == "stopped"
        })
        .await;
    let reason = run["stop_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("studio-ecs-cpu-critical"), "{run}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, run) = api.get(&format!("{RUNS}/{run_id}")).await;
    assert_eq!(
        run["status"], "stopped",
        "the engine stopped and never completed the run: {run}"
    );
    assert!(run["totals"]["dispatched"].as_u64().unwrap() < 600, "{run}");
    api.stop().await;
}
