//! [`HeuristicEvaluator`]: a deterministic score from what the ledger can observe about a
//! dispatch, without looking at the output.

use super::evaluator::{
    known_mime_type, EvaluationFuture, EvaluationOutcome, EvaluationRequest, Judgement,
    QualityEvaluator,
};
use eventlog::catalogue::Evaluator;
use std::collections::BTreeMap;
use std::time::Duration;

pub const HEURISTIC_PROVIDER: &str = "heuristic";
/// Names the rule set below; change it when the rules change, so old and new scores are never
/// mixed up in one mean without anyone knowing.
pub const HEURISTIC_MODEL: &str = "dispatch-facts-v1";
/// The schemes an output may be stored under.
/// Where outputs live: object stores, web, local files, and `sim://` — the outputs of the
/// simulated providers, which stand in for storage in the embedded default and the demo.
const STORAGE_SCHEMES: [&str; 6] = ["s3", "gs", "https", "http", "file", "sim"];

/// A deterministic evaluator of *observable dispatch facts*. It never fetches or looks at the
/// output, so it does **not** judge visual quality, fidelity to the input or artifacts, and its
/// rationale says so. What it measures, each as a criterion in 0..1:
///
/// - `output_well_formed`: the output uri parses, uses a storage scheme (`s3`, `gs`, `https`,
///   `http`, `file`), names a host (except `file`) and ends in a file name — 1 or 0;
/// - `media_type_recognised`: the file name's extension is an image, video or audio type the
///   studio renders (png, jpg, webp, mp4, …) — 1 or 0;
/// - `latency_within_target`: `min(1, target / latency_ms)` — 1 at or under the target
///   latency, falling off in proportion beyond it.
///
/// The score is the mean of the three, and 0 when the uri is not well-formed (there is nothing
/// to have produced), rounded to 4 decimals. Same request, same score: no clock, no randomness,
/// no I/O. It is what the Gemini judge falls back to, and a stand-in when no judge is
/// configured; quality means built from it say more about delivery than about looks.
#[derive(Debug, Clone, PartialEq)]
pub struct HeuristicEvaluator {
    target_latency: Duration,
}

impl HeuristicEvaluator {
    pub fn new(target_latency: Duration) -> Self {
        Self {
            target_latency: target_latency.max(Duration::from_millis(1)),
        }
    }

    pub fn target_latency(&self) -> Duration {
        self.target_latency
    }

    /// Scores one output (see the type's docs), marked as the configured evaluator.
    pub fn judge(&self, request: &EvaluationRequest) -> Judgement {
        let target_ms = self.target_latency.as_secs_f64() * 1_000.0;
        let well_formed = well_formed(&request.output_uri);
        let mime = known_mime_type(&request.output_uri).filter(|m| {
            m.starts_with("image/") || m.starts_with("video/") || m.starts_with("audio/")
        });
        let latency_ms = if request.latency_ms.is_finite() {
            request.latency_ms.max(0.0)
        } else {
            f64::INFINITY
        };
        let latency_score = if latency_ms <= target_ms {
            1.0
        } else {
            target_ms / latency_ms
        };
        let mut criteria = BTreeMap::new();
        criteria.insert(
            "output_well_formed".to_string(),
            f64::from(u8::from(well_formed.is_ok())),
        );
        criteria.insert(
            "media_type_recognised".to_string(),
            f64::from(u8::from(mime.is_some())),
        );
        criteria.insert("latency_within_target".to_string(), round4(latency_score));
        let score = if well_formed.is_ok() {
            round4(criteria.values().sum::<f64>() / criteria.len() as f64)
        } else {
            0.0
        };

        let uri_fact = match &well_formed {
            Ok(scheme) => format!("the output uri is a well-formed {scheme} uri"),
            Err(why) => format!("the output uri is not well-formed ({why}), so the score is 0"),
        };
        let mime_fact = match mime {
            Some(m) => format!("its extension is {m}"),
            None => "its extension is not a recognised image, video or audio type".to_string(),
        };
        let rationale = format!(
            "heuristic ({HEURISTIC_MODEL}): did not look at the output, so this is not a judgement \
             of visual quality; it measures dispatch facts only: {uri_fact}; {mime_fact}; latency \
             {latency:.0} ms against a target of {target_ms:.0} ms scores {latency_score:.4}. Score = \
             mean of those checks.",
            latency = request.latency_ms,
            latency_score = round4(latency_score),
        );
        Judgement {
            evaluator: Evaluator {
                provider: HEURISTIC_PROVIDER.to_string(),
                model: HEURISTIC_MODEL.to_string(),
            },
            score,
            criteria,
            rationale,
            fallback: false,
            fallback_reason: None,
        }
    }

    /// Scores one output on behalf of a judge that could not: `fallback` with its reason.
    pub fn fallback(&self, request: &EvaluationRequest, reason: String) -> Judgement {
        let mut judgement = self.judge(request);
        judgement.fallback = true;
        judgement.rationale = format!("fallback after {reason}. {}", judgement.rationale);
        judgement.fallback_reason = Some(reason);
        judgement
    }
}

impl QualityEvaluator for HeuristicEvaluator {
    fn evaluator(&self) -> Evaluator {
        Evaluator {
            provider: HEURISTIC_PROVIDER.to_string(),
            model: HEURISTIC_MODEL.to_string(),
        }
    }

    fn evaluate<'a>(&'a self, request: &'a EvaluationRequest) -> EvaluationFuture<'a> {
        let judgement = self.judge(request);
        Box::pin(async move { EvaluationOutcome::Judged(judgement) })
    }
}

/// The scheme of a well-formed output uri, or why it is not one.
fn well_formed(uri: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(uri.trim()).map_err(|e| e.to_string())?;
    let scheme = url.scheme().to_string();
    if !STORAGE_SCHEMES.contains(&scheme.as_str()) {
        return Err(format!("scheme {scheme:?} is not a storage scheme"));
    }
    if scheme != "file" && url.host_str().is_none_or(str::is_empty) {
        return Err("it names no bucket or host".into());
    }
    let file_name = url.path_segments().and_then(|mut s| s.next_back());
    if file_name.is_none_or(str::is_empty) {
        return Err("it names no file".into());
    }
    Ok(scheme)
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(output_uri: &str, latency_ms: f64) -> EvaluationRequest {
        EvaluationRequest {
            dispatch_id: "d1".into(),
            input_uri: Some("s3://in/1.png".into()),
            output_uri: output_uri.into(),
            latency_ms,
        }
    }

    fn evaluator() -> HeuristicEvaluator {
        HeuristicEvaluator::new(Duration::from_millis(1_000))
    }

    #[test]
    fn the_same_request_always_gets_the_same_judgement() {
        let e = evaluator();
        let r = request("s3://out/a/1.png", 1_500.0);
        let first = e.judge(&r);
        for _ in 0..10 {
            assert_eq!(e.judge(&r), first);
        }
        // Another instance with the same settings agrees too: nothing hidden in the instance.
        assert_eq!(evaluator().judge(&r), first);
    }

    #[test]
    fn a_fast_well_formed_image_scores_one_and_a_slow_one_less() {
        let e = evaluator();
        let fast = e.judge(&request("s3://out/1.png", 400.0));
        assert_eq!(fast.score, 1.0);
        let slow = e.judge(&request("s3://out/1.png", 4_000.0));
        assert_eq!(slow.criteria["latency_within_target"], 0.25);
        assert_eq!(slow.score, 0.75);
        assert!(slow.score < fast.score);
    }

    #[test]
    fn an_unknown_media_type_costs_a_third_and_a_malformed_uri_scores_zero() {
        let e = evaluator();
        let blob = e.judge(&request("s3://out/blob", 10.0));
        assert_eq!(blob.criteria["media_type_recognised"], 0.0);
        assert_eq!(blob.score, 0.6667);
        for bad in [
            "not a uri",
            "mailto:x@y.z",
            "s3://bucket/",
            "https:///x.png",
        ] {
            let judged = e.judge(&request(bad, 10.0));
            assert_eq!(judged.score, 0.0, "{bad}");
            assert_eq!(judged.criteria["output_well_formed"], 0.0, "{bad}");
        }
    }

    #[test]
    fn the_rationale_says_it_did_not_judge_visual_quality() {
        let judged = evaluator().judge(&request("gs://out/1.mp4", 10.0));
        assert!(judged
            .rationale
            .contains("not a judgement of visual quality"));
        assert!(judged.rationale.contains("video/mp4"));
        assert!(!judged.fallback);
        assert_eq!(judged.evaluator.provider, HEURISTIC_PROVIDER);
    }

    #[test]
    fn a_fallback_keeps_the_score_and_carries_the_reason() {
        let e = evaluator();
        let r = request("s3://out/1.png", 10.0);
        let fallback = e.fallback(
            &r,
            "gemini: 503 Service Unavailable after 3 attempts".into(),
        );
        assert!(fallback.fallback);
        assert_eq!(fallback.score, e.judge(&r).score);
        assert_eq!(
            fallback.fallback_reason.as_deref(),
            Some("gemini: 503 Service Unavailable after 3 attempts")
        );
    }

    #[test]
    fn every_score_stays_within_zero_and_one() {
        let e = evaluator();
        for latency in [0.0, -5.0, 1e12, f64::NAN, f64::INFINITY] {
            let judged = e.judge(&request("s3://out/1.webp", latency));
            assert!((0.0..=1.0).contains(&judged.score), "{latency}: {judged:?}");
            assert!(judged.criteria.values().all(|c| (0.0..=1.0).contains(c)));
        }
    }
}
