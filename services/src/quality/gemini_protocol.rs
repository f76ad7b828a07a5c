//! The `generateContent` wire format the Gemini judge speaks: the request body (criteria
//! prompt, `fileData` parts, response schema), the response shape, and the checks on the
//! judge's JSON verdict. No I/O here.

use super::evaluator::{guess_mime_type, EvaluationRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The criteria the judge scores, with what each means; the response schema requires each.
pub const CRITERIA: [(&str, &str); 3] = [
    (
        "input_fidelity",
        "the output keeps the subject, identity, composition and intent of the input",
    ),
    (
        "technical_quality",
        "sharpness, exposure, colour, resolution and (for video) motion are production-ready",
    ),
    (
        "artifact_free",
        "no glitches, distortions, malformed anatomy, garbled text or compression artifacts",
    ),
];
/// Candidate finish reasons that mean the model refused on safety grounds.
pub(crate) const SAFETY_FINISH_REASONS: [&str; 5] = [
    "SAFETY",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "IMAGE_SAFETY",
];

/// The `generateContent` body for one output, built from the blind request alone: the
/// criteria prompt, the input (when known) and the output as `fileData` parts, and the
/// response schema.
pub fn request_body(request: &EvaluationRequest) -> Value {
    let mut parts = vec![json!({"text": criteria_prompt(request.input_uri.is_some())})];
    if let Some(input) = &request.input_uri {
        parts.push(file_part(input));
    }
    parts.push(file_part(&request.output_uri));
    json!({
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": response_schema(),
            "temperature": 0.0,
        },
    })
}

fn file_part(uri: &str) -> Value {
    json!({"fileData": {"mimeType": guess_mime_type(uri), "fileUri": uri}})
}

fn criteria_prompt(has_input: bool) -> String {
    let files = if has_input {
        "The first file is the INPUT given to a generative image/video effect; the second file \
         is the OUTPUT the effect produced from it."
    } else {
        "The file is the OUTPUT of a generative image/video effect (its input is not available; \
         judge input_fidelity from how coherent and intentional the output looks)."
    };
    let criteria: String = CRITERIA
        .iter()
        .map(|(name, meaning)| format!("- {name}: {meaning}\n"))
        .collect();
    format!(
        "You are a strict quality reviewer for a production AI studio. {files}\n\
         Score the OUTPUT on each criterion from 0 (unusable) to 1 (flawless):\n{criteria}\
         Then give an overall score from 0 to 1 (not a plain average: one severe flaw makes the \
         output unusable) and a rationale of one to three sentences naming what you saw. Judge \
         only what is in the files. Answer with JSON only, matching the response schema."
    )
}

fn response_schema() -> Value {
    let criteria_properties: serde_json::Map<String, Value> = CRITERIA
        .iter()
        .map(|(name, meaning)| {
            (
                name.to_string(),
                json!({"type": "NUMBER", "description": meaning, "minimum": 0, "maximum": 1}),
            )
        })
        .collect();
    let criteria_names: Vec<&str> = CRITERIA.iter().map(|(name, _)| *name).collect();
    json!({
        "type": "OBJECT",
        "properties": {
            "score": {"type": "NUMBER", "description": "overall quality, 0 to 1", "minimum": 0, "maximum": 1},
            "criteria": {
                "type": "OBJECT",
                "properties": criteria_properties,
                "required": criteria_names,
            },
            "rationale": {"type": "STRING", "description": "one to three sentences"},
        },
        "required": ["score", "criteria", "rationale"],
        "propertyOrdering": ["criteria", "rationale", "score"],
    })
}

/// The judge's JSON, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) score: f64,
    pub(crate) criteria: BTreeMap<String, f64>,
    pub(crate) rationale: String,
}

#[derive(Deserialize)]
struct RawVerdict {
    score: f64,
    #[serde(default)]
    criteria: Option<RawCriteria>,
    #[serde(default)]
    rationale: Option<String>,
}

/// Criteria as the schema asks (an object of numbers), or as a list of `{name, score}` that
/// older prompts produced.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCriteria {
    Map(BTreeMap<String, f64>),
    List(Vec<NamedScore>),
}

#[derive(Deserialize)]
struct NamedScore {
    name: String,
    score: f64,
}

/// Parses the candidate's text. A score outside 0..1 is unparsable, not clamped: a judge that
/// answers 7 was using another scale, and guessing which would invent a number.
pub(crate) fn parse_verdict(text: &str) -> Result<Verdict, String> {
    let trimmed = text.trim();
    // `responseMimeType: application/json` gives bare JSON; a fenced block is tolerated.
    let json_text = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .unwrap_or(trimmed);
    let raw: RawVerdict = serde_json::from_str(json_text)
        .map_err(|e| format!("the text is not the {{score, criteria, rationale}} JSON ({e})"))?;
    let in_range = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
    if !in_range(raw.score) {
        return Err(format!("score {} is outside 0..1", raw.score));
    }
    let criteria: BTreeMap<String, f64> = match raw.criteria {
        None => BTreeMap::new(),
        Some(RawCriteria::Map(map)) => map,
        Some(RawCriteria::List(list)) => list.into_iter().map(|n| (n.name, n.score)).collect(),
    };
    if let Some((name, value)) = criteria.iter().find(|(_, v)| !in_range(**v)) {
        return Err(format!("criterion {name} = {value} is outside 0..1"));
    }
    Ok(Verdict {
        score: raw.score,
        criteria,
        rationale: raw.rationale.unwrap_or_default().trim().to_string(),
    })
}

// The response shape of `generateContent`; unknown fields are ignored so new API fields never
// break judging.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentResponse {
    #[serde(default)]
    pub(crate) candidates: Vec<Candidate>,
    #[serde(default)]
    pub(crate) prompt_feedback: Option<PromptFeedback>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptFeedback {
    #[serde(default)]
    pub(crate) block_reason: Option<String>,
    #[serde(default)]
    pub(crate) block_reason_message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate {
    #[serde(default)]
    pub(crate) content: Option<Content>,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
    #[serde(default)]
    pub(crate) safety_ratings: Vec<SafetyRating>,
}

#[derive(Deserialize)]
pub(crate) struct Content {
    #[serde(default)]
    pub(crate) parts: Vec<Part>,
}

#[derive(Deserialize)]
pub(crate) struct Part {
    #[serde(default)]
    pub(crate) text: Option<String>,
    #[serde(default)]
    pub(crate) thought: Option<bool>,
}

#[derive(Deserialize)]
pub(crate) struct SafetyRating {
    #[serde(default)]
    pub(crate) category: Option<String>,
    #[serde(default)]
    pub(crate) probability: Option<String>,
    #[serde(default)]
    pub(crate) blocked: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> EvaluationRequest {
        EvaluationRequest {
            dispatch_id: "d1".into(),
            input_uri: Some("s3://in/face.jpg".into()),
            output_uri: "s3://out/clip.mp4".into(),
            latency_ms: 100.0,
        }
    }

    #[test]
    fn the_body_has_the_prompt_both_files_and_the_schema() {
        let body = request_body(&request());
        let parts = body["contents"][0]["parts"].as_array().unwrap();
        assert_eq!(body["contents"][0]["role"], "user");
        assert!(parts[0]["text"]
            .as_str()
            .unwrap()
            .contains("input_fidelity"));
        assert_eq!(
            parts[1]["fileData"],
            json!({"mimeType": "image/jpeg", "fileUri": "s3://in/face.jpg"})
        );
        assert_eq!(
            parts[2]["fileData"],
            json!({"mimeType": "video/mp4", "fileUri": "s3://out/clip.mp4"})
        );
        let config = &body["generationConfig"];
        assert_eq!(config["responseMimeType"], "application/json");
        assert_eq!(
            config["responseSchema"]["required"],
            json!(["score", "criteria", "rationale"])
        );
        assert_eq!(
            config["responseSchema"]["properties"]["score"]["type"],
            "NUMBER"
        );
    }

    #[test]
    fn without_an_input_only_the_output_is_attached() {
        let mut r = request();
        r.input_uri = None;
        let body = request_body(&r);
        let parts = body["contents"][0]["parts"].as_array().unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1]["fileData"]["fileUri"], "s3://out/clip.mp4");
    }

    #[test]
    fn a_verdict_outside_zero_and_one_is_unparsable_not_clamped() {
        assert!(
            parse_verdict(r#"{"score": 7, "criteria": {}, "rationale": "x"}"#)
                .unwrap_err()
                .contains("outside 0..1")
        );
        assert!(parse_verdict(
            r#"{"score": 0.5, "criteria": {"artifact_free": -0.1}, "rationale": "x"}"#
        )
        .unwrap_err()
        .contains("artifact_free"));
        assert!(parse_verdict("the output looks great, 9/10").is_err());
    }

    #[test]
    fn criteria_may_come_as_an_object_or_a_list_and_fences_are_tolerated() {
        let v = parse_verdict(
            "```json\n{\"score\": 0.8, \"criteria\": [{\"name\": \"a\", \"score\": 0.5}], \"rationale\": \" ok \"}\n```",
        )
        .unwrap();
        assert_eq!(v.score, 0.8);
        assert_eq!(v.criteria["a"], 0.5);
        assert_eq!(v.rationale, "ok");
    }
}
