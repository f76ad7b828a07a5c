//! The registry's command routes (DESIGN §5), admin token only:
//!
//! - `POST /admin/studio/variant-registry/variants` `{variant_id, unit_cost_usd?}` → 201 with
//!   the registered variant, or 200 with `"unchanged": true` when it was already registered.
//! - `POST /admin/studio/variant-registry/variants/{id}/retire` `{reason}` → 200.
//!
//! The `GET` routes of the registry are the read side's (`projector::http`).

use super::service::{Registration, RegistryError, Retirement, VariantRegistryService};
use crate::body::parse_body;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ingest::{ApiError, Tokens};
use serde::Deserialize;
use serde_json::{json, Value};

/// The producer recorded on events these routes append.
pub const PRODUCER: &str = "variant-registry";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    variant_id: String,
    #[serde(default)]
    unit_cost_usd: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetireBody {
    reason: String,
}

/// The command routes, guarded by the admin token.
pub fn router(state: VariantRegistryService, tokens: Tokens) -> Router {
    Router::new()
        .route("/admin/studio/variant-registry/variants", post(register))
        .route(
            "/admin/studio/variant-registry/variants/{id}/retire",
            post(retire),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            ingest::require_admin,
        ))
        .with_state(state)
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Invalid { field, reason } => ApiError::invalid_field(&field, reason),
            RegistryError::Conflict {
                variant_id,
                stored,
                requested,
            } => ApiError::new(
                StatusCode::CONFLICT,
                "variant_conflict",
                format!(
                    "variant {variant_id} is already registered with unit_cost_usd {}, not {}; \
                     a registration cannot be changed: register a new experiment id instead",
                    cost_text(stored),
                    cost_text(requested),
                ),
            )
            .with_details(vec![json!({
                "variant_id": variant_id,
                "stored_unit_cost_usd": stored,
                "requested_unit_cost_usd": requested,
            })]),
            RegistryError::Retired { variant_id, reason } => ApiError::new(
                StatusCode::CONFLICT,
                "variant_retired",
                format!(
                    "variant {variant_id} is retired ({reason}) and cannot be registered again; \
                     register a new experiment id instead"
                ),
            )
            .with_details(vec![
                json!({"variant_id": variant_id, "retired_reason": reason}),
            ]),
            RegistryError::NotFound { variant_id } => ApiError::not_found(format!(
                "variant {variant_id} is not registered; register it with \
                 POST /admin/studio/variant-registry/variants"
            )),
            RegistryError::Store(err) => err.into(),
        }
    }
}

fn cost_text(cost: Option<f64>) -> String {
    cost.map_or_else(|| "null".to_string(), |c| c.to_string())
}

fn registration_json(r: &Registration) -> Value {
    let v = &r.variant;
    json!({
        "variant_id": v.variant_id,
        "effect_revision_id": v.effect_revision_id,
        "workflow_id": v.workflow_id,
        "environment_id": v.environment_id,
        "stage": v.stage,
        "provider": v.provider,
        "experiment_id": v.experiment_id,
        "unit_cost_usd": v.unit_cost_usd,
        "status": "active",
        "position": r.position,
        "stream_version": r.stream_version,
        "unchanged": r.unchanged,
    })
}

fn retirement_json(r: &Retirement) -> Value {
    json!({
        "variant_id": r.variant_id,
        "status": "retired",
        "reason": r.reason,
        "position": r.position,
        "stream_version": r.stream_version,
        "unchanged": r.unchanged,
    })
}

async fn register(
    State(registry): State<VariantRegistryService>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: RegisterBody = parse_body(&body)?;
    let registration = registry
        .register(&body.variant_id, body.unit_cost_usd, PRODUCER)
        .await?;
    let status = if registration.unchanged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(registration_json(&registration))))
}

async fn retire(
    State(registry): State<VariantRegistryService>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: RetireBody = parse_body(&body)?;
    let retirement = registry.retire(&id, &body.reason, PRODUCER).await?;
    Ok(Json(retirement_json(&retirement)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_json_is_malformed_and_one_with_an_unknown_field_is_invalid() {
        let err = parse_body::<RegisterBody>(&Bytes::from_static(b"{nope")).unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
        let err = parse_body::<RegisterBody>(&Bytes::from_static(
            br#"{"variant_id": "x", "colour": "red"}"#,
        ))
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.details()[0]["path"], "colour");
        let err = parse_body::<RegisterBody>(&Bytes::from_static(b"{}")).unwrap_err();
        assert_eq!(err.details()[0]["path"], "variant_id");
    }

    #[test]
    fn a_conflict_names_the_stored_cost() {
        let api = ApiError::from(RegistryError::Conflict {
            variant_id: "v".into(),
            stored: Some(0.02),
            requested: Some(0.03),
        });
        assert_eq!(
            (api.status(), api.code()),
            (StatusCode::CONFLICT, "variant_conflict")
        );
        assert!(api.message().contains("0.02"), "{api}");
        assert_eq!(api.details()[0]["stored_unit_cost_usd"], 0.02);
    }
}
