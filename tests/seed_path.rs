//! The seed's path end to end (issue 6, "Must show"), on the real `studio serve` binary over real
//! sockets: three variants on three local HTTP providers (slow and expensive, cheap and
//! reliable, cheap and failing) → benchmark matrix with artifacts whose sha256 matches the file
//! → quality judged by a local Gemini-shaped server that answers 429 for some outputs (retried)
//! and always for a few (heuristic fallback with the reason) → price → Money HUD names the cheap
//! reliable variant, excludes the failing one with the reason and recommends routing with the
//! saving → apply, apply, rollback leaves version 3 on the winner; a stale rollback is 409.
//!
//! Sizes: 30 inputs × 3 repetitions = 90 dispatches per variant. Fewer would not do: with the
//! `[economics]` limit of 5% failures, the HUD names a winner only when the leader's failure
//! rate holds at its Wilson 95% upper bound, and 30 out of 30 successes still leave that bound
//! at 11% (the answer is then, rightly, `inconclusive`); 90 out of 90 put it at 4.1%.

mod support;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{read_log, Server, ADMIN};

const SLOW: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:slow-premium:exp:seed";
const CHEAP: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:cheap-steady:exp:seed";
const FLAKY: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:cheap-flaky:exp:seed";

const SLOW_COST: f64 = 0.08;
const CHEAP_COST: f64 = 0.01;
const FLAKY_COST: f64 = 0.005;
const PRICE: f64 = 0.05;

const INPUTS: u64 = 30;
const REPETITIONS: u64 = 3;
const PER_VARIANT: u64 = INPUTS * REPETITIONS;
/// The failing provider answers 500 for every odd dispatch seq (seqs run 1..=90).
const FLAKY_SUCCESSES: u64 = PER_VARIANT / 2;

const GEMINI_KEY_ENV: &str = "SEED_PATH_GEMINI_KEY";
const GEMINI_KEY: &str = "AIza-seed-path-key-4242";
const GEMINI_MODEL: &str = "seed-judge";
const GEMINI_SCORE: f64 = 0.85;
/// Outputs whose seq % 30 is this are refused with 429 on every call, so they fall back.
const ALWAYS_429_SEQ: u64 = 7;

const DEADLINE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Fake providers (DESIGN §9 http protocol)

#[derive(Clone)]
struct FakeProvider {
    delay: Duration,
    cost_usd: f64,
    fail_odd_seqs: bool,
    /// Every dispatch request received, as sent.
    requests: Arc<Mutex<Vec<Value>>>,
}

/// The trailing `_<seq>` of `studio_benchmark_<run>_<item n>_<seq>` (or of an output uri built
/// from it).
fn seq_of(dispatch_id: &str) -> u64 {
    let stem = dispatch_id.trim_end_matches(".png");
    stem.rsplit('_')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {dispatch_id:?}"))
}

async fn dispatch(State(fake): State<FakeProvider>, Json(body): Json<Value>) -> Response {
    fake.requests.lock().unwrap().push(body.clone());
    let dispatch_id = body["dispatch_id"].as_str().unwrap_or_default().to_string();
    if dispatch_id.is_empty()
        || body["variant_id"].as_str().is_none()
        || body["input"]["input_id"].as_str().is_none()
        || body["input"]["uri"].as_str().is_none()
    {
        return (StatusCode::BAD_REQUEST, "missing protocol fields").into_response();
    }
    tokio::time::sleep(fake.delay).await;
    if fake.fail_odd_seqs && seq_of(&dispatch_id) % 2 == 1 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "renderer crashed").into_response();
    }
    Json(json!({
        // The uri names the dispatch only, so the judge cannot tell which variant made it.
        "output_uri": format!("s3://renders/outputs/{dispatch_id}.png"),
        "cost_usd": fake.cost_usd,
    }))
    .into_response()
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

impl FakeProvider {
    async fn start(delay_ms: u64, cost_usd: f64, fail_odd_seqs: bool) -> (Self, String) {
        let fake = FakeProvider {
            delay: Duration::from_millis(delay_ms),
            cost_usd,
            fail_odd_seqs,
            requests: Arc::default(),
        };
        let app = Router::new()
            .route("/dispatch", post(dispatch))
            .with_state(fake.clone());
        let base = serve(app).await;
        (fake, format!("{base}/dispatch"))
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Fake Gemini (generateContent's REST shape)

/// `(path segment, x-goog-api-key, body)` of one call to the fake Gemini.
type GeminiCall = (String, Option<String>, Value);

#[derive(Clone, Default)]
struct FakeGemini {
    /// Calls per output uri.
    calls: Arc<Mutex<HashMap<String, u32>>>,
    /// `(path segment, x-goog-api-key, body)` of every call.
    requests: Arc<Mutex<Vec<GeminiCall>>>,
}

fn too_many_requests() -> Response {
    let body = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                "message": "Resource has been exhausted (e.g. check quota)."}});
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    response
        .headers_mut()
        .insert("retry-after", "0".parse().unwrap());
    response
}

async fn generate_content(
    State(fake): State<FakeGemini>,
    Path(call): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    fake.requests
        .lock()
        .unwrap()
        .push((call.clone(), key.clone(), body.clone()));
    if key.as_deref() != Some(GEMINI_KEY) {
        return (StatusCode::FORBIDDEN, "API key not valid").into_response();
    }
    if call != format!("{GEMINI_MODEL}:generateContent") {
        return (StatusCode::NOT_FOUND, "no such model or method").into_response();
    }
    // The output is the last fileData part.
    let Some(output_uri) = body["contents"][0]["parts"]
        .as_array()
        .and_then(|parts| {
            parts
                .iter()
                .rev()
                .find_map(|p| p["fileData"]["fileUri"].as_str())
        })
        .map(str::to_owned)
    else {
        return (StatusCode::BAD_REQUEST, "no fileData part").into_response();
    };
    let calls = {
        let mut calls = fake.calls.lock().unwrap();
        let n = calls.entry(output_uri.clone()).or_default();
        *n += 1;
        *n
    };
    let seq = seq_of(&output_uri);
    if seq % 30 == ALWAYS_429_SEQ || (seq % 3 == 0 && calls == 1) {
        return too_many_requests();
    }
    let verdict = json!({
        "criteria": {"input_fidelity": 0.9, "technical_quality": 0.85, "artifact_free": 0.8},
        "rationale": "Faithful to the input; mild softness in the background.",
        "score": GEMINI_SCORE,
    });
    Json(json!({
        "candidates": [{
            "content": {"parts": [{"text": verdict.to_string()}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": {"promptTokenCount": 1290, "candidatesTokenCount": 60, "totalTokenCount": 1350},
        "modelVersion": GEMINI_MODEL,
    }))
    .into_response()
}

impl FakeGemini {
    async fn start() -> (Self, String) {
        let fake = FakeGemini::default();
        let app = Router::new()
            .route("/v1beta/models/{call}", post(generate_content))
            .with_state(fake.clone());
        let base = serve(app).await;
        (fake, base)
    }
}

// ---------------------------------------------------------------------------------------------
// The admin API

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
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

    async fn get(&self, path: &str) -> (u16, Value) {
        let answer = self
            .client
            .get(format!("{}/admin/studio{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    /// Polls `path` until `done` holds for a 200 answer.
    async fn wait_for(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still not there after {DEADLINE:?}; last answer {status} {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn item_of<'a>(run: &'a Value, variant_id: &str) -> &'a Value {
    run["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["variant_id"] == variant_id)
        .unwrap_or_else(|| panic!("no item for {variant_id} in {run:#}"))
}

fn row_of<'a>(hud: &'a Value, variant_id: &str) -> &'a Value {
    hud["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["variant_id"] == variant_id)
        .unwrap_or_else(|| panic!("no row for {variant_id} in {hud:#}"))
}

// ---------------------------------------------------------------------------------------------
// The path

async fn seed_path(database_url: String) {
    let (slow, slow_url) = FakeProvider::start(150, SLOW_COST, false).await;
    let (cheap, cheap_url) = FakeProvider::start(0, CHEAP_COST, false).await;
    let (flaky, flaky_url) = FakeProvider::start(0, FLAKY_COST, true).await;
    let (gemini, gemini_url) = FakeGemini::start().await;

    let dir = tempfile::tempdir().unwrap();
    let artifact_dir = dir.path().join("artifacts");
    let config_path = dir.path().join("studio.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[providers.slow-premium]
kind = "http"
url = "{slow_url}"
timeout_ms = 10000

[providers.cheap-steady]
kind = "http"
url = "{cheap_url}"
timeout_ms = 10000

[providers.cheap-flaky]
kind = "http"
url = "{flaky_url}"
timeout_ms = 10000

[quality]
provider = "gemini"
model = "{GEMINI_MODEL}"
base_url = "{gemini_url}"
api_key_env = "{GEMINI_KEY_ENV}"
concurrency = 8
timeout_ms = 10000
max_attempts = 3
backoff_base_ms = 10
backoff_max_ms = 50

[economics]
max_failure_rate = 0.05
min_successes = 20
"#
        ),
    )
    .unwrap();
    let server = Server::start_with(
        &database_url,
        &[
            ("STUDIO_CONFIG", config_path.to_str().unwrap()),
            ("STUDIO_ARTIFACT_DIR", artifact_dir.to_str().unwrap()),
            (GEMINI_KEY_ENV, GEMINI_KEY),
        ],
    )
    .await;
    let api = Api {
        base: server.base.clone(),
        client: reqwest::Client::new(),
    };

    // 1. Variants.
    for (variant_id, unit_cost_usd) in [(SLOW, SLOW_COST), (CHEAP, CHEAP_COST), (FLAKY, FLAKY_COST)]
    {
        let (status, body) = api
            .post(
                "/variant-registry/variants",
                json!({"variant_id": variant_id, "unit_cost_usd": unit_cost_usd}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "active", "{body}");
    }

    // 2. Benchmark matrix.
    let inputs: Vec<Value> = (1..=INPUTS)
        .map(|n| json!({"input_id": format!("golden-{n:02}"), "uri": format!("s3://golden/iteration1/portrait-{n:02}.jpg")}))
        .collect();
    let (status, created) = api
        .post(
            "/benchmark-matrix-runs",
            json!({
                "dataset": "iteration1-golden-v1",
                "variant_ids": [SLOW, CHEAP, FLAKY],
                "inputs": inputs,
                "repetitions": REPETITIONS,
            }),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["status"], "running", "{created}");
    let run_id = created["benchmark_run_id"].as_str().unwrap().to_string();
    assert!(run_id.starts_with("bm_"), "{run_id}");
    uuid::Uuid::parse_str(&run_id["bm_".len()..]).expect("bm_<uuid>");

    let run = api
        .wait_for(
            &format!("/benchmark-matrix-runs/{run_id}"),
            "benchmark run completed",
            |r| r["status"] == "completed",
        )
        .await;
    assert_eq!(run["dataset"], "iteration1-golden-v1");
    assert_eq!(run["items"].as_array().unwrap().len(), 3, "{run:#}");
    for (variant_id, succeeded) in [
        (SLOW, PER_VARIANT),
        (CHEAP, PER_VARIANT),
        (FLAKY, FLAKY_SUCCESSES),
    ] {
        let item = item_of(&run, variant_id);
        assert_eq!(item["status"], "completed", "{item:#}");
        assert_eq!(item["completed"], PER_VARIANT, "{item:#}");
        assert_eq!(item["succeeded"], succeeded, "{item:#}");
        assert_eq!(item["failed"], PER_VARIANT - succeeded, "{item:#}");
    }
    // Each provider saw exactly its variant's dispatches, in the http protocol's shape.
    let input_uris: BTreeSet<String> = (1..=INPUTS)
        .map(|n| format!("s3://golden/iteration1/portrait-{n:02}.jpg"))
        .collect();
    for (fake, variant_id) in [(&slow, SLOW), (&cheap, CHEAP), (&flaky, FLAKY)] {
        let requests = fake.requests();
        assert_eq!(requests.len() as u64, PER_VARIANT, "{variant_id}");
        let ids: BTreeSet<&str> = requests
            .iter()
            .map(|r| r["dispatch_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len() as u64, PER_VARIANT, "dispatch ids are unique");
        for r in &requests {
            assert_eq!(r["variant_id"], variant_id, "{r}");
            assert!(
                input_uris.contains(r["input"]["uri"].as_str().unwrap()),
                "{r}"
            );
        }
    }

    // Artifacts: one per item, its file's sha256 equal to the one the answer and the event name.
    let log = read_log(&server.base).await;
    let recorded: Vec<&Value> = log
        .iter()
        .filter(|e| {
            e["type"] == "benchmark.artifact_recorded" && e["payload"]["benchmark_run_id"] == run_id
        })
        .collect();
    assert_eq!(recorded.len(), 3, "one artifact_recorded per item");
    for variant_id in [SLOW, CHEAP, FLAKY] {
        let item = item_of(&run, variant_id);
        let artifacts = item["artifacts"].as_array().unwrap();
        assert_eq!(artifacts.len(), 1, "{item:#}");
        let artifact = &artifacts[0];
        assert_eq!(artifact["artifact_type"], "benchmark_variant_dispatches");
        assert_eq!(
            artifact["dispatch_ids"].as_array().unwrap().len() as u64,
            PER_VARIANT
        );
        let uri = artifact["uri"].as_str().unwrap();
        let path = uri
            .strip_prefix("file://")
            .unwrap_or_else(|| panic!("artifact uri {uri} is not file://"));
        assert!(
            std::path::Path::new(path).starts_with(&artifact_dir),
            "{path} is under STUDIO_ARTIFACT_DIR"
        );
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let digest = sha256_hex(&bytes);
        assert_eq!(
            artifact["sha256"],
            digest.as_str(),
            "answer's sha256 = file's"
        );
        let event = recorded
            .iter()
            .find(|e| e["payload"]["item_id"] == item["item_id"])
            .expect("an artifact_recorded event for the item");
        assert_eq!(
            event["payload"]["sha256"],
            digest.as_str(),
            "event's sha256 = file's"
        );
        assert_eq!(event["payload"]["uri"], uri);
        assert_eq!(
            event["payload"]["artifact_type"],
            "benchmark_variant_dispatches"
        );
        let document: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(document["artifact_type"], "benchmark_variant_dispatches");
        assert_eq!(document["benchmark_run_id"], run_id.as_str());
        assert_eq!(document["item_id"], item["item_id"]);
        assert_eq!(document["variant_id"], variant_id);
        assert_eq!(
            document["dispatches"].as_array().unwrap().len() as u64,
            PER_VARIANT
        );
        assert_eq!(document["summary"]["succeeded"], item["succeeded"]);
    }

    // 3. Quality: every successful output judged.
    let successes = 2 * PER_VARIANT + FLAKY_SUCCESSES;
    let (status, started) = api
        .post("/quality-evaluations", json!({"benchmark_run_id": run_id}))
        .await;
    assert_eq!(status, 202, "{started}");
    let quality = api
        .wait_for(
            &format!("/quality-evaluations?benchmark_run_id={run_id}"),
            "every successful output judged",
            |q| {
                let judged = q["evaluations"].as_array().map_or(0, Vec::len)
                    + q["unjudged"].as_array().map_or(0, Vec::len);
                judged as u64 >= successes
            },
        )
        .await;
    let evaluations = quality["evaluations"].as_array().unwrap();
    assert_eq!(
        evaluations.len() as u64,
        successes,
        "one verdict per output"
    );
    assert_eq!(quality["unjudged"], json!([]), "no safety blocks were sent");
    let judged_dispatches: BTreeSet<&str> = evaluations
        .iter()
        .map(|e| e["dispatch_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        judged_dispatches.len() as u64,
        successes,
        "each output once"
    );
    let (fallbacks, by_gemini): (Vec<&Value>, Vec<&Value>) =
        evaluations.iter().partition(|e| e["fallback"] == true);
    // Outputs with seq % 30 == 7 are always refused; those of the failing variant (odd seqs)
    // never succeeded, so the two reliable variants' (7, 37, 67) fall back.
    let always_refused = (1..=PER_VARIANT)
        .filter(|seq| seq % 30 == ALWAYS_429_SEQ)
        .count();
    assert_eq!(fallbacks.len(), 2 * always_refused, "{fallbacks:#?}");
    for e in &fallbacks {
        assert_eq!(
            seq_of(e["dispatch_id"].as_str().unwrap()) % 30,
            ALWAYS_429_SEQ
        );
        let reason = e["fallback_reason"].as_str().unwrap();
        assert!(reason.contains("429"), "{reason}");
        assert_eq!(e["evaluator"]["provider"], "heuristic", "{e}");
    }
    assert!(
        by_gemini.len() > fallbacks.len() * 10,
        "most are judged by Gemini"
    );
    for e in &by_gemini {
        assert_eq!(e["evaluator"]["provider"], "gemini", "{e}");
        assert_eq!(e["evaluator"]["model"], GEMINI_MODEL, "{e}");
        assert_eq!(e["score"], GEMINI_SCORE, "{e}");
        assert_eq!(e["fallback_reason"], Value::Null, "{e}");
    }
    // The judge was retried after the first 429 of every third output, was always given the
    // key, and was never told which variant made an output (blind judging).
    {
        let calls = gemini.calls.lock().unwrap();
        let retried = calls
            .iter()
            .filter(|(uri, n)| seq_of(uri) % 3 == 0 && **n == 2)
            .count();
        assert!(retried > 0, "some outputs were retried after a 429");
        for (uri, n) in calls.iter() {
            let expected = if seq_of(uri) % 30 == ALWAYS_429_SEQ {
                3
            } else if seq_of(uri) % 3 == 0 {
                2
            } else {
                1
            };
            assert_eq!(*n, expected, "calls for {uri}");
        }
        let requests = gemini.requests.lock().unwrap();
        for (_, key, body) in requests.iter() {
            assert_eq!(key.as_deref(), Some(GEMINI_KEY));
            let text = body.to_string();
            for needle in ["provider:", "slow-premium", "cheap-steady", "cheap-flaky"] {
                assert!(
                    !text.contains(needle),
                    "the judge was told {needle:?}: {text}"
                );
            }
        }
    }

    // 4. Price.
    let (status, price) = api
        .post(
            "/economics/prices",
            json!({"effect_revision_id": "er1", "price_usd": PRICE}),
        )
        .await;
    assert_eq!(status, 201, "{price}");
    let price_position = price["position"].as_i64().unwrap();

    // 5. Money HUD, once every projection it reads has seen the price and the verdicts.
    let min_position = price_position.max(quality["as_of_position"].as_i64().unwrap());
    let (status, hud) = api
        .get(&format!(
            "/economics/money-hud?benchmark_run_id={run_id}&min_position={min_position}"
        ))
        .await;
    assert_eq!(status, 200, "{hud}");
    assert_eq!(hud["verdict"], "winner", "{hud:#}");
    assert_eq!(hud["winner"]["variant_id"], CHEAP, "{hud:#}");
    assert_eq!(hud["winner"]["confidence"], "high", "{hud:#}");
    for variant_id in [SLOW, CHEAP, FLAKY] {
        let row = row_of(&hud, variant_id);
        assert_eq!(row["price_usd"], PRICE, "{row:#}");
        assert_eq!(row["price_position"], price_position, "{row:#}");
        assert_eq!(row["dispatches"], PER_VARIANT, "{row:#}");
    }
    assert_eq!(row_of(&hud, CHEAP)["eligible"], true);
    assert_eq!(row_of(&hud, SLOW)["eligible"], true);
    let flaky_row = row_of(&hud, FLAKY);
    assert_eq!(flaky_row["eligible"], false, "{flaky_row:#}");
    assert_eq!(flaky_row["failure_rate"], 0.5, "{flaky_row:#}");
    let reasons = flaky_row["excluded_because"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("failure rate 50")),
        "the failing variant is excluded for its failure rate: {reasons:?}"
    );
    let cheap_row = row_of(&hud, CHEAP);
    assert!((cheap_row["cost_per_success_usd"].as_f64().unwrap() - CHEAP_COST).abs() < 1e-9);
    assert!(
        (cheap_row["margin_per_success_usd"].as_f64().unwrap() - (PRICE - CHEAP_COST)).abs() < 1e-9
    );
    let recommendations = hud["recommendations"].as_array().unwrap();
    let route = recommendations
        .iter()
        .find(|r| r["action"] == "route")
        .unwrap_or_else(|| panic!("a route recommendation: {hud:#}"));
    assert_eq!(route["variant_id"], CHEAP, "{route:#}");
    let saving = route["saving_per_1k_outputs_usd"].as_f64().unwrap();
    assert!(saving > 0.0, "{route:#}");
    // Against the eligible runner-up (no binding yet): (0.08 − 0.01) × 1,000.
    assert!((saving - 70.0).abs() < 0.01, "{route:#}");
    assert!(
        recommendations
            .iter()
            .any(|r| r["action"] == "exclude" && r["variant_id"] == FLAKY),
        "{hud:#}"
    );

    // 6. Routing: apply the winner, apply the slow one, roll back to the winner.
    let evidence = json!({"benchmark_run_id": run_id});
    let (status, applied) = api
        .post(
            "/routing/apply",
            json!({"effect_revision_id": "er1", "stage": "render", "variant_id": CHEAP,
                   "expected_version": 0, "reason": "money hud winner", "evidence": evidence}),
        )
        .await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["binding"]["version"], 1, "{applied}");
    assert_eq!(applied["binding"]["variant_id"], CHEAP, "{applied}");
    let (status, applied) = api
        .post(
            "/routing/apply",
            json!({"effect_revision_id": "er1", "stage": "render", "variant_id": SLOW,
                   "expected_version": 1, "reason": "trying the premium renderer",
                   "evidence": evidence}),
        )
        .await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["binding"]["version"], 2, "{applied}");
    assert_eq!(
        applied["binding"]["previous_variant_id"], CHEAP,
        "{applied}"
    );
    let (status, rolled_back) = api
        .post(
            "/routing/rollback",
            json!({"effect_revision_id": "er1", "stage": "render", "expected_version": 2,
                   "reason": "premium costs 8x for the same quality"}),
        )
        .await;
    assert_eq!(status, 200, "{rolled_back}");
    assert_eq!(rolled_back["binding"]["version"], 3, "{rolled_back}");
    assert_eq!(rolled_back["binding"]["variant_id"], CHEAP, "{rolled_back}");
    let (status, stale) = api
        .post(
            "/routing/rollback",
            json!({"effect_revision_id": "er1", "stage": "render", "expected_version": 2,
                   "reason": "double click"}),
        )
        .await;
    assert_eq!(status, 409, "{stale}");
    assert_eq!(stale["error"]["code"], "version_conflict", "{stale}");
    assert_eq!(
        stale["error"]["details"][0]["current_version"], 3,
        "{stale}"
    );
    assert!(
        stale["error"]["message"].as_str().unwrap().contains('3'),
        "the message names the current version: {stale}"
    );

    let rollback_position = rolled_back["position"].as_i64().unwrap();
    let (status, bindings) = api
        .get(&format!(
            "/routing/bindings?effect_revision_id=er1&stage=render&min_position={rollback_position}"
        ))
        .await;
    assert_eq!(status, 200, "{bindings}");
    let bindings = bindings["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 1, "{bindings:#?}");
    let binding = &bindings[0];
    assert_eq!(binding["version"], 3, "{binding:#}");
    assert_eq!(binding["variant_id"], CHEAP, "{binding:#}");
    let history: Vec<(u64, &str)> = binding["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["version"].as_u64().unwrap(),
                h["variant_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![(1, CHEAP), (2, SLOW), (3, CHEAP)],
        "{binding:#}"
    );

    // 7. The log holds the seed plan's facts, and never the judge's key.
    let log = read_log(&server.base).await;
    let count = |t: &str| log.iter().filter(|e| e["type"] == t).count();
    let mut counts = BTreeMap::new();
    for t in [
        "benchmark.run_created",
        "benchmark.item_created",
        "benchmark.dispatch_completed",
        "benchmark.artifact_recorded",
        "benchmark.run_completed",
        "quality.evaluation_completed",
        "pricing.price_set",
        "routing.binding_applied",
        "routing.binding_rolled_back",
    ] {
        counts.insert(t, count(t));
    }
    let expected = BTreeMap::from([
        ("benchmark.run_created", 1),
        ("benchmark.item_created", 3),
        ("benchmark.dispatch_completed", 3 * PER_VARIANT as usize),
        ("benchmark.artifact_recorded", 3),
        ("benchmark.run_completed", 1),
        ("quality.evaluation_completed", successes as usize),
        ("pricing.price_set", 1),
        ("routing.binding_applied", 2),
        ("routing.binding_rolled_back", 1),
    ]);
    assert_eq!(counts, expected);
    assert!(log
        .iter()
        .any(|e| e["type"] == "quality.evaluation_completed"
            && e["payload"]["fallback"] == true
            && e["payload"]["fallback_reason"]
                .as_str()
                .is_some_and(|r| r.contains("429"))));
    for e in log
        .iter()
        .filter(|e| e["type"] == "routing.binding_applied")
    {
        assert_eq!(
            e["payload"]["evidence"]["benchmark_run_id"],
            run_id.as_str(),
            "{e}"
        );
    }
    let rolled = log
        .iter()
        .find(|e| e["type"] == "routing.binding_rolled_back")
        .unwrap();
    assert_eq!(rolled["payload"]["from_variant_id"], SLOW, "{rolled}");
    assert_eq!(rolled["payload"]["to_variant_id"], CHEAP, "{rolled}");
    assert_eq!(rolled["payload"]["binding_version"], 3, "{rolled}");
    let whole_log = serde_json::to_string(&log).unwrap();
    assert!(
        !whole_log.contains(GEMINI_KEY),
        "the API key leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_path_on_sqlite() {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    seed_path(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_path_on_postgres() {
    seed_path(eventlog::testkit::postgres_database().await).await;
}
