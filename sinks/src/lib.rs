//! Side effects out of the log: severity rules, the action-log writer, template rendering,
//! CloudWatch sinks, retries, dead letters and sink status.

pub mod sink;

pub use sink::{MappingEntry, Sink, SinkError};
