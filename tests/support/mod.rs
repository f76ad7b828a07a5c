//! Starts the real `studio` binary for end-to-end tests.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "test-admin-token";
pub const EXECUTOR: &str = "test-executor-secret";

pub struct Server {
    pub child: Child,
    pub base: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn studio() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_studio"));
    cmd.env_remove("STUDIO_CONFIG").env("RUST_LOG", "warn");
    cmd
}

impl Server {
    /// Starts `studio serve` on `database_url` and waits until it answers /readyz.
    pub async fn start(database_url: &str) -> Self {
        Self::start_with(database_url, &[]).await
    }

    /// Like [`Server::start`], with extra environment variables.
    pub async fn start_with(database_url: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = studio()
            .envs(env.iter().copied())
            .arg("serve")
            .env("STUDIO_DATABASE_URL", database_url)
            .env("STUDIO_LISTEN", format!("127.0.0.1:{port}"))
            .env("STUDIO_ADMIN_TOKEN", ADMIN)
            .env("STUDIO_EXECUTOR_SECRET", EXECUTOR)
            .stdin(Stdio::null())
            .spawn()
            .expect("start studio serve");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "studio serve did not become ready at {}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every event in the log, read page by page through `GET /v1/events`.
pub async fn read_log(base: &str) -> Vec<serde_json::Value> {
    let client = reqwest::Client::new();
    let mut after = 0i64;
    let mut all = Vec::new();
    loop {
        let page: serde_json::Value = client
            .get(format!(
                "{base}/v1/events?after_position={after}&limit=1000"
            ))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            return all;
        }
        after = events.last().unwrap()["position"].as_i64().unwrap();
        all.extend(events);
    }
}

pub fn event(run_id: &str, key: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "load_test.run_completed",
        "occurred_at": "2026-11-24T10:00:00Z",
        "producer": "crash-test",
        "idempotency_key": key,
        "payload": {"run_id": run_id}
    })
}
