//! Another crate's admin routes guarded with ingest's auth, as projector and services do it.

use axum::extract::FromRef;
use axum::routing::get;
use axum::{Json, Router};
use ingest::{AdminAuth, Tokens};
use reqwest::StatusCode;
use serde_json::{json, Value};

const ADMIN: &str = "admin-test-token";
const EXECUTOR: &str = "executor-test-secret";

/// A crate's own state, holding the tokens beside whatever else it needs.
#[derive(Clone)]
struct ProjectorState {
    tokens: Tokens,
}

impl FromRef<ProjectorState> for Tokens {
    fn from_ref(state: &ProjectorState) -> Self {
        state.tokens.clone()
    }
}

async fn by_extractor(_auth: AdminAuth) -> Json<Value> {
    Json(json!({"runs": []}))
}

async fn behind_middleware() -> Json<Value> {
    Json(json!({"bindings": []}))
}

async fn serve() -> String {
    let tokens = Tokens::new(ADMIN, EXECUTOR).unwrap();
    let guarded = Router::new()
        .route("/admin/studio/routing/bindings", get(behind_middleware))
        .route_layer(axum::middleware::from_fn_with_state(
            tokens.clone(),
            ingest::require_admin,
        ));
    let app = Router::new()
        .route("/admin/studio/load-test-runs", get(by_extractor))
        .merge(guarded)
        .with_state(ProjectorState { tokens });
    let app = ingest::with_fallbacks(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn get_with(url: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn admin_routes_of_other_crates_take_the_admin_token_only() {
    let base = serve().await;
    for path in [
        "/admin/studio/load-test-runs",
        "/admin/studio/routing/bindings",
    ] {
        let url = format!("{base}{path}");
        let (status, _) = get_with(&url, Some(ADMIN)).await;
        assert_eq!(status, StatusCode::OK, "{path}");

        let (status, body) = get_with(&url, Some(EXECUTOR)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body["error"]["code"], "forbidden");

        let (status, body) = get_with(&url, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}
