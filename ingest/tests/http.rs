//! The ingest router served over a real socket on port 0, against a real SQLite store.

use eventlog::store::sqlite::SqliteEventLog;
use eventlog::EventLog;
use ingest::{AppState, IngestConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const ADMIN: &str = "admin-test-token";
const EXECUTOR: &str = "executor-test-secret";

struct TestServer {
    base: String,
    log: Arc<dyn EventLog>,
    client: reqwest::Client,
    _dir: TempDir,
}

impl TestServer {
    async fn start() -> Self {
        Self::start_with(ingest::DEFAULT_MAX_BODY_BYTES).await
    }

    async fn start_with(max_body_bytes: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let log: Arc<dyn EventLog> = Arc::new(SqliteEventLog::open(&url, true).await.unwrap());
        let config = IngestConfig {
            max_body_bytes,
            ..IngestConfig::new(ADMIN, EXECUTOR)
        };
        let state = AppState::new(log.clone(), config).unwrap();
        let app = ingest::with_fallbacks(ingest::router(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base: format!("http://{addr}"),
            log,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn publish(&self, body: &Value) -> (StatusCode, Value) {
        self.publish_raw(Some(EXECUTOR), body.to_string()).await
    }

    async fn publish_raw(&self, token: Option<&str>, body: String) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(self.url("/v1/events"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.unwrap()).await
    }

    async fn head(&self) -> i64 {
        self.log.head().await.unwrap()
    }
}

async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text:?}"));
    (status, body)
}

fn run_completed(run_id: &str) -> Value {
    json!({
        "type": "load_test.run_completed",
        "occurred_at": "2026-11-24T10:00:00Z",
        "producer": "test",
        "payload": {"run_id": run_id}
    })
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["details"].is_array(), "{body}");
}

#[tokio::test]
async fn a_single_event_is_appended_with_201_and_its_position() {
    let server = TestServer::start().await;
    let (status, body) = server.publish(&run_completed("lt_1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["position"], 1);
    assert_eq!(body["stream"], "load_test_run-lt_1");
    assert_eq!(body["stream_version"], 1);
    assert_eq!(body["duplicate"], false);
    assert!(
        body["event_id"].as_str().is_some_and(|s| s.len() == 36),
        "{body}"
    );
    assert_eq!(server.head().await, 1);
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_stored_event_with_200() {
    let server = TestServer::start().await;
    let mut event = run_completed("lt_1");
    event["idempotency_key"] = json!("run-lt_1-completed");
    let (status, first) = server.publish(&event).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let head = server.head().await;

    let (status, repeat) = server.publish(&event).await;
    assert_eq!(status, StatusCode::OK, "{repeat}");
    for field in ["event_id", "position", "stream", "stream_version"] {
        assert_eq!(repeat[field], first[field], "{field}");
    }
    assert_eq!(repeat["duplicate"], true);
    assert_eq!(server.head().await, head, "a repeat must append nothing");
}

#[tokio::test]
async fn a_batch_is_appended_in_order_with_increasing_positions() {
    let server = TestServer::start().await;
    server.publish(&run_completed("lt_0")).await;
    let batch = json!([
        run_completed("lt_1"),
        run_completed("lt_2"),
        run_completed("lt_1")
    ]);
    let (status, body) = server.publish(&batch).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let events = body["events"].as_array().unwrap();
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [2, 3, 4]);
    let streams: Vec<&str> = events
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect();
    assert_eq!(
        streams,
        [
            "load_test_run-lt_1",
            "load_test_run-lt_2",
            "load_test_run-lt_1"
        ]
    );
    assert_eq!(events[2]["stream_version"], 2);
    assert!(events.iter().all(|e| e["duplicate"] == false));
}

#[tokio::test]
async fn a_batch_of_only_repeats_answers_200() {
    let server = TestServer::start().await;
    let mut event = run_completed("lt_1");
    event["idempotency_key"] = json!("k-1");
    let batch = json!([event.clone(), event]);
    let (status, body) = server.publish(&batch).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["events"][1]["duplicate"], true,
        "a repeat within the batch"
    );
    let (status, body) = server.publish(&batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.head().await, 1);
}

#[tokio::test]
async fn a_batch_with_one_bad_event_is_refused_whole() {
    let server = TestServer::start().await;
    server.publish(&run_completed("lt_0")).await;
    let head = server.head().await;
    let mut bad = run_completed("lt_3");
    bad["payload"] = json!({});
    let batch = json!([
        run_completed("lt_1"),
        run_completed("lt_2"),
        bad,
        run_completed("lt_4")
    ]);
    let (status, body) = server.publish(&batch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_error(&body, "validation_failed");
    let details = body["error"]["details"].as_array().unwrap();
    assert!(!details.is_empty());
    for detail in details {
        assert_eq!(detail["index"], 2, "{body}");
        assert!(
            detail["path"].as_str().unwrap().starts_with("payload"),
            "{body}"
        );
        assert!(detail["reason"].is_string(), "{body}");
    }
    assert_eq!(
        server.head().await,
        head,
        "nothing of a refused batch is stored"
    );
}

#[tokio::test]
async fn an_unknown_event_type_is_a_422_naming_the_type() {
    let server = TestServer::start().await;
    let mut event = run_completed("lt_1");
    event["type"] = json!("load_test.run_exploded");
    let (status, body) = server.publish(&event).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_error(&body, "validation_failed");
    assert_eq!(server.head().await, 0);
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let server = TestServer::start().await;
    let (status, body) = server
        .publish_raw(Some(EXECUTOR), "{\"type\": ".into())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "malformed_json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1"),
        "{body}"
    );
}

#[tokio::test]
async fn an_oversized_body_is_a_413_in_json() {
    let server = TestServer::start_with(1_024).await;
    let mut event = run_completed("lt_1");
    event["producer"] = json!("p".repeat(200));
    let batch = Value::Array(vec![event; 20]);
    let (status, body) = server.publish(&batch).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_error(&body, "payload_too_large");
    assert_eq!(server.head().await, 0);
}

#[tokio::test]
async fn more_than_ten_thousand_events_is_a_413() {
    let server = TestServer::start().await;
    let batch = Value::Array(vec![json!({}); ingest::MAX_EVENTS_PER_REQUEST + 1]);
    let (status, body) = server.publish(&batch).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_error(&body, "too_many_events");
}

#[tokio::test]
async fn an_empty_batch_is_a_422() {
    let server = TestServer::start().await;
    let (status, body) = server.publish(&json!([])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_error(&body, "validation_failed");
}

#[tokio::test]
async fn a_stale_expected_version_is_a_409_naming_the_stream() {
    let server = TestServer::start().await;
    let mut event = run_completed("lt_9");
    event["expected_version"] = json!(0);
    let (status, body) = server.publish(&event).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = server.publish(&event).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_error(&body, "version_conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("load_test_run-lt_9"),
        "{body}"
    );
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["index"], 0);
    assert_eq!(detail["stream"], "load_test_run-lt_9");
    assert_eq!(detail["expected_version"], 0);
    assert_eq!(detail["current_version"], 1);
    assert_eq!(server.head().await, 1);
}

#[tokio::test]
async fn publishing_without_a_token_is_a_401() {
    let server = TestServer::start().await;
    let body = run_completed("lt_1").to_string();
    let (status, answer) = server.publish_raw(None, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_error(&answer, "unauthorized");
    assert_eq!(server.head().await, 0);
}

#[tokio::test]
async fn a_wrong_token_is_a_401() {
    let server = TestServer::start().await;
    let body = run_completed("lt_1").to_string();
    let (status, answer) = server.publish_raw(Some("guess"), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_error(&answer, "unauthorized");
}

#[tokio::test]
async fn the_admin_token_cannot_publish() {
    let server = TestServer::start().await;
    let body = run_completed("lt_1").to_string();
    let (status, answer) = server.publish_raw(Some(ADMIN), body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_error(&answer, "forbidden");
    assert_eq!(server.head().await, 0);
}

#[tokio::test]
async fn the_executor_secret_cannot_read_the_log() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/v1/events", Some(EXECUTOR)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_error(&body, "forbidden");
    let (status, body) = server.get("/v1/events", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn reading_the_log_pages_by_position() {
    let server = TestServer::start().await;
    let batch = Value::Array((1..=5).map(|i| run_completed(&format!("lt_{i}"))).collect());
    server.publish(&batch).await;

    let (status, page) = server.get("/v1/events?limit=2", Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let positions = |page: &Value| -> Vec<i64> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["position"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(positions(&page), [1, 2]);
    assert_eq!(page["next_after_position"], 2);
    assert_eq!(page["events"][0]["type"], "load_test.run_completed");
    assert!(page["events"][0]["recorded_at"].is_string());

    let (_, page) = server
        .get("/v1/events?after_position=2&limit=10", Some(ADMIN))
        .await;
    assert_eq!(positions(&page), [3, 4, 5]);
    assert_eq!(page["next_after_position"], 5);

    let (_, page) = server.get("/v1/events?after_position=5", Some(ADMIN)).await;
    assert_eq!(positions(&page), Vec::<i64>::new());
    assert_eq!(
        page["next_after_position"], 5,
        "an empty page keeps the cursor"
    );
}

#[tokio::test]
async fn out_of_range_read_parameters_are_422s() {
    let server = TestServer::start().await;
    for query in [
        "limit=10001",
        "limit=0",
        "after_position=-1",
        "wait_ms=30001",
        "limit=many",
        "after=3",
    ] {
        let (status, body) = server
            .get(&format!("/v1/events?{query}"), Some(ADMIN))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_error(&body, "validation_failed");
    }
}

#[tokio::test]
async fn a_read_with_wait_ms_returns_as_soon_as_an_event_arrives() {
    let server = TestServer::start().await;
    let url = server.url("/v1/events?after_position=0&wait_ms=10000");
    let client = server.client.clone();
    let started = Instant::now();
    let read = tokio::spawn(async move {
        answer(client.get(url).bearer_auth(ADMIN).send().await.unwrap()).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.publish(&run_completed("lt_1")).await;
    let (status, page) = read.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["events"][0]["position"], 1, "{page}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
    let (status, body) = server.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ready", "backend": "sqlite"}));
}

#[tokio::test]
async fn a_closed_log_refuses_appends_with_503() {
    let server = TestServer::start().await;
    server.log.close().await;
    let (status, body) = server.publish(&run_completed("lt_1")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "shutting_down");
}

#[tokio::test]
async fn unknown_paths_answer_with_the_json_error_shape() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/v1/nothing", Some(ADMIN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "not_found");
    let response = server
        .client
        .delete(server.url("/v1/events"))
        .send()
        .await
        .unwrap();
    let (status, body) = answer(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_error(&body, "method_not_allowed");
}

#[tokio::test]
async fn metrics_count_appends_duplicates_and_refusals() {
    let server = TestServer::start().await;
    let mut event = run_completed("lt_1");
    event["idempotency_key"] = json!("k-1");
    server.publish(&event).await;
    server.publish(&event).await;
    server
        .publish(&json!([run_completed("lt_2"), {"type": "nope"}]))
        .await;
    server.publish_raw(Some(ADMIN), "{}".into()).await;
    server.publish_raw(None, "{}".into()).await;
    server.publish_raw(Some(EXECUTOR), "not json".into()).await;

    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    for line in [
        "studio_ingest_appended_events_total 1",
        "studio_ingest_duplicate_events_total 1",
        "studio_ingest_append_requests_total 2",
        "studio_ingest_append_duration_seconds_count 2",
        "studio_ingest_batch_size_events_count 2",
        "studio_ingest_refusals_total{code=\"validation_failed\"} 1",
        "studio_ingest_refusals_total{code=\"forbidden\"} 1",
        "studio_ingest_refusals_total{code=\"unauthorized\"} 1",
        "studio_ingest_refusals_total{code=\"malformed_json\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}
