//! The variant registry over HTTP on a real socket: the command routes of `services` merged with
//! the read routes of `projector`, a live runner tailing the log, and read-your-writes through
//! `min_position`.

use projector::http::ReadState;
use projector::money_hud::Thresholds;
use projector::{ReadDb, StatusBoard};
use reqwest::StatusCode;
use serde_json::{json, Value};
use services::variants::{self, VariantRegistryService};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const ADMIN: &str = "admin-test-token";
const EXECUTOR: &str = "executor-test-secret";
const VARIANT: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:simulated:exp:e1";
const REGISTRY: &str = "/admin/studio/variant-registry/variants";

struct Api {
    base: String,
    client: reqwest::Client,
    shutdown: watch::Sender<bool>,
    runner: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

impl Api {
    async fn start(url: String, dir: Option<tempfile::TempDir>) -> Self {
        let log = eventlog::open(&url, true)
            .await
            .expect("open the event log");
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
        let app = ingest::with_fallbacks(
            variants::router(VariantRegistryService::new(log.clone()), tokens.clone())
                .merge(projector::http::router(read_state, tokens)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let (shutdown, stop) = watch::channel(false);
        let runner = projector::Runner::new(db, log, projector::all_projections(), status);
        let runner = tokio::spawn(runner.run(stop));
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            shutdown,
            runner,
            server,
            _dir: dir,
        }
    }

    async fn sqlite() -> Self {
        let (url, dir) = eventlog::testkit::sqlite_url();
        Self::start(url, Some(dir)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered {status} with non-JSON {text:?}: {e}"));
        (status, body)
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, ADMIN, Some(&body.to_string()))
            .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, ADMIN, None).await
    }

    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.runner.await.unwrap();
        self.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_is_registered_repeated_refused_on_conflict_read_back_and_retired() {
    let api = Api::sqlite().await;

    let (status, created) = api
        .post(
            REGISTRY,
            &json!({"variant_id": VARIANT, "unit_cost_usd": 0.02}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["variant_id"], VARIANT);
    assert_eq!(created["effect_revision_id"], "er1");
    assert_eq!(created["workflow_id"], "wf1");
    assert_eq!(created["environment_id"], "prod");
    assert_eq!(created["stage"], "render");
    assert_eq!(created["provider"], "simulated");
    assert_eq!(created["experiment_id"], "e1");
    assert_eq!(created["unit_cost_usd"], 0.02);
    assert_eq!(created["status"], "active");
    assert_eq!(created["stream_version"], 1);
    let position = created["position"].as_i64().unwrap();

    let (status, again) = api
        .post(
            REGISTRY,
            &json!({"variant_id": VARIANT, "unit_cost_usd": 0.02}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["unchanged"], true);
    assert_eq!(again["position"], position);

    let (status, conflict) = api
        .post(
            REGISTRY,
            &json!({"variant_id": VARIANT, "unit_cost_usd": 0.05}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(conflict["error"]["code"], "variant_conflict");
    assert!(
        conflict["error"]["message"]
            .as_str()
            .unwrap()
            .contains("0.02"),
        "{conflict}"
    );

    // The raw id, colons and all, is one path segment.
    let (status, read) = api
        .get(&format!("{REGISTRY}/{VARIANT}?min_position={position}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["status"], "active");
    assert_eq!(read["unit_cost_usd"], 0.02);

    let (status, retired) = api
        .post(
            &format!("{REGISTRY}/{VARIANT}/retire"),
            &json!({"reason": "superseded by e2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retired}");
    assert_eq!(retired["status"], "retired");
    let retired_at = retired["position"].as_i64().unwrap();
    assert!(retired_at > position);

    let (status, read) = api
        .get(&format!("{REGISTRY}/{VARIANT}?min_position={retired_at}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["status"], "retired");

    let (status, again) = api
        .post(
            &format!("{REGISTRY}/{VARIANT}/retire"),
            &json!({"reason": "again"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (again["unchanged"].clone(), again["position"].clone()),
        (json!(true), json!(retired_at))
    );

    let (status, refused) = api
        .post(
            REGISTRY,
            &json!({"variant_id": VARIANT, "unit_cost_usd": 0.02}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "variant_retired");

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_answer_with_the_error_shape() {
    let api = Api::sqlite().await;

    let (status, body) = api
        .send(reqwest::Method::POST, REGISTRY, ADMIN, Some("{not json"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "malformed_json");

    let (status, body) = api
        .post(REGISTRY, &json!({"variant_id": VARIANT, "colour": "red"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["path"], "colour");

    let (status, body) = api
        .post(REGISTRY, &json!({"variant_id": "er:er1:wf:wf1"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["details"][0]["path"], "variant_id");

    let (status, body) = api
        .post(
            REGISTRY,
            &json!({"variant_id": VARIANT, "unit_cost_usd": -1}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["path"], "unit_cost_usd");

    let (status, body) = api
        .post(
            &format!("{REGISTRY}/{VARIANT}/retire"),
            &json!({"reason": "never registered"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_secret_is_forbidden_and_no_token_unauthorized() {
    let api = Api::sqlite().await;
    let body = json!({"variant_id": VARIANT}).to_string();
    let (status, answer) = api
        .send(reqwest::Method::POST, REGISTRY, EXECUTOR, Some(&body))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["code"], "forbidden");
    let (status, answer) = api
        .send(
            reqwest::Method::POST,
            &format!("{REGISTRY}/{VARIANT}/retire"),
            EXECUTOR,
            Some(r#"{"reason": "x"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");

    let response = api
        .client
        .post(format!("{}{REGISTRY}", api.base))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    api.stop().await;
}

/// Two clients registering the same id with different costs at once, many times over, on
/// PostgreSQL: one 201 and one 409 every time, and the stream holds one registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_registrations_over_http_on_postgres_cannot_both_win() {
    let api = Api::start(eventlog::testkit::postgres_database().await, None).await;
    for round in 0..10 {
        let id = format!("er:er1:wf:wf1:env:prod:stage:render:provider:simulated:exp:r{round}");
        let cheap = json!({"variant_id": id, "unit_cost_usd": 0.01});
        let dear = json!({"variant_id": id, "unit_cost_usd": 0.05});
        let (a, b) = tokio::join!(api.post(REGISTRY, &cheap), api.post(REGISTRY, &dear));
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {round}: {a:?} {b:?}"
        );
        let winner = if a.0 == StatusCode::CREATED {
            &a.1
        } else {
            &b.1
        };
        let (status, read) = api
            .get(&format!(
                "{REGISTRY}/{id}?min_position={}",
                winner["position"]
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(read["unit_cost_usd"], winner["unit_cost_usd"]);
    }
    api.stop().await;
}
