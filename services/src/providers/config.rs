//! Provider entries and the single place they become providers.

use super::http::HttpProvider;
use super::provider::Provider;
use super::simulated::{SimulatedProvider, SimulatedSettings};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A `[providers.<name>]` entry, mirroring the binary's `ProviderConfig` (DESIGN §9) so this
/// crate does not depend on the binary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderSpec {
    /// In-process simulation, deterministic for a given seed.
    Simulated {
        latency_ms: f64,
        jitter_ms: f64,
        failure_rate: f64,
        cost_usd: f64,
        seed: u64,
    },
    /// A real provider behind HTTP.
    Http {
        url: String,
        timeout_ms: u64,
        /// The environment variable holding the `Authorization` header value.
        auth_header_env: Option<String>,
    },
}

impl ProviderSpec {
    /// Builds the provider, reading an `http` entry's auth header from its variable now, so a
    /// missing secret stops start-up instead of failing every dispatch.
    pub fn build(&self, name: &str) -> Result<Arc<dyn Provider>, String> {
        match self {
            Self::Simulated {
                latency_ms,
                jitter_ms,
                failure_rate,
                cost_usd,
                seed,
            } => {
                let settings = SimulatedSettings {
                    latency_ms: *latency_ms,
                    jitter_ms: *jitter_ms,
                    failure_rate: *failure_rate,
                    cost_usd: *cost_usd,
                    seed: *seed,
                };
                settings
                    .validate()
                    .map_err(|e| format!("[providers.{name}] {e}"))?;
                Ok(Arc::new(SimulatedProvider::new(name, settings)))
            }
            Self::Http {
                url,
                timeout_ms,
                auth_header_env,
            } => {
                if *timeout_ms == 0 {
                    return Err(format!("[providers.{name}] timeout_ms must be > 0"));
                }
                let auth_header = match auth_header_env {
                    None => None,
                    Some(var) => Some(std::env::var(var).map_err(|_| {
                        format!("[providers.{name}] auth_header_env: variable {var} is not set")
                    })?),
                };
                let provider =
                    HttpProvider::new(name, url, Duration::from_millis(*timeout_ms), auth_header)
                        .map_err(|e| format!("[providers.{name}] {e}"))?;
                Ok(Arc::new(provider))
            }
        }
    }
}

/// Every configured provider by name; the first bad entry stops the build with its name.
pub fn build_providers(
    configs: &BTreeMap<String, ProviderSpec>,
) -> Result<BTreeMap<String, Arc<dyn Provider>>, String> {
    configs
        .iter()
        .map(|(name, spec)| Ok((name.clone(), spec.build(name)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_tagged_by_kind_build_providers_named_after_them() {
        let configs: BTreeMap<String, ProviderSpec> = serde_json::from_value(serde_json::json!({
            "sim-cheap": {"kind": "simulated", "latency_ms": 900.0, "jitter_ms": 200.0,
                          "failure_rate": 0.03, "cost_usd": 0.004, "seed": 7},
            "fal-prod": {"kind": "http", "url": "http://127.0.0.1:9/v1/dispatch",
                         "timeout_ms": 30000, "auth_header_env": null},
        }))
        .unwrap();
        let providers = build_providers(&configs).unwrap();
        assert_eq!(providers.len(), 2);
        assert_eq!(providers["sim-cheap"].name(), "sim-cheap");
        assert_eq!(providers["fal-prod"].name(), "fal-prod");
    }

    #[test]
    fn an_unknown_field_or_kind_is_refused() {
        let unknown_field = serde_json::json!({"kind": "http", "url": "http://x/", "timeout_ms": 1,
                                               "auth_header_env": null, "retries": 3});
        assert!(serde_json::from_value::<ProviderSpec>(unknown_field).is_err());
        let unknown_kind = serde_json::json!({"kind": "grpc", "url": "http://x/"});
        assert!(serde_json::from_value::<ProviderSpec>(unknown_kind).is_err());
    }

    #[test]
    fn a_missing_auth_variable_names_the_entry_and_the_variable() {
        let spec = ProviderSpec::Http {
            url: "http://127.0.0.1:9/".into(),
            timeout_ms: 1000,
            auth_header_env: Some("STUDIO_TEST_SURELY_UNSET_PROVIDER_KEY".into()),
        };
        let error = spec.build("fal-prod").err().unwrap();
        assert!(error.contains("[providers.fal-prod]"), "{error}");
        assert!(
            error.contains("STUDIO_TEST_SURELY_UNSET_PROVIDER_KEY"),
            "{error}"
        );
    }

    #[test]
    fn an_invalid_simulated_entry_names_the_entry() {
        let spec = ProviderSpec::Simulated {
            latency_ms: 1.0,
            jitter_ms: 0.0,
            failure_rate: 2.0,
            cost_usd: 0.0,
            seed: 0,
        };
        let error = spec.build("sim").err().unwrap();
        assert!(error.contains("[providers.sim] failure_rate"), "{error}");
    }
}
