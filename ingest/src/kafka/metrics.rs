//! Prometheus metrics of the Kafka consumer, under `studio_ingest_kafka_`. Register them in the
//! same registry as the HTTP ingest metrics (before it is handed to
//! [`crate::AppState::with_registry`]) so `/metrics` serves both.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

/// Handles to the consumer's metrics; clones share the same series.
#[derive(Debug, Clone)]
pub struct KafkaMetrics {
    consumed_messages: Counter,
    appended_events: Counter,
    duplicate_events: Counter,
    refused_messages: Family<CodeLabels, Counter>,
    append_retries: Counter,
    append_duration: Histogram,
    batch_messages: Histogram,
    commit_failures: Counter,
    lag: Family<PartitionLabels, Gauge>,
}

impl Default for KafkaMetrics {
    /// Metrics nobody serves: for tests and callers without a registry.
    fn default() -> Self {
        Self {
            consumed_messages: Counter::default(),
            appended_events: Counter::default(),
            duplicate_events: Counter::default(),
            refused_messages: Family::default(),
            append_retries: Counter::default(),
            // 0.5 ms … ~16 s: a group commit's fsync up to a stalled database.
            append_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            // 1 … 16,384 messages per append call.
            batch_messages: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            commit_failures: Counter::default(),
            lag: Family::default(),
        }
    }
}

impl KafkaMetrics {
    /// Creates the metrics and registers them under their `studio_ingest_kafka_` names.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "studio_ingest_kafka_consumed_messages",
            "Messages read from the ingest topic, including re-deliveries",
            metrics.consumed_messages.clone(),
        );
        registry.register(
            "studio_ingest_kafka_appended_events",
            "Events from Kafka newly stored in the event log",
            metrics.appended_events.clone(),
        );
        registry.register(
            "studio_ingest_kafka_duplicate_events",
            "Events from Kafka that were already stored (re-delivered message or repeated idempotency key)",
            metrics.duplicate_events.clone(),
        );
        registry.register(
            "studio_ingest_kafka_refused_messages",
            "Messages refused and written to the dead-letter topic, by error code",
            metrics.refused_messages.clone(),
        );
        registry.register(
            "studio_ingest_kafka_append_retries",
            "Appends (or dead-letter writes) that failed and are retried; offsets wait meanwhile",
            metrics.append_retries.clone(),
        );
        registry.register_with_unit(
            "studio_ingest_kafka_append_duration",
            "Time the event log took to append one batch of messages durably",
            Unit::Seconds,
            metrics.append_duration.clone(),
        );
        registry.register(
            "studio_ingest_kafka_batch_messages",
            "Messages per batch handed to the event log",
            metrics.batch_messages.clone(),
        );
        registry.register(
            "studio_ingest_kafka_commit_failures",
            "Offset commits the broker refused; the messages will be re-consumed, and idempotency keys keep them stored once",
            metrics.commit_failures.clone(),
        );
        registry.register(
            "studio_ingest_kafka_lag_messages",
            "Messages in a partition beyond the last committed (durably appended) offset",
            metrics.lag.clone(),
        );
        metrics
    }

    pub(crate) fn record_consumed(&self, messages: usize) {
        self.consumed_messages.inc_by(messages as u64);
    }

    pub(crate) fn record_append_call(&self, messages: usize, took: Duration) {
        self.batch_messages.observe(messages as f64);
        self.append_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn record_appended(&self, new: usize, duplicates: usize) {
        self.appended_events.inc_by(new as u64);
        self.duplicate_events.inc_by(duplicates as u64);
    }

    pub(crate) fn record_refused(&self, code: &'static str) {
        self.refused_messages
            .get_or_create(&CodeLabels { code })
            .inc();
    }

    pub(crate) fn record_retry(&self) {
        self.append_retries.inc();
    }

    pub(crate) fn record_commit_failure(&self) {
        self.commit_failures.inc();
    }

    pub(crate) fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .get_or_create(&PartitionLabels {
                topic: topic.to_string(),
                partition,
            })
            .set(lag);
    }

    /// Messages read so far (all partitions, re-deliveries included).
    pub fn consumed_messages(&self) -> u64 {
        self.consumed_messages.get()
    }

    /// Events newly stored so far.
    pub fn appended_events(&self) -> u64 {
        self.appended_events.get()
    }

    /// Events found already stored so far.
    pub fn duplicate_events(&self) -> u64 {
        self.duplicate_events.get()
    }

    /// Messages written to the dead-letter topic so far, all codes together.
    pub fn refused_messages(&self) -> u64 {
        // A Family cannot be iterated; the codes are few and known.
        REFUSAL_CODES
            .iter()
            .map(|code| {
                self.refused_messages
                    .get_or_create(&CodeLabels { code })
                    .get()
            })
            .sum()
    }

    /// Failed appends (or dead-letter writes) retried so far.
    pub fn append_retries(&self) -> u64 {
        self.append_retries.get()
    }
}

/// Every code a refused message may carry (those of [`crate::ApiError`] that a message can
/// earn, and the store's permanent refusals).
pub(crate) const REFUSAL_CODES: &[&str] = &[
    "empty_message",
    "malformed_json",
    "validation_failed",
    "too_many_events",
    "version_conflict",
    "event_id_conflict",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::render;

    #[test]
    fn the_consumer_series_render_under_their_names() {
        let mut registry = Registry::default();
        let metrics = KafkaMetrics::register(&mut registry);
        metrics.record_consumed(3);
        metrics.record_append_call(3, Duration::from_millis(2));
        metrics.record_appended(2, 1);
        metrics.record_refused("validation_failed");
        metrics.record_retry();
        metrics.record_commit_failure();
        metrics.set_lag("studio.events", 0, 7);
        let text = render(&registry);
        for line in [
            "studio_ingest_kafka_consumed_messages_total 3",
            "studio_ingest_kafka_appended_events_total 2",
            "studio_ingest_kafka_duplicate_events_total 1",
            "studio_ingest_kafka_refused_messages_total{code=\"validation_failed\"} 1",
            "studio_ingest_kafka_append_retries_total 1",
            "studio_ingest_kafka_append_duration_seconds_count 1",
            "studio_ingest_kafka_batch_messages_sum 3.0",
            "studio_ingest_kafka_commit_failures_total 1",
            "studio_ingest_kafka_lag_messages{topic=\"studio.events\",partition=\"0\"} 7",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(metrics.refused_messages(), 1);
    }
}
