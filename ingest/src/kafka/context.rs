//! librdkafka's callbacks, turned into tracing events and metrics.
//!
//! librdkafka runs these on the thread that polls the client: for the consumer that is our own
//! task, inside `recv`, so they must return quickly.

use super::metrics::KafkaMetrics;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;

/// The context of every client the consumer creates (consumer, dead-letter producer, admin).
#[derive(Clone)]
pub struct IngestClientContext {
    /// `"consumer"`, `"dead_letters"` or `"admin"`: which client a log line comes from.
    role: &'static str,
    metrics: KafkaMetrics,
}

impl IngestClientContext {
    pub(crate) fn new(role: &'static str, metrics: KafkaMetrics) -> Self {
        Self { role, metrics }
    }
}

impl ClientContext for IngestClientContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let role = self.role;
        match level {
            // librdkafka's own errors are about connections it retries by itself; data is not
            // at risk from them (offsets wait for durable appends), so they are warnings here.
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", role, fac, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", role, fac, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", role, fac, "{message}")
            }
        }
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue; a lag of -1 means
                // not known yet (nothing committed or no watermark fetched).
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics.set_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", role = self.role, error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for IngestClientContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "kafka partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "kafka partitions revoked")
            }
            Rebalance::Error(err) => tracing::warn!(error = %err, "kafka rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(err) = result {
            // Not data loss: the messages are stored, and will be re-consumed and found to be
            // duplicates by their idempotency keys.
            self.metrics.record_commit_failure();
            tracing::warn!(error = %err, offsets = %describe(offsets), "kafka offset commit failed");
        }
    }
}

/// `topic/partition@offset, …` for logs.
fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset()))
        .collect::<Vec<_>>()
        .join(", ")
}
