//! The sinks' part of the admin API (admin token only):
//!
//! - `GET /admin/studio/action-logs?severity=&kind=&subject=&unacknowledged=true&since_position=&limit=&min_position=`
//!   → `{action_logs: […], as_of_position}` (the action-log sink's checkpoint). With
//!   `since_position`, rows whose latest event is after it, oldest first; otherwise newest
//!   first. `min_position` waits (bounded) until the sink has caught up to it.
//! - `POST /admin/studio/action-logs/{id}/acknowledge {actor?, note?}` → 200 with what it
//!   appended; 404 unknown id, 409 already acknowledged.
//! - `GET /admin/studio/observability/sinks` → per sink: checkpoint, lag, delivered, failed,
//!   dead letters, last error, mapping.

use crate::action_logs::{self, AckError, ActionLogFilter, ACTION_LOG_SINK};
use crate::checkpoint;
use crate::sink::Sink;
use crate::status::SinkStatusBoard;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use eventlog::{EventLog, Severity};
use ingest::{ApiError, Tokens};
use projector::db::ReadDb;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often a `min_position` wait looks at the sink checkpoint again.
const WAIT_STEP: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct SinksState {
    pub db: ReadDb,
    pub log: Arc<dyn EventLog>,
    pub status: Arc<SinkStatusBoard>,
    /// Every configured sink (from the one registration point), whichever instance runs it.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Longest `min_position` wait.
    pub max_wait: Duration,
}

type Params = Query<BTreeMap<String, String>>;
type Answer = Result<Json<Value>, ApiError>;

/// The routes, guarded by the admin token.
pub fn router(state: SinksState, tokens: Tokens) -> Router {
    Router::new()
        .route("/admin/studio/action-logs", get(list))
        .route(
            "/admin/studio/action-logs/{id}/acknowledge",
            post(acknowledge),
        )
        .route("/admin/studio/observability/sinks", get(sinks))
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            ingest::require_admin,
        ))
        .with_state(state)
}

fn internal(err: &dyn std::fmt::Display) -> ApiError {
    ApiError::internal(err)
}

fn position_param(params: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| ApiError::invalid_field(name, format!("{v:?} is not a position ≥ 0"))),
    }
}

/// Reads the filter from query parameters; unknown parameters are refused, so a typo is not
/// silently an unfiltered answer.
pub fn filter_from_params(params: &BTreeMap<String, String>) -> Result<ActionLogFilter, ApiError> {
    const KNOWN: &[&str] = &[
        "severity",
        "kind",
        "subject",
        "unacknowledged",
        "since_position",
        "limit",
        "min_position",
    ];
    if let Some(unknown) = params.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::invalid_field(
            unknown,
            format!(
                "unknown query parameter; expected one of {}",
                KNOWN.join(", ")
            ),
        ));
    }
    let severity = match params.get("severity").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(
            serde_json::from_value::<Severity>(Value::String(s.to_string())).map_err(|_| {
                ApiError::invalid_field(
                    "severity",
                    format!("{s:?} is not one of info, warn, critical"),
                )
            })?,
        ),
    };
    let kind = match params.get("kind").map(String::as_str) {
        None | Some("") => None,
        Some(k) => Some(
            action_logs::Kind::parse(k)
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        action_logs::Kind::ALL.iter().map(|k| k.as_str()).collect();
                    ApiError::invalid_field(
                        "kind",
                        format!("{k:?} is not a kind; known kinds: {}", known.join(", ")),
                    )
                })?
                .as_str()
                .to_string(),
        ),
    };
    let unacknowledged = match params.get("unacknowledged").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(ApiError::invalid_field(
                "unacknowledged",
                format!("{v:?} is not true or false"),
            ))
        }
    };
    let limit = match params.get("limit") {
        None => action_logs::DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=action_logs::MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "limit",
                    format!("{v:?} is not a number from 1 to {}", action_logs::MAX_LIMIT),
                )
            })?,
    };
    Ok(ActionLogFilter {
        severity,
        kind,
        subject: params.get("subject").filter(|s| !s.is_empty()).cloned(),
        unacknowledged,
        since_position: position_param(params, "since_position")?,
        limit,
    })
}

/// Waits until the action-log sink's checkpoint reaches `wanted`, at most `max_wait`.
async fn wait_for_checkpoint(state: &SinksState, wanted: i64) -> Result<(), ApiError> {
    let started = tokio::time::Instant::now();
    loop {
        let at = checkpoint::position(&state.db, ACTION_LOG_SINK)
            .await
            .map_err(|e| internal(&e))?;
        if at >= wanted {
            return Ok(());
        }
        if started.elapsed() >= state.max_wait {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_caught_up",
                format!(
                    "the action-log sink is at position {at}, not yet {wanted}, after {} ms; retry later, or check GET /admin/studio/observability/sinks for a stalled sink",
                    started.elapsed().as_millis()
                ),
            ));
        }
        tokio::time::sleep(WAIT_STEP).await;
    }
}

async fn list(State(state): State<SinksState>, Query(params): Params) -> Answer {
    let filter = filter_from_params(&params)?;
    if let Some(wanted) = position_param(&params, "min_position")? {
        wait_for_checkpoint(&state, wanted).await?;
    }
    let page = action_logs::list_action_logs(&state.db, &filter)
        .await
        .map_err(|e| internal(&e))?;
    Ok(Json(serde_json::to_value(page).map_err(|e| internal(&e))?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

fn parse_ack_body(body: &Bytes) -> Result<AckBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(AckBody {
            actor: None,
            note: None,
        });
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::malformed_json(&e))?;
    if !value.is_object() {
        return Err(ApiError::invalid_field(
            ".",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid_field(".", e.to_string()))
}

impl From<AckError> for ApiError {
    fn from(err: AckError) -> Self {
        match err {
            AckError::NotFound(_) => ApiError::not_found(format!(
                "{err}; an entry written moments ago may not be there yet: retry with GET …/action-logs?min_position=N first"
            )),
            AckError::AlreadyAcknowledged { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_acknowledged", err.to_string())
            }
            AckError::Invalid(v) => ApiError::validation(&v),
            AckError::Store(e) => ApiError::from(e),
            AckError::Database(e) => internal(&e),
        }
    }
}

async fn acknowledge(
    State(state): State<SinksState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let body = parse_ack_body(&body)?;
    let actor = body
        .actor
        .unwrap_or_else(|| action_logs::DEFAULT_ACTOR.to_string());
    let acknowledged =
        action_logs::acknowledge(&state.db, state.log.as_ref(), &id, &actor, body.note).await?;
    Ok(Json(
        serde_json::to_value(acknowledged).map_err(|e| internal(&e))?,
    ))
}

/// Per sink: checkpoint, lag in events, delivered/failed in this process, open dead letters,
/// last error, ownership, and its event → destination mapping.
pub async fn sink_health(state: &SinksState) -> Result<Value, ApiError> {
    let head = state.log.head().await.map_err(|e| internal(&e))?;
    let positions = checkpoint::positions(&state.db)
        .await
        .map_err(|e| internal(&e))?;
    let dead = checkpoint::dead_letter_counts(&state.db)
        .await
        .map_err(|e| internal(&e))?;
    let live = state.status.snapshot();
    let list: Vec<Value> = state
        .sinks
        .iter()
        .map(|sink| {
            let name = sink.name();
            let checkpoint = positions.get(name).copied().unwrap_or(0);
            let status = live.get(name);
            json!({
                "name": name,
                "checkpoint": checkpoint,
                "lag": (head - checkpoint).max(0),
                "delivered": status.map_or(0, |s| s.delivered),
                "failed": status.map_or(0, |s| s.failed),
                "dead_letters": dead.get(name).copied().unwrap_or(0),
                "last_error": status.and_then(|s| s.last_error.clone()),
                "last_progress_at": status.and_then(|s| s.last_progress_at.clone()),
                "owned_by_this_instance": status.is_some_and(|s| s.owned_here),
                "after": sink.after(),
                "mapping": sink.mapping(),
            })
        })
        .collect();
    Ok(json!({"head_position": head, "sinks": list}))
}

async fn sinks(State(state): State<SinksState>) -> Answer {
    Ok(Json(sink_health(&state).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_are_read_from_the_query() {
        let f = filter_from_params(&params(&[
            ("severity", "critical"),
            ("kind", "alarm"),
            ("subject", "ops-x"),
            ("unacknowledged", "true"),
            ("since_position", "7"),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(f.severity, Some(Severity::Critical));
        assert_eq!(f.kind.as_deref(), Some("alarm"));
        assert_eq!(f.subject.as_deref(), Some("ops-x"));
        assert!(f.unacknowledged);
        assert_eq!(f.since_position, Some(7));
        assert_eq!(f.limit, 5);
    }

    #[test]
    fn bad_filters_name_the_parameter() {
        for (k, v) in [
            ("severity", "loud"),
            ("kind", "nope"),
            ("unacknowledged", "yes"),
            ("since_position", "-1"),
            ("limit", "0"),
            ("limti", "5"),
        ] {
            let err = filter_from_params(&params(&[(k, v)])).unwrap_err();
            assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY, "{k}={v}");
            assert_eq!(err.details()[0]["path"], k, "{k}={v}");
        }
    }
}
