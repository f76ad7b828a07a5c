//! The quality-evaluation command route (DESIGN §5), admin token only:
//!
//! - `POST /admin/studio/quality-evaluations` `{benchmark_run_id}` → 202
//!   `{benchmark_run_id, evaluation_batch_id, outputs, already_judged, status, evaluator}`:
//!   `outputs` are judged by the batch in the background (`status: "running"`); outputs that
//!   already have a verdict are skipped and counted in `already_judged`. When nothing is left
//!   to judge, `evaluation_batch_id` is null and `status` is `"completed"`. A post while the
//!   run's batch is still running joins it (same `evaluation_batch_id`).
//! - 404 `not_found`: no such run. 409 `run_not_completed`: the run has no
//!   `benchmark.run_completed` yet — a conflict with the run's current state, not a bad
//!   request, and the same post succeeds once the run completes. 422: a malformed body or id.
//!
//! The verdicts are read with `GET /admin/studio/quality-evaluations?benchmark_run_id=`
//! (`projector::http`).

use super::service::{QualityError, QualityEvaluationService, Started};
use crate::body::parse_body;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ingest::{ApiError, Tokens};
use serde::Deserialize;
use serde_json::{json, Value};

pub const PATH: &str = "/admin/studio/quality-evaluations";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateBody {
    benchmark_run_id: String,
}

/// The command route, guarded by the admin token.
pub fn router(service: QualityEvaluationService, tokens: Tokens) -> Router {
    Router::new()
        .route(PATH, post(evaluate))
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            ingest::require_admin,
        ))
        .with_state(service)
}

impl From<QualityError> for ApiError {
    fn from(err: QualityError) -> Self {
        match err {
            QualityError::InvalidRunId { reason, .. } => {
                ApiError::invalid_field("benchmark_run_id", reason)
            }
            QualityError::NotFound { benchmark_run_id } => ApiError::not_found(format!(
                "benchmark run {benchmark_run_id:?} does not exist; start one with \
                 POST /admin/studio/benchmark-matrix-runs"
            )),
            QualityError::NotCompleted {
                benchmark_run_id,
                completed_dispatches,
            } => ApiError::new(
                StatusCode::CONFLICT,
                "run_not_completed",
                format!(
                    "benchmark run {benchmark_run_id} has not completed yet \
                     ({completed_dispatches} dispatches completed so far); its outputs are judged \
                     once it completes — watch GET /admin/studio/benchmark-matrix-runs/{benchmark_run_id} \
                     and post again when its status is completed"
                ),
            )
            .with_details(vec![json!({
                "benchmark_run_id": benchmark_run_id,
                "completed_dispatches": completed_dispatches,
            })]),
            QualityError::Store(err) => err.into(),
        }
    }
}

fn started_json(service: &QualityEvaluationService, s: &Started) -> Value {
    json!({
        "benchmark_run_id": s.benchmark_run_id,
        "evaluation_batch_id": s.batch.as_ref().map(|b| &b.evaluation_batch_id),
        "outputs": s.outputs,
        "already_judged": s.already_judged,
        "joined_running_batch": s.joined_running_batch,
        "status": s.status(),
        "evaluator": service.evaluator(),
    })
}

async fn evaluate(
    State(service): State<QualityEvaluationService>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: EvaluateBody = parse_body(&body)?;
    let started = service.start(&request.benchmark_run_id).await?;
    Ok((StatusCode::ACCEPTED, Json(started_json(&service, &started))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_completed_is_a_conflict_that_says_when_to_post_again() {
        let api = ApiError::from(QualityError::NotCompleted {
            benchmark_run_id: "bm_1".into(),
            completed_dispatches: 3,
        });
        assert_eq!(
            (api.status(), api.code()),
            (StatusCode::CONFLICT, "run_not_completed")
        );
        assert!(api.message().contains("post again"), "{api}");
        let api = ApiError::from(QualityError::NotFound {
            benchmark_run_id: "bm_x".into(),
        });
        assert_eq!(api.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_body_with_an_unknown_field_names_it() {
        let err = parse_body::<EvaluateBody>(&Bytes::from_static(
            br#"{"benchmark_run_id": "bm_1", "force": true}"#,
        ))
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.details()[0]["path"], "force");
    }
}
