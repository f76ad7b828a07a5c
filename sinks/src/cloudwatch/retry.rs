//! Which CloudWatch failures are worth trying again.
//!
//! The SDK already retries inside one call (standard mode, a few attempts with jittered
//! backoff); what still fails comes here. Throttling, 5xx, timeouts and connection failures
//! are `Retryable`: the sink runner backs off and keeps the checkpoint, then dead-letters after
//! its budget. A request CloudWatch refuses as invalid will be refused again, so it is
//! `Permanent` and dead-lettered at once.

use crate::SinkError;
use aws_sdk_cloudwatch::config::http::HttpResponse;
use aws_sdk_cloudwatch::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Error codes that mean "later", whatever the HTTP status (CloudWatch answers some
/// throttling with 400).
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "PriorRequestNotComplete",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalServiceError",
    "InternalServiceFault",
    "InternalServiceException",
    "RequestTimeout",
    "RequestTimeoutException",
    "RequestExpired",
    // CloudWatch Logs: another call on the same group or stream is under way.
    "OperationAbortedException",
    // CloudWatch Logs: the group or stream vanished (deleted, or an emulator restarted); the
    // next attempt creates it again.
    "ResourceNotFoundException",
];

/// How a call failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The request could not be built: our bug or our data.
    Construction,
    Timeout,
    /// No response (connection refused, reset, DNS).
    Dispatch,
    /// A response that could not be parsed (an emulator or proxy answering garbage).
    Response,
    /// CloudWatch answered with an error.
    Service,
}

/// Everything [`classify`] needs, taken from an SDK error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureFacts {
    pub kind: FailureKind,
    pub code: Option<String>,
    pub status: Option<u16>,
    pub message: String,
}

/// The retry decision, a pure function of the facts.
pub fn classify(operation: &str, facts: &FailureFacts) -> SinkError {
    let what = format!(
        "{operation}: {}{}",
        facts
            .code
            .as_deref()
            .map(|c| format!("{c}: "))
            .unwrap_or_default(),
        facts.message
    );
    let retryable = match facts.kind {
        FailureKind::Construction => false,
        FailureKind::Timeout | FailureKind::Dispatch | FailureKind::Response => true,
        FailureKind::Service => {
            facts
                .code
                .as_deref()
                .is_some_and(|c| TRANSIENT_CODES.contains(&c))
                || facts.status.is_some_and(|s| s == 429 || s >= 500)
        }
    };
    if retryable {
        SinkError::Retryable(what)
    } else {
        SinkError::Permanent(what)
    }
}

pub fn facts<E>(err: &SdkError<E, HttpResponse>) -> FailureFacts
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let kind = match err {
        SdkError::ConstructionFailure(_) => FailureKind::Construction,
        SdkError::TimeoutError(_) => FailureKind::Timeout,
        SdkError::DispatchFailure(_) => FailureKind::Dispatch,
        SdkError::ResponseError(_) => FailureKind::Response,
        _ => FailureKind::Service,
    };
    FailureFacts {
        kind,
        code: err.code().map(str::to_string),
        status: err.raw_response().map(|r| r.status().as_u16()),
        message: err
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| DisplayErrorContext(err).to_string()),
    }
}

/// An SDK error as the sink runner understands it.
pub fn sink_error<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> SinkError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    classify(operation, &facts(err))
}

/// A read-database failure: the database is ours and usually comes back, so it is retried.
pub fn db_error(what: &str, err: impl std::fmt::Display) -> SinkError {
    SinkError::Retryable(format!("{what}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: Option<&str>, status: u16) -> FailureFacts {
        FailureFacts {
            kind: FailureKind::Service,
            code: code.map(str::to_string),
            status: Some(status),
            message: "m".into(),
        }
    }

    fn is_retryable(e: SinkError) -> bool {
        matches!(e, SinkError::Retryable(_))
    }

    #[test]
    fn throttling_is_retryable_even_when_answered_with_400() {
        assert!(is_retryable(classify(
            "PutMetricData",
            &service(Some("Throttling"), 400)
        )));
        assert!(is_retryable(classify(
            "PutLogEvents",
            &service(Some("ThrottlingException"), 400)
        )));
    }

    #[test]
    fn server_errors_and_429_are_retryable_whatever_their_code() {
        assert!(is_retryable(classify("x", &service(None, 500))));
        assert!(is_retryable(classify("x", &service(Some("Weird"), 503))));
        assert!(is_retryable(classify("x", &service(None, 429))));
    }

    #[test]
    fn validation_errors_are_permanent_and_name_the_operation_and_code() {
        let e = classify(
            "PutMetricAlarm",
            &service(Some("InvalidParameterValue"), 400),
        );
        assert_eq!(
            e,
            SinkError::Permanent("PutMetricAlarm: InvalidParameterValue: m".into())
        );
        assert!(!is_retryable(classify(
            "PutLogEvents",
            &service(Some("InvalidParameterException"), 400)
        )));
    }

    #[test]
    fn timeouts_dispatch_and_unparsable_responses_are_retryable_construction_is_not() {
        for (kind, retry) in [
            (FailureKind::Timeout, true),
            (FailureKind::Dispatch, true),
            (FailureKind::Response, true),
            (FailureKind::Construction, false),
        ] {
            let f = FailureFacts {
                kind,
                code: None,
                status: None,
                message: "m".into(),
            };
            assert_eq!(is_retryable(classify("x", &f)), retry, "{kind:?}");
        }
    }

    #[test]
    fn a_missing_log_stream_is_retried_so_the_next_attempt_recreates_it() {
        assert!(is_retryable(classify(
            "PutLogEvents",
            &service(Some("ResourceNotFoundException"), 400)
        )));
    }
}
