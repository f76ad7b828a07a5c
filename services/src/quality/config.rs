//! The `[quality]` section of `studio.toml` (DESIGN §9) and the one place it becomes an
//! evaluator.
//!
//! ```toml
//! [quality]
//! provider = "gemini"              # or "heuristic"
//! model = "gemini-2.5-flash"
//! base_url = "https://generativelanguage.googleapis.com"
//! api_key_env = "GEMINI_API_KEY"   # the key itself is read from this variable, never from the file
//! min_score = 0.7                  # Money HUD quality floor
//! concurrency = 4                  # outputs judged at once
//! timeout_ms = 30000               # per Gemini call
//! max_attempts = 3                 # Gemini calls per output before falling back
//! backoff_base_ms = 500            # first retry waits about this long, doubling each time
//! backoff_max_ms = 30000           # no computed backoff waits longer
//! heuristic_target_latency_ms = 30000
//! ```

use super::evaluator::QualityEvaluator;
use super::gemini::{GeminiQualityEvaluationProvider, GeminiSettings};
use super::heuristic::HeuristicEvaluator;
use super::retry::RetryPolicy;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_MODEL: &str = "gemini-2.5-flash";
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
pub const DEFAULT_API_KEY_ENV: &str = "GEMINI_API_KEY";
pub const DEFAULT_CONCURRENCY: usize = 4;
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 500;
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 30_000;
pub const DEFAULT_HEURISTIC_TARGET_LATENCY_MS: u64 = 30_000;
/// More outputs at once than this would only queue at Gemini's rate limit.
pub const MAX_CONCURRENCY: usize = 64;

/// Which evaluator judges the outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QualityProviderKind {
    Gemini,
    /// The default without a `[quality]` section: no key, no network, honest about measuring
    /// dispatch facts only.
    #[default]
    Heuristic,
}

/// `[quality]`. Every field but `provider` has a default; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    pub provider: QualityProviderKind,
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The *name* of the environment variable holding the API key; the key never appears in
    /// the file, in this struct or in any log.
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// The Money HUD quality floor; `None` keeps the HUD's default.
    #[serde(default)]
    pub min_score: Option<f64>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// The dispatch latency the heuristic evaluator counts as on target.
    #[serde(default = "default_heuristic_target_latency_ms")]
    pub heuristic_target_latency_ms: u64,
}

fn default_model() -> String {
    DEFAULT_MODEL.into()
}
fn default_base_url() -> String {
    DEFAULT_BASE_URL.into()
}
fn default_api_key_env() -> String {
    DEFAULT_API_KEY_ENV.into()
}
fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_backoff_base_ms() -> u64 {
    DEFAULT_BACKOFF_BASE_MS
}
fn default_backoff_max_ms() -> u64 {
    DEFAULT_BACKOFF_MAX_MS
}
fn default_heuristic_target_latency_ms() -> u64 {
    DEFAULT_HEURISTIC_TARGET_LATENCY_MS
}

impl Default for QualityConfig {
    /// No `[quality]` section: the heuristic evaluator with every default.
    fn default() -> Self {
        Self {
            provider: QualityProviderKind::default(),
            model: default_model(),
            base_url: default_base_url(),
            api_key_env: default_api_key_env(),
            min_score: None,
            concurrency: DEFAULT_CONCURRENCY,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            heuristic_target_latency_ms: DEFAULT_HEURISTIC_TARGET_LATENCY_MS,
        }
    }
}

/// Why `[quality]` cannot be used. No variant ever carries the API key's value.
#[derive(Debug, thiserror::Error)]
pub enum QualityConfigError {
    #[error("[quality] {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Names the variable, never a value.
    #[error("[quality] provider = \"gemini\" needs an API key in the environment variable {env}, which is not set or empty")]
    MissingApiKey { env: String },
    #[error("[quality] the API key in {env} is not a valid HTTP header value")]
    InvalidApiKey { env: String },
    #[error("[quality] cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl QualityConfig {
    /// Start-up checks: every field within range, the Gemini fields usable.
    pub fn validate(&self) -> Result<(), QualityConfigError> {
        let invalid = |field, reason: &str| {
            Err(QualityConfigError::Invalid {
                field,
                reason: reason.to_string(),
            })
        };
        if let Some(s) = self.min_score {
            if !(0.0..=1.0).contains(&s) {
                return invalid("min_score", &format!("{s} must be between 0 and 1"));
            }
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return invalid(
                "concurrency",
                &format!(
                    "{} must be between 1 and {MAX_CONCURRENCY}",
                    self.concurrency
                ),
            );
        }
        if self.timeout_ms == 0 {
            return invalid("timeout_ms", "must be > 0");
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be ≥ 1");
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return invalid("backoff_max_ms", "must be ≥ backoff_base_ms");
        }
        if self.heuristic_target_latency_ms == 0 {
            return invalid("heuristic_target_latency_ms", "must be > 0");
        }
        if self.provider == QualityProviderKind::Gemini {
            if self.model.trim().is_empty() {
                return invalid(
                    "model",
                    "must name a Gemini model, e.g. \"gemini-2.5-flash\"",
                );
            }
            if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
                return invalid(
                    "base_url",
                    &format!("{:?} must start with http:// or https://", self.base_url),
                );
            }
            if self.api_key_env.trim().is_empty() {
                return invalid("api_key_env", "must name an environment variable");
            }
        }
        Ok(())
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            base: Duration::from_millis(self.backoff_base_ms),
            max: Duration::from_millis(self.backoff_max_ms),
            ..RetryPolicy::default()
        }
    }

    pub fn heuristic(&self) -> HeuristicEvaluator {
        HeuristicEvaluator::new(Duration::from_millis(self.heuristic_target_latency_ms))
    }
}

/// The one place `[quality]` becomes an evaluator. `env` looks a variable up (the process
/// environment in `studio`, a map in tests); the Gemini key is read here, once, and kept only
/// inside the provider.
pub fn build_evaluator(
    config: &QualityConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn QualityEvaluator>, QualityConfigError> {
    config.validate()?;
    match config.provider {
        QualityProviderKind::Heuristic => Ok(Arc::new(config.heuristic())),
        QualityProviderKind::Gemini => {
            let key = env(&config.api_key_env)
                .filter(|k| !k.trim().is_empty())
                .ok_or_else(|| QualityConfigError::MissingApiKey {
                    env: config.api_key_env.clone(),
                })?;
            let provider = GeminiQualityEvaluationProvider::new(
                GeminiSettings {
                    base_url: config.base_url.clone(),
                    model: config.model.clone(),
                    timeout: Duration::from_millis(config.timeout_ms),
                    retry: config.retry_policy(),
                },
                key,
                config.heuristic(),
            )
            .map_err(|e| match e {
                QualityConfigError::InvalidApiKey { .. } => QualityConfigError::InvalidApiKey {
                    env: config.api_key_env.clone(),
                },
                other => other,
            })?;
            Ok(Arc::new(provider))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<QualityConfig, String> {
        // The workspace has no TOML parser in this crate; the serde shape is the same in JSON.
        serde_json::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_minimal_section_takes_every_default() {
        let config = parse(r#"{"provider": "gemini"}"#).unwrap();
        assert_eq!(config.model, DEFAULT_MODEL);
        assert_eq!(config.base_url, DEFAULT_BASE_URL);
        assert_eq!(config.api_key_env, DEFAULT_API_KEY_ENV);
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.max_attempts, 3);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn unknown_keys_and_unknown_providers_are_refused() {
        let err = parse(r#"{"provider": "gemini", "modle": "x"}"#).unwrap_err();
        assert!(err.contains("modle"), "{err}");
        let err = parse(r#"{"provider": "openai"}"#).unwrap_err();
        assert!(err.contains("openai"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        for (json, field) in [
            (
                r#"{"provider": "heuristic", "min_score": 1.5}"#,
                "min_score",
            ),
            (
                r#"{"provider": "heuristic", "concurrency": 0}"#,
                "concurrency",
            ),
            (
                r#"{"provider": "heuristic", "max_attempts": 0}"#,
                "max_attempts",
            ),
            (
                r#"{"provider": "gemini", "base_url": "ftp://x"}"#,
                "base_url",
            ),
        ] {
            let err = parse(json).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(field), "{json}: {err}");
        }
    }

    #[test]
    fn gemini_without_its_key_names_the_variable_and_heuristic_needs_none() {
        let gemini = parse(r#"{"provider": "gemini", "api_key_env": "MY_KEY"}"#).unwrap();
        let err = build_evaluator(&gemini, &|_| None).unwrap_err();
        assert!(err.to_string().contains("MY_KEY"), "{err}");
        let built = build_evaluator(&gemini, &|name| {
            (name == "MY_KEY").then(|| "k-123".to_string())
        })
        .unwrap();
        assert_eq!(built.evaluator().provider, "gemini");
        assert!(!format!("{built:?}").contains("k-123"));

        let heuristic = QualityConfig::default();
        let built = build_evaluator(&heuristic, &|_| None).unwrap();
        assert_eq!(built.evaluator().provider, "heuristic");
    }

    #[test]
    fn a_key_that_is_not_a_header_value_is_refused_without_echoing_it() {
        let gemini = parse(r#"{"provider": "gemini"}"#).unwrap();
        let err = build_evaluator(&gemini, &|_| Some("secret\nvalue".into())).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains(DEFAULT_API_KEY_ENV), "{text}");
    }
}
