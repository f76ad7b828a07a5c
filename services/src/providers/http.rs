//! A real provider behind HTTP (DESIGN §9): `POST url` with the [`DispatchRequest`] as JSON; a
//! 2xx answer carries `{"output_uri", "cost_usd"}`. Anything else — another status, a malformed
//! body, no answer in time, no connection — is a failed or timed-out dispatch with the reason,
//! never a Rust error, because the executor records it rather than propagating it.

use super::provider::{DispatchFuture, DispatchRequest, DispatchResult, Provider};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;
use tracing::{debug, instrument};

/// How much of a non-2xx body is kept in the recorded reason.
pub const MAX_ERROR_BODY_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum HttpProviderError {
    #[error("url {url:?} is not an http(s) URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The value itself is never part of the message: it is a secret.
    #[error("the auth header value is not a valid HTTP header value")]
    InvalidAuthHeader,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The body of a 2xx answer. Unknown fields are tolerated so providers can add to the protocol
/// without breaking older ledgers.
#[derive(Deserialize)]
struct DispatchAnswer {
    output_uri: String,
    #[serde(default)]
    cost_usd: Option<f64>,
}

pub struct HttpProvider {
    name: String,
    url: reqwest::Url,
    timeout: Duration,
    /// Marked sensitive so it is redacted from reqwest's debug output; never logged here.
    auth_header: Option<HeaderValue>,
    /// One client for every dispatch: it holds the connection pool, so a load test reuses
    /// keep-alive connections instead of opening one per dispatch.
    client: reqwest::Client,
}

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProvider")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .field(
                "auth_header",
                &self.auth_header.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl HttpProvider {
    /// `auth_header` is the value of the `Authorization` header, already read from the
    /// environment variable the config names.
    pub fn new(
        name: impl Into<String>,
        url: &str,
        timeout: Duration,
        auth_header: Option<String>,
    ) -> Result<Self, HttpProviderError> {
        let invalid_url = |reason: String| HttpProviderError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid_url(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid_url(format!("scheme {:?}", parsed.scheme())));
        }
        let auth_header = auth_header
            .map(|value| {
                let mut header = HeaderValue::from_str(&value)
                    .map_err(|_| HttpProviderError::InvalidAuthHeader)?;
                header.set_sensitive(true);
                Ok(header)
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .build()
            .map_err(HttpProviderError::Client)?;
        Ok(Self {
            name: name.into(),
            url: parsed,
            timeout,
            auth_header,
            client,
        })
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    #[instrument(skip_all, fields(provider = %self.name, dispatch_id = %request.dispatch_id))]
    async fn post(&self, request: &DispatchRequest) -> DispatchResult {
        let started = Instant::now();
        // The request timeout covers connecting, sending and reading the whole body; the
        // deadline makes sure reading the body cannot outlive it either.
        let deadline = TokioInstant::now() + self.timeout;
        let mut builder = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .json(request);
        if let Some(header) = &self.auth_header {
            builder = builder.header(AUTHORIZATION, header.clone());
        }
        let answer = tokio::time::timeout_at(deadline, async {
            let response = builder.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        })
        .await;
        let service_time = started.elapsed();

        let result = match answer {
            Err(_elapsed) => self.timed_out(service_time),
            Ok(Err(e)) if e.is_timeout() => self.timed_out(service_time),
            Ok(Err(e)) if e.is_connect() => DispatchResult::Failed {
                error: format!("cannot reach provider: {}", error_chain(&e)),
                cost_usd: None,
                service_time,
            },
            Ok(Err(e)) => DispatchResult::Failed {
                error: format!("request failed: {}", error_chain(&e)),
                cost_usd: None,
                service_time,
            },
            Ok(Ok((status, body))) if !status.is_success() => {
                let text = String::from_utf8_lossy(&body);
                let excerpt: String = text.chars().take(MAX_ERROR_BODY_CHARS).collect();
                DispatchResult::Failed {
                    error: format!("HTTP {}: {excerpt}", status.as_u16()),
                    // A refused or failed call may or may not be billed: unknown.
                    cost_usd: None,
                    service_time,
                }
            }
            Ok(Ok((_, body))) => match parse_answer(&body) {
                Ok(answer) => DispatchResult::Succeeded {
                    output_uri: answer.output_uri,
                    cost_usd: answer.cost_usd,
                    service_time,
                },
                Err(reason) => DispatchResult::Failed {
                    error: format!("malformed response: {reason}"),
                    cost_usd: None,
                    service_time,
                },
            },
        };
        if let Some(error) = result.error() {
            debug!(outcome = ?result.outcome(), error, "dispatch did not succeed");
        }
        result
    }

    fn timed_out(&self, service_time: Duration) -> DispatchResult {
        DispatchResult::TimedOut {
            error: format!("no answer within {} ms", self.timeout.as_millis()),
            service_time,
        }
    }
}

impl Provider for HttpProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn dispatch<'a>(&'a self, request: &'a DispatchRequest) -> DispatchFuture<'a> {
        Box::pin(self.post(request))
    }
}

fn parse_answer(body: &[u8]) -> Result<DispatchAnswer, String> {
    let answer: DispatchAnswer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if answer.output_uri.is_empty() {
        return Err("output_uri is empty".into());
    }
    if let Some(cost) = answer.cost_usd {
        if cost < 0.0 {
            return Err(format!("cost_usd = {cost} is negative"));
        }
    }
    Ok(answer)
}

/// reqwest's top-level message ("error sending request") hides the cause; the chain of sources
/// says what actually happened (e.g. "Connection refused"). The URL is left out: the config
/// already names it.
pub(crate) fn error_chain(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    if let Some(url) = error.url() {
        message = message.replace(&format!(" for url ({url})"), "");
    }
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_without_output_uri_is_malformed() {
        assert!(parse_answer(br#"{"cost_usd": 0.1}"#).is_err());
        assert!(parse_answer(br#"{"output_uri": "", "cost_usd": 0.1}"#).is_err());
        assert!(parse_answer(b"not json").is_err());
    }

    #[test]
    fn a_null_or_missing_cost_is_unknown_and_a_negative_one_is_malformed() {
        assert_eq!(
            parse_answer(br#"{"output_uri": "s3://o", "cost_usd": null}"#)
                .unwrap()
                .cost_usd,
            None
        );
        assert_eq!(
            parse_answer(br#"{"output_uri": "s3://o"}"#)
                .unwrap()
                .cost_usd,
            None
        );
        assert!(parse_answer(br#"{"output_uri": "s3://o", "cost_usd": -1}"#).is_err());
    }

    #[test]
    fn the_debug_output_never_shows_the_auth_header() {
        let provider = HttpProvider::new(
            "p",
            "http://127.0.0.1:1/dispatch",
            Duration::from_secs(1),
            Some("Bearer very-secret".into()),
        )
        .unwrap();
        let debug = format!("{provider:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
    }

    #[test]
    fn a_url_that_is_not_http_is_refused() {
        assert!(HttpProvider::new("p", "ftp://x/y", Duration::from_secs(1), None).is_err());
        assert!(HttpProvider::new("p", "not a url", Duration::from_secs(1), None).is_err());
    }

    #[test]
    fn an_auth_header_with_a_newline_is_refused_without_echoing_it() {
        let error = HttpProvider::new(
            "p",
            "http://127.0.0.1:1/",
            Duration::from_secs(1),
            Some("secret\nvalue".into()),
        )
        .unwrap_err();
        assert!(!error.to_string().contains("secret"));
    }
}
