//! The routing command routes (DESIGN §5), admin token only:
//!
//! - `POST /admin/studio/routing/apply` `{effect_revision_id, stage, variant_id,
//!   expected_version, reason, evidence?: {benchmark_run_id}, actor?}` → 200
//!   `{binding: {effect_revision_id, stage, variant_id, version, previous_variant_id, action,
//!   reason, actor, evidence, rollback_target, applied_at}, position, event_id}`.
//! - `POST /admin/studio/routing/rollback` `{effect_revision_id, stage, expected_version,
//!   reason, actor?}` → 200, the same shape (`action: "rolled_back"`).
//!
//! `expected_version` is required (422 when missing); a stale one is 409 `version_conflict`
//! naming the current version; a rollback with nothing to restore is 409
//! `no_previous_binding`. `GET /admin/studio/routing/bindings` is the read side's
//! (`projector::http`).

use super::service::{ApplyBinding, BindingChange, RollbackBinding, RoutingError, RoutingService};
use crate::body::parse_body;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use eventlog::catalogue::Evidence;
use ingest::{ApiError, Tokens};
use serde::Deserialize;
use serde_json::{json, Value};

/// The actor recorded when a request does not name one.
pub const DEFAULT_ACTOR: &str = "operator";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    effect_revision_id: String,
    stage: String,
    variant_id: String,
    #[serde(default)]
    expected_version: Option<i64>,
    reason: String,
    #[serde(default)]
    evidence: Option<Evidence>,
    #[serde(default)]
    actor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    effect_revision_id: String,
    stage: String,
    #[serde(default)]
    expected_version: Option<i64>,
    reason: String,
    #[serde(default)]
    actor: Option<String>,
}

/// The command routes, guarded by the admin token.
pub fn router(state: RoutingService, tokens: Tokens) -> Router {
    Router::new()
        .route("/admin/studio/routing/apply", post(apply))
        .route("/admin/studio/routing/rollback", post(rollback))
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            ingest::require_admin,
        ))
        .with_state(state)
}

/// A missing `expected_version` is refused before anything is read: a binding change without
/// it would be a blind write, which is what compare-and-set exists to prevent.
fn required_version(value: Option<i64>) -> Result<i64, ApiError> {
    value.ok_or_else(|| {
        ApiError::invalid_field(
            "expected_version",
            "is required: send the binding version you read from GET \
             /admin/studio/routing/bindings (0 for a scope with no binding yet), so a change \
             made meanwhile is not silently overwritten",
        )
    })
}

impl From<RoutingError> for ApiError {
    fn from(err: RoutingError) -> Self {
        let bindings = |scope: &str| {
            let (er, stage) = scope.split_once(':').unwrap_or((scope, ""));
            format!("GET /admin/studio/routing/bindings?effect_revision_id={er}&stage={stage}")
        };
        match err {
            RoutingError::Invalid(err) => ApiError::validation(&err),
            RoutingError::VariantNotRegistered { variant_id } => ApiError::invalid_field(
                "variant_id",
                format!(
                    "variant {variant_id} is not registered; register it with \
                     POST /admin/studio/variant-registry/variants first"
                ),
            ),
            RoutingError::VariantRetired { variant_id, reason } => ApiError::invalid_field(
                "variant_id",
                format!(
                    "variant {variant_id} is retired ({reason}); only an active variant can \
                     receive traffic"
                ),
            ),
            RoutingError::OutOfScope {
                variant_id,
                field,
                variant_value,
                scope_value,
            } => ApiError::invalid_field(
                "variant_id",
                format!(
                    "variant {variant_id} belongs to {field} {variant_value:?}, but the binding \
                     is for {field} {scope_value:?}; pick a variant of {scope_value:?} or bind \
                     the scope it belongs to"
                ),
            ),
            RoutingError::EvidenceNotFound { benchmark_run_id } => ApiError::invalid_field(
                "evidence.benchmark_run_id",
                format!(
                    "benchmark run {benchmark_run_id} does not exist; name the run whose results \
                     justify this change, or leave evidence out"
                ),
            ),
            RoutingError::StaleVersion {
                scope,
                expected,
                current,
                current_variant_id,
            } => {
                let active = current_variant_id.as_deref().unwrap_or("no variant");
                ApiError::new(
                    StatusCode::CONFLICT,
                    "version_conflict",
                    format!(
                        "the binding of {scope} is at version {current} (active: {active}), not \
                         at expected_version {expected}; nothing was changed. Read {}, decide \
                         again, and resend with expected_version {current}",
                        bindings(&scope)
                    ),
                )
                .with_details(vec![json!({
                    "scope": scope,
                    "expected_version": expected,
                    "current_version": current,
                    "current_variant_id": current_variant_id,
                })])
            }
            RoutingError::AlreadyActive {
                scope,
                variant_id,
                version,
            } => ApiError::new(
                StatusCode::CONFLICT,
                "already_active",
                format!(
                    "variant {variant_id} is already the active binding of {scope} (version \
                     {version}); nothing to apply"
                ),
            )
            .with_details(vec![json!({
                "scope": scope,
                "variant_id": variant_id,
                "current_version": version,
            })]),
            RoutingError::NoPreviousBinding {
                scope,
                version,
                current_variant_id,
            } => {
                let message = match &current_variant_id {
                    None => format!(
                        "{scope} has no binding yet, so there is nothing to roll back; apply a \
                         variant with POST /admin/studio/routing/apply"
                    ),
                    Some(active) => format!(
                        "{scope} has no previous variant to roll back to: {active} (version \
                         {version}) is the earliest applied variant still on the binding's \
                         history. To route elsewhere, apply another variant with POST \
                         /admin/studio/routing/apply"
                    ),
                };
                ApiError::new(StatusCode::CONFLICT, "no_previous_binding", message).with_details(
                    vec![json!({
                        "scope": scope,
                        "current_version": version,
                        "current_variant_id": current_variant_id,
                    })],
                )
            }
            RoutingError::RollbackTargetRetired { variant_id, reason } => ApiError::new(
                StatusCode::CONFLICT,
                "rollback_target_retired",
                format!(
                    "the rollback would restore variant {variant_id}, which was retired since \
                     ({reason}); apply an active variant instead"
                ),
            )
            .with_details(vec![json!({"variant_id": variant_id, "reason": reason})]),
            RoutingError::Store(err) => err.into(),
        }
    }
}

fn change_json(c: &BindingChange) -> Value {
    json!({
        "binding": {
            "effect_revision_id": c.effect_revision_id,
            "stage": c.stage,
            "variant_id": c.variant_id,
            "version": c.version,
            "previous_variant_id": c.previous_variant_id,
            "action": c.action,
            "reason": c.reason,
            "actor": c.actor,
            "evidence": c.evidence,
            "rollback_target": c.rollback_target,
            "applied_at": c.occurred_at,
        },
        "position": c.position,
        "event_id": c.event_id,
    })
}

async fn apply(
    State(service): State<RoutingService>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: ApplyBody = parse_body(&body)?;
    let request = ApplyBinding {
        expected_version: required_version(body.expected_version)?,
        effect_revision_id: body.effect_revision_id,
        stage: body.stage,
        variant_id: body.variant_id,
        reason: body.reason,
        evidence: body.evidence,
        actor: body.actor.unwrap_or_else(|| DEFAULT_ACTOR.to_string()),
    };
    Ok(Json(change_json(&service.apply(request).await?)))
}

async fn rollback(
    State(service): State<RoutingService>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: RollbackBody = parse_body(&body)?;
    let request = RollbackBinding {
        expected_version: required_version(body.expected_version)?,
        effect_revision_id: body.effect_revision_id,
        stage: body.stage,
        reason: body.reason,
        actor: body.actor.unwrap_or_else(|| DEFAULT_ACTOR.to_string()),
    };
    Ok(Json(change_json(&service.rollback(request).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_expected_version_is_a_validation_failure_naming_the_field() {
        let body: ApplyBody = parse_body(&Bytes::from_static(
            br#"{"effect_revision_id": "er1", "stage": "render", "reason": "r",
                 "variant_id": "er:er1:wf:w:env:e:stage:render:provider:p:exp:x"}"#,
        ))
        .unwrap();
        let err = required_version(body.expected_version).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.details()[0]["path"], "expected_version");
        assert!(
            err.message().contains("0 for a scope with no binding"),
            "{err}"
        );
    }

    #[test]
    fn a_stale_version_conflict_names_the_current_version_and_how_to_read_it() {
        let api = ApiError::from(RoutingError::StaleVersion {
            scope: "er1:render".into(),
            expected: 1,
            current: 2,
            current_variant_id: Some("v".into()),
        });
        assert_eq!(
            (api.status(), api.code()),
            (StatusCode::CONFLICT, "version_conflict")
        );
        assert!(api.message().contains("at version 2"), "{api}");
        assert!(api.message().contains("expected_version 2"), "{api}");
        assert!(
            api.message()
                .contains("effect_revision_id=er1&stage=render"),
            "{api}"
        );
        assert_eq!(api.details()[0]["current_version"], 2);
    }
}
