//! The provider trait and the request and result every provider speaks.

use eventlog::catalogue::Outcome;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// One dispatch, exactly the JSON body of the `http` protocol:
/// `{"dispatch_id", "variant_id", "input": {"input_id", "uri"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchRequest {
    pub dispatch_id: String,
    pub variant_id: String,
    pub input: DispatchInput,
}

/// The input a dispatch renders from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchInput {
    pub input_id: String,
    pub uri: String,
}

/// How one dispatch ended. `service_time` is the time the provider took to answer (for the
/// simulated provider: the simulated latency, independent of any time scale); the executor
/// measures end-to-end latency from the scheduled instant itself.
#[derive(Debug, Clone, PartialEq)]
pub enum DispatchResult {
    Succeeded {
        output_uri: String,
        /// `None` when the provider did not say what the dispatch cost.
        cost_usd: Option<f64>,
        service_time: Duration,
    },
    Failed {
        error: String,
        /// A failed attempt may still cost money; `None` when unknown.
        cost_usd: Option<f64>,
        service_time: Duration,
    },
    TimedOut {
        error: String,
        service_time: Duration,
    },
}

impl DispatchResult {
    /// The outcome as recorded in `load_test.dispatch_completed`.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Succeeded { .. } => Outcome::Succeeded,
            Self::Failed { .. } => Outcome::Failed,
            Self::TimedOut { .. } => Outcome::TimedOut,
        }
    }

    /// What the attempt cost, when known; a timed-out attempt's cost is never known.
    pub fn cost_usd(&self) -> Option<f64> {
        match self {
            Self::Succeeded { cost_usd, .. } | Self::Failed { cost_usd, .. } => *cost_usd,
            Self::TimedOut { .. } => None,
        }
    }

    /// The reason a dispatch did not succeed.
    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Succeeded { .. } => None,
            Self::Failed { error, .. } | Self::TimedOut { error, .. } => Some(error),
        }
    }

    /// The output of a successful dispatch.
    pub fn output_uri(&self) -> Option<&str> {
        match self {
            Self::Succeeded { output_uri, .. } => Some(output_uri),
            Self::Failed { .. } | Self::TimedOut { .. } => None,
        }
    }

    pub fn service_time(&self) -> Duration {
        match self {
            Self::Succeeded { service_time, .. }
            | Self::Failed { service_time, .. }
            | Self::TimedOut { service_time, .. } => *service_time,
        }
    }
}

/// The future a [`Provider`] answers with; boxed so providers can live behind
/// `Arc<dyn Provider>` and be dispatched from spawned tasks.
pub type DispatchFuture<'a> = Pin<Box<dyn Future<Output = DispatchResult> + Send + 'a>>;

/// Something that runs dispatches. Never fails as a Rust error: every way a dispatch can go
/// wrong is a [`DispatchResult`] with its reason, because it is recorded, not propagated.
pub trait Provider: Send + Sync {
    /// The `[providers.<name>]` entry this provider was built from.
    fn name(&self) -> &str;

    fn dispatch<'a>(&'a self, request: &'a DispatchRequest) -> DispatchFuture<'a>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dispatch_request_serializes_to_exactly_the_protocol_fields() {
        let request = DispatchRequest {
            dispatch_id: "d1".into(),
            variant_id: "v1".into(),
            input: DispatchInput {
                input_id: "i1".into(),
                uri: "s3://in/1.png".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"dispatch_id": "d1", "variant_id": "v1",
                   "input": {"input_id": "i1", "uri": "s3://in/1.png"}})
        );
    }

    #[test]
    fn a_timed_out_dispatch_has_no_known_cost_and_says_why() {
        let result = DispatchResult::TimedOut {
            error: "no answer within 5 ms".into(),
            service_time: Duration::from_millis(5),
        };
        assert_eq!(result.outcome(), Outcome::TimedOut);
        assert_eq!(result.cost_usd(), None);
        assert_eq!(result.error(), Some("no answer within 5 ms"));
        assert_eq!(result.output_uri(), None);
    }
}
