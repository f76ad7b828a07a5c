//! The benchmark command route (DESIGN §5), admin token only:
//!
//! - `POST /admin/studio/benchmark-matrix-runs` `{dataset, variant_ids, inputs: [{input_id,
//!   uri}], repetitions}` → 202 `{benchmark_run_id, status: "running", dataset, repetitions,
//!   planned_dispatches, items: [{item_id, variant_id, provider, planned_dispatches}],
//!   position}`; the run executes in the background.
//!
//! `GET /admin/studio/benchmark-matrix-runs[/{id}]` is the read side's (`projector::http`).

use super::service::{
    BenchmarkError, BenchmarkMatrixService, CreateBenchmarkRun, CreatedBenchmarkRun,
};
use crate::body::parse_body;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ingest::{ApiError, Tokens};
use serde_json::{json, Value};

/// The command route, guarded by the admin token.
pub fn router(state: BenchmarkMatrixService, tokens: Tokens) -> Router {
    Router::new()
        .route("/admin/studio/benchmark-matrix-runs", post(create))
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            ingest::require_admin,
        ))
        .with_state(state)
}

impl From<BenchmarkError> for ApiError {
    fn from(err: BenchmarkError) -> Self {
        match err {
            BenchmarkError::Invalid(err) => ApiError::validation(&err),
            BenchmarkError::VariantNotRegistered { variant_id } => ApiError::invalid_field(
                "variant_ids",
                format!(
                    "variant {variant_id} is not registered; register it with \
                     POST /admin/studio/variant-registry/variants first"
                ),
            ),
            BenchmarkError::VariantRetired { variant_id, reason } => ApiError::invalid_field(
                "variant_ids",
                format!(
                    "variant {variant_id} is retired ({reason}); a benchmark compares active \
                     variants"
                ),
            ),
            BenchmarkError::ProviderMissing {
                variant_id,
                provider,
            } => {
                let reason = format!(
                    "variant {variant_id} runs on provider {provider:?}, but studio.toml has no \
                     [providers.{provider}] entry; add one (kind = \"simulated\" or \"http\") \
                     and restart, or leave the variant out"
                );
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "provider_not_configured",
                    reason.clone(),
                )
                .with_details(vec![json!({
                    "path": "variant_ids",
                    "reason": reason,
                    "variant_id": variant_id,
                    "provider": provider,
                    "missing_entry": format!("[providers.{provider}]"),
                })])
            }
            BenchmarkError::Store(err) => err.into(),
        }
    }
}

fn created_json(c: &CreatedBenchmarkRun) -> Value {
    let items: Vec<Value> = c
        .items
        .iter()
        .map(|i| {
            json!({
                "item_id": i.item_id,
                "variant_id": i.variant_id,
                "provider": i.provider,
                "status": "running",
                "planned_dispatches": i.planned_dispatches,
            })
        })
        .collect();
    json!({
        "benchmark_run_id": c.run.benchmark_run_id,
        "status": "running",
        "dataset": c.run.dataset,
        "repetitions": c.run.repetitions,
        "planned_dispatches": c.items.iter().map(|i| i.planned_dispatches).sum::<u64>(),
        "items": items,
        "position": c.position,
    })
}

async fn create(
    State(service): State<BenchmarkMatrixService>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: CreateBenchmarkRun = parse_body(&body)?;
    let created = service.create(request).await?;
    Ok((StatusCode::ACCEPTED, Json(created_json(&created))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_provider_names_the_entry_to_add() {
        let api = ApiError::from(BenchmarkError::ProviderMissing {
            variant_id: "v".into(),
            provider: "fal".into(),
        });
        assert_eq!(
            (api.status(), api.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "provider_not_configured")
        );
        assert!(api.message().contains("[providers.fal]"), "{api}");
        assert_eq!(api.details()[0]["missing_entry"], "[providers.fal]");
    }

    #[test]
    fn an_unknown_field_is_refused_naming_it() {
        let err = parse_body::<CreateBenchmarkRun>(&Bytes::from_static(
            br#"{"dataset": "d", "variant_ids": [], "inputs": [], "repetitions": 1, "x": 1}"#,
        ))
        .unwrap_err();
        assert_eq!(err.details()[0]["path"], "x");
    }
}
