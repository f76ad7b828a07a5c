//! What the consumer needs to know (DESIGN §9: `STUDIO_KAFKA_BROKERS`, `STUDIO_KAFKA_TOPIC`,
//! `STUDIO_KAFKA_GROUP`), and the librdkafka settings that follow from it.

use crate::MAX_EVENTS_PER_REQUEST;
use rdkafka::ClientConfig;
use std::time::Duration;

/// The topic consumed when the configuration does not say.
pub const DEFAULT_TOPIC: &str = "studio.events";
/// The consumer group when the configuration does not say.
pub const DEFAULT_GROUP: &str = "studio-ingest";
/// Refused messages go to `<topic>` followed by this.
pub const DEAD_LETTER_SUFFIX: &str = ".dead-letters";

/// Messages one append call takes at most.
pub const DEFAULT_MAX_BATCH_MESSAGES: usize = 1_000;
/// Events one append call takes at most (a single message may carry up to
/// [`MAX_EVENTS_PER_REQUEST`], like a `POST /v1/events`, and is never split).
pub const DEFAULT_MAX_BATCH_EVENTS: usize = MAX_EVENTS_PER_REQUEST;
/// How long a batch waits for more messages after its first one.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
/// First pause after a failed append or dead-letter write; it doubles up to the maximum.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(100);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(10);
/// How often librdkafka reports statistics, from which the lag gauge is set.
pub const DEFAULT_STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

/// The Kafka ingest consumer's configuration. Build it with [`KafkaConsumerConfig::new`] and
/// adjust the public fields; [`crate::kafka::run_consumer`] checks it before connecting.
#[derive(Clone, PartialEq)]
pub struct KafkaConsumerConfig {
    /// `STUDIO_KAFKA_BROKERS`: librdkafka's `bootstrap.servers`, e.g. `host1:9092,host2:9092`.
    pub brokers: String,
    /// `STUDIO_KAFKA_TOPIC`.
    pub topic: String,
    /// `STUDIO_KAFKA_GROUP`.
    pub group: String,
    pub max_batch_messages: usize,
    pub max_batch_events: usize,
    pub linger: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Partitions of the dead-letter topic when the consumer has to create it. One keeps every
    /// refusal in the order it happened, which is what an operator reading them wants.
    pub dead_letter_partitions: i32,
    /// Replication factor of a created dead-letter topic; -1 takes the broker's default.
    pub dead_letter_replication: i32,
    /// 0 turns the statistics (and so the lag gauge) off.
    pub statistics_interval: Duration,
    /// Extra librdkafka properties (security, timeouts), applied to the consumer, the
    /// dead-letter producer and the admin client after ours, so they win. Their values may be
    /// secrets (`sasl.password`): `Debug` prints the names only.
    pub client_properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let property_names: Vec<&str> = self
            .client_properties
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        f.debug_struct("KafkaConsumerConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("max_batch_messages", &self.max_batch_messages)
            .field("max_batch_events", &self.max_batch_events)
            .field("linger", &self.linger)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .field("dead_letter_partitions", &self.dead_letter_partitions)
            .field("dead_letter_replication", &self.dead_letter_replication)
            .field("statistics_interval", &self.statistics_interval)
            .field("client_properties", &property_names)
            .finish()
    }
}

impl KafkaConsumerConfig {
    /// The defaults of DESIGN §9 for these brokers.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_string(),
            group: DEFAULT_GROUP.to_string(),
            max_batch_messages: DEFAULT_MAX_BATCH_MESSAGES,
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS,
            linger: DEFAULT_LINGER,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            dead_letter_partitions: 1,
            dead_letter_replication: -1,
            statistics_interval: DEFAULT_STATISTICS_INTERVAL,
            client_properties: Vec::new(),
        }
    }

    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Where refused messages go: `<topic>.dead-letters`.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}{DEAD_LETTER_SUFFIX}", self.topic)
    }

    /// Refuses a configuration that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        let bad = |field: &'static str, reason: String| Err(KafkaConfigError { field, reason });
        if self.brokers.trim().is_empty() {
            return bad("brokers", "must name at least one host:port".into());
        }
        for (field, name) in [("topic", &self.topic), ("group", &self.group)] {
            if name.is_empty() || name.len() > 249 {
                return bad(field, format!("must be 1 to 249 characters, got {name:?}"));
            }
        }
        if !self
            .topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad(
                "topic",
                format!(
                    "{:?} is not a Kafka topic name (letters, digits, '.', '_', '-')",
                    self.topic
                ),
            );
        }
        if self.dead_letter_topic().len() > 249 {
            return bad(
                "topic",
                format!(
                    "is too long for its dead-letter topic {:?} (at most 249 characters)",
                    self.dead_letter_topic()
                ),
            );
        }
        if self.max_batch_messages == 0 {
            return bad("max_batch_messages", "must be at least 1".into());
        }
        if self.max_batch_events == 0 {
            return bad("max_batch_events", "must be at least 1".into());
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return bad(
                "retry_initial",
                "must be above 0 and at most retry_max".into(),
            );
        }
        if self.dead_letter_partitions < 1 {
            return bad("dead_letter_partitions", "must be at least 1".into());
        }
        if self.dead_letter_replication == 0 || self.dead_letter_replication < -1 {
            return bad(
                "dead_letter_replication",
                "must be at least 1, or -1 for the broker's default".into(),
            );
        }
        Ok(())
    }

    /// The consumer's settings. Offsets are committed by hand, only after an append is
    /// durable; the classic group protocol, because KIP-848 is not spoken by every broker
    /// (tansu among them); `earliest` so that a new group starts with the whole topic rather
    /// than silently skipping what was published before it existed.
    pub(crate) fn consumer_client_config(&self) -> ClientConfig {
        let mut config = self.base_client_config();
        config
            .set("group.id", &self.group)
            .set("group.protocol", "classic")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "statistics.interval.ms",
                self.statistics_interval.as_millis().to_string(),
            );
        self.apply_client_properties(&mut config);
        config
    }

    /// The dead-letter producer's settings: every in-sync replica acknowledges a refusal
    /// before the refused message's offset may be committed.
    pub(crate) fn producer_client_config(&self) -> ClientConfig {
        let mut config = self.base_client_config();
        config.set("acks", "all").set("message.timeout.ms", "30000");
        self.apply_client_properties(&mut config);
        config
    }

    pub(crate) fn admin_client_config(&self) -> ClientConfig {
        let mut config = self.base_client_config();
        self.apply_client_properties(&mut config);
        config
    }

    fn base_client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "studio-ingest");
        config
    }

    fn apply_client_properties(&self, config: &mut ClientConfig) {
        for (key, value) in &self.client_properties {
            config.set(key, value);
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kafka consumer configuration: {field} {reason}")]
pub struct KafkaConfigError {
    pub field: &'static str,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_follow_the_design() {
        let config = KafkaConsumerConfig::new("127.0.0.1:9092");
        assert_eq!(config.topic, "studio.events");
        assert_eq!(config.group, "studio-ingest");
        assert_eq!(config.dead_letter_topic(), "studio.events.dead-letters");
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn offsets_are_never_committed_automatically() {
        let config = KafkaConsumerConfig::new("b:9092").consumer_client_config();
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("group.protocol"), Some("classic"));
        assert_eq!(config.get("group.id"), Some("studio-ingest"));
    }

    #[test]
    fn extra_properties_win_over_ours() {
        let mut config = KafkaConsumerConfig::new("b:9092");
        config
            .client_properties
            .push(("auto.offset.reset".into(), "latest".into()));
        let client = config.consumer_client_config();
        assert_eq!(client.get("auto.offset.reset"), Some("latest"));
    }

    #[test]
    fn debug_output_names_extra_properties_but_never_their_values() {
        let mut config = KafkaConsumerConfig::new("b:9092");
        config
            .client_properties
            .push(("sasl.password".into(), "hunter2".into()));
        let printed = format!("{config:?}");
        assert!(printed.contains("sasl.password"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn a_bad_value_is_refused_by_name() {
        let config = KafkaConsumerConfig::new(" ");
        assert_eq!(config.validate().unwrap_err().field, "brokers");
        let config = KafkaConsumerConfig::new("b:9092").with_topic("no spaces");
        assert_eq!(config.validate().unwrap_err().field, "topic");
        let mut config = KafkaConsumerConfig::new("b:9092");
        config.max_batch_messages = 0;
        assert_eq!(config.validate().unwrap_err().field, "max_batch_messages");
        let mut config = KafkaConsumerConfig::new("b:9092");
        config.retry_max = Duration::from_millis(1);
        assert_eq!(config.validate().unwrap_err().field, "retry_initial");
    }
}
