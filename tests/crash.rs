//! Durability of acknowledged appends through `kill -9`, graceful SIGTERM, and start-up refusals,
//! against the real `studio` binary on both stores.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{event, read_log, studio, Server, EXECUTOR};

const CLIENTS: usize = 4;
const BATCH: usize = 50;

/// 4 clients post batches until the server dies; returns every acknowledged idempotency key.
async fn post_until_killed(base: String, acked: Arc<Mutex<Vec<String>>>, client_id: usize) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for batch_no in 0.. {
        let keys: Vec<String> = (0..BATCH)
            .map(|i| format!("c{client_id}-b{batch_no}-e{i}"))
            .collect();
        let body: Vec<_> = keys
            .iter()
            .map(|k| event(&format!("lt_{client_id}"), k))
            .collect();
        match client
            .post(format!("{base}/v1/events"))
            .bearer_auth(EXECUTOR)
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 201 => acked.lock().unwrap().extend(keys),
            Ok(r) => panic!(
                "unexpected answer {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(_) => return, // the server is gone: this batch was never acknowledged
        }
    }
}

async fn acknowledged_events_survive_kill_9(database_url: String) {
    let mut server = Server::start(&database_url).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(post_until_killed(server.base.clone(), acked.clone(), c)))
        .collect();
    // Let real traffic build up, then pull the plug mid-stream.
    while acked.lock().unwrap().len() < 2_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let server = Server::start(&database_url).await;
    let log = read_log(&server.base).await;
    let positions: Vec<i64> = log
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(
        positions,
        (1..=log.len() as i64).collect::<Vec<_>>(),
        "positions strictly increasing, no gaps"
    );
    let mut count_by_key: HashMap<&str, usize> = HashMap::new();
    for e in &log {
        *count_by_key
            .entry(e["idempotency_key"].as_str().unwrap())
            .or_default() += 1;
    }
    assert!(
        count_by_key.values().all(|n| *n == 1),
        "no event stored twice"
    );
    let lost: Vec<_> = acked
        .iter()
        .filter(|k| !count_by_key.contains_key(k.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert!(log.len() >= acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_kill_9_on_sqlite() {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    acknowledged_events_survive_kill_9(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_kill_9_on_postgres() {
    acknowledged_events_survive_kill_9(eventlog::testkit::postgres_database().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_appends_and_exits_cleanly() {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let mut server = Server::start(&url).await;
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..16)
        .map(|i| {
            let body: Vec<_> = (0..200)
                .map(|j| event("lt_term", &format!("t{i}-{j}")))
                .collect();
            client
                .post(format!("{}/v1/events", server.base))
                .bearer_auth(EXECUTOR)
                .json(&body)
                .send()
        })
        .collect();
    let in_flight = tokio::spawn(futures::future::join_all(requests));
    tokio::time::sleep(Duration::from_millis(5)).await;
    server.sigterm();
    let answers = in_flight.await.unwrap();
    let acked: usize = answers
        .iter()
        .filter(|r| matches!(r, Ok(r) if r.status().as_u16() == 201))
        .count();
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        status.success(),
        "serve exits 0 after SIGTERM, got {status}"
    );
    let server = Server::start(&url).await;
    let log = read_log(&server.base).await;
    assert!(
        log.len() >= acked * 200,
        "{} stored, {} acknowledged",
        log.len(),
        acked * 200
    );
}

#[test]
fn serve_refuses_to_start_without_tokens_and_names_the_variable() {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let out = studio()
        .arg("serve")
        .env("STUDIO_DATABASE_URL", &url)
        .env("STUDIO_ADMIN_TOKEN", "a")
        .env_remove("STUDIO_EXECUTOR_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("STUDIO_EXECUTOR_SECRET"), "{stderr}");
}

#[test]
fn a_bad_setting_is_an_error_that_names_it() {
    let out = studio()
        .arg("migrate")
        .env("STUDIO_DATABASE_URL", "mysql://nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("STUDIO_DATABASE_URL"));
}

#[test]
fn migrate_prepares_an_empty_database() {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let out = studio()
        .arg("migrate")
        .env("STUDIO_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrated"));
}
