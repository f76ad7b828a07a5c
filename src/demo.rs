//! `studio demo`: the main job on the embedded default. It starts the real server in-process on
//! SQLite (no broker, no cloud) with three simulated providers, and walks the seed plan through
//! the admin API exactly as an operator would: register variants, run a two-stage load test,
//! run a benchmark matrix, judge its outputs, set a price, read the Money HUD, apply the winner
//! and roll back once, then read the action logs with their instructions. It also shows the log
//! refusing bad input and answering a retried publish without storing it twice.

use crate::config::{Config, Env};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the log lives (defaults to STUDIO_DATABASE_URL, then sqlite://studio.db).
    #[arg(long)]
    database_url: Option<String>,
    /// Golden inputs of the benchmark matrix (each judged `--repetitions` times per variant).
    #[arg(long, default_value_t = 60)]
    inputs: u64,
    #[arg(long, default_value_t = 3)]
    repetitions: u64,
}

/// The demo's providers: fast simulations (tens of milliseconds) so the whole plan runs in
/// well under a minute, deterministic for their seeds.
const DEMO_CONFIG: &str = r#"
[providers.sim-cheap]
kind = "simulated"
latency_ms = 40
jitter_ms = 10
failure_rate = 0.002
cost_usd = 0.004
seed = 7

[providers.sim-premium]
kind = "simulated"
latency_ms = 120
jitter_ms = 30
failure_rate = 0.0
cost_usd = 0.03
seed = 11

[providers.sim-flaky]
kind = "simulated"
latency_ms = 30
jitter_ms = 10
failure_rate = 0.3
cost_usd = 0.003
seed = 13

[quality]
provider = "heuristic"
heuristic_target_latency_ms = 1000
"#;

const EFFECT_REVISION: &str = "fx-demo";
const STAGE: &str = "render";

fn variant(provider: &str, experiment: &str) -> String {
    format!("er:{EFFECT_REVISION}:wf:comfy-1:env:staging:stage:{STAGE}:provider:{provider}:exp:{experiment}")
}

struct DemoEnv {
    database_url: String,
    config_path: String,
    admin: String,
    executor: String,
}

impl Env for DemoEnv {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "STUDIO_DATABASE_URL" => Some(self.database_url.clone()),
            "STUDIO_CONFIG" => Some(self.config_path.clone()),
            "STUDIO_ADMIN_TOKEN" => Some(self.admin.clone()),
            "STUDIO_EXECUTOR_SECRET" => Some(self.executor.clone()),
            "STUDIO_LISTEN" => Some("127.0.0.1:0".into()),
            "STUDIO_ARTIFACT_DIR" => std::env::var(name).ok(),
            _ => None,
        }
    }
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let base_config = Config::load(&crate::config::ProcessEnv)?;
    let config_dir = tempfile::tempdir()?;
    let config_path = config_dir.path().join("studio-demo.toml");
    std::fs::write(&config_path, DEMO_CONFIG)?;
    let env = DemoEnv {
        database_url: args
            .database_url
            .clone()
            .unwrap_or(base_config.database_url),
        config_path: config_path.display().to_string(),
        admin: format!("demo-admin-{}", uuid::Uuid::new_v4()),
        executor: format!("demo-executor-{}", uuid::Uuid::new_v4()),
    };
    let config = Config::load(&env)?;
    let log = eventlog::open(&config.database_url, true)
        .await
        .context("open the event log")?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let log = log.clone();
        tokio::spawn(async move {
            let config = Config::load(&env)?;
            crate::app::run(listener, log, &config, &crate::app::Roles::all(), async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    println!(
        "studio demo: event log {} ({}), server {base}, artifacts in {}",
        config.database_url,
        log.backend(),
        config.artifact_dir.display()
    );
    let (admin, executor) = config.tokens()?;
    let api = Api {
        base: base.clone(),
        http: reqwest::Client::new(),
        admin: admin.expose().to_string(),
        executor: executor.expose().to_string(),
    };
    let outcome = scenario(&api, &args).await;
    let _ = stop_tx.send(());
    server.await.context("server task")??;
    outcome
}

struct Api {
    base: String,
    http: reqwest::Client,
    admin: String,
    executor: String,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value)> {
        let answer = request.send().await?;
        let status = answer.status().as_u16();
        let text = answer.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// An admin command that must succeed; its answer.
    async fn command(&self, path: &str, body: Value) -> Result<Value> {
        let (status, answer) = self
            .send(
                self.http
                    .post(format!("{}/admin/studio{path}", self.base))
                    .bearer_auth(&self.admin)
                    .json(&body),
            )
            .await?;
        if !(200..300).contains(&status) {
            bail!("POST {path} → {status}: {answer}");
        }
        Ok(answer)
    }

    /// An admin query that must succeed.
    async fn query(&self, path_and_query: &str) -> Result<Value> {
        let (status, answer) = self
            .send(
                self.http
                    .get(format!("{}/admin/studio{path_and_query}", self.base))
                    .bearer_auth(&self.admin),
            )
            .await?;
        if status != 200 {
            bail!("GET {path_and_query} → {status}: {answer}");
        }
        Ok(answer)
    }

    async fn publish(&self, body: Value) -> Result<(u16, Value)> {
        self.send(
            self.http
                .post(format!("{}/v1/events", self.base))
                .bearer_auth(&self.executor)
                .json(&body),
        )
        .await
    }

    /// Polls `path` until `done` holds (2 minutes at most).
    async fn wait_for(
        &self,
        path: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, answer) = self
                .send(
                    self.http
                        .get(format!("{}/admin/studio{path}", self.base))
                        .bearer_auth(&self.admin),
                )
                .await?;
            if status == 200 && done(&answer) {
                return Ok(answer);
            }
            if Instant::now() > deadline {
                bail!("gave up waiting for {what}: {answer}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn scenario(api: &Api, args: &DemoArgs) -> Result<()> {
    // 1. The variant registry.
    let cheap = variant("sim-cheap", "cheap");
    let premium = variant("sim-premium", "premium");
    let flaky = variant("sim-flaky", "flaky");
    for (id, cost) in [(&cheap, 0.004), (&premium, 0.03), (&flaky, 0.003)] {
        api.command(
            "/variant-registry/variants",
            json!({"variant_id": id, "unit_cost_usd": cost}),
        )
        .await?;
    }
    println!(
        "\n1. registered 3 variants of {EFFECT_REVISION}/{STAGE} (POST /variant-registry/variants)"
    );

    // 2. A two-stage load test, executed inline (no runner command in the demo).
    let created = api
        .command(
            "/load-test-runs",
            json!({"name": "demo ramp", "effect_revision_id": EFFECT_REVISION,
                   "environment_id": "staging", "variant_id": cheap,
                   "input_fixture": "s3://studio-fixtures/portrait.png",
                   "stages": [{"name": "warm-up", "duration_s": 2, "target_rps": 10.0},
                              {"name": "steady", "duration_s": 3, "target_rps": 40.0}]}),
        )
        .await?;
    let run_id = created["run_id"].as_str().context("run_id")?.to_string();
    let started = api
        .command(&format!("/load-test-runs/{run_id}/start"), json!({}))
        .await?;
    println!(
        "2. load test {run_id}: estimate ${:.2}, started in {} mode ({})",
        created["estimated_cost_usd"].as_f64().unwrap_or(0.0),
        started["mode"].as_str().unwrap_or("?"),
        started["runner_fallback"].as_str().unwrap_or("-")
    );
    let run = api
        .wait_for(&format!("/load-test-runs/{run_id}"), "the load test", |r| {
            r["status"] == "completed" || r["status"] == "stopped"
        })
        .await?;
    println!("   status {}", run["status"]);
    println!(
        "   stage      target  dispatched  failed  missed  achieved/s  p50 ms  p99 ms  cost $"
    );
    for row in run["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&run["totals"]))
    {
        println!(
            "   {:<9} {:>7} {:>11} {:>7} {:>7} {:>11.1} {:>7.0} {:>7.0} {:>7.3}",
            row["name"].as_str().unwrap_or("total"),
            row["target_rps"]
                .as_f64()
                .map(|r| format!("{r}/s"))
                .unwrap_or_default(),
            row["dispatched"],
            row["failed"],
            row["missed"],
            row["achieved_rps"].as_f64().unwrap_or(0.0),
            row["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
            row["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
            row["cost_usd"].as_f64().unwrap_or(0.0),
        );
    }

    // 3. The benchmark matrix on the golden dataset.
    let inputs: Vec<Value> = (1..=args.inputs)
        .map(|i| json!({"input_id": format!("golden-{i:03}"), "uri": format!("s3://studio-golden/iteration1-golden-v1/{i:03}.png")}))
        .collect();
    let matrix = api
        .command(
            "/benchmark-matrix-runs",
            json!({"dataset": "iteration1-golden-v1", "variant_ids": [cheap, premium, flaky],
                   "inputs": inputs, "repetitions": args.repetitions}),
        )
        .await?;
    let bm = matrix["benchmark_run_id"]
        .as_str()
        .context("benchmark_run_id")?
        .to_string();
    let matrix = api
        .wait_for(
            &format!("/benchmark-matrix-runs/{bm}"),
            "the benchmark matrix",
            |m| m["status"] == "completed",
        )
        .await?;
    println!("\n3. benchmark matrix {bm} (dataset iteration1-golden-v1):");
    for item in matrix["items"].as_array().into_iter().flatten() {
        let artifact = &item["artifacts"][0];
        println!(
            "   {:<70} dispatched {:>4}  succeeded {:>4}  artifact sha256 {}…",
            item["variant_id"].as_str().unwrap_or("?"),
            item["dispatched"],
            item["succeeded"],
            artifact["sha256"]
                .as_str()
                .unwrap_or("-")
                .chars()
                .take(12)
                .collect::<String>()
        );
    }

    // 4. Judge every successful output, then price the effect.
    let judged = api
        .command("/quality-evaluations", json!({"benchmark_run_id": bm}))
        .await?;
    let outputs = judged["outputs"].as_u64().unwrap_or(0) as usize;
    let evaluations = api
        .wait_for(
            &format!("/quality-evaluations?benchmark_run_id={bm}"),
            "the quality evaluations",
            |q| {
                let done = q["evaluations"].as_array().map_or(0, Vec::len)
                    + q["unjudged"].as_array().map_or(0, Vec::len);
                done >= outputs
            },
        )
        .await?;
    println!(
        "\n4. judged {} outputs ({} evaluator), unjudged {}",
        evaluations["evaluations"].as_array().map_or(0, Vec::len),
        judged["evaluator"]["provider"].as_str().unwrap_or("?"),
        evaluations["unjudged"].as_array().map_or(0, Vec::len)
    );
    let price = api
        .command(
            "/economics/prices",
            json!({"effect_revision_id": EFFECT_REVISION, "price_usd": 0.05}),
        )
        .await?;
    let price_position = price["position"].as_i64().context("price position")?;
    println!(
        "   price of {EFFECT_REVISION}: $0.05 per successful output (position {price_position})"
    );

    // 5. The Money HUD, read once it includes the price.
    let hud = api
        .query(&format!(
            "/economics/money-hud?benchmark_run_id={bm}&min_position={price_position}"
        ))
        .await?;
    println!("\n5. Money HUD for {bm}: verdict {}", hud["verdict"]);
    println!("   variant                                                               fail%  $/success  quality  margin%  eligible");
    for row in hud["rows"].as_array().into_iter().flatten() {
        println!(
            "   {:<70} {:>5.1} {:>10.4} {:>8.2} {:>8.1}  {}",
            row["variant_id"].as_str().unwrap_or("?"),
            row["failure_rate"].as_f64().unwrap_or(0.0) * 100.0,
            row["cost_per_success_usd"].as_f64().unwrap_or(f64::NAN),
            row["quality_mean"].as_f64().unwrap_or(f64::NAN),
            row["margin_pct"].as_f64().unwrap_or(f64::NAN),
            match row["excluded_because"].as_array().map(Vec::as_slice) {
                Some([]) | None => "yes".to_string(),
                Some(why) => format!(
                    "no: {}",
                    why.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }
        );
    }
    if let Some(reason) = hud["winner"]["reason"].as_str() {
        println!("   winner: {}\n     {reason}", hud["winner"]["variant_id"]);
    }
    for rec in hud["recommendations"].as_array().into_iter().flatten() {
        println!(
            "   → {}: {}",
            rec["action"].as_str().unwrap_or("?"),
            rec["text"].as_str().unwrap_or("")
        );
    }

    // 6. Routing: apply the winner, apply the runner-up, roll back once.
    let winner = hud["winner"]["variant_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| cheap.clone());
    let apply = |variant_id: &str, expected_version: i64, reason: &str| {
        json!({"effect_revision_id": EFFECT_REVISION, "stage": STAGE, "variant_id": variant_id,
               "expected_version": expected_version, "reason": reason,
               "evidence": {"benchmark_run_id": bm}})
    };
    // The scope may already have a binding (the demo ran on this log before): start from it.
    let bindings = api
        .query(&format!(
            "/routing/bindings?effect_revision_id={EFFECT_REVISION}&stage={STAGE}&min_position={price_position}"
        ))
        .await?;
    let current = bindings["bindings"].as_array().and_then(|b| b.first());
    let mut version = current.and_then(|b| b["version"].as_i64()).unwrap_or(0);
    let active = current
        .and_then(|b| b["variant_id"].as_str())
        .map(str::to_string);
    let mut steps = Vec::new();
    if active.as_deref() != Some(winner.as_str()) {
        let answer = api
            .command(
                "/routing/apply",
                apply(&winner, version, "Money HUD winner"),
            )
            .await?;
        version += 1;
        steps.push(("apply", answer));
    }
    let answer = api
        .command(
            "/routing/apply",
            apply(&premium, version, "try the premium provider"),
        )
        .await?;
    version += 1;
    steps.push(("apply", answer));
    let answer = api
        .command(
            "/routing/rollback",
            json!({"effect_revision_id": EFFECT_REVISION, "stage": STAGE, "expected_version": version,
                   "reason": "premium costs more than it earns"}),
        )
        .await?;
    steps.push(("rollback", answer));
    println!("\n6. routing {EFFECT_REVISION}/{STAGE}:");
    for (what, answer) in &steps {
        println!(
            "   {what:<8} → version {} on {}",
            answer["binding"]["version"],
            answer["binding"]["variant_id"].as_str().unwrap_or("?")
        );
    }
    let (status, stale) = api
        .send(
            api.http
                .post(format!("{}/admin/studio/routing/rollback", api.base))
                .bearer_auth(&api.admin)
                .json(
                    &json!({"effect_revision_id": EFFECT_REVISION, "stage": STAGE,
                              "expected_version": version, "reason": "stale"}),
                ),
        )
        .await?;
    println!(
        "   a stale rollback → {status}: {}",
        stale["error"]["message"].as_str().unwrap_or("")
    );

    // 7. The log refuses bad input whole and answers a retried publish once.
    let bad = json!([{"type": "load_test.dispatch_completed", "occurred_at": "2026-11-24T10:00:00Z",
                      "producer": "demo", "payload": {"run_id": run_id, "dispatch_id": "nope",
                      "outcome": "exploded", "latency_ms": -4.0, "cost_usd": null}}]);
    let (status, refused) = api.publish(bad).await?;
    println!(
        "\n7. a bad event → {status} {} ({} problems named), nothing stored",
        refused["error"]["code"],
        refused["error"]["details"].as_array().map_or(0, Vec::len)
    );
    let retried = json!({"type": "ops.alarm_state_changed", "occurred_at": "2026-11-24T10:00:00Z",
                         "producer": "demo", "idempotency_key": format!("demo-alarm-{bm}"),
                         "payload": {"alarm_name": "studio-demo-render-errors", "old_state": "OK",
                                     "new_state": "OK", "reason": "demo retry"}});
    let (first, _) = api.publish(retried.clone()).await?;
    let (second, again) = api.publish(retried).await?;
    println!(
        "   the same idempotency key twice → {first}, then {second} (position {} both times)",
        again["position"]
    );

    // 8. What needs an operator: the action logs with their instructions.
    let head = api.query("/action-logs?limit=1").await?;
    let logs = api
        .wait_for("/action-logs?limit=20", "the action logs", |a| {
            a["as_of_position"].as_i64() >= head["as_of_position"].as_i64()
                && a["action_logs"].as_array().is_some_and(|l| l.len() >= 3)
        })
        .await?;
    println!("\n8. action logs (GET /admin/studio/action-logs):");
    for entry in logs["action_logs"].as_array().into_iter().flatten() {
        println!(
            "   [{}] {} — {} (×{})",
            entry["severity"].as_str().unwrap_or("?"),
            entry["kind"].as_str().unwrap_or("?"),
            entry["title"].as_str().unwrap_or(""),
            entry["occurrences"]
        );
    }
    if let Some(first) = logs["action_logs"].as_array().and_then(|l| l.first()) {
        println!("\n   instructions of the newest one:");
        for line in first["instructions"].as_str().unwrap_or("").lines() {
            println!("   | {line}");
        }
    }
    println!("\nnext: `studio serve` with STUDIO_ADMIN_TOKEN and STUDIO_EXECUTOR_SECRET set serves the same log.");
    Ok(())
}
