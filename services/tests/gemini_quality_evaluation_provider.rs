//! GeminiQualityEvaluationProviderTest: the Gemini judge against a local HTTP server on a real
//! socket that answers in `generateContent`'s real response shape, including each way it can
//! fail (429 with `Retry-After`, 5xx, slow answers, unparsable text, safety blocks).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use services::quality::{
    EvaluationOutcome, EvaluationRequest, GeminiQualityEvaluationProvider, GeminiSettings,
    HeuristicEvaluator, Judgement, QualityEvaluator, RetryPolicy, HEURISTIC_PROVIDER,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "AIza-test-key-0123456789";
const MODEL: &str = "gemini-test";

/// One scripted answer of the fake.
#[derive(Clone)]
enum Reply {
    Answer {
        status: StatusCode,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Answers 200 with a valid verdict, but only after this long.
    Slow(Duration),
}

fn ok(body: Value) -> Reply {
    Reply::Answer {
        status: StatusCode::OK,
        headers: vec![],
        body: body.to_string(),
    }
}

fn status(status: StatusCode, body: Value) -> Reply {
    Reply::Answer {
        status,
        headers: vec![],
        body: body.to_string(),
    }
}

/// Gemini's real success shape, with `text` as the candidate's only part.
fn candidate_text(text: &str) -> Value {
    json!({
        "candidates": [{
            "content": {"parts": [{"text": text}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"}
            ]
        }],
        "usageMetadata": {"promptTokenCount": 1290, "candidatesTokenCount": 60, "totalTokenCount": 1350},
        "modelVersion": MODEL,
        "responseId": "resp-1"
    })
}

fn verdict(score: f64) -> Value {
    candidate_text(
        &json!({
            "criteria": {"input_fidelity": 0.9, "technical_quality": 0.8, "artifact_free": 0.7},
            "rationale": "Sharp and faithful; slight haloing at the edges.",
            "score": score
        })
        .to_string(),
    )
}

fn google_error(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    /// Answered once the script runs out.
    then: Option<Reply>,
    requests: Vec<(String, HeaderMap, Value)>,
}

#[derive(Clone, Default)]
struct FakeGemini {
    script: Arc<Mutex<Script>>,
}

impl FakeGemini {
    async fn serve(replies: Vec<Reply>, then: Reply) -> (Self, String) {
        let fake = FakeGemini::default();
        {
            let mut script = fake.script.lock().unwrap();
            script.replies = replies.into();
            script.then = Some(then);
        }
        let app = Router::new()
            .route("/v1beta/models/{call}", post(answer))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, format!("http://{addr}"))
    }

    fn requests(&self) -> Vec<(String, HeaderMap, Value)> {
        self.script.lock().unwrap().requests.clone()
    }
}

async fn answer(
    State(fake): State<FakeGemini>,
    axum::extract::Path(call): axum::extract::Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let reply = {
        let mut script = fake.script.lock().unwrap();
        script.requests.push((call, headers, body));
        let next = script.replies.pop_front();
        next.or_else(|| script.then.clone()).unwrap()
    };
    match reply {
        Reply::Answer {
            status,
            headers,
            body,
        } => {
            let mut response = (status, body).into_response();
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            (StatusCode::OK, Json(verdict(0.5))).into_response()
        }
    }
}

fn provider(
    base_url: &str,
    max_attempts: u32,
    timeout: Duration,
) -> GeminiQualityEvaluationProvider {
    GeminiQualityEvaluationProvider::new(
        GeminiSettings {
            base_url: base_url.to_string(),
            model: MODEL.to_string(),
            timeout,
            retry: RetryPolicy {
                max_attempts,
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
        },
        KEY.to_string(),
        HeuristicEvaluator::new(Duration::from_secs(10)),
    )
    .unwrap()
}

fn request() -> EvaluationRequest {
    EvaluationRequest {
        dispatch_id: "bmd_7".into(),
        input_uri: Some("s3://golden/inputs/portrait-01.jpg".into()),
        output_uri: "s3://renders/outputs/4f1c.png".into(),
        latency_ms: 1_200.0,
    }
}

fn judged(outcome: EvaluationOutcome) -> Judgement {
    match outcome {
        EvaluationOutcome::Judged(j) => j,
        other => panic!("expected a judgement, got {other:?}"),
    }
}

fn unjudged(outcome: EvaluationOutcome) -> String {
    match outcome {
        EvaluationOutcome::Unjudged { reason } => reason,
        other => panic!("expected unjudged, got {other:?}"),
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_stop_answer_is_judged_from_the_candidates_text() {
    let (fake, base) = FakeGemini::serve(vec![], ok(verdict(0.82))).await;
    let judge = provider(&base, 3, 5 * SECOND);
    let j = judged(judge.evaluate(&request()).await);
    assert_eq!(j.score, 0.82);
    assert_eq!(j.criteria["input_fidelity"], 0.9);
    assert_eq!(j.criteria["artifact_free"], 0.7);
    assert_eq!(
        j.rationale,
        "Sharp and faithful; slight haloing at the edges."
    );
    assert_eq!(
        (j.evaluator.provider.as_str(), j.evaluator.model.as_str()),
        ("gemini", MODEL)
    );
    assert!(!j.fallback);
    assert_eq!(j.fallback_reason, None);
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn the_request_carries_the_key_header_both_file_parts_and_the_response_schema() {
    let (fake, base) = FakeGemini::serve(vec![], ok(verdict(0.5))).await;
    judged(provider(&base, 1, 5 * SECOND).evaluate(&request()).await);
    let requests = fake.requests();
    let (call, headers, body) = &requests[0];
    assert_eq!(call, &format!("{MODEL}:generateContent"));
    assert_eq!(headers["x-goog-api-key"], KEY);
    assert!(headers.get("authorization").is_none());

    let contents = body["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 1);
    assert_eq!(contents[0]["role"], "user");
    let parts = contents[0]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{body}");
    let prompt = parts[0]["text"].as_str().unwrap();
    assert!(
        prompt.contains("INPUT") && prompt.contains("OUTPUT"),
        "{prompt}"
    );
    assert_eq!(
        parts[1],
        json!({"fileData": {"mimeType": "image/jpeg", "fileUri": "s3://golden/inputs/portrait-01.jpg"}})
    );
    assert_eq!(
        parts[2],
        json!({"fileData": {"mimeType": "image/png", "fileUri": "s3://renders/outputs/4f1c.png"}})
    );

    let config = &body["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    let schema = &config["responseSchema"];
    assert_eq!(schema["type"], "OBJECT");
    assert_eq!(schema["properties"]["score"]["type"], "NUMBER");
    assert_eq!(schema["properties"]["criteria"]["type"], "OBJECT");
    assert_eq!(schema["properties"]["rationale"]["type"], "STRING");
    assert_eq!(
        schema["required"],
        json!(["score", "criteria", "rationale"])
    );

    // Blind: nothing in the body but the prompt and the two files; the dispatch id (which a
    // runner may derive from the variant) is not sent either.
    let text = body.to_string();
    assert!(!text.contains("bmd_7"), "{text}");
    assert!(!text.contains("variant"), "{text}");
    assert!(!text.contains(KEY), "the key belongs in the header only");
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_and_then_judged() {
    let too_many = Reply::Answer {
        status: StatusCode::TOO_MANY_REQUESTS,
        headers: vec![("retry-after", "1".into())],
        body: google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted").to_string(),
    };
    let (fake, base) = FakeGemini::serve(vec![too_many], ok(verdict(0.64))).await;
    let j = judged(provider(&base, 3, 5 * SECOND).evaluate(&request()).await);
    assert_eq!(j.score, 0.64);
    assert!(!j.fallback, "{j:?}");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_429_with_a_retry_info_delay_in_its_body_is_retried() {
    let body = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.05s"}]}});
    let (fake, base) = FakeGemini::serve(
        vec![status(StatusCode::TOO_MANY_REQUESTS, body)],
        ok(verdict(0.9)),
    )
    .await;
    let j = judged(provider(&base, 2, 5 * SECOND).evaluate(&request()).await);
    assert_eq!((j.score, j.fallback), (0.9, false));
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn persistent_429s_fall_back_to_the_heuristic_with_the_reason() {
    let (fake, base) = FakeGemini::serve(
        vec![],
        status(
            StatusCode::TOO_MANY_REQUESTS,
            google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"),
        ),
    )
    .await;
    let j = judged(provider(&base, 3, 5 * SECOND).evaluate(&request()).await);
    assert!(j.fallback);
    assert_eq!(
        j.fallback_reason.as_deref(),
        Some("gemini: 429 Too Many Requests after 3 attempts")
    );
    assert_eq!(j.evaluator.provider, HEURISTIC_PROVIDER);
    assert_eq!(
        j.score,
        HeuristicEvaluator::new(Duration::from_secs(10))
            .judge(&request())
            .score
    );
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn persistent_5xx_falls_back_with_the_reason_after_max_attempts() {
    let (fake, base) = FakeGemini::serve(
        vec![status(
            StatusCode::INTERNAL_SERVER_ERROR,
            google_error(500, "INTERNAL", "An internal error has occurred"),
        )],
        status(
            StatusCode::SERVICE_UNAVAILABLE,
            google_error(503, "UNAVAILABLE", "The model is overloaded"),
        ),
    )
    .await;
    let j = judged(provider(&base, 4, 5 * SECOND).evaluate(&request()).await);
    assert!(j.fallback);
    assert_eq!(
        j.fallback_reason.as_deref(),
        Some("gemini: 503 Service Unavailable after 4 attempts")
    );
    assert!(
        j.rationale.contains("not a judgement of visual quality"),
        "{}",
        j.rationale
    );
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_the_retry_is_judged() {
    let (fake, base) = FakeGemini::serve(vec![Reply::Slow(3 * SECOND)], ok(verdict(0.7))).await;
    let j = judged(
        provider(&base, 3, Duration::from_millis(300))
            .evaluate(&request())
            .await,
    );
    assert_eq!((j.score, j.fallback), (0.7, false));
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn persistent_timeouts_fall_back_with_the_reason() {
    let (fake, base) = FakeGemini::serve(vec![], Reply::Slow(3 * SECOND)).await;
    let j = judged(
        provider(&base, 2, Duration::from_millis(200))
            .evaluate(&request())
            .await,
    );
    assert!(j.fallback);
    assert_eq!(
        j.fallback_reason.as_deref(),
        Some("gemini: no answer within 200 ms after 2 attempts")
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn unparsable_text_is_retried_then_falls_back() {
    let (fake, base) = FakeGemini::serve(
        vec![ok(candidate_text("The output looks great! 9/10"))],
        ok(verdict(1.7)),
    )
    .await;
    let j = judged(provider(&base, 2, 5 * SECOND).evaluate(&request()).await);
    assert!(j.fallback);
    let reason = j.fallback_reason.unwrap();
    assert!(reason.starts_with("gemini: unparsable answer"), "{reason}");
    assert!(reason.contains("score 1.7 is outside 0..1"), "{reason}");
    assert!(reason.ends_with("after 2 attempts"), "{reason}");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn unparsable_text_then_a_good_answer_is_judged() {
    let (_, base) = FakeGemini::serve(
        vec![
            ok(json!({"candidates": []})),
            ok(candidate_text("{\"score\": ")),
        ],
        ok(verdict(0.3)),
    )
    .await;
    let j = judged(provider(&base, 3, 5 * SECOND).evaluate(&request()).await);
    assert_eq!((j.score, j.fallback), (0.3, false));
}

#[tokio::test]
async fn a_prompt_block_reason_leaves_the_output_unjudged_without_retry_or_fallback() {
    let blocked = json!({
        "promptFeedback": {
            "blockReason": "SAFETY",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "HIGH", "blocked": true}
            ]
        },
        "usageMetadata": {"promptTokenCount": 1290, "totalTokenCount": 1290},
        "modelVersion": MODEL
    });
    let (fake, base) = FakeGemini::serve(vec![], ok(blocked)).await;
    let reason = unjudged(provider(&base, 3, 5 * SECOND).evaluate(&request()).await);
    assert!(
        reason.contains("promptFeedback.blockReason SAFETY"),
        "{reason}"
    );
    assert_eq!(fake.requests().len(), 1, "a block is not retried");
}

#[tokio::test]
async fn a_safety_finish_reason_leaves_the_output_unjudged() {
    let blocked = json!({
        "candidates": [{
            "finishReason": "SAFETY",
            "index": 0,
            "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true},
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}
            ]
        }],
        "usageMetadata": {"promptTokenCount": 1290, "totalTokenCount": 1290}
    });
    let (fake, base) = FakeGemini::serve(vec![], ok(blocked)).await;
    let reason = unjudged(provider(&base, 3, 5 * SECOND).evaluate(&request()).await);
    assert!(reason.contains("finishReason SAFETY"), "{reason}");
    assert!(
        reason.contains("HARM_CATEGORY_DANGEROUS_CONTENT HIGH"),
        "{reason}"
    );
    assert!(!reason.contains("HARASSMENT"), "{reason}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_safety_block_after_a_429_is_still_unjudged_not_a_fallback() {
    let blocked = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}});
    let (_, base) = FakeGemini::serve(
        vec![status(
            StatusCode::TOO_MANY_REQUESTS,
            google_error(429, "RESOURCE_EXHAUSTED", "slow down"),
        )],
        ok(blocked),
    )
    .await;
    let reason = unjudged(provider(&base, 3, 5 * SECOND).evaluate(&request()).await);
    assert!(reason.contains("PROHIBITED_CONTENT"), "{reason}");
}

#[tokio::test]
async fn a_403_is_not_retried_and_falls_back_at_once() {
    let (fake, base) = FakeGemini::serve(
        vec![],
        status(
            StatusCode::FORBIDDEN,
            google_error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers.",
            ),
        ),
    )
    .await;
    let j = judged(provider(&base, 3, 5 * SECOND).evaluate(&request()).await);
    assert!(j.fallback);
    let reason = j.fallback_reason.unwrap();
    assert!(
        reason.starts_with("gemini: 403 Forbidden: Method doesn't allow"),
        "{reason}"
    );
    assert!(reason.contains("not retried"), "{reason}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_falls_back_with_the_reason() {
    // Bind and drop: nothing listens on this port any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let j = judged(
        provider(&format!("http://127.0.0.1:{port}"), 2, 5 * SECOND)
            .evaluate(&request())
            .await,
    );
    assert!(j.fallback);
    let reason = j.fallback_reason.unwrap();
    assert!(reason.starts_with("gemini: request failed"), "{reason}");
    assert!(reason.ends_with("after 2 attempts"), "{reason}");
}

#[tokio::test]
async fn the_key_never_appears_in_reasons_or_debug_even_when_the_server_echoes_it() {
    // A misbehaving proxy that echoes the request's headers into its error messages.
    let echo = format!("invalid credentials: x-goog-api-key={KEY}");
    let (_, base) = FakeGemini::serve(
        vec![],
        status(
            StatusCode::UNAUTHORIZED,
            google_error(401, "UNAUTHENTICATED", &echo),
        ),
    )
    .await;
    let judge = provider(&base, 2, 5 * SECOND);
    let j = judged(judge.evaluate(&request()).await);
    let reason = j.fallback_reason.clone().unwrap();
    assert!(reason.contains("401 Unauthorized"), "{reason}");
    assert!(reason.contains("<redacted>"), "{reason}");
    assert!(!reason.contains(KEY), "{reason}");
    assert!(!j.rationale.contains(KEY), "{}", j.rationale);
    assert!(!format!("{j:?}").contains(KEY));

    let blocked = json!({"promptFeedback": {"blockReason": "OTHER", "blockReasonMessage": echo}});
    let (_, base) = FakeGemini::serve(vec![], ok(blocked)).await;
    let reason = unjudged(provider(&base, 2, 5 * SECOND).evaluate(&request()).await);
    assert!(!reason.contains(KEY), "{reason}");

    let debug = format!("{judge:?}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}
