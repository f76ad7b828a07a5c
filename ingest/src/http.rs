//! The handlers: publish and read the log, health, readiness, metrics, JSON fallbacks.

use crate::auth::{AdminAuth, ExecutorAuth};
use crate::error::ApiError;
use crate::metrics::{self, OPENMETRICS_CONTENT_TYPE};
use crate::{AppState, MAX_EVENTS_PER_REQUEST};
use axum::body::{to_bytes, Body};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use eventlog::{Appended, RecordedEvent, ValidatedEvent, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Most events one `GET /v1/events` returns.
pub const MAX_READ_LIMIT: usize = 10_000;
/// Events a read returns when it does not say.
pub const DEFAULT_READ_LIMIT: usize = 1_000;
/// Longest a read may wait for new events.
pub const MAX_WAIT_MS: u64 = 30_000;
/// Violations listed in one refusal; a batch of 10,000 broken events would otherwise answer
/// with a body larger than the one it refuses.
const MAX_REPORTED_VIOLATIONS: usize = 1_000;

/// What `POST /v1/events` answers for each event.
#[derive(Debug, Serialize)]
struct PublishedEvent {
    event_id: String,
    position: i64,
    stream: String,
    stream_version: i64,
    /// True when an event with the same idempotency key (or event id) was already stored and
    /// this is it; nothing was appended for it.
    duplicate: bool,
}

impl From<&Appended> for PublishedEvent {
    fn from(appended: &Appended) -> Self {
        let event = appended.event();
        Self {
            event_id: event.event_id.to_string(),
            position: event.position,
            stream: event.stream.clone(),
            stream_version: event.stream_version,
            duplicate: !appended.is_new(),
        }
    }
}

/// `POST /v1/events`: one envelope or an array of them, appended atomically.
// A debug span: enabled at the default `info` level, tracing's span bookkeeping took ~4% of
// the workers' samples under 64 concurrent publishers (`perf`, `studio bench ingest`).
#[tracing::instrument(level = "debug", skip_all, fields(events = tracing::field::Empty))]
pub(crate) async fn publish(
    State(state): State<AppState>,
    _auth: ExecutorAuth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, &headers, state.max_body_bytes()).await?;
    let (is_batch, events) = parse_events(&bytes)?;

    let count = events.len();
    tracing::Span::current().record("events", count);
    let started = Instant::now();
    let result = state.log().append(events).await;
    state.metrics().record_append_call(count, started.elapsed());
    let appended = result?;
    let new = appended.iter().filter(|a| a.is_new()).count();
    state.metrics().record_appended(new, count - new);
    tracing::debug!(new, "events published");

    let status = if new > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let answers: Vec<PublishedEvent> = appended.iter().map(PublishedEvent::from).collect();
    Ok(if is_batch {
        (status, Json(json!({ "events": answers }))).into_response()
    } else {
        (status, Json(&answers[0])).into_response()
    })
}

/// Reads the whole body, refusing past `limit` bytes with our 413 rather than axum's text one.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than {limit} bytes; split it into several requests"
            ),
        )
    };
    // A declared length already over the limit is refused before reading a byte of it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    to_bytes(body, limit).await.map_err(|err| {
        let cause = err.into_inner();
        if cause.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            // The client went away or sent a broken body; nobody may be left to read this.
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("the request body could not be read: {cause}"),
            )
        }
    })
}

/// Parses and validates every event; any failure refuses the request whole. Returns whether
/// the body was an array, and the events in order.
pub(crate) fn parse_events(bytes: &[u8]) -> Result<(bool, Vec<ValidatedEvent>), ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::malformed_json(&e))?;
    let (is_batch, items) = match value {
        Value::Array(items) => (true, items),
        other => (false, vec![other]),
    };
    if items.is_empty() {
        return Err(ApiError::invalid_field(
            ".",
            format!("the array holds no events; send 1 to {MAX_EVENTS_PER_REQUEST}"),
        ));
    }
    if items.len() > MAX_EVENTS_PER_REQUEST {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            format!(
                "the request holds {} events; at most {MAX_EVENTS_PER_REQUEST} go in one \
                 request, so split it",
                items.len()
            ),
        ));
    }
    let total = items.len();
    let mut events = Vec::with_capacity(total);
    let mut failures = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match ValidatedEvent::parse_owned(item) {
            Ok(event) => events.push(event),
            Err(err) => failures.push((index, err)),
        }
    }
    if failures.is_empty() {
        Ok((is_batch, events))
    } else {
        Err(invalid_events(total, &failures))
    }
}

/// 422 naming every violation by event index and field path.
fn invalid_events(total: usize, failures: &[(usize, ValidationError)]) -> ApiError {
    let violations: usize = failures.iter().map(|(_, e)| e.violations.len()).sum();
    let (first_index, first) = &failures[0];
    let mut message = format!(
        "{violations} problem(s) in {} of {total} event(s), so nothing was stored; fix them and \
         resend the whole request. First: event {first_index}: {}",
        failures.len(),
        first.violations[0],
    );
    if violations > MAX_REPORTED_VIOLATIONS {
        message.push_str(&format!(
            " (details list the first {MAX_REPORTED_VIOLATIONS})"
        ));
    }
    let details = failures
        .iter()
        .flat_map(|(index, err)| {
            err.violations
                .iter()
                .map(move |v| json!({"index": index, "path": v.path, "reason": v.reason}))
        })
        .take(MAX_REPORTED_VIOLATIONS)
        .collect();
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        message,
    )
    .with_details(details)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    after_position: Option<i64>,
    limit: Option<i64>,
    wait_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ReadPage {
    events: Vec<RecordedEvent>,
    /// Pass as `after_position` to read on: the last position returned, or the given one.
    next_after_position: i64,
}

/// `GET /v1/events?after_position=N&limit=M[&wait_ms=W]`: the log in position order. With
/// `wait_ms`, an empty answer waits up to that long for new events (long-poll).
#[tracing::instrument(skip_all)]
pub(crate) async fn read_events(
    State(state): State<AppState>,
    _auth: AdminAuth,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<ReadPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!(
                "{}; the parameters are after_position (integer ≥ 0), limit (1 to \
                 {MAX_READ_LIMIT}) and wait_ms (0 to {MAX_WAIT_MS})",
                rejection.body_text()
            ),
        )
    })?;
    let after = query.after_position.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid_field(
            "after_position",
            format!("must be ≥ 0, got {after}"),
        ));
    }
    let limit = match query.limit {
        None => DEFAULT_READ_LIMIT,
        Some(n) if (1..=MAX_READ_LIMIT as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid_field(
                "limit",
                format!("must be 1 to {MAX_READ_LIMIT}, got {n}; page with after_position"),
            ))
        }
    };
    let wait = match query.wait_ms {
        None => Duration::ZERO,
        Some(n) if (0..=MAX_WAIT_MS as i64).contains(&n) => Duration::from_millis(n as u64),
        Some(n) => {
            return Err(ApiError::invalid_field(
                "wait_ms",
                format!("must be 0 to {MAX_WAIT_MS}, got {n}"),
            ))
        }
    };

    let mut events = state.log().read_all(after, limit).await?;
    if events.is_empty() && !wait.is_zero() {
        eventlog::wait_for_position(state.log().as_ref(), after, wait).await?;
        events = state.log().read_all(after, limit).await?;
    }
    let next_after_position = events.last().map_or(after, |e| e.position);
    Ok(Json(ReadPage {
        events,
        next_after_position,
    }))
}

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers and is migrated.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.log().ready().await {
        Ok(()) => Ok(Json(
            json!({"status": "ready", "backend": state.log().backend()}),
        )),
        Err(err) => {
            tracing::warn!(error = %err, backend = state.log().backend(), "not ready");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                err.to_string(),
            ))
        }
    }
}

/// `GET /metrics`: OpenMetrics text.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = metrics::render(state.registry());
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response()
}

/// The JSON 404 for any unknown path.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "there is no endpoint {method} {}; see DESIGN §5 for the API",
        uri.path()
    ))
}

/// The JSON 405 for a known path used with the wrong method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not accept {method}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"type":"load_test.run_completed","occurred_at":"2026-11-24T10:00:00Z","producer":"test","payload":{"run_id":"lt_1"}}"#;

    #[test]
    fn a_single_object_is_not_a_batch() {
        let (is_batch, events) = parse_events(VALID.as_bytes()).unwrap();
        assert!(!is_batch);
        assert_eq!(events[0].stream, "load_test_run-lt_1");
    }

    #[test]
    fn refusals_name_the_event_index_and_path() {
        let body = format!(r#"[{VALID}, {VALID}, {{"type": "load_test.run_completed"}}]"#);
        let err = parse_events(body.as_bytes()).unwrap_err();
        assert_eq!(err.code(), "validation_failed");
        let paths: Vec<_> = err
            .details()
            .iter()
            .map(|d| (d["index"].as_u64().unwrap(), d["path"].as_str().unwrap()))
            .collect();
        assert_eq!(paths, [(2, "occurred_at"), (2, "payload")]);
        assert!(err.message().contains("event 2"), "{err}");
    }

    #[test]
    fn an_empty_array_is_unprocessable() {
        let err = parse_events(b"[]").unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn a_non_object_body_is_unprocessable_not_malformed() {
        let err = parse_events(b"42").unwrap_err();
        assert_eq!(err.code(), "validation_failed");
        assert_eq!(err.details()[0]["index"], 0);
    }

    #[test]
    fn broken_json_is_malformed() {
        let err = parse_events(b"{\"type\": ").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.code(), "malformed_json");
    }

    #[tokio::test]
    async fn an_undeclared_body_over_the_limit_is_too_large() {
        let err = read_body(Body::from(vec![b' '; 2_000]), &HeaderMap::new(), 1_000)
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.code(), "payload_too_large");
        let ok = read_body(Body::from(vec![b' '; 1_000]), &HeaderMap::new(), 1_000).await;
        assert_eq!(ok.unwrap().len(), 1_000);
    }
}
