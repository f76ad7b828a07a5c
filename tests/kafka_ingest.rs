//! The Kafka way in, through the real `studio serve`: with `STUDIO_KAFKA_BROKERS` set, envelopes
//! produced to the topic are appended to the log exactly like `POST /v1/events`, and a bad one
//! goes to the dead-letter topic without blocking the ones after it.

mod support;

use ingest::kafka::testkit::{self, TestRecord};
use serde_json::json;
use std::time::{Duration, Instant};
use support::{read_log, Server};

fn envelope(run_id: &str, key: &str) -> serde_json::Value {
    json!({
        "type": "load_test.run_completed",
        "occurred_at": "2026-11-24T10:00:00Z",
        "producer": "kafka-e2e",
        "idempotency_key": key,
        "payload": {"run_id": run_id}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_appends_what_is_produced_to_its_topic() {
    let brokers = testkit::brokers().await;
    let topic = testkit::unique_topic("studio-e2e");
    testkit::create_topic(&brokers, &topic, 2).await;
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let group = format!("{topic}-group");
    let server = Server::start_with(
        &url,
        &[
            ("STUDIO_KAFKA_BROKERS", &brokers),
            ("STUDIO_KAFKA_TOPIC", &topic),
            ("STUDIO_KAFKA_GROUP", &group),
        ],
    )
    .await;

    let producer = testkit::producer(&brokers);
    let mut records = vec![
        TestRecord::new("lt_a", envelope("lt_a", "k1").to_string()),
        TestRecord::new(
            "lt_b",
            json!([envelope("lt_b", "k2"), envelope("lt_b", "k3")]).to_string(),
        ),
        TestRecord::new("lt_c", "{not json"),
        TestRecord::new("lt_a", envelope("lt_a", "k4").to_string()),
    ];
    // The same message twice (a producer's retry): stored once.
    records.push(TestRecord::new("lt_a", envelope("lt_a", "k1").to_string()));
    testkit::produce(&producer, &topic, records).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = read_log(&server.base).await;
        if log.len() >= 4 {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "only {} events arrived: {log:#?}",
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut keys: Vec<&str> = log
        .iter()
        .map(|e| e["idempotency_key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["k1", "k2", "k3", "k4"],
        "each envelope once, the bad one not at all"
    );

    let dead = testkit::read_topic(
        &brokers,
        &format!("{topic}{}", ingest::kafka::DEAD_LETTER_SUFFIX),
        ingest::kafka::KafkaConsumerConfig::new(brokers.clone()).dead_letter_partitions,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dead.len(), 1, "the malformed message is dead-lettered");
}
