//! [`GeminiQualityEvaluationProvider`]: the Gemini `generateContent` REST judge (DESIGN §9).
//!
//! One call per output: `POST {base_url}/v1beta/models/{model}:generateContent`, the key in
//! `x-goog-api-key`, a criteria prompt and the input and output as `fileData` parts, and a
//! `responseSchema` for `{score, criteria, rationale}`. The variant is never named (blind
//! judging): the request is built from an [`EvaluationRequest`], which does not carry it.
//!
//! How an answer is taken:
//! - `candidates[0].content.parts[*].text` (thought parts skipped) parsed as the schema's JSON,
//!   every score in 0..1 → judged;
//! - `promptFeedback.blockReason`, or a candidate `finishReason` of `SAFETY` (or one of its
//!   siblings `PROHIBITED_CONTENT`, `BLOCKLIST`, `SPII`, `IMAGE_SAFETY`) → unjudged with the
//!   block reason: a refusal is not a low score and not a reason to fall back;
//! - 429 (its `Retry-After`, or the body's `RetryInfo.retryDelay`, is honoured), 5xx, no answer
//!   in time, no connection, or text that is not the schema's JSON → retried with exponential
//!   backoff and jitter, up to `max_attempts` calls; then the heuristic evaluator scores with
//!   `fallback: true` and the reason;
//! - any other 4xx (bad key, unknown model, bad request) is not retried: the same call would
//!   fail the same way, so it falls back at once.
//!
//! The API key is read once at construction, held as a sensitive header value, left out of
//! `Debug`, and scrubbed from every reason this judge writes (a proxy echoing headers into an
//! error body cannot leak it into the log).

use super::evaluator::{
    EvaluationFuture, EvaluationOutcome, EvaluationRequest, Judgement, QualityEvaluator,
};
use super::gemini_protocol::{self, parse_verdict, GenerateContentResponse, SAFETY_FINISH_REASONS};
use super::heuristic::HeuristicEvaluator;
use super::retry::{self, RetryPolicy};
use crate::providers::http::error_chain;
use crate::quality::config::QualityConfigError;
use eventlog::catalogue::Evaluator;
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;
use std::fmt;
use std::time::Duration;
use tracing::{debug, instrument};

pub const GEMINI_PROVIDER: &str = "gemini";
pub const API_KEY_HEADER: &str = "x-goog-api-key";
/// How much of an error body's message is kept in a reason.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 200;
/// Where and how to call Gemini.
#[derive(Debug, Clone, PartialEq)]
pub struct GeminiSettings {
    pub base_url: String,
    pub model: String,
    /// Per call: connecting, sending and reading the whole answer.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

pub struct GeminiQualityEvaluationProvider {
    settings: GeminiSettings,
    url: reqwest::Url,
    /// Marked sensitive so reqwest redacts it from its own debug output; never logged here.
    api_key: HeaderValue,
    /// One client for every call: it holds the connection pool.
    client: reqwest::Client,
    fallback: HeuristicEvaluator,
}

impl fmt::Debug for GeminiQualityEvaluationProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiQualityEvaluationProvider")
            .field("url", &self.url.as_str())
            .field("model", &self.settings.model)
            .field("timeout", &self.settings.timeout)
            .field("retry", &self.settings.retry)
            .field("api_key", &"<redacted>")
            .field("fallback", &self.fallback)
            .finish()
    }
}

/// How one call ended.
#[derive(Debug)]
enum Attempt {
    Judged(Judgement),
    Blocked(String),
    /// Worth another call (after at least `retry_after`, when the server said so).
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The same call would fail the same way.
    Permanent(String),
}

impl GeminiQualityEvaluationProvider {
    /// `api_key` is the key's value, already read from the variable `[quality] api_key_env`
    /// names; it is kept only as a sensitive header value.
    pub fn new(
        settings: GeminiSettings,
        api_key: String,
        fallback: HeuristicEvaluator,
    ) -> Result<Self, QualityConfigError> {
        let invalid = |field, reason: String| QualityConfigError::Invalid { field, reason };
        let base = settings.base_url.trim_end_matches('/');
        let model = settings.model.trim().trim_start_matches("models/");
        if model.is_empty() || model.contains(['/', '?', '#', ' ']) {
            return Err(invalid(
                "model",
                format!("{:?} is not a model name", settings.model),
            ));
        }
        let url = reqwest::Url::parse(&format!("{base}/v1beta/models/{model}:generateContent"))
            .map_err(|e| invalid("base_url", format!("{:?}: {e}", settings.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                "base_url",
                format!("{:?} must be http(s)", settings.base_url),
            ));
        }
        let mut api_key = HeaderValue::from_str(api_key.trim()).map_err(|_| {
            QualityConfigError::InvalidApiKey {
                env: "the configured variable".into(),
            }
        })?;
        api_key.set_sensitive(true);
        if settings.retry.max_attempts == 0 {
            return Err(invalid("max_attempts", "must be ≥ 1".into()));
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(QualityConfigError::Client)?;
        Ok(Self {
            settings,
            url,
            api_key,
            client,
            fallback,
        })
    }

    /// The endpoint every call posts to.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    pub fn settings(&self) -> &GeminiSettings {
        &self.settings
    }

    /// The `generateContent` body for one output. Public so its blindness can be checked: it
    /// is built from the request alone, which names no variant.
    pub fn request_body(request: &EvaluationRequest) -> Value {
        gemini_protocol::request_body(request)
    }

    #[instrument(skip_all, fields(dispatch_id = %request.dispatch_id, model = %self.settings.model))]
    async fn judge(&self, request: &EvaluationRequest) -> EvaluationOutcome {
        let body = Self::request_body(request);
        let policy = &self.settings.retry;
        let mut attempt = 1;
        let reason = loop {
            match self.call(&body).await {
                Attempt::Judged(judgement) => return EvaluationOutcome::Judged(judgement),
                Attempt::Blocked(reason) => {
                    debug!(reason = %reason, "output left unjudged");
                    return EvaluationOutcome::Unjudged {
                        reason: self.scrub(format!("gemini: {reason}")),
                    };
                }
                Attempt::Permanent(reason) => {
                    break format!(
                        "gemini: {reason} (not retried: the same call would fail again)"
                    );
                }
                Attempt::Retryable {
                    reason,
                    retry_after,
                } => {
                    if attempt >= policy.max_attempts {
                        break format!(
                            "gemini: {reason} after {attempt} attempt{}",
                            if attempt == 1 { "" } else { "s" }
                        );
                    }
                    if let Some(wait) = retry_after.filter(|w| *w > policy.max_retry_after) {
                        break format!(
                            "gemini: {reason}; the server asked to wait {} s, longer than the {} s \
                             a batch waits, after {attempt} attempt{}",
                            wait.as_secs(),
                            policy.max_retry_after.as_secs(),
                            if attempt == 1 { "" } else { "s" }
                        );
                    }
                    let delay = policy.delay(attempt, retry_after, retry::jitter());
                    debug!(attempt, reason = %reason, delay_ms = delay.as_millis() as u64, "gemini call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        };
        let reason = self.scrub(reason);
        debug!(reason = %reason, "falling back to the heuristic evaluator");
        EvaluationOutcome::Judged(self.fallback.fallback(request, reason))
    }

    async fn call(&self, body: &Value) -> Attempt {
        let timeout = self.settings.timeout;
        let send = async {
            let response = self
                .client
                .post(self.url.clone())
                .header(API_KEY_HEADER, self.api_key.clone())
                .timeout(timeout)
                .json(body)
                .send()
                .await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(retry::parse_retry_after);
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, retry_after, bytes))
        };
        // reqwest's timeout covers the body too; the outer one makes sure nothing outlives it.
        let answer = match tokio::time::timeout(timeout, send).await {
            Err(_) => return timed_out(timeout),
            Ok(Err(e)) if e.is_timeout() => return timed_out(timeout),
            Ok(Err(e)) => {
                return Attempt::Retryable {
                    reason: format!("request failed: {}", error_chain(&e)),
                    retry_after: None,
                }
            }
            Ok(Ok(answer)) => answer,
        };
        let (status, retry_after, bytes) = answer;
        if status.is_success() {
            return self.read_answer(&bytes);
        }
        let line = status_line(status);
        let message = error_message(&bytes);
        if status == StatusCode::TOO_MANY_REQUESTS {
            Attempt::Retryable {
                reason: line,
                retry_after: retry_after.or_else(|| retry_delay(&bytes)),
            }
        } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            Attempt::Retryable {
                reason: line,
                retry_after,
            }
        } else {
            Attempt::Permanent(match message {
                Some(m) => format!("{line}: {m}"),
                None => line,
            })
        }
    }

    fn read_answer(&self, bytes: &[u8]) -> Attempt {
        let unparsable = |why: String| Attempt::Retryable {
            reason: format!("unparsable answer: {why}"),
            retry_after: None,
        };
        let response: GenerateContentResponse = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                return unparsable(format!("the body is not a generateContent response ({e})"))
            }
        };
        if let Some(reason) = response
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_deref())
        {
            let detail = response
                .prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason_message.as_deref())
                .map(|m| format!(": {}", excerpt(m)))
                .unwrap_or_default();
            return Attempt::Blocked(format!(
                "the request was blocked (promptFeedback.blockReason {reason}){detail}"
            ));
        }
        let Some(candidate) = response.candidates.first() else {
            return unparsable("no candidates".into());
        };
        if let Some(finish) = candidate
            .finish_reason
            .as_deref()
            .filter(|f| SAFETY_FINISH_REASONS.contains(f))
        {
            let flagged: Vec<String> = candidate
                .safety_ratings
                .iter()
                .filter(|r| {
                    r.blocked == Some(true)
                        || matches!(r.probability.as_deref(), Some("HIGH" | "MEDIUM"))
                })
                .map(|r| {
                    format!(
                        "{} {}",
                        r.category.as_deref().unwrap_or("?"),
                        r.probability.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            let detail = if flagged.is_empty() {
                String::new()
            } else {
                format!(" ({})", flagged.join(", "))
            };
            return Attempt::Blocked(format!(
                "the answer was blocked (finishReason {finish}){detail}"
            ));
        }
        let text: String = candidate
            .content
            .as_ref()
            .map(|c| {
                c.parts
                    .iter()
                    .filter(|p| p.thought != Some(true))
                    .filter_map(|p| p.text.as_deref())
                    .collect()
            })
            .unwrap_or_default();
        if text.trim().is_empty() {
            let finish = candidate.finish_reason.as_deref().unwrap_or("none");
            return unparsable(format!("the candidate has no text (finishReason {finish})"));
        }
        match parse_verdict(&text) {
            Ok(verdict) => Attempt::Judged(Judgement {
                evaluator: self.evaluator(),
                score: verdict.score,
                criteria: verdict.criteria,
                rationale: verdict.rationale,
                fallback: false,
                fallback_reason: None,
            }),
            Err(why) => unparsable(why),
        }
    }

    /// Removes the key from text that may have come back from the server.
    fn scrub(&self, text: String) -> String {
        match self.api_key.to_str() {
            Ok(key) if !key.is_empty() && text.contains(key) => text.replace(key, "<redacted>"),
            _ => text,
        }
    }
}

impl QualityEvaluator for GeminiQualityEvaluationProvider {
    fn evaluator(&self) -> Evaluator {
        Evaluator {
            provider: GEMINI_PROVIDER.to_string(),
            model: self.settings.model.clone(),
        }
    }

    fn evaluate<'a>(&'a self, request: &'a EvaluationRequest) -> EvaluationFuture<'a> {
        Box::pin(self.judge(request))
    }
}

fn timed_out(timeout: Duration) -> Attempt {
    Attempt::Retryable {
        reason: format!("no answer within {} ms", timeout.as_millis()),
        retry_after: None,
    }
}

fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(text) => format!("{} {text}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(MAX_ERROR_MESSAGE_CHARS).collect()
}

/// `error.message` of a Google API error body, else the start of the body.
fn error_message(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let message = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.to_owned());
    Some(excerpt(&message))
}

/// `error.details[].retryDelay` of a 429 body (a `google.rpc.RetryInfo`).
fn retry_delay(bytes: &[u8]) -> Option<Duration> {
    let body: Value = serde_json::from_slice(bytes).ok()?;
    body["error"]["details"]
        .as_array()?
        .iter()
        .find_map(|d| d["retryDelay"].as_str().and_then(retry::parse_retry_delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_name_may_carry_the_models_prefix_and_the_base_url_a_slash() {
        let provider = GeminiQualityEvaluationProvider::new(
            GeminiSettings {
                base_url: "http://127.0.0.1:9/".into(),
                model: "models/gemini-2.5-flash".into(),
                timeout: Duration::from_secs(1),
                retry: RetryPolicy::default(),
            },
            "k".into(),
            HeuristicEvaluator::new(Duration::from_secs(1)),
        )
        .unwrap();
        assert_eq!(
            provider.url(),
            "http://127.0.0.1:9/v1beta/models/gemini-2.5-flash:generateContent"
        );
    }
}
