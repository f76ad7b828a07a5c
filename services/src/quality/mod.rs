//! Quality evaluation (DESIGN §4 `quality.*`, §5 `/quality-evaluations`, §9 `[quality]`): judge
//! every successful output of a finished benchmark run and record one verdict per output.
//!
//! - [`config`]: [`QualityConfig`], the `[quality]` section, and [`build_evaluator`], the one
//!   place it becomes an evaluator.
//! - [`evaluator`]: the [`QualityEvaluator`] trait, the blind [`EvaluationRequest`] it is given
//!   and the [`EvaluationOutcome`] it answers with (judged, possibly by the fallback, or unjudged).
//! - [`heuristic`]: [`HeuristicEvaluator`], deterministic checks of observable dispatch facts
//!   (not a judgement of visual quality), and the fallback of the Gemini judge.
//! - [`gemini`]: [`GeminiQualityEvaluationProvider`], the Gemini `generateContent` REST judge
//!   with retries, fallback and safety blocks; [`gemini_protocol`] is its wire format (request
//!   body, response shape, verdict checks).
//! - [`retry`]: the backoff schedule (exponential, jittered, `Retry-After` honoured).
//! - [`service`]: [`QualityEvaluationService`], which finds the outputs of a run in the log,
//!   judges them at a bounded concurrency and appends the verdicts.
//! - [`http`]: `POST /admin/studio/quality-evaluations`.

pub mod config;
pub mod evaluator;
pub mod gemini;
pub mod gemini_protocol;
pub mod heuristic;
pub mod http;
pub mod retry;
pub mod service;

pub use config::{build_evaluator, QualityConfig, QualityConfigError, QualityProviderKind};
pub use evaluator::{
    guess_mime_type, EvaluationFuture, EvaluationOutcome, EvaluationRequest, Judgement,
    QualityEvaluator,
};
pub use gemini::{GeminiQualityEvaluationProvider, GeminiSettings};
pub use gemini_protocol::CRITERIA;
pub use heuristic::{HeuristicEvaluator, HEURISTIC_MODEL, HEURISTIC_PROVIDER};
pub use http::router;
pub use retry::RetryPolicy;
pub use service::{
    BatchHandle, BatchSummary, QualityError, QualityEvaluationService, Started, PRODUCER,
};
