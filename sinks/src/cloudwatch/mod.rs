//! CloudWatch sinks (DESIGN §7): action logs as log events, pipeline metrics, alarms
//! reconciled from the read models (with their state changes read back into the log), and the
//! `studio-pipeline` dashboard, all generated from one mapping.
//!
//! - [`config`]: settings and the two SDK clients (standard AWS chain, endpoint override).
//! - [`retry`]: which SDK failures are retryable and which are permanent.
//! - [`log_batch`], [`log_sink`]: PutLogEvents limits; the `cloudwatch_logs` sink.
//! - [`mapping`]: the metrics, their dimensions and sources; alarms and dashboards read it.
//! - [`metric_batch`], [`metric_sink`]: PutMetricData limits; the `cloudwatch_metrics` sink.
//! - [`alarms`]: alarm names and specs, the reconciliation plan (pure).
//! - [`alarm_sink`]: the `cloudwatch_alarms` sink (reconciliation, state changes back into the log).
//! - [`dashboard`]: the `studio-pipeline` dashboard: `dashboard_json`, `push_dashboard`.
//! - [`testkit`]: a LocalStack emulator for tests.

pub mod alarm_sink;
pub mod alarms;
pub mod config;
pub mod dashboard;
pub mod log_batch;
pub mod log_sink;
pub mod mapping;
pub mod metric_batch;
pub mod metric_sink;
pub mod retry;
pub mod testkit;

pub use alarm_sink::CloudWatchAlarmSink;
pub use config::{CloudWatchClients, CloudWatchSettings};
pub use dashboard::{dashboard_json, push_dashboard};
pub use log_sink::{ensure_log_destination, CloudWatchLogSink};
pub use metric_sink::CloudWatchMetricSink;
