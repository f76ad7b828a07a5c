//! Side effects out of the log: severity rules, the action-log writer, template rendering,
//! CloudWatch sinks, retries, dead letters and sink status.
//!
//! Layout:
//! - [`sink`]: the `Sink` trait (own checkpoint, `after()` dependency, `tick` for timed work).
//! - [`runner`]: [`SinkRunner`]: catch-up and live tail per sink, retries with backoff, dead
//!   letters, ownership on PostgreSQL; dead-letter replay.
//! - [`checkpoint`]: sink checkpoints and dead letters; [`ownership`]: advisory locks;
//!   [`status`]: what each sink did in this process.
//! - [`action_logs`]: severity rules, templates, grouping, the [`ActionLogSink`], queries and
//!   acknowledgement.
//! - [`cloudwatch`]: the CloudWatch log, metric and alarm sinks, the `studio-pipeline`
//!   dashboard, batching within AWS's limits, retry classification, and a LocalStack testkit.
//! - [`http`]: `/admin/studio/action-logs` and `/admin/studio/observability/sinks`.

pub mod action_logs;
pub mod checkpoint;
pub mod cloudwatch;
pub mod http;
pub mod ownership;
pub mod runner;
pub mod sink;
pub mod status;

pub use action_logs::{check_templates, ActionLogConfig, ActionLogSink, Templates};
pub use runner::SinkRunner;
pub use sink::{MappingEntry, Sink, SinkError};
pub use status::SinkStatusBoard;
