//! The `Sink` trait: a side effect driven by the log, with its own checkpoint.
//!
//! Unlike a projection, a sink talks to the outside world (the action-log table operators
//! acknowledge, CloudWatch). The sink runner reads events after the sink's checkpoint, hands
//! them over in position order, and moves the checkpoint only past what was delivered, so a
//! crash re-delivers (at least once) and the sink makes that exact by keying on `event_id`.
//! A projection rebuild never touches sink checkpoints, so it never re-fires a side effect.

use async_trait::async_trait;
use eventlog::RecordedEvent;
use serde::Serialize;
use std::time::Duration;

/// Why a delivery failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Throttling, a 5xx, a timeout, a connection refused: retried with backoff, and the
    /// checkpoint waits. After the runner's retry budget the batch's events are dead-lettered.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The event itself cannot be delivered (bad data for this destination): dead-lettered at
    /// once, the checkpoint moves on.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// One row of a sink's event → destination mapping (`GET /observability/sinks`, dashboards).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingEntry {
    /// An event type (`load_test.dispatch_completed`) or a class (`severity:warn`).
    pub event: String,
    /// `log`, `metric`, `alarm`, `action_log`, `dashboard`.
    pub destination: String,
    /// The log group, metric name, alarm name pattern or action-log kind.
    pub target: String,
}

#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Stable name: checkpoints, dead letters, status.
    fn name(&self) -> &'static str;

    /// A sink that reads what another sink wrote (the CloudWatch log sink reads action logs)
    /// names it here; the runner never lets this sink pass that sink's checkpoint.
    fn after(&self) -> Option<&'static str> {
        None
    }

    /// Whether `event` concerns this sink; others only move the checkpoint.
    fn wants(&self, event: &RecordedEvent) -> bool;

    /// Delivers `events` (all wanted, in position order). `Ok` moves the checkpoint past the
    /// last of them. Must be idempotent per `event_id`: the same event may come again after a
    /// crash or a replay of a dead letter.
    async fn deliver(&self, events: &[RecordedEvent]) -> Result<(), SinkError>;

    /// Work that is not driven by events (alarm reconciliation, reading alarm states back).
    /// The runner calls it every `tick_interval` while it owns the sink.
    async fn tick(&self) -> Result<(), SinkError> {
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// What this sink turns which events into.
    fn mapping(&self) -> Vec<MappingEntry>;
}
