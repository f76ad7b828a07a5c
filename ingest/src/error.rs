//! The one error shape of every HTTP surface (DESIGN §5):
//! `{"error": {"code": "…", "message": "what is wrong and what to do", "details": […]}}`.
//!
//! Other crates answer with [`ApiError`] too, so a client handles refusals from `/v1/events`
//! and `/admin/studio/*` the same way.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use eventlog::{StoreError, ValidationError};
use serde_json::{json, Value};
use std::fmt;

/// The machine-readable code of a refusal, left in the response's extensions so middleware
/// (the refusal counter) can see it without parsing the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub &'static str);

/// A refusal: status, stable code, a message a person can act on, and structured details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// Replaces the details (each usually an object such as `{"path", "reason"}`).
    pub fn with_details(mut self, details: Vec<Value>) -> Self {
        self.details = details;
        self
    }

    /// 400 `malformed_json`: the body is not JSON at all.
    pub fn malformed_json(err: &serde_json::Error) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the request body is not valid JSON: {err}"),
        )
    }

    /// 401 `unauthorized`: no usable bearer token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`: a known token, but not one allowed here.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 `validation_failed` for one input, each violation as `{"path", "reason"}`.
    pub fn validation(err: &ValidationError) -> Self {
        let details = err
            .violations
            .iter()
            .map(|v| json!({"path": v.path, "reason": v.reason}))
            .collect();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("the input is invalid: {err}"),
        )
        .with_details(details)
    }

    /// 422 `validation_failed` for one field, e.g. a query parameter.
    pub fn invalid_field(path: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("{path}: {reason}"),
        )
        .with_details(vec![json!({"path": path, "reason": reason})])
    }

    /// 500 `internal`. The cause is logged here and never sent: it may name hosts, tables or
    /// files an API client has no business seeing.
    pub fn internal(cause: &dyn fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle this request; it was logged, and retrying later may help",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn details(&self) -> &[Value] {
        &self.details
    }

    /// The JSON body this error answers with.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message, "details": self.details}})
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<&ValidationError> for ApiError {
    fn from(err: &ValidationError) -> Self {
        Self::validation(err)
    }
}

/// How a failed append or read answers. Store failures other than refusals are internal.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict {
                index,
                stream,
                expected,
                actual,
            } => Self::new(
                StatusCode::CONFLICT,
                "version_conflict",
                format!(
                    "stream {stream:?} is at version {actual}, but event {index} expected \
                     version {expected}; nothing was stored. Read the stream, decide again, and \
                     resend with expected_version {actual}"
                ),
            )
            .with_details(vec![json!({
                "index": index,
                "stream": stream,
                "expected_version": expected,
                "current_version": actual,
            })]),
            // The store's text names a database constraint; the client only needs to know which
            // rule it broke.
            StoreError::IdCollision(_) => Self::new(
                StatusCode::CONFLICT,
                "event_id_conflict",
                "an event_id in this request is already stored for a different event; nothing \
                 was stored. Resend with a new event_id, or with the original event's \
                 idempotency_key if this is a retry",
            ),
            StoreError::Closed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down and stored nothing; retry against another instance \
                 or after it restarts",
            ),
            other => Self::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = ErrorCode(self.code);
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"studio\""),
            );
        }
        response.extensions_mut().insert(code);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventlog::Violation;

    #[test]
    fn every_error_has_code_message_and_details() {
        let body = ApiError::not_found("no such run").body();
        assert_eq!(
            body,
            json!({"error": {"code": "not_found", "message": "no such run", "details": []}})
        );
    }

    #[test]
    fn validation_details_name_each_path() {
        let err = ValidationError {
            violations: vec![
                Violation::new("payload.run_id", "is required"),
                Violation::new("occurred_at", "\"x\" is not an RFC 3339 timestamp"),
            ],
        };
        let api = ApiError::validation(&err);
        assert_eq!(api.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(api.code(), "validation_failed");
        assert_eq!(api.details()[0]["path"], "payload.run_id");
        assert_eq!(api.details()[1]["path"], "occurred_at");
    }

    #[test]
    fn a_stale_expected_version_is_a_conflict_naming_the_stream() {
        let api = ApiError::from(StoreError::Conflict {
            index: 2,
            stream: "load_test_run-lt_1".into(),
            expected: 0,
            actual: 3,
        });
        assert_eq!(api.status(), StatusCode::CONFLICT);
        assert_eq!(api.code(), "version_conflict");
        assert!(api.message().contains("load_test_run-lt_1"), "{api}");
        assert_eq!(api.details()[0]["index"], 2);
        assert_eq!(api.details()[0]["current_version"], 3);
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let api = ApiError::from(StoreError::NotStored("disk I/O error at /var/db".into()));
        assert_eq!(api.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(api.code(), "internal");
        assert!(!api.body().to_string().contains("/var/db"));
    }

    #[test]
    fn a_closed_log_means_shutting_down() {
        let api = ApiError::from(StoreError::Closed);
        assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.code(), "shutting_down");
    }

    #[test]
    fn the_response_carries_its_code_and_a_bearer_challenge_on_401() {
        let response = ApiError::unauthorized("missing token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.extensions().get::<ErrorCode>(),
            Some(&ErrorCode("unauthorized"))
        );
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
