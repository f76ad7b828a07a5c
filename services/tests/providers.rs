//! The `http` provider against a local server speaking DESIGN §9's protocol over real sockets.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use eventlog::catalogue::Outcome;
use serde_json::{json, Value};
use services::providers::{DispatchInput, DispatchRequest, HttpProvider, Provider};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server saw: the `Authorization` header and the JSON body of each request.
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

struct ProviderServer {
    base: String,
    seen: Seen,
    server: tokio::task::JoinHandle<()>,
}

impl ProviderServer {
    async fn start() -> Self {
        async fn record(seen: &Seen, headers: &HeaderMap, body: Value) {
            let auth = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push((auth, body));
        }
        async fn ok(
            State(seen): State<Seen>,
            headers: HeaderMap,
            Json(body): Json<Value>,
        ) -> Json<Value> {
            let id = body["dispatch_id"].as_str().unwrap_or_default().to_owned();
            record(&seen, &headers, body).await;
            Json(json!({"output_uri": format!("s3://out/{id}.png"), "cost_usd": 0.012}))
        }
        async fn unavailable() -> impl IntoResponse {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("overloaded, retry later {}", "x".repeat(500)),
            )
        }
        async fn malformed() -> impl IntoResponse {
            (StatusCode::OK, Json(json!({"uri": "s3://out/x.png"})))
        }
        async fn slow() -> Json<Value> {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Json(json!({"output_uri": "s3://out/late.png", "cost_usd": null}))
        }

        let seen = Seen::default();
        let router = Router::new()
            .route("/ok", post(ok))
            .route("/unavailable", post(unavailable))
            .route("/malformed", post(malformed))
            .route("/slow", post(slow))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { base, seen, server }
    }

    fn provider(&self, path: &str, timeout: Duration, auth: Option<&str>) -> HttpProvider {
        HttpProvider::new(
            "fal-test",
            &format!("{}{path}", self.base),
            timeout,
            auth.map(str::to_owned),
        )
        .unwrap()
    }
}

impl Drop for ProviderServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn request(dispatch_id: &str) -> DispatchRequest {
    DispatchRequest {
        dispatch_id: dispatch_id.to_owned(),
        variant_id: "er:er1:wf:wf1:env:prod:stage:render:provider:fal-test:exp:e1".into(),
        input: DispatchInput {
            input_id: "in-1".into(),
            uri: "s3://in/1.png".into(),
        },
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_2xx_answer_is_a_success_with_its_output_and_cost() {
    let server = ProviderServer::start().await;
    let provider = server.provider("/ok", TIMEOUT, None);
    let result = provider.dispatch(&request("d-ok")).await;
    assert_eq!(result.outcome(), Outcome::Succeeded, "{result:?}");
    assert_eq!(result.output_uri(), Some("s3://out/d-ok.png"));
    assert_eq!(result.cost_usd(), Some(0.012));
    assert!(result.service_time() > Duration::ZERO);
}

#[tokio::test]
async fn a_503_is_a_failure_naming_the_status_and_the_start_of_the_body() {
    let server = ProviderServer::start().await;
    let provider = server.provider("/unavailable", TIMEOUT, None);
    let result = provider.dispatch(&request("d-503")).await;
    assert_eq!(result.outcome(), Outcome::Failed);
    let error = result.error().unwrap();
    assert!(
        error.starts_with("HTTP 503: overloaded, retry later"),
        "{error}"
    );
    assert_eq!(
        error.len(),
        "HTTP 503: ".len() + 200,
        "body cut at 200 chars"
    );
    assert_eq!(result.cost_usd(), None);
}

#[tokio::test]
async fn a_2xx_with_a_malformed_body_is_a_failure_saying_so() {
    let server = ProviderServer::start().await;
    let provider = server.provider("/malformed", TIMEOUT, None);
    let result = provider.dispatch(&request("d-bad")).await;
    assert_eq!(result.outcome(), Outcome::Failed);
    let error = result.error().unwrap();
    assert!(error.starts_with("malformed response: "), "{error}");
    assert!(error.contains("output_uri"), "{error}");
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_timed_out() {
    let server = ProviderServer::start().await;
    let provider = server.provider("/slow", Duration::from_millis(200), None);
    let result = provider.dispatch(&request("d-slow")).await;
    assert_eq!(result.outcome(), Outcome::TimedOut, "{result:?}");
    assert_eq!(result.error(), Some("no answer within 200 ms"));
    assert_eq!(result.cost_usd(), None);
    assert!(result.service_time() >= Duration::from_millis(200));
    assert!(
        result.service_time() < Duration::from_secs(2),
        "gave up on time"
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_failure_saying_the_provider_cannot_be_reached() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let provider =
        HttpProvider::new("gone", &format!("http://{address}/dispatch"), TIMEOUT, None).unwrap();
    let result = provider.dispatch(&request("d-gone")).await;
    assert_eq!(result.outcome(), Outcome::Failed, "{result:?}");
    let error = result.error().unwrap();
    assert!(error.starts_with("cannot reach provider: "), "{error}");
    assert!(
        !error.contains(&address.to_string()),
        "the URL is left out: {error}"
    );
}

#[tokio::test]
async fn the_auth_header_reaches_the_provider() {
    let server = ProviderServer::start().await;
    let provider = server.provider("/ok", TIMEOUT, Some("Key s3cr3t"));
    provider.dispatch(&request("d-auth")).await;
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0.as_deref(), Some("Key s3cr3t"));
}

#[tokio::test]
async fn the_request_body_has_exactly_the_protocol_fields() {
    let server = ProviderServer::start().await;
    let provider = server.provider("/ok", TIMEOUT, None);
    let result = provider.dispatch(&request("d-body")).await;
    assert_eq!(result.outcome(), Outcome::Succeeded);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen[0].0, None, "no auth header when none is configured");
    assert_eq!(
        seen[0].1,
        json!({
            "dispatch_id": "d-body",
            "variant_id": "er:er1:wf:wf1:env:prod:stage:render:provider:fal-test:exp:e1",
            "input": {"input_id": "in-1", "uri": "s3://in/1.png"},
        })
    );
}

#[tokio::test]
async fn concurrent_dispatches_share_one_provider() {
    let server = ProviderServer::start().await;
    let provider: Arc<dyn Provider> = Arc::new(server.provider("/ok", TIMEOUT, None));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.dispatch(&request(&format!("d{i}"))).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().outcome(), Outcome::Succeeded);
    }
    assert_eq!(server.seen.lock().unwrap().len(), 20);
}
