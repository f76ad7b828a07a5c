//! A real Kafka-compatible broker for tests: the one `STUDIO_TEST_KAFKA_BROKERS` names, or a
//! tansu 0.6.0 broker (SQLite storage) started once per test process on a free port in a
//! temporary directory and stopped, with its directory removed, when the process exits.
//! Tests never skip: when no broker can be had they fail and say how to install one.
//!
//! tansu creates no topic by itself: [`create_topic`] makes each one, and [`unique_topic`]
//! names them so tests sharing a broker never meet. Never delete topics there: tansu's
//! DeleteTopics deletes every topic.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Set to `host:port` of a running broker to use it instead of starting tansu.
pub const BROKERS_VAR: &str = "STUDIO_TEST_KAFKA_BROKERS";
/// Set to a tansu binary to use it instead of the cached install.
pub const TANSU_BIN_VAR: &str = "STUDIO_TANSU_BIN";
/// How to install the broker, as `.ci/kafka.sh` and SERVICES.md do it.
pub const TANSU_INSTALL: &str = "CARGO_PROFILE_DEV_DEBUG=0 cargo install tansu --version 0.6.0 \
     --locked --debug --no-default-features --features libsql --root ~/.cache/tansu-0.6.0-libsql";

static BROKERS: OnceCell<String> = OnceCell::const_new();

/// The test broker's `host:port`, starting it on first use.
pub async fn brokers() -> String {
    BROKERS
        .get_or_init(|| async {
            match std::env::var(BROKERS_VAR) {
                Ok(brokers) if !brokers.trim().is_empty() => brokers,
                _ => tokio::task::spawn_blocking(start_tansu)
                    .await
                    .expect("starting tansu panicked"),
            }
        })
        .await
        .clone()
}

/// A topic name no other test uses: `<prefix>-<uuid>`.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Creates `topic` with `partitions` partitions; one that already exists is fine.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        client_config(brokers).create().expect("kafka admin client");
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .unwrap_or_else(|e| panic!("create topic {topic} on {brokers}: {e}"));
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => panic!("create topic {name} on {brokers}: {code:?}"),
        }
    }
}

/// Whether the broker knows `topic` (with at least one partition).
pub async fn topic_exists(brokers: &str, topic: &str) -> bool {
    let brokers = brokers.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = client_config(&brokers)
            .create()
            .expect("kafka metadata reader");
        consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map(|m| {
                m.topics()
                    .iter()
                    .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            })
            .unwrap_or(false)
    })
    .await
    .expect("metadata look-up panicked")
}

/// One message to produce.
#[derive(Debug, Clone, Default)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// None: the producer's partitioner picks one from the key.
    pub partition: Option<i32>,
    pub headers: Vec<(String, String)>,
}

impl TestRecord {
    /// A message with this key and value, partitioned by the key.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// The same message, written to `partition`.
    pub fn to_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn with_header(mut self, key: &str, value: &str) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }
}

/// A producer for tests: every write acknowledged by the broker before `produce` returns.
pub fn producer(brokers: &str) -> FutureProducer {
    client_config(brokers)
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("kafka producer")
}

/// Produces `records` in order, each acknowledged before the next is sent (so their order in
/// a partition is theirs); returns each one's `(partition, offset)`.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = TestRecord>,
) -> Vec<(i32, i64)> {
    let mut placed = Vec::new();
    for record in records {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_str()),
            });
        }
        let mut future: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = &record.key {
            future = future.key(key);
        }
        if let Some(value) = &record.value {
            future = future.payload(value);
        }
        if let Some(partition) = record.partition {
            future = future.partition(partition);
        }
        let delivery = producer
            .send(future, Timeout::After(Duration::from_secs(10)))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
        placed.push((delivery.partition, delivery.offset));
    }
    placed
}

/// Reads `partitions` of `topic` from the beginning (no consumer group) until `count` messages
/// arrived or `timeout` passed, and returns what arrived.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    count: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = client_config(brokers)
        .set("group.id", "studio-testkit-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("kafka reader");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&assignment).expect("assign partitions");
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while messages.len() < count {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break,
            Ok(Ok(message)) => messages.push(message.detach()),
            Ok(Err(err)) => eprintln!("reading {topic}: {err}"),
        }
    }
    messages
}

/// The committed offsets of `group` on `topic`'s `partitions` (`None` where nothing is
/// committed), as the broker reports them.
pub async fn committed_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<Option<i64>> {
    let brokers = brokers.to_string();
    let group = group.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = client_config(&brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("kafka offsets reader");
        let mut query = TopicPartitionList::new();
        for partition in 0..partitions {
            query.add_partition(&topic, partition);
        }
        let committed = consumer
            .committed_offsets(query, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(|partition| {
                match committed
                    .find_partition(&topic, partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(n)) => Some(n),
                    _ => None,
                }
            })
            .collect()
    })
    .await
    .expect("committed offsets panicked")
}

fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// Where the tansu binary is: [`TANSU_BIN_VAR`], or the cached install under `$HOME`.
pub fn tansu_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os(TANSU_BIN_VAR) {
        return PathBuf::from(bin);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/tansu-0.6.0-libsql/bin/tansu")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts tansu under a watchdog shell that stops it and removes its directory when this test
/// process exits, so nothing is left behind.
fn start_tansu() -> String {
    let bin = tansu_bin();
    assert!(
        bin.exists(),
        "no Kafka-compatible broker for the tests: {} is missing and {BROKERS_VAR} is not set. \
         Install tansu with `{TANSU_INSTALL}` (about 5 minutes), or point {BROKERS_VAR} at a \
         running broker.",
        bin.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("studio-tansu-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let script = format!(
        "cd {dir} || exit 1\n\
         {bin} broker --listener-url {url} --advertised-listener-url {url} \
           --storage-engine sqlite://tansu.db >log 2>&1 &\n\
         broker=$!\n\
         while kill -0 {pid} 2>/dev/null && kill -0 $broker 2>/dev/null; do sleep 1; done\n\
         kill $broker 2>/dev/null; wait $broker 2>/dev/null\n\
         cd / && rm -rf {dir}\n",
        dir = dir.display(),
        bin = bin.display(),
        pid = std::process::id(),
    );
    // The watchdog outlives this function on purpose: it stops the broker when the test
    // process exits, so it is never waited for.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir("/")
        // tansu reads its settings from these too; ours are on the command line.
        .env_remove("LISTENER_URL")
        .env_remove("ADVERTISED_LISTENER_URL")
        .env_remove("STORAGE_ENGINE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the tansu watchdog");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            panic!("tansu did not start on port {port}; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    format!("127.0.0.1:{port}")
}
