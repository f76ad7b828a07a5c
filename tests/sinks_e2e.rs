//! The sinks as `studio serve` composes them, over real sockets: the real binary on SQLite, the
//! CloudWatch emulator (LocalStack, `sinks::cloudwatch::testkit`), and the CLI on the same
//! database.
//!
//! - The seed's warn/critical events, driven through the product's own commands (inline
//!   load-test runs, a cancel, routing apply and rollback, an alarm published to `/v1/events`),
//!   become one action log per kind whose instructions carry the real ids; the instructions'
//!   own `curl` lines are executed to prove they work. Filters, acknowledgement (API and CLI),
//!   sink status, log events in `/studio/action-logs`, the dashboard and the run's alarm.
//! - The loop closed through the binary: the run's alarm set to ALARM in CloudWatch stops the
//!   run with that alarm as the reason and pages a critical action log.
//! - Without CloudWatch, serve still writes action logs.

mod support;

use serde_json::{json, Value};
use sinks::cloudwatch::testkit::{self, LocalStack};
use sinks::cloudwatch::{CloudWatchClients, CloudWatchSettings};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{read_log, studio, Server, ADMIN, EXECUTOR};

/// Variants on the built-in simulated providers (`src/app.rs` `default_providers`).
const FAST: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:sim-fast:exp:e1";
const FLAKY: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:sim-flaky:exp:e1";
const ROUTING_SUBJECT: &str = "routing-er1:render";
/// Generous: a 2-core machine shared with builds.
const DEADLINE: Duration = Duration::from_secs(90);

/// A CloudWatch configuration of this test's own (log stream, alarm prefix, dashboard), so
/// tests sharing one emulator never see or reconcile away each other's data, and a
/// `studio.toml` with it and a one-second sink tick.
struct CloudWatch {
    endpoint: String,
    settings: CloudWatchSettings,
    clients: CloudWatchClients,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl CloudWatch {
    async fn new() -> Self {
        let endpoint = tokio::task::spawn_blocking(LocalStack::endpoint)
            .await
            .expect("a CloudWatch emulator");
        let mut settings = testkit::settings(&endpoint);
        assert!(settings.alarm_prefix.starts_with("studio-"));
        settings.dashboard_name = format!("studio-pipeline-{}", settings.log_stream);
        settings.tick_interval_s = 1;
        settings.alarm_calls_per_second = 10;
        let clients = testkit::clients(&settings).await;
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("studio.toml");
        // What an operator would write; the endpoint, credentials and region come from the
        // environment (STUDIO_CLOUDWATCH_ENDPOINT and the standard AWS chain).
        std::fs::write(
            &config_path,
            format!(
                "[cloudwatch]\nlog_stream = {:?}\nalarm_prefix = {:?}\ndashboard_name = {:?}\n\
                 tick_interval_s = 1\nalarm_calls_per_second = 10\noperation_timeout_s = 10\n",
                settings.log_stream, settings.alarm_prefix, settings.dashboard_name
            ),
        )
        .unwrap();
        Self {
            endpoint,
            settings,
            clients,
            config_path,
            _dir: dir,
        }
    }

    /// The environment `studio serve` and the CLI get.
    fn env(&self, artifacts: &std::path::Path) -> Vec<(String, String)> {
        vec![
            (
                "STUDIO_CONFIG".into(),
                self.config_path.display().to_string(),
            ),
            ("STUDIO_CLOUDWATCH_ENDPOINT".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            (
                "STUDIO_ARTIFACT_DIR".into(),
                artifacts.display().to_string(),
            ),
        ]
    }

    fn run_alarm(&self, run_id: &str) -> String {
        format!(
            "{}load-test-failure-rate-{run_id}",
            self.settings.alarm_prefix
        )
    }

    /// Alarms under this test's prefix (a prefix beginning `studio-`), by name.
    async fn alarms(&self) -> Vec<(String, Option<f64>, Option<i32>, Option<i32>)> {
        let page = self
            .clients
            .cloudwatch
            .describe_alarms()
            .alarm_name_prefix(&self.settings.alarm_prefix)
            .send()
            .await
            .expect("DescribeAlarms");
        page.metric_alarms()
            .iter()
            .map(|a| {
                (
                    a.alarm_name().unwrap_or_default().to_string(),
                    a.threshold(),
                    a.period(),
                    a.evaluation_periods(),
                )
            })
            .collect()
    }

    async fn wait_alarm(&self, name: &str, present: bool) -> Option<(f64, i32, i32)> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let alarms = self.alarms().await;
            let found = alarms.iter().find(|a| a.0 == name);
            if found.is_some() == present {
                return found.map(|a| (a.1.unwrap(), a.2.unwrap(), a.3.unwrap()));
            }
            assert!(
                Instant::now() < deadline,
                "alarm {name} never became {}: {alarms:?}",
                if present { "present" } else { "absent" }
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_alarm_state(&self, name: &str, state: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let page = self
                .clients
                .cloudwatch
                .describe_alarms()
                .alarm_names(name)
                .send()
                .await
                .expect("DescribeAlarms");
            let now = page
                .metric_alarms()
                .first()
                .and_then(|a| a.state_value())
                .map(|s| s.as_str().to_string());
            if now.as_deref() == Some(state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "alarm {name} never reached {state}: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every message in this test's log stream of `/studio/action-logs`, parsed. FilterLogEvents
    /// ignores filter patterns in LocalStack: the test names its own stream and filters itself.
    async fn log_messages(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let Ok(page) = self
                .clients
                .logs
                .filter_log_events()
                .log_group_name(&self.settings.log_group)
                .log_stream_names(&self.settings.log_stream)
                .set_next_token(token.clone())
                .send()
                .await
            else {
                return out; // the group or stream does not exist yet
            };
            out.extend(
                page.events()
                    .iter()
                    .filter_map(|e| e.message())
                    .filter_map(|m| serde_json::from_str::<Value>(m).ok()),
            );
            match page.next_token() {
                Some(t) if !t.is_empty() && Some(t) != token.as_deref() => {
                    token = Some(t.to_string())
                }
                _ => return out,
            }
        }
    }
}

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

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.client
                .post(format!("{}/admin/studio{path}", self.base))
                .bearer_auth(ADMIN)
                .json(&body),
        )
        .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(
            self.client
                .get(format!("{}/admin/studio{path}", self.base))
                .bearer_auth(ADMIN),
        )
        .await
    }

    async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Publishes one envelope as a service does (executor secret); answers its position.
    async fn publish(&self, envelope: Value) -> i64 {
        let (status, body) = self
            .send(
                self.client
                    .post(format!("{}/v1/events", self.base))
                    .bearer_auth(EXECUTOR)
                    .json(&envelope),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["position"].as_i64().unwrap()
    }

    async fn register(&self, variant_id: &str, unit_cost_usd: f64) {
        let (status, body) = self
            .post(
                "/variant-registry/variants",
                json!({"variant_id": variant_id, "unit_cost_usd": unit_cost_usd}),
            )
            .await;
        assert!(status == 201 || status == 200, "{status} {body}");
    }

    /// Creates and starts a long inline run on `sim-fast` (1 dispatch/s for 10 minutes, $12
    /// at most, under the approval threshold); answers its id and the start.
    async fn start_long_run(&self, name: &str) -> (String, Value) {
        self.start_run(name, 600).await
    }

    /// Creates and starts an inline run on `sim-fast` at 1 dispatch/s for `duration_s`.
    async fn start_run(&self, name: &str, duration_s: u64) -> (String, Value) {
        let (status, created) = self
            .post(
                "/load-test-runs",
                json!({
                    "name": name,
                    "effect_revision_id": "er1",
                    "environment_id": "prod",
                    "variant_id": FAST,
                    "input_fixture": "s3://fixtures/in.png",
                    "stages": [{"name": "soak", "duration_s": duration_s, "target_rps": 1.0}],
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

    async fn wait_run(&self, run_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_, run) = self.get(&format!("/load-test-runs/{run_id}")).await;
            if done(&run) {
                return run;
            }
            assert!(Instant::now() < deadline, "run never {what}: {run:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /action-logs?{query}` once the action-log sink has caught up to the log's head.
    async fn action_logs(&self, query: &str) -> Vec<Value> {
        let head = read_log(&self.base)
            .await
            .last()
            .map_or(0, |e| e["position"].as_i64().unwrap());
        let sep = if query.is_empty() { "" } else { "&" };
        let page = self
            .get_ok(&format!("/action-logs?min_position={head}{sep}{query}"))
            .await;
        assert!(page["as_of_position"].as_i64().unwrap() >= head, "{page}");
        page["action_logs"].as_array().unwrap().clone()
    }

    /// Polls `GET /action-logs?{query}` until `done` holds.
    async fn wait_action_logs(
        &self,
        query: &str,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let logs = self.get_ok(&format!("/action-logs?{query}")).await["action_logs"]
                .as_array()
                .unwrap()
                .clone();
            if done(&logs) {
                return logs;
            }
            assert!(Instant::now() < deadline, "never {what}: {logs:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Executes the `curl` line of `instructions` whose URL contains `fragment`, as an operator
    /// would paste it (`$STUDIO_URL` is this server, the token is the admin's).
    async fn run_curl(&self, instructions: &str, fragment: &str) -> (u16, Value) {
        let line = instructions
            .lines()
            .find(|l| l.contains("curl") && l.contains(fragment))
            .unwrap_or_else(|| panic!("no curl for {fragment} in:\n{instructions}"));
        let url = line
            .split_whitespace()
            .find(|w| w.contains("$STUDIO_URL"))
            .unwrap()
            .trim_matches('"')
            .replace("$STUDIO_URL", &self.base);
        let body: Option<Value> = line.split_once(" -d '").map(|(_, rest)| {
            let json = rest.trim_end().strip_suffix('\'').unwrap();
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
        });
        let request = if line.contains("-X POST") {
            self.client
                .post(url)
                .json(&body.unwrap_or_else(|| json!({})))
        } else {
            self.client.get(url)
        };
        self.send(request.bearer_auth(ADMIN)).await
    }
}

/// The JSON body of the curl line naming `fragment` (e.g. the rollback's expected version).
fn curl_body(instructions: &str, fragment: &str) -> Value {
    let line = instructions
        .lines()
        .find(|l| l.contains("curl") && l.contains(fragment))
        .unwrap_or_else(|| panic!("no curl for {fragment} in:\n{instructions}"));
    let (_, rest) = line.split_once(" -d '").expect("a body");
    serde_json::from_str(rest.trim_end().strip_suffix('\'').unwrap()).unwrap()
}

fn only<'a>(logs: &'a [Value], kind: &str, subject: &str) -> &'a Value {
    let found: Vec<&Value> = logs
        .iter()
        .filter(|l| l["kind"] == kind && l["subject"] == subject)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} entry on {subject}: {logs:#?}");
    found[0]
}

fn ids(logs: &[Value]) -> BTreeSet<String> {
    logs.iter()
        .map(|l| l["action_log_id"].as_str().unwrap().to_string())
        .collect()
}

fn alarm_envelope(alarm_name: &str, new_state: &str, key: &str) -> Value {
    json!({
        "type": "ops.alarm_state_changed",
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "producer": "staging-monitor",
        "idempotency_key": key,
        "payload": {
            "alarm_name": alarm_name,
            "old_state": "OK",
            "new_state": new_state,
            "reason": "Threshold Crossed: CPU above 95% for 5 datapoints"
        }
    })
}

/// Runs a CLI command against the server's database; answers (success, stdout, stderr).
fn cli(env: &[(String, String)], database_url: &str, args: &[&str]) -> (bool, String, String) {
    let out = studio()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("STUDIO_DATABASE_URL", database_url)
        .args(args)
        .output()
        .expect("run studio");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_and_critical_events_become_action_logs_with_working_instructions_and_reach_cloudwatch(
) {
    let cw = CloudWatch::new().await;
    let (url, dir) = eventlog::testkit::sqlite_url();
    let env = cw.env(dir.path());
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start_with(&url, &env_refs).await;
    let api = Api::new(&server);
    api.register(FAST, 0.02).await;
    api.register(FLAKY, 0.003).await;

    // An inline run (no runner configured): load_test.runner_fallback (warn); while it runs,
    // CloudWatch has its failure-rate alarm at the stop condition, 20 % over 10 one-minute periods.
    let (run_id, started) = api.start_long_run("sinks e2e").await;
    assert_eq!(started["mode"], "inline", "{started}");
    let run_alarm = cw.run_alarm(&run_id);
    let (threshold, period, periods) = cw.wait_alarm(&run_alarm, true).await.unwrap();
    assert_eq!((threshold, period, periods), (0.2, 60, 10));
    let described = cw
        .clients
        .cloudwatch
        .describe_alarms()
        .alarm_names(&run_alarm)
        .send()
        .await
        .expect("DescribeAlarms");
    let description = described.metric_alarms()[0]
        .alarm_description()
        .unwrap_or_default();
    assert!(
        description.contains(&format!("/admin/studio/load-test-runs/{run_id}/cancel")),
        "the alarm says how to cancel its run: {description}"
    );
    let fallback_logs = api
        .wait_action_logs("kind=runner_fallback", "a runner_fallback entry", |l| {
            !l.is_empty()
        })
        .await;
    let fallback = only(
        &fallback_logs,
        "runner_fallback",
        &format!("load_test_run-{run_id}"),
    );
    assert_eq!(fallback["severity"], "warn");
    let instructions = fallback["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("STUDIO_LOAD_TEST_RUNNER_COMMAND"),
        "{instructions}"
    );

    // The cancel in its instructions, executed as written: load_test.run_cancelled (warn), and
    // the ended run's alarm is reconciled away.
    let (status, cancelled) = api
        .run_curl(instructions, &format!("/load-test-runs/{run_id}/cancel"))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    api.wait_run(&run_id, "cancelled", |r| r["status"] == "cancelled")
        .await;
    cw.wait_alarm(&run_alarm, false).await;

    // Routing: a first binding, a change (grouped into the same entry), and the rollback its
    // instructions give, with the binding's current expected_version.
    let scope = json!({"effect_revision_id": "er1", "stage": "render"});
    let apply = |variant: &str, expected: i64| {
        let mut body = scope.clone();
        body["variant_id"] = variant.into();
        body["expected_version"] = expected.into();
        body["reason"] = "benchmark winner".into();
        body
    };
    let (status, body) = api.post("/routing/apply", apply(FAST, 0)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.post("/routing/apply", apply(FLAKY, 1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["binding"]["version"], 2, "{body}");
    let logs = api.action_logs("kind=routing_binding_applied").await;
    let applied = only(&logs, "routing_binding_applied", ROUTING_SUBJECT);
    assert_eq!(applied["severity"], "warn");
    assert_eq!(applied["occurrences"], 2, "{applied:#}");
    let instructions = applied["instructions"].as_str().unwrap();
    let rollback = curl_body(instructions, "/routing/rollback");
    let bindings = api
        .get_ok("/routing/bindings?effect_revision_id=er1&stage=render")
        .await;
    assert_eq!(
        rollback["expected_version"], bindings["bindings"][0]["version"],
        "the rollback names the binding's current version: {bindings:#}\n{instructions}"
    );
    assert_eq!(rollback["expected_version"], 2);
    assert!(
        instructions.contains(FLAKY) && instructions.contains(FAST),
        "{instructions}"
    );
    let (status, rolled) = api.run_curl(instructions, "/routing/rollback").await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["binding"]["variant_id"], FAST, "{rolled}");
    assert_eq!(rolled["binding"]["version"], 3, "{rolled}");
    let rollback_position = rolled["position"].as_i64().unwrap();

    // A critical infrastructure alarm, published by a monitor: ops.alarm_state_changed (critical).
    let monitor_alarm = format!("staging-rds-cpu-{}", &run_id[3..15]);
    api.publish(alarm_envelope(
        &monitor_alarm,
        "ALARM",
        &format!("{monitor_alarm}@1"),
    ))
    .await;

    // One entry per kind, severity from the catalogue, instructions with the real ids.
    let logs = api.action_logs("").await;
    let run_subject = format!("load_test_run-{run_id}");
    let fallback = only(&logs, "runner_fallback", &run_subject).clone();
    let cancelled = only(&logs, "run_cancelled", &run_subject).clone();
    let applied = only(&logs, "routing_binding_applied", ROUTING_SUBJECT).clone();
    let rolled_back = only(&logs, "routing_binding_rolled_back", ROUTING_SUBJECT).clone();
    let alarm = only(&logs, "alarm", &format!("ops-{monitor_alarm}")).clone();
    for (entry, severity) in [
        (&fallback, "warn"),
        (&cancelled, "warn"),
        (&applied, "warn"),
        (&rolled_back, "warn"),
        (&alarm, "critical"),
    ] {
        assert_eq!(entry["severity"], severity, "{entry:#}");
        assert_eq!(entry["acknowledged"], false, "{entry:#}");
        let text = entry["instructions"].as_str().unwrap();
        let id = entry["action_log_id"].as_str().unwrap();
        assert!(
            text.contains(&format!("/admin/studio/action-logs/{id}/acknowledge")),
            "{text}"
        );
    }
    let text = cancelled["instructions"].as_str().unwrap();
    assert!(
        text.contains(&format!("/admin/studio/load-test-runs/{run_id}")),
        "{text}"
    );
    assert!(
        text.contains("runner unavailable; inline load not acceptable"),
        "{text}"
    );
    let text = rolled_back["instructions"].as_str().unwrap();
    let reapply = curl_body(text, "/routing/apply");
    assert_eq!(reapply["expected_version"], 3, "{text}");
    assert_eq!(reapply["variant_id"], FLAKY, "{text}");
    let text = alarm["instructions"].as_str().unwrap();
    assert!(
        text.contains(&monitor_alarm) && text.contains("ALARM"),
        "{text}"
    );

    // Filters.
    let critical = api.action_logs("severity=critical").await;
    assert!(
        critical.iter().all(|l| l["severity"] == "critical"),
        "{critical:#?}"
    );
    assert!(ids(&critical).contains(alarm["action_log_id"].as_str().unwrap()));
    assert!(!ids(&critical).contains(fallback["action_log_id"].as_str().unwrap()));
    let since = api
        .action_logs(&format!("since_position={rollback_position}"))
        .await;
    assert!(
        since
            .iter()
            .all(|l| l["last_position"].as_i64().unwrap() > rollback_position),
        "{since:#?}"
    );
    assert!(ids(&since).contains(alarm["action_log_id"].as_str().unwrap()));
    assert!(!ids(&since).contains(rolled_back["action_log_id"].as_str().unwrap()));
    let all_oldest_first = api.action_logs("since_position=0").await;
    let positions: Vec<i64> = all_oldest_first
        .iter()
        .map(|l| l["last_position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{positions:?}");
    assert_eq!(ids(&all_oldest_first), ids(&logs));

    // Acknowledge through the API with the curl of the instructions; a second ack is a 409.
    let fallback_id = fallback["action_log_id"].as_str().unwrap().to_string();
    let (status, acked) = api
        .run_curl(
            fallback["instructions"].as_str().unwrap(),
            &format!("/action-logs/{fallback_id}/acknowledge"),
        )
        .await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["acknowledged"], true, "{acked}");
    let (status, again) = api
        .post(
            &format!("/action-logs/{fallback_id}/acknowledge"),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "already_acknowledged", "{again}");
    let open = api
        .wait_action_logs("unacknowledged=true", "the ack applied", |l| {
            !ids(l).contains(&fallback_id)
        })
        .await;
    assert!(open.iter().all(|l| l["acknowledged"] == false), "{open:#?}");
    assert!(ids(&open).contains(cancelled["action_log_id"].as_str().unwrap()));

    // The CLI on the same database.
    let cancelled_id = cancelled["action_log_id"].as_str().unwrap().to_string();
    let (ok, stdout, stderr) = cli(&env, &url, &["action-logs", "list", "--unacknowledged"]);
    assert!(ok, "{stderr}");
    let listed = json_lines(&stdout);
    assert!(
        listed.iter().all(|l| l["acknowledged"] == false),
        "{stdout}"
    );
    assert!(ids(&listed).contains(&cancelled_id), "{stdout}");
    assert!(!ids(&listed).contains(&fallback_id), "{stdout}");
    let (ok, stdout, stderr) = cli(
        &env,
        &url,
        &[
            "action-logs",
            "ack",
            &cancelled_id,
            "--actor",
            "cli-operator",
            "--note",
            "reviewed",
        ],
    );
    assert!(ok, "{stderr}");
    let acked: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(acked["action_log_id"], cancelled_id.as_str());
    assert_eq!(acked["acknowledged"], true);
    let (ok, _, stderr) = cli(&env, &url, &["action-logs", "ack", &cancelled_id]);
    assert!(!ok && stderr.contains("already acknowledged"), "{stderr}");
    let seen = api
        .wait_action_logs("kind=run_cancelled", "the CLI ack applied", |l| {
            l.iter()
                .any(|e| e["action_log_id"] == cancelled_id.as_str() && e["acknowledged"] == true)
        })
        .await;
    let entry = seen
        .iter()
        .find(|e| e["action_log_id"] == cancelled_id.as_str())
        .unwrap();
    assert_eq!(entry["acknowledged_by"], "cli-operator", "{entry:#}");

    // Sink status: the four sinks, each caught up to the head, with its mapping.
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        let status = api.get_ok("/observability/sinks").await;
        let head = status["head_position"].as_i64().unwrap();
        let sinks = status["sinks"].as_array().unwrap();
        if sinks.iter().all(|s| s["checkpoint"].as_i64() == Some(head)) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sinks never caught up: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let names: Vec<&str> = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "action_logs",
            "cloudwatch_logs",
            "cloudwatch_metrics",
            "cloudwatch_alarms"
        ],
        "{status:#}"
    );
    let sink = |name: &str| {
        status["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    for name in &names {
        let s = sink(name);
        assert_eq!(s["lag"], 0, "{s:#}");
        assert_eq!(s["dead_letters"], 0, "{s:#}");
        assert_eq!(s["owned_by_this_instance"], true, "{s:#}");
        assert!(!s["mapping"].as_array().unwrap().is_empty(), "{s:#}");
    }
    let has = |name: &str, event: &str, destination: &str, target: &str| {
        let s = sink(name);
        assert!(
            s["mapping"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["event"] == event
                    && m["destination"] == destination
                    && m["target"].as_str().unwrap().contains(target)),
            "{name}: {event} → {destination} {target}: {s:#}"
        );
    };
    has(
        "action_logs",
        "load_test.runner_fallback",
        "action_log",
        "runner_fallback",
    );
    has(
        "action_logs",
        "routing.binding_rolled_back",
        "action_log",
        "routing_binding_rolled_back",
    );
    has(
        "cloudwatch_logs",
        "severity:warn",
        "log",
        "/studio/action-logs",
    );
    assert_eq!(sink("cloudwatch_logs")["after"], "action_logs");
    assert!(sink("action_logs")["delivered"].as_i64().unwrap() > 0);
    assert!(sink("cloudwatch_logs")["delivered"].as_i64().unwrap() > 0);
    let metric = sink("cloudwatch_metrics");
    assert!(
        metric["mapping"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "metric"),
        "{metric:#}"
    );
    has(
        "cloudwatch_alarms",
        "load_test.run_started",
        "alarm",
        &format!(
            "{}load-test-failure-rate-<run_id>",
            cw.settings.alarm_prefix
        ),
    );

    // Every action log is a JSON log event in /studio/action-logs, instructions included.
    let logs = api.action_logs("").await;
    let deadline = Instant::now() + DEADLINE;
    let messages = loop {
        let messages = cw.log_messages().await;
        if ids(&logs).is_subset(&ids(&messages)) {
            break messages;
        }
        assert!(
            Instant::now() < deadline,
            "action logs never all reached CloudWatch Logs: {:?} of {:?}",
            ids(&messages),
            ids(&logs)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let message = messages
        .iter()
        .find(|m| m["action_log_id"] == fallback_id.as_str())
        .unwrap();
    assert_eq!(message["kind"], "runner_fallback");
    assert_eq!(message["severity"], "warn");
    assert!(
        message["instructions"]
            .as_str()
            .unwrap()
            .contains(&format!("/load-test-runs/{run_id}/cancel")),
        "{message:#}"
    );
    let message = messages
        .iter()
        .filter(|m| m["action_log_id"] == applied["action_log_id"])
        .max_by_key(|m| m["last_position"].as_i64())
        .unwrap();
    assert_eq!(message["occurrences"], 2, "{message:#}");

    // The dashboard: pushed by the CLI, read back from CloudWatch, as `show` prints it.
    let (ok, pushed, stderr) = cli(&env, &url, &["dashboards", "push"]);
    assert!(ok, "{stderr}");
    let got = cw
        .clients
        .cloudwatch
        .get_dashboard()
        .dashboard_name(&cw.settings.dashboard_name)
        .send()
        .await
        .expect("GetDashboard");
    let body: Value = serde_json::from_str(got.dashboard_body().expect("a body")).unwrap();
    assert_eq!(body, serde_json::from_str::<Value>(pushed.trim()).unwrap());
    let (ok, shown, stderr) = cli(&env, &url, &["dashboards", "show"]);
    assert!(ok, "{stderr}");
    assert_eq!(body, serde_json::from_str::<Value>(shown.trim()).unwrap());
    assert!(!body["widgets"].as_array().unwrap().is_empty(), "{body:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_alarm_set_to_alarm_in_cloudwatch_stops_the_run_and_pages_a_critical_action_log() {
    let cw = CloudWatch::new().await;
    let (url, dir) = eventlog::testkit::sqlite_url();
    let env = cw.env(dir.path());
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start_with(&url, &env_refs).await;
    let api = Api::new(&server);
    api.register(FAST, 0.02).await;
    let (run_id, _) = api.start_long_run("alarm loop").await;
    api.wait_run(&run_id, "dispatching", |r| {
        r["totals"]["dispatched"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let run_alarm = cw.run_alarm(&run_id);
    cw.wait_alarm(&run_alarm, true).await;
    // LocalStack evaluates a new alarm once at once (then every 10 minutes); that evaluation
    // (OK: no failures to speak of) must not overwrite the state set below.
    cw.wait_alarm_state(&run_alarm, "OK").await;

    cw.clients
        .cloudwatch
        .set_alarm_state()
        .alarm_name(&run_alarm)
        .state_value("ALARM".into())
        .state_reason("Threshold Crossed: 10 datapoints were greater than the threshold (0.2)")
        .send()
        .await
        .expect("SetAlarmState (needs sns in LocalStack's SERVICES)");

    // The alarm sink reads the state back into the log; the server stops the run for it.
    let run = api
        .wait_run(&run_id, "stopped by the alarm", |r| {
            r["status"] == "stopped"
        })
        .await;
    let reason = run["stop_reason"].as_str().unwrap();
    assert!(reason.contains(&run_alarm), "{reason}");

    // One critical action log for the alarm, naming the run to cancel; one for the stop.
    let logs = api.action_logs("severity=critical").await;
    let alarm = only(&logs, "alarm", &format!("ops-{run_alarm}"));
    let text = alarm["instructions"].as_str().unwrap();
    assert!(text.contains("Threshold Crossed"), "{text}");
    assert!(
        text.contains(&format!("/admin/studio/load-test-runs/{run_id}/cancel")),
        "{text}"
    );
    let stopped = only(
        &logs,
        "stop_condition_breached",
        &format!("load_test_run-{run_id}"),
    );
    let text = stopped["instructions"].as_str().unwrap();
    assert!(
        text.contains(&format!("stopped by the critical alarm {run_alarm}")),
        "{text}"
    );
    let changes: Vec<Value> = read_log(&server.base)
        .await
        .into_iter()
        .filter(|e| {
            e["type"] == "ops.alarm_state_changed"
                && e["payload"]["alarm_name"] == run_alarm.as_str()
                && e["payload"]["new_state"] == "ALARM"
        })
        .collect();
    assert_eq!(changes.len(), 1, "appended once: {changes:#?}");
    assert_eq!(changes[0]["stream"], format!("ops-{run_alarm}"));

    // The stopped run's alarm goes away.
    cw.wait_alarm(&run_alarm, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cloudwatch_serve_still_writes_action_logs() {
    let (url, dir) = eventlog::testkit::sqlite_url();
    let artifacts = dir.path().display().to_string();
    let server = Server::start_with(
        &url,
        &[
            // Empty counts as unset, whatever the environment of the test run says.
            ("STUDIO_CLOUDWATCH_ENDPOINT", ""),
            ("STUDIO_ARTIFACT_DIR", &artifacts),
        ],
    )
    .await;
    let api = Api::new(&server);
    // One warn event, through the product: a short run started without a runner falls back
    // to inline execution (load_test.runner_fallback) and completes (info only).
    api.register(FAST, 0.02).await;
    let (run_id, started) = api.start_run("no cloudwatch", 2).await;
    assert_eq!(started["mode"], "inline", "{started}");
    api.wait_run(&run_id, "completed", |r| r["status"] == "completed")
        .await;
    let logs = api.action_logs("").await;
    assert_eq!(logs.len(), 1, "{logs:#?}");
    let entry = only(&logs, "runner_fallback", &format!("load_test_run-{run_id}"));
    assert_eq!(entry["severity"], "warn");
    let text = entry["instructions"].as_str().unwrap();
    assert!(text.contains("STUDIO_LOAD_TEST_RUNNER_COMMAND"), "{text}");
    assert!(text.contains(FAST), "the run's context: {text}");
    assert!(
        text.contains(&format!("/admin/studio/load-test-runs/{run_id}/cancel")),
        "{text}"
    );
    let status = api.get_ok("/observability/sinks").await;
    let names: Vec<&str> = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["action_logs"], "{status:#}");
}
