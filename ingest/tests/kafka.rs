//! The Kafka ingest consumer against a real broker (tansu over real sockets, see
//! `ingest::kafka::testkit`) and real stores: every test runs on SQLite and on PostgreSQL.

use async_trait::async_trait;
use eventlog::{Appended, EventLog, RecordedEvent, StoreError, ValidatedEvent};
use ingest::kafka::testkit::{self, TestRecord};
use ingest::kafka::{
    run_consumer, KafkaConsumerConfig, KafkaConsumerError, KafkaMetrics, HEADER_ERROR,
    HEADER_ERROR_CODE, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC,
};
use rdkafka::message::{Headers, Message, OwnedMessage};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest any wait in these tests may take before it fails, saying what it saw.
const PATIENCE: Duration = Duration::from_secs(90);

/// Runs a test body against a fresh SQLite store and a fresh PostgreSQL database.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::trace_to_test_output();
                    let (url, _dir) = eventlog::testkit::sqlite_url();
                    let log = eventlog::open(&url, true).await.expect("open sqlite");
                    super::$name(log).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::trace_to_test_output();
                    let url = eventlog::testkit::postgres_database().await;
                    let log = eventlog::open(&url, true).await.expect("open postgres");
                    super::$name(log).await;
                }
            )*
        }
    };
}

on_both_stores!(
    every_message_is_appended_once_in_partition_order,
    a_bad_message_is_dead_lettered_and_later_ones_are_still_appended,
    a_stale_expected_version_refuses_only_its_own_message,
    a_consumer_stopped_mid_stream_and_restarted_loses_and_repeats_nothing,
    a_crashed_consumer_is_replaced_without_loss_or_duplicates,
    a_topic_consumed_again_from_the_start_stores_nothing_twice,
    offsets_wait_for_the_store_and_failed_appends_are_retried_until_stored,
    a_topic_created_after_the_consumer_started_is_consumed,
);

// --- the tests ----------------------------------------------------------------------------

async fn every_message_is_appended_once_in_partition_order(log: Arc<dyn EventLog>) {
    let t = Topic::create("order", 3).await;
    // Four streams over three partitions, keyed by stream; single envelopes and arrays mixed;
    // half the envelopes carry the producer's idempotency key, the others get derived ones.
    let plan = Plan::new(4, 60, 4);
    let placed = t.produce(plan.records()).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = KafkaMetrics::register(&mut registry);
    let consumer = Consumer::start(log.clone(), t.config(), metrics.clone());

    let events = wait_for_events(log.as_ref(), plan.total_events()).await;
    // The lag gauge comes from librdkafka's statistics: high watermark minus committed offset.
    wait_until("every partition reports no lag", || {
        let text = ingest::metrics::render(&registry);
        (0..3).all(|p| {
            text.contains(&format!(
                "studio_ingest_kafka_lag_messages{{topic=\"{}\",partition=\"{p}\"}} 0\n",
                t.name
            ))
        })
    })
    .await;
    consumer.stop().await.expect("consumer stopped cleanly");

    plan.assert_stored_exactly_once_in_order(&all_events(log.as_ref()).await);
    assert_eq!(events.len(), plan.total_events());
    assert_eq!(metrics.appended_events(), plan.total_events() as u64);
    assert_eq!(metrics.refused_messages(), 0);
    assert_eq!(metrics.consumed_messages(), placed.len() as u64);
    // Every partition's offset is committed up to its end once the consumer stopped.
    assert_eq!(t.committed().await, end_offsets(&placed, 3));
}

async fn a_bad_message_is_dead_lettered_and_later_ones_are_still_appended(log: Arc<dyn EventLog>) {
    let t = Topic::create("bad", 1).await;
    let bad_json = b"{\"type\": ".to_vec();
    let invalid = json!({"type": "load_test.stage_started", "occurred_at": "yesterday",
                         "payload": {"run_id": "lt_bad"}})
    .to_string();
    let records = vec![
        TestRecord::new("load_test_run-lt_a", stage("lt_a", 0, None).to_string()),
        TestRecord::new("load_test_run-lt_a", bad_json.clone()).with_header("origin", "test"),
        TestRecord::new("load_test_run-lt_a", invalid.clone()),
        TestRecord {
            key: Some(b"load_test_run-lt_a".to_vec()),
            ..TestRecord::default()
        },
        // An array with one bad envelope is refused whole, like a POST /v1/events.
        TestRecord::new(
            "load_test_run-lt_a",
            json!([stage("lt_a", 90, None), {"type": "nope"}]).to_string(),
        ),
        TestRecord::new("load_test_run-lt_a", stage("lt_a", 1, None).to_string()),
        TestRecord::new("load_test_run-lt_a", stage("lt_a", 2, None).to_string()),
    ];
    let placed = t.produce(records).await;
    let metrics = KafkaMetrics::default();
    let consumer = Consumer::start(log.clone(), t.config(), metrics.clone());

    let events = wait_for_events(log.as_ref(), 3).await;
    let dead = testkit::read_topic(&t.brokers, &t.dead_letters(), 1, 4, PATIENCE).await;
    consumer.stop().await.expect("consumer stopped cleanly");

    assert_eq!(stage_indexes(&events), [0, 1, 2]);
    assert_eq!(
        all_events(log.as_ref()).await.len(),
        3,
        "nothing of a refused message is stored"
    );
    assert_eq!(dead.len(), 4, "one dead letter per refused message");
    let codes: Vec<String> = dead.iter().map(|m| header(m, HEADER_ERROR_CODE)).collect();
    assert_eq!(
        codes,
        [
            "malformed_json",
            "validation_failed",
            "empty_message",
            "validation_failed"
        ]
    );
    let sources: Vec<i64> = dead
        .iter()
        .map(|m| header(m, HEADER_SOURCE_OFFSET).parse().unwrap())
        .collect();
    assert_eq!(
        sources,
        [placed[1].1, placed[2].1, placed[3].1, placed[4].1]
    );
    for m in &dead {
        assert_eq!(header(m, HEADER_SOURCE_TOPIC), t.name);
        assert_eq!(header(m, HEADER_SOURCE_PARTITION), "0");
        assert_eq!(m.key(), Some(&b"load_test_run-lt_a"[..]));
        let error: Value = serde_json::from_str(&header(m, HEADER_ERROR)).unwrap();
        assert_eq!(
            error["error"]["code"].as_str(),
            Some(header(m, HEADER_ERROR_CODE).as_str())
        );
        assert!(!error["error"]["message"].as_str().unwrap().is_empty());
    }
    // The value and the producer's headers are kept, so the message can be fixed and replayed.
    assert_eq!(dead[0].payload(), Some(&bad_json[..]));
    assert_eq!(header(&dead[0], "origin"), "test");
    assert_eq!(dead[1].payload(), Some(invalid.as_bytes()));
    assert_eq!(dead[2].payload(), None);
    let validation: Value = serde_json::from_str(&header(&dead[1], HEADER_ERROR)).unwrap();
    assert_eq!(validation["error"]["details"][0]["path"], "occurred_at");

    assert_eq!(metrics.refused_messages(), 4);
    assert_eq!(t.committed().await, end_offsets(&placed, 1));
}

async fn a_stale_expected_version_refuses_only_its_own_message(log: Arc<dyn EventLog>) {
    let t = Topic::create("conflict", 1).await;
    let key = "load_test_run-lt_v";
    let mut stale = stage("lt_v", 99, Some("stale"));
    stale["expected_version"] = json!(7);
    let mut right = stage("lt_v", 2, Some("right"));
    right["expected_version"] = json!(2);
    let records = vec![
        TestRecord::new(key, stage("lt_v", 0, None).to_string()),
        TestRecord::new(key, stage("lt_v", 1, None).to_string()),
        TestRecord::new(key, stale.to_string()),
        // Checked against the stream as the messages before it left it.
        TestRecord::new(key, right.to_string()),
        TestRecord::new(key, stage("lt_v", 3, None).to_string()),
    ];
    let placed = t.produce(records).await;
    let metrics = KafkaMetrics::default();
    let consumer = Consumer::start(log.clone(), t.config(), metrics.clone());

    let events = wait_for_events(log.as_ref(), 4).await;
    let dead = testkit::read_topic(&t.brokers, &t.dead_letters(), 1, 1, PATIENCE).await;
    consumer.stop().await.expect("consumer stopped cleanly");

    assert_eq!(stage_indexes(&events), [0, 1, 2, 3]);
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], HEADER_ERROR_CODE), "version_conflict");
    assert_eq!(
        header(&dead[0], HEADER_SOURCE_OFFSET),
        placed[2].1.to_string()
    );
    let error: Value = serde_json::from_str(&header(&dead[0], HEADER_ERROR)).unwrap();
    assert_eq!(
        error["error"]["details"][0]["index"], 0,
        "index inside the message"
    );
    assert_eq!(error["error"]["details"][0]["current_version"], 2);
    assert_eq!(t.committed().await, end_offsets(&placed, 1));
}

async fn a_consumer_stopped_mid_stream_and_restarted_loses_and_repeats_nothing(
    log: Arc<dyn EventLog>,
) {
    let t = Topic::create("restart", 2).await;
    let plan = Plan::new(3, 150, 5);
    let records = plan.records();
    let half = records.len() / 2;
    let first = t.produce(records[..half].to_vec()).await;
    // The first consumer takes small batches and its store goes down after three of them, so
    // it is stopped with messages stored, messages read but not stored, and messages not read.
    let failing = Arc::new(FlakyLog::failing_after(log.clone(), 3));
    let mut config = t.config();
    config.max_batch_messages = 4;
    let consumer = Consumer::start(failing.clone(), config, KafkaMetrics::default());
    let producing = {
        let t = t.clone();
        let rest = records[half..].to_vec();
        tokio::spawn(async move { t.produce(rest).await })
    };
    wait_until("the first consumer's store went down", || {
        failing.failed() >= 1
    })
    .await;
    consumer
        .stop()
        .await
        .expect("first consumer stopped cleanly");
    let stopped_at = all_events(log.as_ref()).await.len();
    let committed_at_stop = t.committed().await;
    let rest = producing.await.unwrap();

    let consumer = Consumer::start(log.clone(), t.config(), KafkaMetrics::default());
    wait_for_events(log.as_ref(), plan.total_events()).await;
    consumer
        .stop()
        .await
        .expect("second consumer stopped cleanly");

    assert!(
        stopped_at > 0 && stopped_at < plan.total_events(),
        "the first consumer was stopped mid-stream ({stopped_at} events stored)"
    );
    assert!(
        committed_at_stop.iter().flatten().count() > 0,
        "what the first consumer stored was committed: {committed_at_stop:?}"
    );
    plan.assert_stored_exactly_once_in_order(&all_events(log.as_ref()).await);
    let placed: Vec<_> = first.into_iter().chain(rest).collect();
    assert_eq!(t.committed().await, end_offsets(&placed, 2));
}

async fn a_crashed_consumer_is_replaced_without_loss_or_duplicates(log: Arc<dyn EventLog>) {
    let t = Topic::create("crash", 2).await;
    let plan = Plan::new(2, 120, 3);
    let records = plan.records();
    let placed = t.produce(records.clone()).await;
    let mut config = t.config();
    config.max_batch_messages = 4;
    let consumer = Consumer::start(log.clone(), config, KafkaMetrics::default());
    wait_for_events(log.as_ref(), plan.total_events() / 3).await;
    // No graceful stop: the task is dropped wherever it is, between an append and its
    // commit or not.
    consumer.task.abort();
    let _ = consumer.task.await;

    let consumer = Consumer::start(log.clone(), t.config(), KafkaMetrics::default());
    wait_for_events(log.as_ref(), plan.total_events()).await;
    // The first consumer may have stored every event before it was dropped, its last commits
    // lost with it: the replacement then stores nothing, but must re-read what was not
    // committed, find it stored and commit it.
    let end = end_offsets(&placed, 2);
    wait_until_async("the replacement to commit the end offsets", || async {
        t.committed().await == end
    })
    .await;
    consumer.stop().await.expect("replacement stopped cleanly");

    plan.assert_stored_exactly_once_in_order(&all_events(log.as_ref()).await);
    assert_eq!(t.committed().await, end);
}

async fn a_topic_consumed_again_from_the_start_stores_nothing_twice(log: Arc<dyn EventLog>) {
    let t = Topic::create("replay", 2).await;
    let plan = Plan::new(3, 40, 4);
    t.produce(plan.records()).await;
    let consumer = Consumer::start(log.clone(), t.config(), KafkaMetrics::default());
    wait_for_events(log.as_ref(), plan.total_events()).await;
    consumer.stop().await.expect("consumer stopped cleanly");

    // A new group starts at the beginning: every message is re-delivered, which is what a
    // crash before a commit does to the messages after the last commit.
    let metrics = KafkaMetrics::default();
    let config = t.config().with_group(testkit::unique_topic("other-group"));
    let consumer = Consumer::start(log.clone(), config, metrics.clone());
    let total = plan.total_events() as u64;
    wait_until("every message re-delivered", || {
        metrics.duplicate_events() >= total
    })
    .await;
    consumer.stop().await.expect("consumer stopped cleanly");

    assert_eq!(metrics.appended_events(), 0);
    assert_eq!(metrics.duplicate_events(), total);
    plan.assert_stored_exactly_once_in_order(&all_events(log.as_ref()).await);
}

async fn offsets_wait_for_the_store_and_failed_appends_are_retried_until_stored(
    log: Arc<dyn EventLog>,
) {
    let t = Topic::create("flaky", 1).await;
    let plan = Plan::new(2, 30, 3);
    let placed = t.produce(plan.records()).await;
    let flaky = Arc::new(FlakyLog::failing_after(log.clone(), 0));
    let metrics = KafkaMetrics::default();
    let consumer = Consumer::start(flaky.clone(), t.config(), metrics.clone());

    wait_until("appends failed several times", || flaky.failed() >= 4).await;
    // While the store refuses, nothing is stored and no offset moves.
    assert_eq!(t.committed().await, [None]);
    assert!(all_events(log.as_ref()).await.is_empty());
    assert!(metrics.append_retries() >= 4);

    flaky.heal();
    wait_for_events(log.as_ref(), plan.total_events()).await;
    consumer.stop().await.expect("consumer stopped cleanly");
    plan.assert_stored_exactly_once_in_order(&all_events(log.as_ref()).await);
    assert_eq!(
        metrics.refused_messages(),
        0,
        "a store error never dead-letters"
    );
    assert_eq!(t.committed().await, end_offsets(&placed, 1));
}

async fn a_topic_created_after_the_consumer_started_is_consumed(log: Arc<dyn EventLog>) {
    let brokers = testkit::brokers().await;
    let name = testkit::unique_topic("studio-test-late");
    let config = KafkaConsumerConfig::new(&brokers)
        .with_topic(&name)
        .with_group(format!("{name}-group"));
    let consumer = Consumer::start(log.clone(), config, KafkaMetrics::default());
    // The consumer is up before its topic: it creates its dead-letter topic, then waits.
    let dead_letters = format!("{name}.dead-letters");
    wait_until_async("the dead-letter topic exists", || async {
        testkit::topic_exists(&brokers, &dead_letters).await
    })
    .await;
    testkit::create_topic(&brokers, &name, 1).await;
    let producer = testkit::producer(&brokers);
    let record = TestRecord::new(
        "load_test_run-lt_late",
        stage("lt_late", 0, None).to_string(),
    );
    testkit::produce(&producer, &name, vec![record]).await;

    let events = wait_for_events(log.as_ref(), 1).await;
    consumer.stop().await.expect("consumer stopped cleanly");
    assert_eq!(stage_indexes(&events), [0]);
}

// --- helpers ------------------------------------------------------------------------------

/// Logs of the consumer and librdkafka, shown for a failing test (`RUST_LOG` overrides).
fn trace_to_test_output() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A topic of its own on the test broker, and a consumer group of its own for it.
#[derive(Clone)]
struct Topic {
    brokers: String,
    name: String,
    group: String,
    partitions: i32,
    producer: rdkafka::producer::FutureProducer,
}

impl Topic {
    async fn create(prefix: &str, partitions: i32) -> Self {
        let brokers = testkit::brokers().await;
        let name = testkit::unique_topic(&format!("studio-test-{prefix}"));
        testkit::create_topic(&brokers, &name, partitions).await;
        Self {
            producer: testkit::producer(&brokers),
            group: format!("{name}-group"),
            brokers,
            name,
            partitions,
        }
    }

    fn config(&self) -> KafkaConsumerConfig {
        let mut config = KafkaConsumerConfig::new(&self.brokers)
            .with_topic(&self.name)
            .with_group(&self.group);
        config.retry_initial = Duration::from_millis(20);
        config.retry_max = Duration::from_millis(200);
        config.statistics_interval = Duration::from_millis(500);
        config
    }

    fn dead_letters(&self) -> String {
        format!("{}.dead-letters", self.name)
    }

    async fn produce(&self, records: Vec<TestRecord>) -> Vec<(i32, i64)> {
        testkit::produce(&self.producer, &self.name, records).await
    }

    async fn committed(&self) -> Vec<Option<i64>> {
        testkit::committed_offsets(&self.brokers, &self.group, &self.name, self.partitions).await
    }
}

/// One past the last produced offset of each partition.
fn end_offsets(placed: &[(i32, i64)], partitions: i32) -> Vec<Option<i64>> {
    (0..partitions)
        .map(|p| {
            placed
                .iter()
                .filter(|(partition, _)| *partition == p)
                .map(|(_, offset)| offset + 1)
                .max()
        })
        .collect()
}

/// A consumer task and the sender of its shutdown signal.
struct Consumer {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), KafkaConsumerError>>,
}

impl Consumer {
    fn start(log: Arc<dyn EventLog>, config: KafkaConsumerConfig, metrics: KafkaMetrics) -> Self {
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(run_consumer(log, config, metrics, rx));
        Self { shutdown, task }
    }

    async fn stop(self) -> Result<(), KafkaConsumerError> {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the consumer stops when asked")
            .expect("the consumer task did not panic")
    }
}

/// The events a test publishes: `streams` load-test runs of `per_stream` stage_started events
/// each (stage_index 0, 1, …, so order is visible), keyed by stream, every `array_every`-th
/// message an array of up to three envelopes of the same stream.
struct Plan {
    streams: usize,
    per_stream: usize,
    array_every: usize,
}

impl Plan {
    fn new(streams: usize, per_stream: usize, array_every: usize) -> Self {
        Self {
            streams,
            per_stream,
            array_every,
        }
    }

    fn total_events(&self) -> usize {
        self.streams * self.per_stream
    }

    fn run_id(stream: usize) -> String {
        format!("lt_{stream}")
    }

    /// Messages interleaved across streams, in each stream's order.
    fn records(&self) -> Vec<TestRecord> {
        let mut next = vec![0usize; self.streams];
        let mut records = Vec::new();
        let mut message = 0usize;
        while next.iter().any(|n| *n < self.per_stream) {
            for (s, n) in next.iter_mut().enumerate() {
                if *n >= self.per_stream {
                    continue;
                }
                message += 1;
                let run = Self::run_id(s);
                let take = if message % self.array_every == 0 {
                    3
                } else {
                    1
                };
                let end = (*n + take).min(self.per_stream);
                let envelopes: Vec<Value> = (*n..end)
                    .map(|i| {
                        // Every other envelope carries the producer's own key.
                        let key = (i % 2 == 0).then(|| format!("{run}-{i}"));
                        stage(&run, i as u32, key.as_deref())
                    })
                    .collect();
                let value = if take == 1 {
                    envelopes[0].to_string()
                } else {
                    Value::Array(envelopes).to_string()
                };
                records.push(TestRecord::new(format!("load_test_run-{run}"), value));
                *n = end;
            }
        }
        records
    }

    /// Each stream holds exactly its stage indexes 0..per_stream, in order, with stream
    /// versions 1..=per_stream; positions are unique and increasing.
    fn assert_stored_exactly_once_in_order(&self, events: &[RecordedEvent]) {
        assert_eq!(
            events.len(),
            self.total_events(),
            "every event stored exactly once"
        );
        let mut by_stream: HashMap<&str, Vec<(u64, i64)>> = HashMap::new();
        for e in events {
            let index = e.payload["stage_index"].as_u64().unwrap();
            by_stream
                .entry(e.stream.as_str())
                .or_default()
                .push((index, e.stream_version));
        }
        assert_eq!(by_stream.len(), self.streams);
        for s in 0..self.streams {
            let stream = format!("load_test_run-{}", Self::run_id(s));
            let expected: Vec<(u64, i64)> = (0..self.per_stream)
                .map(|i| (i as u64, i as i64 + 1))
                .collect();
            assert_eq!(by_stream[stream.as_str()], expected, "order of {stream}");
        }
        let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        let ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
        assert_eq!(ids.len(), events.len());
    }
}

/// A `load_test.stage_started` envelope; `stage_index` numbers the events of a stream.
fn stage(run_id: &str, stage_index: u32, idempotency_key: Option<&str>) -> Value {
    let mut envelope = json!({
        "type": "load_test.stage_started",
        "occurred_at": "2026-11-24T10:00:00Z",
        "producer": "kafka-test",
        "payload": {"run_id": run_id, "stage_index": stage_index, "target_rps": 5.0},
    });
    if let Some(key) = idempotency_key {
        envelope["idempotency_key"] = json!(key);
    }
    envelope
}

fn stage_indexes(events: &[RecordedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.payload["stage_index"].as_u64().unwrap())
        .collect()
}

fn header(message: &OwnedMessage, key: &str) -> String {
    let headers = message.headers().expect("a dead letter has headers");
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .unwrap_or_else(|| panic!("no header {key}"))
}

async fn all_events(log: &dyn EventLog) -> Vec<RecordedEvent> {
    log.read_all(0, 1_000_000).await.expect("read the log")
}

/// Waits until the log holds at least `count` events and returns them all.
async fn wait_for_events(log: &dyn EventLog, count: usize) -> Vec<RecordedEvent> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let events = all_events(log).await;
        if events.len() >= count {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} for {count} events; the log holds {}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until_async<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An event log whose appends fail, as in a database outage, after its first `succeed`
/// appends and until it is healed.
struct FlakyLog {
    inner: Arc<dyn EventLog>,
    succeed: AtomicUsize,
    healthy: AtomicBool,
    failed: AtomicUsize,
}

impl FlakyLog {
    fn failing_after(inner: Arc<dyn EventLog>, succeed: usize) -> Self {
        Self {
            inner,
            succeed: AtomicUsize::new(succeed),
            healthy: AtomicBool::new(false),
            failed: AtomicUsize::new(0),
        }
    }

    fn heal(&self) {
        self.healthy.store(true, Ordering::SeqCst);
    }

    fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EventLog for FlakyLog {
    async fn append(&self, events: Vec<ValidatedEvent>) -> Result<Vec<Appended>, StoreError> {
        let lucky = self
            .succeed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !lucky && !self.healthy.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::NotStored(
                "injected: the database is down".into(),
            ));
        }
        self.inner.append(events).await
    }

    async fn read_all(
        &self,
        after_position: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after_position, limit).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, after_version, limit).await
    }

    async fn stream_version(&self, stream: &str) -> Result<i64, StoreError> {
        self.inner.stream_version(stream).await
    }

    async fn head(&self) -> Result<i64, StoreError> {
        self.inner.head().await
    }

    fn watch(&self) -> watch::Receiver<i64> {
        self.inner.watch()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn close(&self) {
        self.inner.close().await
    }
}
