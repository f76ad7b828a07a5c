//! The Kafka ingest consumer (DESIGN §3): envelopes published to `studio.events` (key = stream)
//! are validated like `POST /v1/events` and appended to the event log in batches; an offset is
//! committed only after the events up to it are durable.
//!
//! - [`config`]: [`KafkaConsumerConfig`], the librdkafka settings it implies, and its checks.
//! - [`decode`]: one message → its validated events, with idempotency keys derived from the
//!   message's coordinates when the producer set none.
//! - [`consumer`]: [`run_consumer`], the loop: batch, append (retrying store errors forever),
//!   dead-letter what cannot be stored, commit.
//! - [`dead_letter`]: the `<topic>.dead-letters` topic and how refused messages are written to it.
//! - [`context`]: librdkafka callbacks into tracing and metrics (lag, commit failures).
//! - [`metrics`]: [`KafkaMetrics`], the `studio_ingest_kafka_*` series.
//! - [`testkit`]: a tansu broker for tests, topic creation, produce and read helpers.

pub mod config;
pub mod consumer;
pub mod context;
pub mod dead_letter;
pub mod decode;
pub mod metrics;
pub mod testkit;

pub use config::{
    KafkaConfigError, KafkaConsumerConfig, DEAD_LETTER_SUFFIX, DEFAULT_GROUP, DEFAULT_TOPIC,
};
pub use consumer::{run_consumer, KafkaConsumerError};
pub use dead_letter::{
    HEADER_ERROR, HEADER_ERROR_CODE, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
};
pub use decode::derived_idempotency_key;
pub use metrics::KafkaMetrics;
