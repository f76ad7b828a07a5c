//! The consumer loop: read a batch, append it, dead-letter what cannot be stored, commit.
//!
//! **Acknowledged means durable.** An offset is committed only after every message below it is
//! either durably in the event log or acknowledged by the broker as a dead letter. A crash
//! anywhere before that re-consumes the messages, and their idempotency keys (the producer's,
//! or those derived from the message's coordinates, see [`super::decode`]) make the re-append
//! store nothing twice.
//!
//! **Batches.** After the first message, the loop keeps taking what is already there, for at
//! most [`KafkaConsumerConfig::linger`], up to [`KafkaConsumerConfig::max_batch_messages`] and
//! [`KafkaConsumerConfig::max_batch_events`], and appends all of it in one call. Messages come
//! in partition order, so the events of one partition are stored in that order. One call means
//! one atomic append (the group-commit writer merges it with concurrent HTTP publishes into one
//! transaction), and a message is never split.
//!
//! **Failures.** A message that fails validation is refused on its own (the rest of the batch
//! goes on) and written to the dead-letter topic. A store refusal that retrying cannot fix (a
//! stale `expected_version`, an event id stored under another key) refuses only the message
//! that caused it: the batch is appended again without it. Any other store error (database
//! down, a failed group commit) is retried with exponential backoff for as long as it takes:
//! no offset moves meanwhile, and no message is skipped. A dead-letter write that fails is
//! retried the same way.
//!
//! **Rebalances.** With the classic (eager) protocol, librdkafka revokes and assigns partitions
//! inside `recv`, on this task, so the assignment cannot change between two `recv` calls. A
//! batch read before a revocation is still appended (harmless: whoever owns the partition next
//! re-reads it from the last commit and finds it stored), but its offsets are committed only
//! for the partitions still assigned, so a late commit never moves another consumer's position.
//!
//! **Liveness.** While an append is retried the loop does not call `recv`; after
//! `max.poll.interval.ms` (5 minutes by default) librdkafka leaves the group and rejoins at the
//! next `recv`. Nothing is lost by that either: uncommitted messages are re-read.

use super::config::{KafkaConfigError, KafkaConsumerConfig};
use super::context::IngestClientContext;
use super::dead_letter::{self, DeadLetterWriter};
use super::decode::decode_message;
use super::metrics::KafkaMetrics;
use crate::error::ApiError;
use eventlog::{EventLog, StoreError, ValidatedEvent};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Consecutive failed attempts after which a retried failure is logged as an ERROR: by then it
/// is not a blip, and ingestion from Kafka is stalled until an operator looks.
const ERROR_AFTER_ATTEMPTS: u32 = 5;
/// How long one look-up of the consumed topic may take.
const TOPIC_METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the consumer stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConsumerError {
    #[error(transparent)]
    Config(#[from] KafkaConfigError),
    /// The client could not be created or could not subscribe.
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
    /// librdkafka gave up (e.g. a fenced or misconfigured client); restart the consumer.
    #[error("kafka client failed fatally: {0}")]
    Fatal(String),
    /// The event log was closed under the consumer; nothing after the last commit was lost.
    #[error("the event log is shut down")]
    LogClosed,
}

/// Consumes `config.topic` into `log` until `shutdown` turns true (or its sender is dropped).
/// The batch under way is finished and its offsets committed before it returns.
///
/// Before subscribing it creates the dead-letter topic `<topic>.dead-letters` if it is missing
/// (retrying while the brokers cannot be reached). The consumed topic itself is not created:
/// its partition count is an operator's decision. Until it exists the consumer logs an error
/// naming it and waits.
#[tracing::instrument(skip_all, fields(topic = %config.topic, group = %config.group))]
pub async fn run_consumer(
    log: Arc<dyn EventLog>,
    config: KafkaConsumerConfig,
    metrics: KafkaMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), KafkaConsumerError> {
    config.validate()?;
    let mut backoff = Backoff::new(&config);
    let mut attempt = 0;
    loop {
        match dead_letter::ensure_topic(&config, &metrics).await {
            Ok(()) => break,
            Err(err) => {
                attempt += 1;
                let topic = config.dead_letter_topic();
                if attempt >= ERROR_AFTER_ATTEMPTS {
                    tracing::error!(error = %err, topic, attempt, "cannot create the dead-letter topic; retrying");
                } else {
                    tracing::warn!(error = %err, topic, attempt, "cannot create the dead-letter topic; retrying");
                }
                if pause_or_stop(backoff.next(), &mut shutdown).await {
                    return Ok(());
                }
            }
        }
    }
    let consumer: StreamConsumer<IngestClientContext> = config
        .consumer_client_config()
        .create_with_context(IngestClientContext::new("consumer", metrics.clone()))?;
    let dead_letters = DeadLetterWriter::new(&config, &metrics)?;
    let mut runner = Runner {
        log,
        config,
        metrics,
        consumer: Arc::new(consumer),
        dead_letters,
        done: HashMap::new(),
    };
    let result = runner.start(&mut shutdown).await;
    runner.close().await;
    result
}

/// One consumed message and what decoding made of it.
struct Consumed {
    message: OwnedMessage,
    /// The events to append, or why the message is refused.
    outcome: Result<Vec<ValidatedEvent>, ApiError>,
}

impl Consumed {
    fn events(&self) -> usize {
        self.outcome.as_ref().map_or(0, Vec::len)
    }
}

/// How a unit of work ended early.
enum Stop {
    Shutdown,
    LogClosed,
}

struct Runner {
    log: Arc<dyn EventLog>,
    config: KafkaConsumerConfig,
    metrics: KafkaMetrics,
    /// In an `Arc` so the final commit and the close (both blocking calls into librdkafka)
    /// can run on a blocking thread.
    consumer: Arc<StreamConsumer<IngestClientContext>>,
    dead_letters: DeadLetterWriter,
    /// Per partition, the next offset to commit: one past the last message that is durably
    /// stored or dead-lettered.
    done: HashMap<(String, i32), i64>,
}

impl Runner {
    /// Waits for the topic, subscribes, and consumes until shutdown.
    async fn start(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), KafkaConsumerError> {
        if !self.wait_for_topic(shutdown).await {
            return Ok(());
        }
        self.consumer.subscribe(&[&self.config.topic])?;
        tracing::info!(brokers = %self.config.brokers, "kafka consumer started");
        self.run(shutdown).await
    }

    /// Waits until the broker knows the topic; false when shutdown came first.
    ///
    /// librdkafka reports a subscribed topic that does not exist once, then only looks again at
    /// its next metadata refresh (`topic.metadata.refresh.interval.ms`, 5 minutes by default),
    /// so a topic created a moment after the consumer started would sit unread for minutes
    /// with nothing in the logs. Brokers without auto-creation (tansu among them) make that
    /// the usual first-run mistake: say so until the topic is there.
    async fn wait_for_topic(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut backoff = Backoff::new(&self.config);
        loop {
            let consumer = self.consumer.clone();
            let topic = self.config.topic.clone();
            let found = tokio::task::spawn_blocking(move || {
                let metadata = consumer.fetch_metadata(Some(&topic), TOPIC_METADATA_TIMEOUT)?;
                Ok::<_, KafkaError>(metadata.topics().iter().any(|t| {
                    t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                }))
            })
            .await;
            match found {
                Ok(Ok(true)) => return true,
                Ok(Ok(false)) => tracing::error!(
                    "the kafka topic does not exist; create it (key = stream, as many partitions \
                     as ingest should scale to); the consumer waits for it"
                ),
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cannot read kafka topic metadata; retrying")
                }
                Err(err) => tracing::warn!(error = %err, "kafka metadata request panicked"),
            }
            if pause_or_stop(backoff.next(), shutdown).await {
                return false;
            }
        }
    }

    async fn run(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), KafkaConsumerError> {
        let mut carried: Option<Consumed> = None;
        loop {
            let first = match carried.take() {
                Some(consumed) => consumed,
                None => tokio::select! {
                    biased;
                    _ = stopped(shutdown) => return Ok(()),
                    received = self.consumer.recv() => match received {
                        Ok(message) => self.consumed(&message),
                        Err(err) => {
                            self.on_error(err)?;
                            continue;
                        }
                    },
                },
            };
            let mut events = first.events();
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.config.linger;
            while batch.len() < self.config.max_batch_messages
                && events < self.config.max_batch_events
            {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Err(_lingered) => break,
                    Ok(Err(err)) => {
                        self.on_error(err)?;
                        break;
                    }
                    Ok(Ok(message)) => {
                        let consumed = self.consumed(&message);
                        if events + consumed.events() > self.config.max_batch_events {
                            carried = Some(consumed);
                            break;
                        }
                        events += consumed.events();
                        batch.push(consumed);
                    }
                }
            }
            match self.process(batch, shutdown).await {
                Ok(()) => {}
                Err(Stop::Shutdown) => return Ok(()),
                Err(Stop::LogClosed) => return Err(KafkaConsumerError::LogClosed),
            }
        }
    }

    fn consumed(&self, message: &BorrowedMessage<'_>) -> Consumed {
        self.metrics.record_consumed(1);
        let outcome = decode_message(
            message.topic(),
            message.partition(),
            message.offset(),
            message.payload(),
        );
        Consumed {
            message: message.detach(),
            outcome,
        }
    }

    /// An error from `recv`: librdkafka retries connections by itself, so only a fatal error
    /// stops the consumer.
    fn on_error(&self, err: KafkaError) -> Result<(), KafkaConsumerError> {
        if let Some((code, reason)) = self.consumer.client().fatal_error() {
            tracing::error!(?code, reason, "kafka consumer failed fatally");
            return Err(KafkaConsumerError::Fatal(format!("{code:?}: {reason}")));
        }
        tracing::warn!(error = %err, "kafka consumer error");
        Ok(())
    }

    /// Appends the batch, dead-letters its refused messages, then commits its offsets.
    async fn process(
        &mut self,
        mut batch: Vec<Consumed>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        self.append(&mut batch, shutdown).await?;
        for consumed in &batch {
            if let Err(refusal) = &consumed.outcome {
                self.dead_letter(&consumed.message, refusal, shutdown)
                    .await?;
            }
        }
        self.commit(&batch);
        Ok(())
    }

    /// Appends the events of every message not refused, in order, in as few calls as the
    /// store's answers allow. A message the store refuses for good has its outcome turned into
    /// that refusal.
    async fn append(
        &self,
        batch: &mut [Consumed],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let mut pending: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].outcome.is_ok())
            .collect();
        while !pending.is_empty() {
            match self.append_with_retry(batch, &pending, shutdown).await? {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict {
                    index,
                    stream,
                    expected,
                    actual,
                }) => {
                    // The index is the event's in the whole call: find its message, refuse it
                    // with the index inside the message, and append the rest again.
                    let (at, index) = owner_of(batch, &pending, index);
                    let refused = pending.remove(at);
                    batch[refused].outcome = Err(ApiError::from(StoreError::Conflict {
                        index,
                        stream,
                        expected,
                        actual,
                    }));
                }
                Err(err) if pending.len() == 1 => {
                    batch[pending[0]].outcome = Err(ApiError::from(err));
                    return Ok(());
                }
                Err(_) => {
                    // An event id collision does not say whose; find out message by message.
                    tracing::debug!(
                        messages = pending.len(),
                        "batch refused; appending its messages one by one"
                    );
                    for i in std::mem::take(&mut pending) {
                        if let Err(err) = self.append_with_retry(batch, &[i], shutdown).await? {
                            batch[i].outcome = Err(ApiError::from(err));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends the events of `messages` (indexes into `batch`) in one call, retrying every
    /// failure that retrying may fix. Returns the store's refusal when it cannot.
    async fn append_with_retry(
        &self,
        batch: &[Consumed],
        messages: &[usize],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Result<(), StoreError>, Stop> {
        let mut backoff = Backoff::new(&self.config);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let events: Vec<ValidatedEvent> = messages
                .iter()
                .filter_map(|&i| batch[i].outcome.as_ref().ok())
                .flatten()
                .cloned()
                .collect();
            let count = events.len();
            let started = Instant::now();
            let result = self.log.append(events).await;
            self.metrics
                .record_append_call(messages.len(), started.elapsed());
            match result {
                Ok(appended) => {
                    let new = appended.iter().filter(|a| a.is_new()).count();
                    self.metrics.record_appended(new, count - new);
                    if attempt > 1 {
                        tracing::info!(attempt, "append succeeded after retrying");
                    }
                    return Ok(Ok(()));
                }
                Err(StoreError::Closed) => return Err(Stop::LogClosed),
                Err(err @ (StoreError::Conflict { .. } | StoreError::IdCollision(_))) => {
                    return Ok(Err(err))
                }
                Err(err) => {
                    self.metrics.record_retry();
                    let pause = backoff.next();
                    if attempt >= ERROR_AFTER_ATTEMPTS {
                        tracing::error!(error = %err, attempt, ?pause, events = count, "kafka batch not stored; retrying, offsets wait");
                    } else {
                        tracing::warn!(error = %err, attempt, ?pause, events = count, "kafka batch not stored; retrying, offsets wait");
                    }
                    if pause_or_stop(pause, shutdown).await {
                        return Err(Stop::Shutdown);
                    }
                }
            }
        }
    }

    /// Writes one refused message to the dead-letter topic, retrying until the broker has it.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        refusal: &ApiError,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            code = refusal.code(),
            reason = refusal.message(),
            "kafka message refused; writing it to the dead-letter topic"
        );
        let mut backoff = Backoff::new(&self.config);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.dead_letters.send(message, refusal).await {
                Ok(()) => {
                    self.metrics.record_refused(refusal.code());
                    return Ok(());
                }
                Err(err) => {
                    self.metrics.record_retry();
                    let pause = backoff.next();
                    if attempt >= ERROR_AFTER_ATTEMPTS {
                        tracing::error!(error = %err, attempt, ?pause, "dead letter not written; retrying, offsets wait");
                    } else {
                        tracing::warn!(error = %err, attempt, ?pause, "dead letter not written; retrying, offsets wait");
                    }
                    if pause_or_stop(pause, shutdown).await {
                        return Err(Stop::Shutdown);
                    }
                }
            }
        }
    }

    /// Commits, without waiting, the offsets after this batch for the partitions still
    /// assigned. A failed commit is logged and counted by the context's callback.
    fn commit(&mut self, batch: &[Consumed]) {
        let mut touched: Vec<(String, i32)> = Vec::new();
        for consumed in batch {
            let m = &consumed.message;
            let key = (m.topic().to_string(), m.partition());
            let next = m.offset() + 1;
            let entry = self.done.entry(key.clone()).or_insert(next);
            *entry = (*entry).max(next);
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        let offsets = self.assigned_offsets(Some(&touched));
        if offsets.count() == 0 {
            return;
        }
        if let Err(err) = self.consumer.commit(&offsets, CommitMode::Async) {
            self.metrics.record_commit_failure();
            tracing::warn!(error = %err, "kafka offset commit not sent");
        }
    }

    /// The offsets to commit for `only` (or every partition done so far), leaving out, and
    /// forgetting, partitions no longer assigned to this consumer.
    fn assigned_offsets(&mut self, only: Option<&[(String, i32)]>) -> TopicPartitionList {
        let mut offsets = TopicPartitionList::new();
        let Ok(assignment) = self.consumer.assignment() else {
            return offsets;
        };
        self.done
            .retain(|(topic, partition), _| assignment.find_partition(topic, *partition).is_some());
        for ((topic, partition), next) in &self.done {
            if only.is_some_and(|only| !only.contains(&(topic.clone(), *partition))) {
                continue;
            }
            // Adding to a fresh list cannot fail: the partition is not in it yet.
            let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        offsets
    }

    /// Commits what is done, synchronously, and leaves the group. Both block on the broker,
    /// so they run on a blocking thread.
    async fn close(mut self) {
        let offsets = self.assigned_offsets(None);
        let consumer = self.consumer;
        let metrics = self.metrics;
        let closed = tokio::task::spawn_blocking(move || {
            if offsets.count() > 0 {
                if let Err(err) = consumer.commit(&offsets, CommitMode::Sync) {
                    metrics.record_commit_failure();
                    tracing::warn!(error = %err, "final kafka offset commit failed; the last messages will be re-read and found stored");
                }
            }
            drop(consumer);
        })
        .await;
        if let Err(err) = closed {
            tracing::warn!(error = %err, "kafka consumer close panicked");
        }
        tracing::info!("kafka consumer stopped");
    }
}

/// Which of `pending` holds event `index` of the call that appended them, and that event's
/// index inside its message.
fn owner_of(batch: &[Consumed], pending: &[usize], mut index: usize) -> (usize, usize) {
    for (at, &i) in pending.iter().enumerate() {
        let n = batch[i].events();
        if index < n {
            return (at, index);
        }
        index -= n;
    }
    // The store names an index of the call; past the end would be its bug. Blame the last.
    (pending.len() - 1, index)
}

/// Exponential backoff between retries.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(config: &KafkaConsumerConfig) -> Self {
        Self {
            next: config.retry_initial,
            max: config.retry_max,
        }
    }

    fn next(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }
}

/// Resolves when shutdown is asked for (true) or can no longer be asked for (sender dropped).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Sleeps for `pause`; true when shutdown came first.
async fn pause_or_stop(pause: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => false,
        _ = stopped(shutdown) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumed(events: usize) -> Consumed {
        let event: ValidatedEvent = ValidatedEvent::parse(&serde_json::json!({
            "type": "load_test.run_completed",
            "occurred_at": "2026-11-24T10:00:00Z",
            "payload": {"run_id": "lt_1"},
        }))
        .unwrap();
        Consumed {
            message: OwnedMessage::new(
                None,
                None,
                "t".into(),
                rdkafka::Timestamp::NotAvailable,
                0,
                0,
                None,
            ),
            outcome: Ok(vec![event; events]),
        }
    }

    #[test]
    fn a_conflict_index_is_traced_to_its_message_and_its_place_in_it() {
        let batch = vec![consumed(2), consumed(3), consumed(1)];
        let pending = [0, 1, 2];
        assert_eq!(owner_of(&batch, &pending, 0), (0, 0));
        assert_eq!(owner_of(&batch, &pending, 1), (0, 1));
        assert_eq!(owner_of(&batch, &pending, 2), (1, 0));
        assert_eq!(owner_of(&batch, &pending, 4), (1, 2));
        assert_eq!(owner_of(&batch, &pending, 5), (2, 0));
        // Only the pending messages count.
        assert_eq!(owner_of(&batch, &[1, 2], 3), (1, 0));
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let mut config = KafkaConsumerConfig::new("b:9092");
        config.retry_initial = Duration::from_millis(100);
        config.retry_max = Duration::from_millis(350);
        let mut backoff = Backoff::new(&config);
        let pauses: Vec<u128> = (0..4).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 350, 350]);
    }

    #[tokio::test]
    async fn a_dropped_shutdown_sender_stops_like_true() {
        let (tx, mut rx) = watch::channel(false);
        drop(tx);
        assert!(pause_or_stop(Duration::from_secs(60), &mut rx).await);
        let (tx, mut rx) = watch::channel(false);
        tx.send(true).unwrap();
        assert!(pause_or_stop(Duration::from_secs(60), &mut rx).await);
    }
}
