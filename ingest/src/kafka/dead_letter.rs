//! The dead-letter topic `<topic>.dead-letters`: where a message that can never be stored goes,
//! so it neither blocks its partition nor disappears.
//!
//! A dead letter is the refused message unchanged (same key, same value, its own headers
//! first), so an operator can fix the producer and re-publish the value as it is. Our headers
//! say why and where it came from:
//! - [`HEADER_ERROR`]: the refusal as the one JSON error shape of the HTTP API,
//!   `{"error": {"code", "message", "details"}}`;
//! - [`HEADER_ERROR_CODE`]: the code alone, for filtering;
//! - [`HEADER_SOURCE_TOPIC`], [`HEADER_SOURCE_PARTITION`], [`HEADER_SOURCE_OFFSET`]: the
//!   message's coordinates (decimal text).
//!
//! The refused message's offset is committed only after the broker acknowledged its dead letter
//! (`acks=all`), so a refusal is never lost either.

use super::config::KafkaConsumerConfig;
use super::context::IngestClientContext;
use super::metrics::KafkaMetrics;
use crate::error::ApiError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::time::Duration;

pub const HEADER_ERROR: &str = "studio.error";
pub const HEADER_ERROR_CODE: &str = "studio.error.code";
pub const HEADER_SOURCE_TOPIC: &str = "studio.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "studio.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "studio.source.offset";

/// How long an admin request may take before it is retried.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a send may wait for room in the producer's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates the dead-letter topic unless it exists. The consumer calls it before subscribing,
/// so the first refusal does not wait for it (brokers without auto-creation, such as tansu,
/// would otherwise refuse the write).
pub(crate) async fn ensure_topic(
    config: &KafkaConsumerConfig,
    metrics: &KafkaMetrics,
) -> Result<(), KafkaError> {
    let admin: AdminClient<IngestClientContext> = config
        .admin_client_config()
        .create_with_context(IngestClientContext::new("admin", metrics.clone()))?;
    let topic = config.dead_letter_topic();
    let new_topic = NewTopic::new(
        &topic,
        config.dead_letter_partitions,
        TopicReplication::Fixed(config.dead_letter_replication),
    );
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin.create_topics([&new_topic], &options).await?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic, "dead-letter topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// Writes dead letters; one per consumer.
pub(crate) struct DeadLetterWriter {
    producer: FutureProducer<IngestClientContext>,
    topic: String,
}

impl DeadLetterWriter {
    pub(crate) fn new(
        config: &KafkaConsumerConfig,
        metrics: &KafkaMetrics,
    ) -> Result<Self, KafkaError> {
        let producer = config
            .producer_client_config()
            .create_with_context(IngestClientContext::new("dead_letters", metrics.clone()))?;
        Ok(Self {
            producer,
            topic: config.dead_letter_topic(),
        })
    }

    /// Writes `message` with `error` to the dead-letter topic; returns once the broker has it.
    pub(crate) async fn send(
        &self,
        message: &OwnedMessage,
        error: &ApiError,
    ) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(header);
            }
        }
        let body = error.body().to_string();
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        for (key, value) in [
            (HEADER_ERROR, body.as_str()),
            (HEADER_ERROR_CODE, error.code()),
            (HEADER_SOURCE_TOPIC, message.topic()),
            (HEADER_SOURCE_PARTITION, partition.as_str()),
            (HEADER_SOURCE_OFFSET, offset.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Timeout::After(QUEUE_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|(err, _)| err)
    }
}
