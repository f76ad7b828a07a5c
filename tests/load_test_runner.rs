//! Load-test runs in both execution modes against the real `studio` binary: runner mode (each
//! run in its own `studio run-load-test` process, launched from
//! `STUDIO_LOAD_TEST_RUNNER_COMMAND`), a runner that dies, and a run left `running` by a
//! server killed with `kill -9`, which the restarted server ends with the reason.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{read_log, Server, ADMIN};

/// Runs on the built-in simulated provider `sim-fast` (~300 ms per dispatch, $0.02 each).
const VARIANT: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:sim-fast:exp:e1";

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(server: &Server) -> Self {
        Self {
            base: server.base.clone(),
            client: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let answer = self
            .client
            .post(format!("{}/admin/studio{path}", self.base))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    /// `None` for a 404 (e.g. a run the read model has not seen yet).
    async fn get(&self, path: &str) -> Option<Value> {
        let answer = self
            .client
            .get(format!("{}/admin/studio{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        if answer.status().as_u16() == 404 {
            return None;
        }
        Some(answer.error_for_status().unwrap().json().await.unwrap())
    }

    async fn register_variant(&self) {
        let (status, body) = self
            .post(
                "/variant-registry/variants",
                json!({"variant_id": VARIANT, "unit_cost_usd": 0.02}),
            )
            .await;
        assert!(status == 201 || status == 200, "{status} {body}");
    }

    /// Creates and starts a run of `duration_s` at `rps`; answers the start.
    async fn start_run(&self, duration_s: u64, rps: f64) -> (String, Value) {
        let (status, created) = self
            .post(
                "/load-test-runs",
                json!({
                    "name": "runner test",
                    "effect_revision_id": "er1",
                    "environment_id": "prod",
                    "variant_id": VARIANT,
                    "input_fixture": "s3://fixtures/in.png",
                    "stages": [{"name": "s1", "duration_s": duration_s, "target_rps": rps}],
                }),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let run_id = created["run_id"].as_str().unwrap().to_string();
        let (status, started) = self
            .post(&format!("/load-test-runs/{run_id}/start"), json!({}))
            .await;
        assert_eq!(status, 202, "{started}");
        (run_id, started)
    }

    /// Polls the run until `done` holds for it (60 s at most).
    async fn wait_run(&self, run_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let run = self
                .get(&format!("/load-test-runs/{run_id}"))
                .await
                .unwrap_or(Value::Null);
            if done(&run) {
                return run;
            }
            assert!(Instant::now() < deadline, "run never {what}: {run:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The `run_started` event of `run_id`, read from the log.
async fn run_started(base: &str, run_id: &str) -> Value {
    read_log(base)
        .await
        .into_iter()
        .find(|e| e["type"] == "load_test.run_started" && e["payload"]["run_id"] == run_id)
        .expect("a run_started event")
}

fn process_exists(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_mode_executes_each_run_in_its_own_process_and_a_cancel_reaches_it() {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let runner = format!("{} run-load-test", env!("CARGO_BIN_EXE_studio"));
    let server = Server::start_with(&url, &[("STUDIO_LOAD_TEST_RUNNER_COMMAND", &runner)]).await;
    let api = Api::new(&server);
    api.register_variant().await;

    // A short run executes to the end in the runner process.
    let (run_id, started) = api.start_run(2, 5.0).await;
    assert_eq!(started["mode"], "runner", "{started}");
    assert_eq!(started["runner_fallback"], Value::Null, "{started}");
    let run = api
        .wait_run(&run_id, "completed", |r| r["status"] == "completed")
        .await;
    assert_eq!(run["mode"], "runner");
    assert_eq!(run["totals"]["dispatched"], 10, "{run:#}");
    let started_event = run_started(&server.base, &run_id).await;
    let pid = started_event["payload"]["executor"]["pid"]
        .as_u64()
        .unwrap();
    assert_ne!(
        pid,
        u64::from(server.child.id()),
        "executed in another process"
    );
    let log = read_log(&server.base).await;
    assert!(
        !log.iter().any(|e| e["type"] == "load_test.runner_fallback"),
        "no fallback in runner mode"
    );
    assert!(
        log.iter()
            .filter(|e| e["payload"]["run_id"] == run_id.as_str())
            .filter(|e| e["type"] == "load_test.dispatch_completed")
            .all(|e| e["producer"] == "services.executor"),
        "the runner published the dispatches through the same log"
    );

    // A long run is cancelled through the server; the runner process sees it and exits.
    let (run_id, _) = api.start_run(120, 2.0).await;
    api.wait_run(&run_id, "dispatching", |r| {
        r["totals"]["dispatched"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let pid = run_started(&server.base, &run_id).await["payload"]["executor"]["pid"]
        .as_u64()
        .unwrap();
    assert!(process_exists(pid));
    let (status, cancelled) = api
        .post(
            &format!("/load-test-runs/{run_id}/cancel"),
            json!({"reason": "enough"}),
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_exists(pid) {
        assert!(Instant::now() < deadline, "the runner process did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = api
        .wait_run(&run_id, "cancelled", |r| r["status"] == "cancelled")
        .await;
    assert!(
        run["totals"]["dispatched"].as_u64().unwrap() < 240,
        "stopped long before its plan ended: {run:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_process_that_dies_ends_its_run_with_the_exit_status() {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    // The shell exits 3 at once: `exit 3 # --run-id <id>`.
    let server = Server::start_with(&url, &[("STUDIO_LOAD_TEST_RUNNER_COMMAND", "exit 3 #")]).await;
    let api = Api::new(&server);
    api.register_variant().await;
    let (run_id, started) = api.start_run(60, 1.0).await;
    assert_eq!(started["mode"], "runner");
    let run = api
        .wait_run(&run_id, "ended", |r| r["status"] == "cancelled")
        .await;
    let reason = run["stop_reason"].as_str().unwrap();
    assert!(
        reason.contains("runner process") && reason.contains("exit status: 3"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_mode_appends_the_runner_fallback() {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let server = Server::start(&url).await;
    let api = Api::new(&server);
    api.register_variant().await;
    let (run_id, started) = api.start_run(1, 4.0).await;
    assert_eq!(started["mode"], "inline");
    assert!(started["runner_fallback"]
        .as_str()
        .unwrap()
        .contains("STUDIO_LOAD_TEST_RUNNER_COMMAND"));
    let run = api
        .wait_run(&run_id, "completed", |r| r["status"] == "completed")
        .await;
    assert_eq!(run["totals"]["dispatched"], 4, "{run:#}");
    let started_event = run_started(&server.base, &run_id).await;
    assert_eq!(
        started_event["payload"]["executor"]["pid"]
            .as_u64()
            .unwrap(),
        u64::from(server.child.id()),
        "inline runs execute in the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_left_running_by_a_killed_server_is_ended_on_restart() {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let mut server = Server::start(&url).await;
    let api = Api::new(&server);
    api.register_variant().await;
    let (run_id, _) = api.start_run(120, 2.0).await;
    api.wait_run(&run_id, "dispatching", |r| {
        r["totals"]["dispatched"].as_u64().unwrap_or(0) > 0
    })
    .await;
    server.kill9();

    let server = Server::start(&url).await;
    let api = Api::new(&server);
    let run = api
        .wait_run(&run_id, "ended after the restart", |r| {
            r["status"] == "cancelled"
        })
        .await;
    let reason = run["stop_reason"].as_str().unwrap();
    assert!(
        reason.contains("studio:recovery") && reason.contains("is gone"),
        "{reason}"
    );
    // A run that ended normally before the restart is left as it was.
    let (done, _) = api.start_run(1, 2.0).await;
    api.wait_run(&done, "completed", |r| r["status"] == "completed")
        .await;
}
