//! The read models through the admin API, given/when/then: events are published over HTTP to
//! `POST /v1/events`, a live runner applies them, and the answers come from
//! `GET /admin/studio/*` on a real socket, with `min_position` for read-your-writes.

#[macro_use]
mod common;

use common::{load_dispatch_id, registered, timestamp_ms, variant_id, Store, TestDb};
use eventlog::catalogue::{
    ArrivalsMissed, BenchmarkDispatchCompleted, BenchmarkDispatchSubmitted, BenchmarkInput,
    BenchmarkItemCreated, BenchmarkRunCreated, BindingApplied, BindingRolledBack,
    EvaluationCompleted, EvaluationFailed, Evaluator, EventPayload, Evidence,
    LoadDispatchCompleted, LoadDispatchSubmitted, Outcome, PriceSet, RunCompleted, RunCreated,
    RunMode, RunStarted, Stage, StageStarted, StopConditions,
};
use projector::http::ReadState;
use projector::money_hud::Thresholds;
use projector::StatusBoard;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const ADMIN: &str = "admin-test-token";
const EXECUTOR: &str = "executor-test-secret";
const RUN: &str = "lt_q1";

on_both_stores!(
    a_two_stage_load_test_answers_counts_failure_rate_latency_and_cost_per_stage_and_in_total,
    one_unknown_cost_makes_its_stage_and_the_total_cost_null_not_zero,
    a_run_with_nothing_completed_yet_has_an_unknown_failure_rate_and_latency,
    routing_after_apply_apply_rollback_is_at_version_3_with_its_history,
    quality_keeps_the_latest_verdict_and_leaves_unjudged_outputs_out_of_the_mean,
    min_position_beyond_the_head_answers_503_not_caught_up_after_the_bounded_wait,
    admin_queries_refuse_the_executor_secret_and_a_missing_token,
    an_unknown_run_answers_404_with_a_json_error,
);

/// The ingest and read routers merged as the `studio` binary serves them, on port 0, with a
/// live runner tailing the log.
struct Api {
    base: String,
    client: reqwest::Client,
    t: TestDb,
    shutdown: watch::Sender<bool>,
    runner: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Api {
    async fn start(store: Store, max_wait: Duration) -> Self {
        let t = TestDb::open(store).await;
        let ingest_state =
            ingest::AppState::new(t.log.clone(), ingest::IngestConfig::new(ADMIN, EXECUTOR))
                .unwrap();
        let status = Arc::new(StatusBoard::default());
        let read_state = ReadState {
            db: t.db.clone(),
            log: t.log.clone(),
            status: status.clone(),
            thresholds: Thresholds::default(),
            max_wait,
        };
        let tokens = ingest::Tokens::new(ADMIN, EXECUTOR).unwrap();
        let app = ingest::with_fallbacks(
            ingest::router(ingest_state).merge(projector::http::router(read_state, tokens)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let (shutdown, stop) = watch::channel(false);
        let runner = projector::Runner::new(
            t.db.clone(),
            t.log.clone(),
            projector::all_projections(),
            status,
        );
        let runner = tokio::spawn(runner.run(stop));
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            t,
            shutdown,
            runner,
            server,
        }
    }

    /// Publishes payloads in one request (stamped one second apart); returns the last position.
    async fn publish(&self, payloads: &[EventPayload]) -> i64 {
        let body: Vec<Value> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.check()
                    .unwrap_or_else(|e| panic!("test built an invalid {}: {e}", p.event_type()));
                json!({
                    "type": p.event_type(),
                    "schema_version": eventlog::upcast::current_version(p.event_type()),
                    "producer": "projector-tests",
                    "occurred_at": timestamp_ms(i as i64 * 1000),
                    "payload": p.to_value(),
                })
            })
            .collect();
        let response = self
            .client
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(EXECUTOR)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer["events"].as_array().unwrap().last().unwrap()["position"]
            .as_i64()
            .unwrap()
    }

    async fn get_with(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered {status} with non-JSON {text:?}: {e}"));
        (status, body)
    }

    /// An admin query that must succeed.
    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.get_with(path, Some(ADMIN)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.runner.await.unwrap();
        self.server.abort();
        self.t.close().await;
    }
}

fn run_created(stages: Vec<Stage>) -> EventPayload {
    EventPayload::RunCreated(RunCreated {
        run_id: RUN.into(),
        name: "two stages".into(),
        effect_revision_id: "fx-1".into(),
        environment_id: "staging".into(),
        variant_id: variant_id("fx-1", "render", "sim-cheap"),
        input_fixture: "fixtures/small.json".into(),
        stages,
        stop_conditions: StopConditions::default(),
        estimated_cost_usd: Some(0.5),
        approval_ref: None,
    })
}

fn stage(name: &str, duration_s: u64, target_rps: f64) -> Stage {
    Stage {
        name: name.into(),
        duration_s,
        target_rps,
    }
}

fn submitted(seq: u64, stage_index: u32, at_ms: i64) -> EventPayload {
    EventPayload::LoadDispatchSubmitted(LoadDispatchSubmitted {
        run_id: RUN.into(),
        dispatch_id: load_dispatch_id(RUN, seq),
        seq,
        stage_index,
        variant_id: variant_id("fx-1", "render", "sim-cheap"),
        scheduled_at: timestamp_ms(at_ms),
    })
}

fn completed(
    seq: u64,
    stage_index: Option<u32>,
    outcome: Outcome,
    latency_ms: f64,
    cost_usd: Option<f64>,
) -> EventPayload {
    EventPayload::LoadDispatchCompleted(LoadDispatchCompleted {
        run_id: RUN.into(),
        dispatch_id: load_dispatch_id(RUN, seq),
        outcome,
        latency_ms,
        service_time_ms: Some(latency_ms / 2.0),
        cost_usd,
        error: (outcome != Outcome::Succeeded).then(|| "provider error".into()),
        stage_index,
    })
}

/// Nearest-rank percentile: the `ceil(q·n)`-th smallest sample, as HdrHistogram defines it.
fn nearest_rank(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

/// The histogram keeps 3 significant digits and answers the top of a value's bucket.
fn assert_latency(answer: &Value, samples: &[f64], q: f64, what: &str) {
    let got = answer
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is {answer}"));
    let want = nearest_rank(samples, q);
    assert!(
        got >= want - 0.001 && got <= want * 1.001 + 0.001,
        "{what}: {got} ms, the samples say {want} ms"
    );
}

fn approx(answer: &Value, want: f64, what: &str) {
    let got = answer
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is {answer}"));
    assert!((got - want).abs() < 1e-9, "{what}: {got}, expected {want}");
}

async fn a_two_stage_load_test_answers_counts_failure_rate_latency_and_cost_per_stage_and_in_total(
    store: Store,
) {
    let api = Api::start(store, Duration::from_secs(10)).await;
    // Given a run of two stages: 10 s at 1 rps (10 arrivals), then 5 s at 2 rps (10 arrivals).
    use Outcome::{Failed as F, Succeeded as S, TimedOut as T};
    let warm: [(Outcome, f64); 10] = [
        (S, 12.5),
        (S, 20.0),
        (F, 35.0),
        (S, 40.0),
        (S, 41.0),
        (S, 55.0),
        (T, 60.0),
        (S, 80.0),
        (S, 120.0),
        (S, 900.0),
    ];
    let peak: [(Outcome, f64); 8] = [
        (S, 5.0),
        (S, 7.25),
        (F, 9.0),
        (S, 11.0),
        (S, 13.0),
        (F, 250.0),
        (S, 300.0),
        (S, 1200.0),
    ];
    let mut events = vec![
        run_created(vec![stage("warm", 10, 1.0), stage("peak", 5, 2.0)]),
        EventPayload::RunStarted(RunStarted {
            run_id: RUN.into(),
            mode: RunMode::Runner,
            executor: None,
        }),
        EventPayload::StageStarted(StageStarted {
            run_id: RUN.into(),
            stage_index: 0,
            target_rps: 1.0,
        }),
    ];
    for (i, (outcome, latency)) in warm.iter().enumerate() {
        let seq = i as u64 + 1;
        events.push(submitted(seq, 0, i as i64 * 1000));
        events.push(completed(seq, Some(0), *outcome, *latency, Some(0.001)));
    }
    events.push(EventPayload::StageStarted(StageStarted {
        run_id: RUN.into(),
        stage_index: 1,
        target_rps: 2.0,
    }));
    for (i, (outcome, latency)) in peak.iter().enumerate() {
        let seq = i as u64 + 11;
        events.push(submitted(seq, 1, 10_000 + i as i64 * 500));
        // Half the completions leave the stage out: the seq places them by the run's plan.
        let stage_index = (i % 2 == 0).then_some(1);
        events.push(completed(seq, stage_index, *outcome, *latency, Some(0.002)));
    }
    events.push(EventPayload::ArrivalsMissed(ArrivalsMissed {
        run_id: RUN.into(),
        stage_index: 1,
        count: 2,
        reason: Some("executor fell behind".into()),
    }));
    events.push(EventPayload::RunCompleted(RunCompleted {
        run_id: RUN.into(),
    }));
    let head = api.publish(&events).await;

    // When the run is read once the projection reached the last event.
    let run = api
        .get(&format!(
            "/admin/studio/load-test-runs/{RUN}?min_position={head}"
        ))
        .await;

    // Then each stage and the totals carry the counts and figures the samples give.
    assert_eq!(run["status"], "completed");
    assert_eq!(run["mode"], "runner");
    assert!(run["as_of_position"].as_i64().unwrap() >= head);
    let latencies =
        |samples: &[(Outcome, f64)]| samples.iter().map(|(_, l)| *l).collect::<Vec<_>>();
    let all: Vec<f64> = latencies(&warm)
        .into_iter()
        .chain(latencies(&peak))
        .collect();
    let expectations = [
        (
            "stages[0]",
            &run["stages"][0],
            (10, 8, 1, 1, 0),
            0.2,
            1.0,
            0.01,
            latencies(&warm),
        ),
        (
            "stages[1]",
            &run["stages"][1],
            (8, 6, 2, 0, 2),
            0.25,
            1.6,
            0.016,
            latencies(&peak),
        ),
        (
            "totals",
            &run["totals"],
            (18, 14, 3, 1, 2),
            0.222222,
            1.2,
            0.026,
            all,
        ),
    ];
    for (
        what,
        figures,
        (dispatched, succeeded, failed, timed_out, missed),
        failure_rate,
        rps,
        cost,
        samples,
    ) in expectations
    {
        assert_eq!(figures["dispatched"], dispatched, "{what}: {figures}");
        assert_eq!(
            figures["completed"],
            succeeded + failed + timed_out,
            "{what}: {figures}"
        );
        assert_eq!(figures["succeeded"], succeeded, "{what}: {figures}");
        assert_eq!(figures["failed"], failed, "{what}: {figures}");
        assert_eq!(figures["timed_out"], timed_out, "{what}: {figures}");
        assert_eq!(figures["missed"], missed, "{what}: {figures}");
        approx(
            &figures["failure_rate"],
            failure_rate,
            &format!("{what}.failure_rate"),
        );
        approx(
            &figures["achieved_rps"],
            rps,
            &format!("{what}.achieved_rps"),
        );
        approx(&figures["cost_usd"], cost, &format!("{what}.cost_usd"));
        assert_latency(
            &figures["latency_ms"]["p50"],
            &samples,
            0.50,
            &format!("{what}.latency_ms.p50"),
        );
        assert_latency(
            &figures["latency_ms"]["p99"],
            &samples,
            0.99,
            &format!("{what}.latency_ms.p99"),
        );
        assert_latency(
            &figures["latency_ms"]["max"],
            &samples,
            1.0,
            &format!("{what}.latency_ms.max"),
        );
    }
    assert_eq!(run["stages"][0]["name"], "warm");
    assert_eq!(run["stages"][1]["target_rps"], 2.0);

    // And the list answers the same run.
    let list = api
        .get(&format!("/admin/studio/load-test-runs?min_position={head}"))
        .await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
    assert_eq!(list["runs"][0]["totals"], run["totals"]);
    api.stop().await;
}

async fn one_unknown_cost_makes_its_stage_and_the_total_cost_null_not_zero(store: Store) {
    let api = Api::start(store, Duration::from_secs(10)).await;
    // Given two stages of two dispatches each, one cost in the first stage unknown.
    let head = api
        .publish(&[
            run_created(vec![stage("a", 2, 1.0), stage("b", 2, 1.0)]),
            EventPayload::RunStarted(RunStarted {
                run_id: RUN.into(),
                mode: RunMode::Inline,
                executor: None,
            }),
            submitted(1, 0, 0),
            submitted(2, 0, 1000),
            submitted(3, 1, 2000),
            submitted(4, 1, 3000),
            completed(1, Some(0), Outcome::Succeeded, 10.0, Some(0.004)),
            completed(2, Some(0), Outcome::Failed, 20.0, None),
            completed(3, None, Outcome::Succeeded, 30.0, Some(0.001)),
            completed(4, None, Outcome::Succeeded, 40.0, Some(0.002)),
        ])
        .await;

    let run = api
        .get(&format!(
            "/admin/studio/load-test-runs/{RUN}?min_position={head}"
        ))
        .await;

    // Then the first stage and the totals do not know their cost; the second stage does.
    assert_eq!(
        run["stages"][0]["cost_usd"],
        Value::Null,
        "{}",
        run["stages"][0]
    );
    assert_eq!(run["stages"][0]["cost_unknown_dispatches"], 1);
    approx(&run["stages"][1]["cost_usd"], 0.003, "stages[1].cost_usd");
    assert_eq!(run["totals"]["cost_usd"], Value::Null, "{}", run["totals"]);
    assert_eq!(run["totals"]["cost_unknown_dispatches"], 1);
    assert_eq!(run["status"], "running");
    api.stop().await;
}

async fn a_run_with_nothing_completed_yet_has_an_unknown_failure_rate_and_latency(store: Store) {
    let api = Api::start(store, Duration::from_secs(5)).await;
    // Given a started run whose first dispatch is still in flight.
    let head = api
        .publish(&[
            run_created(vec![stage("a", 10, 1.0)]),
            EventPayload::RunStarted(RunStarted {
                run_id: RUN.into(),
                mode: RunMode::Runner,
                executor: None,
            }),
            submitted(1, 0, 0),
        ])
        .await;

    let (status, run) = api
        .get_with(
            &format!("/admin/studio/load-test-runs/{RUN}?min_position={head}"),
            Some(ADMIN),
        )
        .await;

    // Then it is listed as running with one dispatch, and what cannot be known yet is null.
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "running");
    assert_eq!(run["totals"]["dispatched"], 1);
    assert_eq!(run["totals"]["completed"], 0);
    assert_eq!(
        run["totals"]["failure_rate"],
        Value::Null,
        "{}",
        run["totals"]
    );
    assert_eq!(
        run["totals"]["latency_ms"]["p50"],
        Value::Null,
        "{}",
        run["totals"]
    );
    api.stop().await;
}

async fn routing_after_apply_apply_rollback_is_at_version_3_with_its_history(store: Store) {
    let api = Api::start(store, Duration::from_secs(10)).await;
    let (a, b) = (
        variant_id("fx-1", "render", "sim-cheap"),
        variant_id("fx-1", "render", "sim-fast"),
    );
    let applied = |variant: &str, previous: Option<&str>, version: u64| {
        EventPayload::BindingApplied(BindingApplied {
            effect_revision_id: "fx-1".into(),
            stage: "render".into(),
            variant_id: variant.into(),
            previous_variant_id: previous.map(String::from),
            binding_version: version,
            reason: "cheapest eligible".into(),
            actor: "ops@example.com".into(),
            evidence: Some(Evidence {
                benchmark_run_id: common::benchmark_run_id(1),
            }),
        })
    };
    // Given A applied, then B, then a rollback to A; and a binding in another scope.
    let head = api
        .publish(&[
            applied(&a, None, 1),
            applied(&b, Some(&a), 2),
            EventPayload::BindingRolledBack(BindingRolledBack {
                effect_revision_id: "fx-1".into(),
                stage: "render".into(),
                from_variant_id: b.clone(),
                to_variant_id: a.clone(),
                binding_version: 3,
                reason: "quality regression".into(),
                actor: "ops@example.com".into(),
            }),
            EventPayload::BindingApplied(BindingApplied {
                effect_revision_id: "fx-2".into(),
                stage: "render".into(),
                variant_id: variant_id("fx-2", "render", "sim-best"),
                previous_variant_id: None,
                binding_version: 1,
                reason: "first".into(),
                actor: "ops@example.com".into(),
                evidence: None,
            }),
        ])
        .await;

    let answer = api.get(&format!("/admin/studio/routing/bindings?effect_revision_id=fx-1&stage=render&min_position={head}")).await;

    // Then the scope is at version 3, routed to A again, with every change in its history.
    let bindings = answer["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 1, "{answer}");
    let binding = &bindings[0];
    assert_eq!(binding["version"], 3);
    assert_eq!(binding["variant_id"], a.as_str());
    let history = binding["history"].as_array().unwrap();
    let changes: Vec<(u64, &str, &str)> = history
        .iter()
        .map(|h| {
            (
                h["version"].as_u64().unwrap(),
                h["action"].as_str().unwrap(),
                h["variant_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (1, "applied", a.as_str()),
            (2, "applied", b.as_str()),
            (3, "rolled_back", a.as_str())
        ]
    );
    assert_eq!(history[2]["previous_variant_id"], b.as_str());
    assert_eq!(
        api.get(&format!(
            "/admin/studio/routing/bindings?min_position={head}"
        ))
        .await["bindings"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    api.stop().await;
}

async fn quality_keeps_the_latest_verdict_and_leaves_unjudged_outputs_out_of_the_mean(
    store: Store,
) {
    let api = Api::start(store, Duration::from_secs(10)).await;
    let bm = common::benchmark_run_id(7);
    let variant = variant_id("fx-1", "render", "sim-cheap");
    let mut events = vec![
        registered(&variant, Some(0.01)),
        EventPayload::PriceSet(PriceSet {
            effect_revision_id: "fx-1".into(),
            price_usd: 0.05,
        }),
        EventPayload::BenchmarkRunCreated(BenchmarkRunCreated {
            benchmark_run_id: bm.clone(),
            dataset: "iteration1-golden-v1".into(),
            variant_ids: vec![variant.clone()],
            inputs: vec![BenchmarkInput {
                input_id: "in-0".into(),
                uri: "s3://golden/0.json".into(),
            }],
            repetitions: 3,
        }),
        EventPayload::BenchmarkItemCreated(BenchmarkItemCreated {
            benchmark_run_id: bm.clone(),
            item_id: "item-q".into(),
            variant_id: variant.clone(),
        }),
    ];
    for (seq, d) in [(1, "d1"), (2, "d2"), (3, "d3")] {
        events.push(EventPayload::BenchmarkDispatchSubmitted(
            BenchmarkDispatchSubmitted {
                benchmark_run_id: bm.clone(),
                item_id: "item-q".into(),
                input_id: "in-0".into(),
                dispatch_id: d.into(),
                seq,
                variant_id: variant.clone(),
                scheduled_at: timestamp_ms(0),
            },
        ));
        events.push(EventPayload::BenchmarkDispatchCompleted(
            BenchmarkDispatchCompleted {
                benchmark_run_id: bm.clone(),
                item_id: "item-q".into(),
                input_id: "in-0".into(),
                dispatch_id: d.into(),
                outcome: Outcome::Succeeded,
                latency_ms: 100.0,
                service_time_ms: None,
                cost_usd: Some(0.01),
                error: None,
                output_uri: None,
            },
        ));
    }
    let judged = |evaluation: &str, dispatch: &str, score: f64, fallback: bool| {
        EventPayload::EvaluationCompleted(EvaluationCompleted {
            benchmark_run_id: bm.clone(),
            evaluation_id: evaluation.into(),
            item_id: "item-q".into(),
            variant_id: variant.clone(),
            dispatch_id: dispatch.into(),
            evaluator: Evaluator {
                provider: "judge".into(),
                model: "vision-large".into(),
            },
            score,
            criteria: BTreeMap::from([("fidelity".to_string(), score)]),
            rationale: "compared with the golden output".into(),
            fallback,
            fallback_reason: fallback.then(|| "judge timed out".into()),
        })
    };
    // Given d1 judged 0.9 then re-judged 0.5, d2 judged 0.8 by the fallback, d3 unjudged.
    events.push(judged("ev-1", "d1", 0.9, false));
    events.push(judged("ev-2", "d2", 0.8, true));
    events.push(judged("ev-3", "d1", 0.5, false));
    events.push(EventPayload::EvaluationFailed(EvaluationFailed {
        benchmark_run_id: bm.clone(),
        evaluation_id: "ev-4".into(),
        dispatch_id: "d3".into(),
        reason: "judge returned no score".into(),
        item_id: Some("item-q".into()),
        variant_id: Some(variant.clone()),
    }));
    let head = api.publish(&events).await;

    let quality = api
        .get(&format!(
            "/admin/studio/quality-evaluations?benchmark_run_id={bm}&min_position={head}"
        ))
        .await;
    let hud = api
        .get(&format!(
            "/admin/studio/economics/money-hud?benchmark_run_id={bm}&min_position={head}"
        ))
        .await;

    // Then every evaluation is listed, d3 is unjudged with its reason, and the mean counts the
    // latest score of d1 and d2 only.
    let evaluations: Vec<(&str, f64, bool)> = quality["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["evaluation_id"].as_str().unwrap(),
                e["score"].as_f64().unwrap(),
                e["fallback"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        evaluations,
        [
            ("ev-1", 0.9, false),
            ("ev-2", 0.8, true),
            ("ev-3", 0.5, false)
        ]
    );
    assert_eq!(
        quality["unjudged"],
        json!([{"dispatch_id": "d3", "variant_id": variant, "reason": "judge returned no score", "evaluation_id": "ev-4"}])
    );
    let row = &hud["rows"][0];
    assert_eq!(row["variant_id"], variant.as_str(), "{hud}");
    assert_eq!(row["quality_n"], 2, "{row}");
    approx(&row["quality_mean"], 0.65, "quality_mean");
    assert_eq!(row["dispatches"], 3);
    approx(&row["price_usd"], 0.05, "price_usd");
    api.stop().await;
}

async fn min_position_beyond_the_head_answers_503_not_caught_up_after_the_bounded_wait(
    store: Store,
) {
    let max_wait = Duration::from_millis(200);
    let api = Api::start(store, max_wait).await;
    let head = api
        .publish(&[registered(&variant_id("fx-1", "render", "sim-cheap"), None)])
        .await;

    let started = Instant::now();
    let (status, body) = api
        .get_with(
            &format!(
                "/admin/studio/variant-registry/variants?min_position={}",
                head + 100
            ),
            Some(ADMIN),
        )
        .await;
    let waited = started.elapsed();

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "not_caught_up", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&(head + 100).to_string()),
        "{body}"
    );
    assert!(
        waited >= max_wait,
        "answered after {waited:?}, before the {max_wait:?} wait"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the wait was not bounded: {waited:?}"
    );
    api.stop().await;
}

async fn admin_queries_refuse_the_executor_secret_and_a_missing_token(store: Store) {
    let api = Api::start(store, Duration::from_secs(10)).await;
    for path in [
        "/admin/studio/load-test-runs",
        "/admin/studio/routing/bindings",
        "/admin/studio/economics/prices",
    ] {
        let (status, body) = api.get_with(path, Some(EXECUTOR)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{path}: {body}");
        let (status, body) = api.get_with(path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{path}: {body}");
        let (status, body) = api.get_with(path, Some(ADMIN)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    api.stop().await;
}

async fn an_unknown_run_answers_404_with_a_json_error(store: Store) {
    let api = Api::start(store, Duration::from_secs(10)).await;
    let (status, body) = api
        .get_with("/admin/studio/load-test-runs/lt_nobody", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lt_nobody"),
        "{body}"
    );
    assert!(body["error"]["details"].is_array(), "{body}");
    let (status, body) = api
        .get_with(
            &format!(
                "/admin/studio/benchmark-matrix-runs/{}",
                common::benchmark_run_id(99)
            ),
            Some(ADMIN),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    api.stop().await;
}
