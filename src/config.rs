//! Configuration (DESIGN §9): the environment first, then the optional `STUDIO_CONFIG` TOML
//! file, then built-in defaults. Every bad value is an error that names where it came from.
//! Secrets come from the environment only and are never printed.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://studio.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_ARTIFACT_DIR: &str = "./artifacts";

/// The `studio.toml` file. Every section is optional; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub max_body_bytes: Option<usize>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    pub quality: Option<QualityConfig>,
    pub economics: Option<EconomicsConfig>,
    /// `[cloudwatch]`: its presence (or `STUDIO_CLOUDWATCH_ENDPOINT`) turns the CloudWatch sinks
    /// on; every key has a default.
    pub cloudwatch: Option<sinks::cloudwatch::CloudWatchSettings>,
}

/// A provider entry; a variant's `provider` part names one. One definition serves the file and
/// the crate that builds providers from it.
pub use services::providers::ProviderSpec as ProviderConfig;

/// `[quality]`: which evaluator judges outputs, and how (one definition, the services crate's).
pub use services::quality::QualityConfig;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EconomicsConfig {
    pub max_failure_rate: Option<f64>,
    pub min_successes: Option<u64>,
    pub approval_threshold_usd: Option<f64>,
}

/// A bearer token. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The resolved settings every command starts from.
#[derive(Debug)]
pub struct Config {
    pub database_url: String,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub admin_token: Option<Secret>,
    pub executor_secret: Option<Secret>,
    /// `STUDIO_LOAD_TEST_RUNNER_COMMAND`: started runs execute in this command's process; unset,
    /// they execute inline with a `load_test.runner_fallback`.
    pub load_test_runner_command: Option<String>,
    /// `STUDIO_ARTIFACT_DIR`: where benchmark artifacts are written.
    pub artifact_dir: std::path::PathBuf,
    /// `STUDIO_KAFKA_BROKERS` (with `STUDIO_KAFKA_TOPIC`, `STUDIO_KAFKA_GROUP`): the Kafka ingest
    /// consumer; `None`: off.
    pub kafka: Option<ingest::kafka::KafkaConsumerConfig>,
    /// `STUDIO_CLOUDWATCH_ENDPOINT` merged over `[cloudwatch]`; `None`: no CloudWatch sinks.
    pub cloudwatch: Option<sinks::cloudwatch::CloudWatchSettings>,
    pub file: FileConfig,
}

/// Where settings are read from; tests pass their own map instead of the process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.to_string())
    }
}

impl Config {
    pub fn load(env: &dyn Env) -> Result<Self> {
        let file = match env.var("STUDIO_CONFIG") {
            Some(path) => read_file(Path::new(&path))?,
            None => FileConfig::default(),
        };
        let database_url = env
            .var("STUDIO_DATABASE_URL")
            .or_else(|| file.database_url.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|p| database_url.starts_with(p))
        {
            bail!("STUDIO_DATABASE_URL (or database_url) is {database_url:?}: use sqlite://PATH or postgres://…");
        }
        let listen = match env.var("STUDIO_LISTEN") {
            Some(v) => v.parse().with_context(|| {
                format!("STUDIO_LISTEN={v:?} is not an address like 127.0.0.1:8080")
            })?,
            None => {
                let v = file
                    .listen
                    .clone()
                    .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
                v.parse().with_context(|| {
                    format!(
                        "listen = {v:?} in the config file is not an address like 127.0.0.1:8080"
                    )
                })?
            }
        };
        let max_body_bytes = match env.var("STUDIO_MAX_BODY_BYTES") {
            Some(v) => v.parse().ok().filter(|n| *n > 0).with_context(|| {
                format!("STUDIO_MAX_BODY_BYTES={v:?} is not a positive number of bytes")
            })?,
            None => match file.max_body_bytes {
                Some(0) => bail!("max_body_bytes in the config file must be > 0"),
                Some(n) => n,
                None => DEFAULT_MAX_BODY_BYTES,
            },
        };
        validate_file(&file)?;
        Ok(Self {
            database_url,
            listen,
            max_body_bytes,
            admin_token: env.var("STUDIO_ADMIN_TOKEN").map(Secret),
            executor_secret: env.var("STUDIO_EXECUTOR_SECRET").map(Secret),
            load_test_runner_command: env.var("STUDIO_LOAD_TEST_RUNNER_COMMAND"),
            kafka: match env.var("STUDIO_KAFKA_BROKERS") {
                None => None,
                Some(brokers) => {
                    let kafka = ingest::kafka::KafkaConsumerConfig::new(brokers)
                        .with_topic(
                            env.var("STUDIO_KAFKA_TOPIC")
                                .unwrap_or_else(|| ingest::kafka::DEFAULT_TOPIC.to_string()),
                        )
                        .with_group(
                            env.var("STUDIO_KAFKA_GROUP")
                                .unwrap_or_else(|| ingest::kafka::DEFAULT_GROUP.to_string()),
                        );
                    kafka.validate().map_err(|e| {
                        anyhow::anyhow!("STUDIO_KAFKA_* ({}): {}", e.field, e.reason)
                    })?;
                    Some(kafka)
                }
            },
            cloudwatch: match (
                env.var("STUDIO_CLOUDWATCH_ENDPOINT"),
                file.cloudwatch.clone(),
            ) {
                (None, None) => None,
                (endpoint, settings) => {
                    let mut settings = settings.unwrap_or_default();
                    if endpoint.is_some() {
                        settings.endpoint = endpoint;
                    }
                    Some(settings)
                }
            },
            artifact_dir: env
                .var("STUDIO_ARTIFACT_DIR")
                .unwrap_or_else(|| DEFAULT_ARTIFACT_DIR.to_string())
                .into(),
            file,
        })
    }

    /// Both tokens, or an error that says which variable to set.
    pub fn tokens(&self) -> Result<(Secret, Secret)> {
        let admin = self.admin_token.clone().context(
            "STUDIO_ADMIN_TOKEN is not set: set it to the bearer token operators use for /admin/studio/* and GET /v1/events",
        )?;
        let executor = self.executor_secret.clone().context(
            "STUDIO_EXECUTOR_SECRET is not set: set it to the bearer token publishing services use for POST /v1/events",
        )?;
        if admin == executor {
            bail!("STUDIO_ADMIN_TOKEN and STUDIO_EXECUTOR_SECRET must differ, or the publish/admin split means nothing");
        }
        Ok((admin, executor))
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("STUDIO_CONFIG={}: cannot read the file", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("STUDIO_CONFIG={}: invalid configuration", path.display()))
}

fn validate_file(file: &FileConfig) -> Result<()> {
    for (name, provider) in &file.providers {
        eventlog::ids::check_segment(name)
            .map_err(|e| anyhow::anyhow!("[providers.{name}]: the name {e}"))?;
        match provider {
            ProviderConfig::Simulated {
                latency_ms,
                jitter_ms,
                failure_rate,
                cost_usd,
                ..
            } => {
                for (field, value) in [
                    ("latency_ms", latency_ms),
                    ("jitter_ms", jitter_ms),
                    ("cost_usd", cost_usd),
                ] {
                    if !(value.is_finite() && *value >= 0.0) {
                        bail!("[providers.{name}] {field} = {value} must be ≥ 0");
                    }
                }
                if !(0.0..=1.0).contains(failure_rate) {
                    bail!(
                        "[providers.{name}] failure_rate = {failure_rate} must be between 0 and 1"
                    );
                }
            }
            ProviderConfig::Http {
                url, timeout_ms, ..
            } => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("[providers.{name}] url = {url:?} must start with http:// or https://");
                }
                if *timeout_ms == 0 {
                    bail!("[providers.{name}] timeout_ms must be > 0");
                }
            }
        }
    }
    if let Some(q) = &file.quality {
        q.validate().map_err(|e| anyhow::anyhow!("[quality] {e}"))?;
    }
    if let Some(e) = &file.economics {
        if let Some(r) = e.max_failure_rate.filter(|r| !(0.0..=1.0).contains(r)) {
            bail!("[economics] max_failure_rate = {r} must be between 0 and 1");
        }
        if let Some(t) = e
            .approval_threshold_usd
            .filter(|t| !(t.is_finite() && *t >= 0.0))
        {
            bail!("[economics] approval_threshold_usd = {t} must be ≥ 0");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> BTreeMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = Config::load(&env(&[])).unwrap();
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("studio.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nmax_body_bytes = 1024\n",
        )
        .unwrap();
        let path = Box::leak(path.to_string_lossy().into_owned().into_boxed_str());
        let config = Config::load(&env(&[
            ("STUDIO_CONFIG", path),
            ("STUDIO_LISTEN", "127.0.0.1:7000"),
        ]))
        .unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.max_body_bytes, 1024);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = Config::load(&env(&[("STUDIO_MAX_BODY_BYTES", "lots")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("STUDIO_MAX_BODY_BYTES"),
            "{err:#}"
        );
        let err = Config::load(&env(&[("STUDIO_LISTEN", "everywhere")])).unwrap_err();
        assert!(format!("{err:#}").contains("STUDIO_LISTEN"));
        let err = Config::load(&env(&[("STUDIO_DATABASE_URL", "mysql://x")])).unwrap_err();
        assert!(format!("{err:#}").contains("STUDIO_DATABASE_URL"));
    }

    #[test]
    fn the_design_example_file_parses_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(
            &good,
            r#"
[providers.sim-cheap]
kind = "simulated"
latency_ms = 900
jitter_ms = 200
failure_rate = 0.03
cost_usd = 0.004
seed = 7

[providers.fal-prod]
kind = "http"
url = "https://provider.example/v1/dispatch"
timeout_ms = 30000
auth_header_env = "FAL_KEY"

[quality]
provider = "gemini"
model = "gemini-2.5-flash"
base_url = "https://generativelanguage.googleapis.com"
api_key_env = "GEMINI_API_KEY"
min_score = 0.7

[economics]
max_failure_rate = 0.05
min_successes = 20
"#,
        )
        .unwrap();
        let path = Box::leak(good.to_string_lossy().into_owned().into_boxed_str());
        let config = Config::load(&env(&[("STUDIO_CONFIG", path)])).unwrap();
        assert_eq!(config.file.providers.len(), 2);

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[economics]\nmax_failure_rat = 0.1\n").unwrap();
        let path = Box::leak(bad.to_string_lossy().into_owned().into_boxed_str());
        let err = Config::load(&env(&[("STUDIO_CONFIG", path)])).unwrap_err();
        assert!(format!("{err:#}").contains("max_failure_rat"), "{err:#}");
    }

    #[test]
    fn serve_needs_both_tokens_and_says_which_is_missing() {
        let config = Config::load(&env(&[("STUDIO_ADMIN_TOKEN", "a")])).unwrap();
        let err = config.tokens().unwrap_err().to_string();
        assert!(err.contains("STUDIO_EXECUTOR_SECRET"), "{err}");
        let config = Config::load(&env(&[("STUDIO_EXECUTOR_SECRET", "e")])).unwrap();
        assert!(config
            .tokens()
            .unwrap_err()
            .to_string()
            .contains("STUDIO_ADMIN_TOKEN"));
    }

    #[test]
    fn secrets_never_print() {
        let config = Config::load(&env(&[("STUDIO_ADMIN_TOKEN", "hunter2")])).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
