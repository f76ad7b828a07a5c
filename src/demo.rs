//! `studio demo`: the main job on the embedded default. It starts the real server in-process on
//! SQLite (no broker, no cloud), publishes a load-test run the way the executor does, shows the
//! log refusing bad input and answering retries, then reads the run back as an operator would.

use crate::config::{Config, Env};
use anyhow::{bail, Context, Result};
use chrono::{Duration as ChronoDuration, Utc};
use eventlog::ids::DispatchId;
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the log lives (defaults to STUDIO_DATABASE_URL, then sqlite://studio.db).
    #[arg(long)]
    database_url: Option<String>,
    /// Dispatches to simulate.
    #[arg(long, default_value_t = 500)]
    dispatches: u64,
}

struct DemoEnv {
    database_url: String,
    admin: String,
    executor: String,
}

impl Env for DemoEnv {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "STUDIO_DATABASE_URL" => Some(self.database_url.clone()),
            "STUDIO_ADMIN_TOKEN" => Some(self.admin.clone()),
            "STUDIO_EXECUTOR_SECRET" => Some(self.executor.clone()),
            "STUDIO_LISTEN" => Some("127.0.0.1:0".into()),
            _ => None,
        }
    }
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let base_config = Config::load(&crate::config::ProcessEnv)?;
    let env = DemoEnv {
        database_url: args.database_url.unwrap_or(base_config.database_url),
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
        "studio demo: event log {} ({}), server {base}",
        config.database_url,
        log.backend()
    );
    let outcome = scenario(&base, &config, args.dispatches).await;
    let _ = stop_tx.send(());
    server.await.context("server task")??;
    outcome
}

async fn scenario(base: &str, config: &Config, dispatches: u64) -> Result<()> {
    let (admin, executor) = config.tokens()?;
    let http = reqwest::Client::new();
    let publish = |body: Value| {
        http.post(format!("{base}/v1/events"))
            .bearer_auth(executor.expose())
            .json(&body)
            .send()
    };
    let run_id = format!("lt_{}", uuid::Uuid::now_v7().simple());
    let variant = "er:fx-demo:wf:comfy-1:env:staging:stage:render:provider:sim-cheap:exp:baseline";
    let start = Utc::now() - ChronoDuration::seconds(60);
    let at =
        |ms: i64| eventlog::envelope::format_timestamp(start + ChronoDuration::milliseconds(ms));
    let envelope = |event_type: &str, occurred_ms: i64, payload: Value| json!({"type": event_type, "occurred_at": at(occurred_ms), "producer": "studio-demo", "payload": payload});

    // 1. A producer publishes the run as the executor would, in batches.
    let mut events = vec![
        envelope(
            "variant.registered",
            0,
            json!({"variant_id": variant, "effect_revision_id": "fx-demo", "workflow_id": "comfy-1",
                   "environment_id": "staging", "stage": "render", "provider": "sim-cheap",
                   "experiment_id": "baseline", "unit_cost_usd": 0.004}),
        ),
        envelope(
            "load_test.run_created",
            0,
            json!({"run_id": run_id, "name": "demo ramp", "effect_revision_id": "fx-demo",
                   "environment_id": "staging", "variant_id": variant, "input_fixture": "fixtures/portrait.png",
                   "stages": [{"name": "steady", "duration_s": 10, "target_rps": dispatches as f64 / 10.0}]}),
        ),
        envelope(
            "load_test.run_started",
            1,
            json!({"run_id": run_id, "mode": "inline"}),
        ),
        envelope(
            "load_test.runner_fallback",
            1,
            json!({"run_id": run_id, "reason": "STUDIO_LOAD_TEST_RUNNER_COMMAND is not set"}),
        ),
        envelope(
            "load_test.stage_started",
            2,
            json!({"run_id": run_id, "stage_index": 0, "target_rps": dispatches as f64 / 10.0}),
        ),
    ];
    // A deterministic simulated provider: latency 600–1,400 ms, every 25th dispatch fails.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for seq in 1..=dispatches {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let scheduled = (seq as i64) * 10_000 / dispatches as i64;
        let latency = 600.0 + (state % 800) as f64;
        let dispatch_id = DispatchId::new(&run_id, seq).to_string();
        let failed = seq % 25 == 0;
        events.push(envelope(
            "load_test.dispatch_submitted",
            scheduled,
            json!({"run_id": run_id, "dispatch_id": dispatch_id, "seq": seq, "stage_index": 0,
                   "variant_id": variant, "scheduled_at": at(scheduled)}),
        ));
        events.push(envelope(
            "load_test.dispatch_completed",
            scheduled + latency as i64,
            json!({"run_id": run_id, "dispatch_id": dispatch_id, "outcome": if failed { "failed" } else { "succeeded" },
                   "latency_ms": latency, "service_time_ms": latency - 3.0, "cost_usd": 0.004,
                   "error": if failed { Some("HTTP 503 from provider") } else { None }, "stage_index": 0}),
        ));
    }
    events.push(envelope(
        "load_test.run_completed",
        12_000,
        json!({"run_id": run_id}),
    ));
    let mut appended = 0;
    for chunk in events.chunks(250) {
        let answer = publish(Value::Array(chunk.to_vec())).await?;
        if answer.status().as_u16() != 201 {
            bail!(
                "publishing failed: {} {}",
                answer.status(),
                answer.text().await?
            );
        }
        appended += chunk.len();
    }
    println!(
        "\n1. published {appended} events for run {run_id} (POST /v1/events, executor secret)"
    );

    // 2. The log refuses bad input whole and answers retries without appending.
    let bad = envelope(
        "load_test.dispatch_completed",
        0,
        json!({"run_id": run_id, "dispatch_id": DispatchId::new(&run_id, 1).to_string(), "outcome": "exploded",
               "latency_ms": -4.0, "service_time_ms": null, "cost_usd": null}),
    );
    let refused = publish(json!([
        envelope("load_test.run_completed", 0, json!({"run_id": "lt_x"})),
        bad
    ]))
    .await?;
    println!(
        "2. a batch with a bad event → {} {}",
        refused.status().as_u16(),
        refused.text().await?
    );
    let mut retry = envelope(
        "load_test.run_cancelled",
        12_001,
        json!({"run_id": run_id, "reason": "demo", "actor": "demo"}),
    );
    retry["idempotency_key"] = json!(format!("{run_id}-cancel"));
    let first = publish(retry.clone()).await?.status().as_u16();
    let again = publish(retry).await?;
    println!(
        "3. the same idempotency key twice → {first}, then {} {}",
        again.status().as_u16(),
        again.text().await?
    );
    let mut stale = envelope("load_test.run_completed", 12_002, json!({"run_id": run_id}));
    stale["expected_version"] = json!(1);
    let stale = publish(stale).await?;
    println!(
        "4. a stale expected_version → {} {}",
        stale.status().as_u16(),
        stale.text().await?
    );

    // 3. The operator reads the run from the read models, waiting until they include the
    //    last event published (read-your-writes with min_position).
    let last_position = last_position(&http, base, admin.expose()).await?;
    let run: Value = http
        .get(format!(
            "{base}/admin/studio/load-test-runs/{run_id}?min_position={last_position}"
        ))
        .bearer_auth(admin.expose())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let totals = &run["totals"];
    println!(
        "\nGET /admin/studio/load-test-runs/{run_id} (as of position {}):",
        run["as_of_position"]
    );
    println!(
        "  status                {} ({} mode; {})",
        run["status"], run["mode"], run["runner_fallback_reason"]
    );
    println!(
        "  dispatched            {}   succeeded {}   failed {}   timed out {}   missed {}",
        totals["dispatched"],
        totals["succeeded"],
        totals["failed"],
        totals["timed_out"],
        totals["missed"]
    );
    println!("  failure rate          {}", totals["failure_rate"]);
    println!("  achieved rps          {}", totals["achieved_rps"]);
    let l = &totals["latency_ms"];
    println!(
        "  latency ms            p50 {}  p95 {}  p99 {}  max {}",
        l["p50"], l["p95"], l["p99"], l["max"]
    );
    println!("  cost                  ${}", totals["cost_usd"]);
    let health: Value = http
        .get(format!("{base}/admin/studio/observability/projections"))
        .bearer_auth(admin.expose())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("\nprojections (GET /admin/studio/observability/projections):");
    for p in health["projections"].as_array().into_iter().flatten() {
        println!(
            "  {:<12} checkpoint {:<6} lag {:<4} dead letters {}",
            p["projection"].as_str().unwrap_or("?"),
            p["checkpoint"],
            p["lag_events"],
            p["dead_letters"]
        );
    }
    println!("\nnext: `studio serve` with STUDIO_ADMIN_TOKEN and STUDIO_EXECUTOR_SECRET set serves the same log.");
    Ok(())
}

/// The log's last position, read page by page.
async fn last_position(http: &reqwest::Client, base: &str, admin: &str) -> Result<i64> {
    let mut after = 0i64;
    loop {
        let page: Value = http
            .get(format!(
                "{base}/v1/events?after_position={after}&limit=10000"
            ))
            .bearer_auth(admin)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        match page["events"].as_array().and_then(|e| e.last()) {
            Some(last) => after = last["position"].as_i64().context("position")?,
            None => return Ok(after),
        }
    }
}
