//! Settings of the CloudWatch sinks and the two SDK clients built from them.
//!
//! Credentials and region come from the standard AWS chain (environment, profile, IMDS, …);
//! only the endpoint can be overridden (`STUDIO_CLOUDWATCH_ENDPOINT`, an emulator in tests).

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The environment variable naming an endpoint override for both CloudWatch APIs.
pub const ENDPOINT_ENV: &str = "STUDIO_CLOUDWATCH_ENDPOINT";
pub const DEFAULT_LOG_GROUP: &str = "/studio/action-logs";
pub const DEFAULT_LOG_STREAM: &str = "studio-ledger";
pub const DEFAULT_NAMESPACE: &str = "Studio/Pipeline";
pub const DEFAULT_DASHBOARD_NAME: &str = "studio-pipeline";
/// Every alarm this sink owns starts with it: reconciliation lists, updates and deletes only
/// alarms under this prefix, so alarms an operator made by hand are never touched.
pub const DEFAULT_ALARM_PREFIX: &str = "studio-";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudWatchSettings {
    /// Endpoint override for CloudWatch and CloudWatch Logs (`http://127.0.0.1:4566`).
    pub endpoint: Option<String>,
    /// Region override; `None` takes it from the standard chain (`AWS_REGION`, profile, …).
    pub region: Option<String>,
    pub log_group: String,
    pub log_stream: String,
    pub namespace: String,
    pub dashboard_name: String,
    pub alarm_prefix: String,
    /// Projection lag (events behind the log head) above which the lag alarm fires, sustained
    /// for [`CloudWatchSettings::projection_lag_periods`] one-minute periods.
    pub projection_lag_threshold: f64,
    pub projection_lag_periods: i32,
    /// Dead letters (projections and sinks) above which the dead-letter alarm fires at once.
    pub dead_letters_threshold: f64,
    /// Upper bound of alarm API calls per second during reconciliation (PutMetricAlarm,
    /// DeleteAlarms, DescribeAlarms): CloudWatch throttles these control-plane calls hard.
    pub alarm_calls_per_second: u32,
    /// How often the runner calls `tick()` on the metric and alarm sinks.
    pub tick_interval_s: u64,
    /// Whole-operation timeout, SDK retries included.
    pub operation_timeout_s: u64,
    /// Attempts the SDK makes inside one call (its own backoff) before the sink runner's
    /// retries take over.
    pub sdk_max_attempts: u32,
}

impl Default for CloudWatchSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            log_group: DEFAULT_LOG_GROUP.into(),
            log_stream: DEFAULT_LOG_STREAM.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            dashboard_name: DEFAULT_DASHBOARD_NAME.into(),
            alarm_prefix: DEFAULT_ALARM_PREFIX.into(),
            projection_lag_threshold: 1_000.0,
            projection_lag_periods: 5,
            dead_letters_threshold: 0.0,
            alarm_calls_per_second: 3,
            tick_interval_s: 30,
            operation_timeout_s: 20,
            sdk_max_attempts: 3,
        }
    }
}

impl CloudWatchSettings {
    /// Defaults, with the endpoint override from `STUDIO_CLOUDWATCH_ENDPOINT` when set.
    pub fn from_env() -> Self {
        Self {
            endpoint: std::env::var(ENDPOINT_ENV)
                .ok()
                .filter(|e| !e.trim().is_empty()),
            ..Self::default()
        }
    }

    pub fn tick_interval(&self) -> Duration {
        Duration::from_secs(self.tick_interval_s.max(1))
    }

    /// The standard AWS chain with this configuration's overrides; callers may add more
    /// (the testkit pins static credentials) before `load()`.
    pub fn sdk_config_loader(&self) -> ConfigLoader {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_timeout(Duration::from_secs(self.operation_timeout_s.max(1)))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(self.sdk_max_attempts.max(1)));
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        loader
    }
}

/// The CloudWatch (metrics, alarms, dashboards) and CloudWatch Logs clients. Cheap to clone:
/// both share one connection pool per client.
#[derive(Debug, Clone)]
pub struct CloudWatchClients {
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

impl CloudWatchClients {
    /// Clients from the standard AWS chain and `settings`' overrides.
    pub async fn connect(settings: &CloudWatchSettings) -> Self {
        Self::from_sdk_config(&settings.sdk_config_loader().load().await)
    }

    pub fn from_sdk_config(config: &SdkConfig) -> Self {
        Self {
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
        }
    }
}
