//! Quality evaluation over HTTP on a real socket: a finished benchmark run in a real SQLite log,
//! the quality command route merged with the read routes of `projector` and a live runner, and
//! a local Gemini-shaped server that answers 429s for some outputs and blocks one.

use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use eventlog::catalogue::{
    BenchmarkDispatchCompleted, BenchmarkDispatchSubmitted, BenchmarkInput, BenchmarkItemCompleted,
    BenchmarkItemCreated, BenchmarkRunCompleted, BenchmarkRunCreated, EventPayload, Outcome,
};
use eventlog::{EventLog, ValidatedEvent};
use projector::http::ReadState;
use projector::money_hud::Thresholds;
use projector::{ReadDb, StatusBoard};
use reqwest::StatusCode;
use serde_json::{json, Value};
use services::quality::{
    self, GeminiQualityEvaluationProvider, GeminiSettings, HeuristicEvaluator,
    QualityEvaluationService, RetryPolicy,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const ADMIN: &str = "admin-test-token";
const EXECUTOR: &str = "executor-test-secret";
const GEMINI_KEY: &str = "AIza-integration-key";
const EVALUATIONS: &str = "/admin/studio/quality-evaluations";
const VARIANT_A: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:fast:exp:e1";
const VARIANT_B: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:cheap:exp:e1";
const VARIANT_C: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:flaky:exp:e1";

/// How the fake judge treats one output, by its uri (the judge never learns the variant).
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Score(f64),
    /// 429 this many times, then the score.
    RateLimitedThen(u32, f64),
    AlwaysRateLimited,
    SafetyBlock,
    /// Answers the score once the test opens the gate.
    Gated(f64),
}

#[derive(Clone)]
struct FakeGemini {
    behaviours: Arc<HashMap<String, Behaviour>>,
    calls: Arc<Mutex<HashMap<String, u32>>>,
    bodies: Arc<Mutex<Vec<String>>>,
    /// Held shut by the test while it posts again during a running batch.
    gate: Arc<tokio::sync::Semaphore>,
}

impl FakeGemini {
    async fn serve(behaviours: HashMap<String, Behaviour>) -> (Self, String) {
        let fake = FakeGemini {
            behaviours: Arc::new(behaviours),
            calls: Arc::default(),
            bodies: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        let app = Router::new()
            .route("/v1beta/models/{call}", post(judge))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, format!("http://{addr}"))
    }

    fn calls_total(&self) -> u32 {
        self.calls.lock().unwrap().values().sum()
    }
}

fn gemini_text(score: f64) -> Value {
    let verdict = json!({
        "criteria": {"input_fidelity": score, "technical_quality": score, "artifact_free": score},
        "rationale": "Faithful to the input, clean edges.",
        "score": score
    });
    json!({
        "candidates": [{
            "content": {"parts": [{"text": verdict.to_string()}], "role": "model"},
            "finishReason": "STOP",
            "index": 0
        }],
        "usageMetadata": {"promptTokenCount": 900, "candidatesTokenCount": 40, "totalTokenCount": 940},
        "modelVersion": "gemini-test"
    })
}

async fn judge(
    State(fake): State<FakeGemini>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    assert_eq!(headers["x-goog-api-key"], GEMINI_KEY);
    let request: Value = serde_json::from_str(&body).unwrap();
    let output_uri = request["contents"][0]["parts"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["fileData"]["fileUri"]
        .as_str()
        .unwrap()
        .to_string();
    fake.bodies.lock().unwrap().push(body);
    let call = {
        let mut calls = fake.calls.lock().unwrap();
        let n = calls.entry(output_uri.clone()).or_default();
        *n += 1;
        *n
    };
    let too_many = || {
        let mut response = (
            AxumStatus::TOO_MANY_REQUESTS,
            Json(json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}})),
        )
            .into_response();
        response
            .headers_mut()
            .insert("retry-after", "0".parse().unwrap());
        response
    };
    match fake.behaviours.get(&output_uri).copied() {
        Some(Behaviour::Score(s)) => Json(gemini_text(s)).into_response(),
        Some(Behaviour::RateLimitedThen(n, s)) if call > n => Json(gemini_text(s)).into_response(),
        Some(Behaviour::RateLimitedThen(..)) | Some(Behaviour::AlwaysRateLimited) => too_many(),
        Some(Behaviour::Gated(s)) => {
            let _open = fake.gate.acquire().await.unwrap();
            Json(gemini_text(s)).into_response()
        }
        Some(Behaviour::SafetyBlock) => Json(json!({
            "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]}],
            "usageMetadata": {"promptTokenCount": 900, "totalTokenCount": 900}
        }))
        .into_response(),
        None => (AxumStatus::BAD_REQUEST, format!("unexpected output {output_uri}")).into_response(),
    }
}

struct Api {
    base: String,
    log: Arc<dyn EventLog>,
    service: QualityEvaluationService,
    client: reqwest::Client,
    shutdown: watch::Sender<bool>,
    runner: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start(gemini_base: &str) -> Self {
        let (url, dir) = eventlog::testkit::sqlite_url();
        let log = eventlog::open(&url, true)
            .await
            .expect("open the event log");
        let judge = GeminiQualityEvaluationProvider::new(
            GeminiSettings {
                base_url: gemini_base.to_string(),
                model: "gemini-test".into(),
                timeout: Duration::from_secs(5),
                retry: RetryPolicy {
                    max_attempts: 3,
                    base: Duration::from_millis(5),
                    max: Duration::from_millis(20),
                    ..RetryPolicy::default()
                },
            },
            GEMINI_KEY.into(),
            HeuristicEvaluator::new(Duration::from_secs(10)),
        )
        .unwrap();
        let service = QualityEvaluationService::new(log.clone(), Arc::new(judge), 2);

        let db = ReadDb::connect(&url).await.expect("connect the read side");
        let status = Arc::new(StatusBoard::default());
        let read_state = ReadState {
            db: db.clone(),
            log: log.clone(),
            status: status.clone(),
            thresholds: Thresholds::default(),
            max_wait: Duration::from_secs(5),
        };
        let tokens = ingest::Tokens::new(ADMIN, EXECUTOR).unwrap();
        let (shutdown, stop) = watch::channel(false);
        let app = ingest::with_fallbacks(
            quality::router(service.clone(), tokens.clone())
                .merge(projector::http::router(read_state, tokens)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let runner = projector::Runner::new(db, log.clone(), projector::all_projections(), status);
        let runner = tokio::spawn(runner.run(stop));
        Self {
            base: format!("http://{addr}"),
            log,
            service,
            client: reqwest::Client::new(),
            shutdown,
            runner,
            server,
            _dir: dir,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("answered {status} with non-JSON {text:?}: {e}"));
        (status, body)
    }

    async fn post(&self, body: &Value) -> (StatusCode, Value) {
        self.send(
            self.client
                .post(format!("{}{EVALUATIONS}", self.base))
                .bearer_auth(ADMIN)
                .json(body),
        )
        .await
    }

    /// The read model once it has caught up with everything in the log.
    async fn evaluations(&self, run_id: &str) -> Value {
        let head = self.log.head().await.unwrap();
        let (status, body) = self
            .send(
                self.client
                    .get(format!(
                        "{}{EVALUATIONS}?benchmark_run_id={run_id}&min_position={head}",
                        self.base
                    ))
                    .bearer_auth(ADMIN),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.runner.await.unwrap();
        self.server.abort();
    }
}

/// One dispatch of the fixture run.
struct Dispatch {
    id: &'static str,
    item: &'static str,
    input: &'static str,
    outcome: Outcome,
    output: Option<&'static str>,
}

const fn ok_dispatch(
    id: &'static str,
    item: &'static str,
    input: &'static str,
    output: &'static str,
) -> Dispatch {
    Dispatch {
        id,
        item,
        input,
        outcome: Outcome::Succeeded,
        output: Some(output),
    }
}

/// Three variants × two inputs; variant C's second dispatch failed (no output to judge).
const DISPATCHES: [Dispatch; 6] = [
    ok_dispatch("bmd-a-1", "item-a", "in-1", "s3://renders/o1.png"),
    ok_dispatch("bmd-a-2", "item-a", "in-2", "s3://renders/o2.png"),
    ok_dispatch("bmd-b-1", "item-b", "in-1", "s3://renders/o3.png"),
    ok_dispatch("bmd-b-2", "item-b", "in-2", "s3://renders/o4.png"),
    ok_dispatch("bmd-c-1", "item-c", "in-1", "s3://renders/o5.png"),
    Dispatch {
        id: "bmd-c-2",
        item: "item-c",
        input: "in-2",
        outcome: Outcome::Failed,
        output: None,
    },
];

fn behaviours() -> HashMap<String, Behaviour> {
    HashMap::from([
        ("s3://renders/o1.png".to_string(), Behaviour::Score(0.9)),
        ("s3://renders/o2.png".to_string(), Behaviour::Score(0.8)),
        // One 429, then judged on the retry.
        (
            "s3://renders/o3.png".to_string(),
            Behaviour::RateLimitedThen(1, 0.75),
        ),
        // 429 on every attempt: the heuristic scores it, marked as a fallback.
        (
            "s3://renders/o4.png".to_string(),
            Behaviour::AlwaysRateLimited,
        ),
        ("s3://renders/o5.png".to_string(), Behaviour::SafetyBlock),
    ])
}

fn item_variant(item: &str) -> &'static str {
    match item {
        "item-a" => VARIANT_A,
        "item-b" => VARIANT_B,
        _ => VARIANT_C,
    }
}

/// Appends a benchmark run's events, built with the catalogue's typed payloads; the run is
/// completed when `completed`.
async fn append_run(log: &Arc<dyn EventLog>, completed: bool) -> String {
    let run_id = eventlog::ids::new_benchmark_run_id();
    let now = Utc::now();
    let scheduled_at = eventlog::envelope::format_timestamp(now);
    let mut payloads = vec![EventPayload::BenchmarkRunCreated(BenchmarkRunCreated {
        benchmark_run_id: run_id.clone(),
        dataset: "iteration1-golden-v1".into(),
        variant_ids: vec![VARIANT_A.into(), VARIANT_B.into(), VARIANT_C.into()],
        inputs: vec![
            BenchmarkInput {
                input_id: "in-1".into(),
                uri: "s3://golden/in-1.jpg".into(),
            },
            BenchmarkInput {
                input_id: "in-2".into(),
                uri: "s3://golden/in-2.jpg".into(),
            },
        ],
        repetitions: 1,
    })];
    for item in ["item-a", "item-b", "item-c"] {
        payloads.push(EventPayload::BenchmarkItemCreated(BenchmarkItemCreated {
            benchmark_run_id: run_id.clone(),
            item_id: item.into(),
            variant_id: item_variant(item).into(),
        }));
    }
    for (seq, d) in DISPATCHES.iter().enumerate() {
        payloads.push(EventPayload::BenchmarkDispatchSubmitted(
            BenchmarkDispatchSubmitted {
                benchmark_run_id: run_id.clone(),
                item_id: d.item.into(),
                input_id: d.input.into(),
                dispatch_id: d.id.into(),
                seq: seq as u64 + 1,
                variant_id: item_variant(d.item).into(),
                scheduled_at: scheduled_at.clone(),
            },
        ));
        payloads.push(EventPayload::BenchmarkDispatchCompleted(
            BenchmarkDispatchCompleted {
                benchmark_run_id: run_id.clone(),
                item_id: d.item.into(),
                input_id: d.input.into(),
                dispatch_id: d.id.into(),
                outcome: d.outcome,
                latency_ms: 1_200.0,
                service_time_ms: Some(1_100.0),
                cost_usd: Some(0.01),
                error: d.output.is_none().then(|| "HTTP 500: boom".to_string()),
                output_uri: d.output.map(str::to_string),
            },
        ));
    }
    if completed {
        for item in ["item-a", "item-b", "item-c"] {
            payloads.push(EventPayload::BenchmarkItemCompleted(
                BenchmarkItemCompleted {
                    benchmark_run_id: run_id.clone(),
                    item_id: item.into(),
                },
            ));
        }
        payloads.push(EventPayload::BenchmarkRunCompleted(BenchmarkRunCompleted {
            benchmark_run_id: run_id.clone(),
        }));
    }
    let events = payloads
        .iter()
        .map(|p| {
            p.check().unwrap();
            ValidatedEvent::from_payload(p, "tests", now)
        })
        .collect();
    log.append(events).await.unwrap();
    run_id
}

async fn quality_stream_len(log: &Arc<dyn EventLog>, run_id: &str) -> usize {
    log.read_stream(&format!("quality-{run_id}"), 0, 1_000)
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_successful_output_is_judged_blind_with_fallbacks_and_unjudged_blocks() {
    let (gemini, gemini_base) = FakeGemini::serve(behaviours()).await;
    let api = Api::start(&gemini_base).await;
    let run_id = append_run(&api.log, true).await;

    let (status, started) = api.post(&json!({"benchmark_run_id": run_id})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["benchmark_run_id"], run_id.as_str());
    assert_eq!(
        started["outputs"], 5,
        "the failed dispatch has no output: {started}"
    );
    assert_eq!(started["already_judged"], 0);
    assert!(started["evaluation_batch_id"]
        .as_str()
        .unwrap()
        .starts_with("qb_"));
    assert_eq!(
        started["evaluator"],
        json!({"provider": "gemini", "model": "gemini-test"})
    );

    let summary = api.service.wait(&run_id).await.expect("a batch ran");
    assert_eq!(
        (
            summary.judged,
            summary.fallbacks,
            summary.unjudged,
            summary.not_recorded
        ),
        (4, 1, 1, 0),
        "{summary:?}"
    );

    let view = api.evaluations(&run_id).await;
    let evaluations = view["evaluations"].as_array().unwrap();
    assert_eq!(evaluations.len(), 4, "{view}");
    let by_dispatch: BTreeMap<&str, &Value> = evaluations
        .iter()
        .map(|e| (e["dispatch_id"].as_str().unwrap(), e))
        .collect();

    let a1 = by_dispatch["bmd-a-1"];
    assert_eq!(a1["score"], 0.9);
    assert_eq!(a1["variant_id"], VARIANT_A);
    assert_eq!(a1["item_id"], "item-a");
    assert_eq!(a1["fallback"], false);
    assert_eq!(
        a1["evaluator"],
        json!({"provider": "gemini", "model": "gemini-test"})
    );
    assert_eq!(a1["criteria"]["input_fidelity"], 0.9);
    assert_eq!(by_dispatch["bmd-a-2"]["score"], 0.8);

    // Rate limited once, judged by Gemini on the retry.
    let b1 = by_dispatch["bmd-b-1"];
    assert_eq!(
        (b1["score"].as_f64(), &b1["fallback"]),
        (Some(0.75), &json!(false))
    );
    assert_eq!(gemini.calls.lock().unwrap()["s3://renders/o3.png"], 2);

    // Rate limited on every attempt: scored by the heuristic, flagged, with the reason.
    let b2 = by_dispatch["bmd-b-2"];
    assert_eq!(b2["fallback"], true, "{b2}");
    assert_eq!(
        b2["fallback_reason"],
        "gemini: 429 Too Many Requests after 3 attempts"
    );
    assert_eq!(b2["evaluator"]["provider"], "heuristic");
    assert_eq!(b2["variant_id"], VARIANT_B);
    assert!(b2["rationale"]
        .as_str()
        .unwrap()
        .contains("not a judgement of visual quality"));
    assert_eq!(gemini.calls.lock().unwrap()["s3://renders/o4.png"], 3);

    // The safety block is unjudged, never a score.
    assert!(!by_dispatch.contains_key("bmd-c-1"));
    let unjudged = view["unjudged"].as_array().unwrap();
    assert_eq!(unjudged.len(), 1, "{view}");
    assert_eq!(unjudged[0]["dispatch_id"], "bmd-c-1");
    assert_eq!(unjudged[0]["variant_id"], VARIANT_C);
    let reason = unjudged[0]["reason"].as_str().unwrap();
    assert!(reason.contains("finishReason SAFETY"), "{reason}");

    // Blind judging: no request named a variant, an item or a provider.
    for body in gemini.bodies.lock().unwrap().iter() {
        for secret in [
            VARIANT_A,
            VARIANT_B,
            VARIANT_C,
            "item-",
            "bmd-",
            "provider:",
        ] {
            assert!(!body.contains(secret), "{secret} leaked into {body}");
        }
    }
    // The key is nowhere in the log.
    let all = api.log.read_all(0, 10_000).await.unwrap();
    assert!(!serde_json::to_string(&all).unwrap().contains(GEMINI_KEY));

    // Posting again judges nothing twice: every output already has a verdict.
    let calls_before = gemini.calls_total();
    let stream_before = quality_stream_len(&api.log, &run_id).await;
    assert_eq!(stream_before, 5);
    let (status, again) = api.post(&json!({"benchmark_run_id": run_id})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["outputs"], 0, "{again}");
    assert_eq!(again["already_judged"], 5, "{again}");
    assert_eq!(again["status"], "completed");
    assert_eq!(again["evaluation_batch_id"], Value::Null);
    assert_eq!(gemini.calls_total(), calls_before);
    assert_eq!(quality_stream_len(&api.log, &run_id).await, stream_before);

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_judges_only_the_outputs_without_a_verdict() {
    let (gemini, gemini_base) = FakeGemini::serve(behaviours()).await;
    let api = Api::start(&gemini_base).await;
    let run_id = append_run(&api.log, true).await;

    // A verdict on one output is already in the stream (an earlier, interrupted batch).
    let earlier = EventPayload::EvaluationCompleted(eventlog::catalogue::EvaluationCompleted {
        benchmark_run_id: run_id.clone(),
        evaluation_id: "qe_earlier".into(),
        item_id: "item-a".into(),
        variant_id: VARIANT_A.into(),
        dispatch_id: "bmd-a-1".into(),
        evaluator: eventlog::catalogue::Evaluator {
            provider: "gemini".into(),
            model: "gemini-test".into(),
        },
        score: 0.5,
        criteria: BTreeMap::new(),
        rationale: "judged before".into(),
        fallback: false,
        fallback_reason: None,
    });
    api.log
        .append(vec![ValidatedEvent::from_payload(
            &earlier,
            "tests",
            Utc::now(),
        )])
        .await
        .unwrap();

    let (status, started) = api.post(&json!({"benchmark_run_id": run_id})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(
        (
            started["outputs"].as_u64(),
            started["already_judged"].as_u64()
        ),
        (Some(4), Some(1))
    );
    api.service.wait(&run_id).await.unwrap();
    assert!(!gemini
        .calls
        .lock()
        .unwrap()
        .contains_key("s3://renders/o1.png"));
    let view = api.evaluations(&run_id).await;
    let a1: Vec<&Value> = view["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["dispatch_id"] == "bmd-a-1")
        .collect();
    assert_eq!(a1.len(), 1);
    assert_eq!(a1[0]["evaluation_id"], "qe_earlier");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_unfinished_and_malformed_runs_are_refused_with_what_to_do() {
    let (gemini, gemini_base) = FakeGemini::serve(behaviours()).await;
    let api = Api::start(&gemini_base).await;

    let unknown = eventlog::ids::new_benchmark_run_id();
    let (status, body) = api.post(&json!({"benchmark_run_id": unknown})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");

    let running = append_run(&api.log, false).await;
    let (status, body) = api.post(&json!({"benchmark_run_id": running})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "run_not_completed");
    assert_eq!(body["error"]["details"][0]["completed_dispatches"], 6);

    let (status, body) = api.post(&json!({"benchmark_run_id": "run-42"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["path"], "benchmark_run_id");

    let (status, body) = api.post(&json!({"run": running})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (status, _) = api
        .send(
            api.client
                .post(format!("{}{EVALUATIONS}", api.base))
                .json(&json!({"benchmark_run_id": running})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert_eq!(gemini.calls_total(), 0, "nothing was judged");
    assert_eq!(quality_stream_len(&api.log, &running).await, 0);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_while_the_run_is_being_judged_joins_the_running_batch() {
    let gated: HashMap<String, Behaviour> = behaviours()
        .into_keys()
        .map(|uri| (uri, Behaviour::Gated(0.6)))
        .collect();
    let (gemini, gemini_base) = FakeGemini::serve(gated).await;
    let api = Api::start(&gemini_base).await;
    let run_id = append_run(&api.log, true).await;

    let (status, first) = api.post(&json!({"benchmark_run_id": run_id})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["status"], "running");
    let (status, second) = api.post(&json!({"benchmark_run_id": run_id})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    assert_eq!(second["joined_running_batch"], true, "{second}");
    assert_eq!(second["evaluation_batch_id"], first["evaluation_batch_id"]);
    assert_eq!(second["outputs"], 5);

    gemini
        .gate
        .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    let summary = api.service.wait(&run_id).await.unwrap();
    assert_eq!(summary.judged, 5, "{summary:?}");
    assert_eq!(gemini.calls_total(), 5, "each output was judged once");
    assert_eq!(quality_stream_len(&api.log, &run_id).await, 5);
    api.stop().await;
}
