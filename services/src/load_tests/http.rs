//! The load-test command routes (DESIGN §5), admin token only:
//!
//! - `POST /admin/studio/load-test-runs` `{name, effect_revision_id, environment_id,
//!   variant_id, input_fixture, stages, stop_conditions?, approval_ref?}` → 201
//!   `{run_id, status: "created", estimated_cost_usd, approval_threshold_usd, position}`.
//! - `POST /admin/studio/load-test-runs/{id}/start` (no body, or `{}`, or `{"actor"}`) → 202
//!   `{run_id, status: "running", mode: "runner"|"inline", runner_fallback, position}`; 500
//!   `runner_failed` when `STUDIO_LOAD_TEST_RUNNER_COMMAND` cannot be launched (nothing appended).
//! - `POST /admin/studio/load-test-runs/{id}/cancel` `{reason, actor?}` → 200
//!   `{run_id, status: "cancelled", reason, actor, position}`.
//!
//! The `GET` routes are the read side's (`projector::http`).

use super::service::{Cancelled, CreateRun, Created, LoadTestError, LoadTestService, Started};
use crate::body::parse_body;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use eventlog::catalogue::RunMode;
use ingest::{ApiError, Tokens};
use serde::Deserialize;
use serde_json::{json, Value};

/// The actor recorded when a request does not name one.
pub const DEFAULT_ACTOR: &str = "operator";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    #[serde(default)]
    actor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: String,
    #[serde(default)]
    actor: Option<String>,
}

/// The command routes, guarded by the admin token.
pub fn router(state: LoadTestService, tokens: Tokens) -> Router {
    Router::new()
        .route("/admin/studio/load-test-runs", post(create))
        .route("/admin/studio/load-test-runs/{id}/start", post(start))
        .route("/admin/studio/load-test-runs/{id}/cancel", post(cancel))
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            ingest::require_admin,
        ))
        .with_state(state)
}

impl From<LoadTestError> for ApiError {
    fn from(err: LoadTestError) -> Self {
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        match err {
            LoadTestError::Invalid(err) => ApiError::validation(&err),
            LoadTestError::VariantNotRegistered { variant_id } => ApiError::invalid_field(
                "variant_id",
                format!(
                    "variant {variant_id} is not registered; register it with \
                     POST /admin/studio/variant-registry/variants first"
                ),
            ),
            LoadTestError::VariantRetired { variant_id, reason } => ApiError::invalid_field(
                "variant_id",
                format!(
                    "variant {variant_id} is retired ({reason}); a run needs an active variant"
                ),
            ),
            LoadTestError::RevisionMismatch {
                variant_id,
                variant_revision,
                run_revision,
            } => ApiError::invalid_field(
                "effect_revision_id",
                format!(
                    "is {run_revision}, but variant {variant_id} belongs to effect revision \
                     {variant_revision}; use that revision or a variant of {run_revision}"
                ),
            ),
            LoadTestError::ProviderMissing {
                variant_id,
                provider,
            } => {
                let reason = format!(
                    "variant {variant_id} runs on provider {provider:?}, but studio.toml has no \
                     [providers.{provider}] entry; add one (kind = \"simulated\" or \"http\") \
                     and restart"
                );
                ApiError::new(unprocessable, "provider_not_configured", reason.clone())
                    .with_details(vec![json!({
                        "path": "variant_id",
                        "reason": reason,
                        "provider": provider,
                        "missing_entry": format!("[providers.{provider}]"),
                    })])
            }
            LoadTestError::ApprovalRequired {
                estimated_cost_usd,
                threshold_usd,
            } => {
                let message = match estimated_cost_usd {
                    Some(cost) => format!(
                        "the run is estimated at ${cost:.2}, above the approval threshold of \
                         ${threshold_usd:.2} ([economics] approval_threshold_usd); resend it \
                         with an approval_ref naming who approved the spend, or shorten it"
                    ),
                    None => format!(
                        "the run's cost cannot be estimated because its variant has no \
                         unit_cost_usd, so it cannot be checked against the approval threshold \
                         of ${threshold_usd:.2}; resend it with an approval_ref naming who \
                         approved the spend"
                    ),
                };
                ApiError::new(unprocessable, "approval_required", message.clone()).with_details(
                    vec![json!({
                        "path": "approval_ref",
                        "reason": message,
                        "estimated_cost_usd": estimated_cost_usd,
                        "approval_threshold_usd": threshold_usd,
                    })],
                )
            }
            LoadTestError::NotFound { run_id } => ApiError::not_found(format!(
                "load-test run {run_id:?} does not exist; create it with \
                 POST /admin/studio/load-test-runs"
            )),
            LoadTestError::AlreadyStarted { run_id, status } => ApiError::new(
                StatusCode::CONFLICT,
                "already_started",
                format!(
                    "load-test run {run_id} is already {status}; a run starts once — create a \
                     new run to test again"
                ),
            )
            .with_details(vec![json!({"run_id": run_id, "status": status})]),
            LoadTestError::AlreadyEnded { run_id, status } => ApiError::new(
                StatusCode::CONFLICT,
                "already_ended",
                format!("load-test run {run_id} has already ended ({status}); nothing to cancel"),
            )
            .with_details(vec![json!({"run_id": run_id, "status": status})]),
            LoadTestError::RunnerFailed { command, error } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "runner_failed",
                format!(
                    "the load-test runner command could not be launched ({error}); the run was \
                     not started. Check STUDIO_LOAD_TEST_RUNNER_COMMAND, or unset it to run inline"
                ),
            )
            .with_details(vec![json!({"command": command})]),
            LoadTestError::NotThisRunner { run_id, why } => ApiError::new(
                StatusCode::CONFLICT,
                "not_this_runner",
                format!("load-test run {run_id} is not this runner's: {why}"),
            ),
            LoadTestError::Store(err) => err.into(),
        }
    }
}

fn mode_text(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Inline => "inline",
        RunMode::Runner => "runner",
    }
}

fn created_json(c: &Created) -> Value {
    json!({
        "run_id": c.run.run_id,
        "status": "created",
        "name": c.run.name,
        "variant_id": c.run.variant_id,
        "estimated_cost_usd": c.run.estimated_cost_usd,
        "approval_threshold_usd": c.approval_threshold_usd,
        "approval_ref": c.run.approval_ref,
        "position": c.position,
        "stream_version": c.stream_version,
    })
}

fn started_json(s: &Started) -> Value {
    json!({
        "run_id": s.run_id,
        "status": "running",
        "mode": mode_text(s.mode),
        "runner_fallback": s.runner_fallback,
        "position": s.position,
    })
}

fn cancelled_json(c: &Cancelled) -> Value {
    json!({
        "run_id": c.run_id,
        "status": "cancelled",
        "reason": c.reason,
        "actor": c.actor,
        "position": c.position,
    })
}

async fn create(
    State(service): State<LoadTestService>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: CreateRun = parse_body(&body)?;
    let created = service.create(request, DEFAULT_ACTOR).await?;
    Ok((StatusCode::CREATED, Json(created_json(&created))))
}

async fn start(
    State(service): State<LoadTestService>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: StartBody = if body.iter().all(u8::is_ascii_whitespace) {
        StartBody::default()
    } else {
        parse_body(&body)?
    };
    let actor = body.actor.unwrap_or_else(|| DEFAULT_ACTOR.to_string());
    let started = service.start(&id, &actor).await?;
    Ok((StatusCode::ACCEPTED, Json(started_json(&started))))
}

async fn cancel(
    State(service): State<LoadTestService>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: CancelBody = parse_body(&body)?;
    let actor = body.actor.unwrap_or_else(|| DEFAULT_ACTOR.to_string());
    let cancelled = service.cancel(&id, &body.reason, &actor).await?;
    Ok(Json(cancelled_json(&cancelled)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_body_with_an_unknown_field_is_invalid_and_not_json_is_malformed() {
        let err = parse_body::<CreateRun>(&Bytes::from_static(b"{nope")).unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
        let err =
            parse_body::<CancelBody>(&Bytes::from_static(br#"{"reason": "x", "colour": "red"}"#))
                .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.details()[0]["path"], "colour");
    }

    #[test]
    fn approval_required_says_the_estimate_and_the_threshold() {
        let api = ApiError::from(LoadTestError::ApprovalRequired {
            estimated_cost_usd: Some(120.0),
            threshold_usd: 50.0,
        });
        assert_eq!(
            (api.status(), api.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "approval_required")
        );
        assert!(api.message().contains("$120.00"), "{api}");
        assert!(api.message().contains("$50.00"), "{api}");
    }
}
