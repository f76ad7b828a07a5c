//! The read side of the admin API under `/admin/studio` (admin token only), and the
//! projection health answer.

use crate::checkpoint;
use crate::db::ReadDb;
use crate::money_hud::Thresholds;
use crate::query::{self, QueryError, Snapshot};
use crate::status::StatusBoard;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use eventlog::EventLog;
use ingest::{ApiError, Tokens};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct ReadState {
    pub db: ReadDb,
    pub log: Arc<dyn EventLog>,
    pub status: Arc<StatusBoard>,
    pub thresholds: Thresholds,
    pub max_wait: Duration,
}

type Params = Query<BTreeMap<String, String>>;
type Answer = Result<Json<Value>, ApiError>;

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> Self {
        match err {
            QueryError::NotCaughtUp { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_caught_up",
                format!("{err}; retry later, or check GET /admin/studio/observability/projections for a stalled projection"),
            ),
            other => ApiError::internal(&other),
        }
    }
}

/// The routes, guarded by the admin token.
pub fn router(state: ReadState, tokens: Tokens) -> Router {
    Router::new()
        .route("/admin/studio/load-test-runs", get(load_test_runs))
        .route("/admin/studio/load-test-runs/{id}", get(load_test_run))
        .route("/admin/studio/variant-registry/variants", get(variants))
        .route("/admin/studio/variant-registry/variants/{id}", get(variant))
        .route("/admin/studio/benchmark-matrix-runs", get(benchmark_runs))
        .route(
            "/admin/studio/benchmark-matrix-runs/{id}",
            get(benchmark_run),
        )
        .route(
            "/admin/studio/quality-evaluations",
            get(quality_evaluations),
        )
        .route("/admin/studio/economics/money-hud", get(money_hud))
        .route("/admin/studio/economics/prices", get(prices))
        .route("/admin/studio/routing/bindings", get(bindings))
        .route("/admin/studio/observability/projections", get(projections))
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            ingest::require_admin,
        ))
        .with_state(state)
}

fn min_position(params: &BTreeMap<String, String>) -> Result<Option<i64>, ApiError> {
    match params.get("min_position") {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid_field("min_position", format!("{v:?} is not a position ≥ 0"))
            }),
    }
}

fn required<'a>(params: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_field(name, format!("the query parameter {name} is required"))
        })
}

async fn snapshot(
    state: &ReadState,
    params: &BTreeMap<String, String>,
    projections: &[&str],
) -> Result<Snapshot, ApiError> {
    query::wait_for(
        &state.db,
        projections,
        min_position(params)?,
        state.max_wait,
    )
    .await?;
    Ok(Snapshot::open(&state.db, projections).await?)
}

fn found(value: Option<Value>, what: &str, id: &str) -> Answer {
    value.map(Json).ok_or_else(|| ApiError::not_found(format!("no {what} {id:?} in the read model (check the id, or pass min_position to wait for a recent write)")))
}

async fn load_test_runs(State(state): State<ReadState>, Query(params): Params) -> Answer {
    let mut s = snapshot(&state, &params, &["load_tests"]).await?;
    Ok(Json(
        query::load_test_runs(&mut s, params.get("status").map(String::as_str)).await?,
    ))
}

async fn load_test_run(
    State(state): State<ReadState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Answer {
    let mut s = snapshot(&state, &params, &["load_tests"]).await?;
    found(
        query::load_test_run(&mut s, &id).await?,
        "load-test run",
        &id,
    )
}

async fn variants(State(state): State<ReadState>, Query(params): Params) -> Answer {
    let mut s = snapshot(&state, &params, &["variants"]).await?;
    Ok(Json(
        query::variants(&mut s, params.get("effect_revision_id").map(String::as_str)).await?,
    ))
}

async fn variant(
    State(state): State<ReadState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Answer {
    let mut s = snapshot(&state, &params, &["variants"]).await?;
    found(query::variant(&mut s, &id).await?, "variant", &id)
}

async fn benchmark_runs(State(state): State<ReadState>, Query(params): Params) -> Answer {
    let mut s = snapshot(&state, &params, &["benchmarks"]).await?;
    Ok(Json(query::benchmark_runs(&mut s).await?))
}

async fn benchmark_run(
    State(state): State<ReadState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Answer {
    let mut s = snapshot(&state, &params, &["benchmarks"]).await?;
    found(
        query::benchmark_run(&mut s, &id).await?,
        "benchmark matrix run",
        &id,
    )
}

async fn quality_evaluations(State(state): State<ReadState>, Query(params): Params) -> Answer {
    let id = required(&params, "benchmark_run_id")?;
    let mut s = snapshot(&state, &params, &["quality"]).await?;
    Ok(Json(query::quality_evaluations(&mut s, id).await?))
}

async fn money_hud(State(state): State<ReadState>, Query(params): Params) -> Answer {
    let id = required(&params, "benchmark_run_id")?;
    let mut s = snapshot(&state, &params, query::MONEY_HUD_PROJECTIONS).await?;
    found(
        query::money_hud(&mut s, id, state.thresholds).await?,
        "benchmark matrix run",
        id,
    )
}

async fn prices(State(state): State<ReadState>, Query(params): Params) -> Answer {
    let mut s = snapshot(&state, &params, &["pricing"]).await?;
    Ok(Json(query::prices(&mut s).await?))
}

async fn bindings(State(state): State<ReadState>, Query(params): Params) -> Answer {
    let mut s = snapshot(&state, &params, &["routing"]).await?;
    let er = params.get("effect_revision_id").map(String::as_str);
    let stage = params.get("stage").map(String::as_str);
    Ok(Json(query::bindings(&mut s, er, stage).await?))
}

/// Per projection: checkpoint, lag in events, last progress, dead letters, last error.
pub async fn projection_health(state: &ReadState) -> Result<Value, ApiError> {
    let head = state.log.head().await.map_err(|e| ApiError::internal(&e))?;
    let positions = checkpoint::positions(&state.db)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let dead = checkpoint::dead_letter_counts(&state.db)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let live = state.status.snapshot();
    let list: Vec<Value> = crate::projections::all_projections()
        .iter()
        .map(|p| {
            let name = p.name();
            let checkpoint = positions.get(name).copied().unwrap_or(0);
            let status = live.get(name);
            json!({
                "projection": name,
                "checkpoint": checkpoint,
                "lag_events": (head - checkpoint).max(0),
                "last_progress_at": status.and_then(|s| s.last_progress_at.clone()),
                "owned_by_this_instance": status.is_some_and(|s| s.owned_here),
                "dead_letters": dead.get(name).copied().unwrap_or(0),
                "last_error": status.and_then(|s| s.last_error.clone()),
            })
        })
        .collect();
    Ok(json!({"head_position": head, "projections": list}))
}

async fn projections(State(state): State<ReadState>) -> Answer {
    Ok(Json(projection_health(&state).await?))
}
