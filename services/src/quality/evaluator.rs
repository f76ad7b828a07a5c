//! The evaluator trait, the blind request every evaluator is given and the outcome it answers
//! with.

use eventlog::catalogue::Evaluator;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// One output to judge. Blind by construction: it carries no variant, provider or item id, so
/// no evaluator can tell the judge whose output it is. `dispatch_id` is for tracing only and is
/// never sent to a remote judge.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationRequest {
    pub dispatch_id: String,
    /// The input the output was rendered from; `None` when the run did not record it.
    pub input_uri: Option<String>,
    pub output_uri: String,
    /// End-to-end latency of the dispatch, as `benchmark.dispatch_completed` recorded it.
    pub latency_ms: f64,
}

/// A score for one output, as `quality.evaluation_completed` records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Who produced this score: the heuristic evaluator when the judge fell back.
    pub evaluator: Evaluator,
    /// 0..1.
    pub score: f64,
    /// Per-criterion scores, each 0..1.
    pub criteria: BTreeMap<String, f64>,
    pub rationale: String,
    pub fallback: bool,
    /// Why the configured judge was not the one that scored (set exactly when `fallback`).
    pub fallback_reason: Option<String>,
}

/// How judging one output ended. Never a Rust error: every way it can go wrong is recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum EvaluationOutcome {
    Judged(Judgement),
    /// The judge refused to judge (a safety block). Not a low score and not a reason to fall
    /// back: recorded as `quality.evaluation_failed` and left out of quality means.
    Unjudged {
        reason: String,
    },
}

/// The future an evaluator answers with; boxed so evaluators can live behind
/// `Arc<dyn QualityEvaluator>` and be called from spawned tasks.
pub type EvaluationFuture<'a> = Pin<Box<dyn Future<Output = EvaluationOutcome> + Send + 'a>>;

/// Something that scores outputs. `Debug` is required so a configured evaluator can be logged;
/// implementations holding secrets redact them.
pub trait QualityEvaluator: Send + Sync + fmt::Debug {
    /// The evaluator that scores when nothing goes wrong (`{provider, model}`).
    fn evaluator(&self) -> Evaluator;

    fn evaluate<'a>(&'a self, request: &'a EvaluationRequest) -> EvaluationFuture<'a>;
}

/// The media type of a uri, guessed from its extension (query and fragment ignored, case
/// insensitive); `application/octet-stream` when the extension is unknown.
pub fn guess_mime_type(uri: &str) -> &'static str {
    known_mime_type(uri).unwrap_or("application/octet-stream")
}

/// The media type of a uri's extension when it is one this studio renders or reads.
pub(crate) fn known_mime_type(uri: &str) -> Option<&'static str> {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let file = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = file.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "avif" => "image/avif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "avi" => "video/x-msvideo",
        "mpeg" | "mpg" => "video/mpeg",
        "3gp" => "video/3gpp",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        "aac" => "audio/aac",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_come_from_the_extension_and_default_to_octet_stream() {
        assert_eq!(guess_mime_type("s3://b/out/1.PNG"), "image/png");
        assert_eq!(guess_mime_type("https://x/y.jpeg?sig=abc#f"), "image/jpeg");
        assert_eq!(guess_mime_type("gs://b/a.webp"), "image/webp");
        assert_eq!(guess_mime_type("s3://b/clip.mp4"), "video/mp4");
        assert_eq!(guess_mime_type("s3://b/clip.mov"), "video/quicktime");
        assert_eq!(guess_mime_type("s3://b/blob"), "application/octet-stream");
        assert_eq!(
            guess_mime_type("s3://b.png/blob"),
            "application/octet-stream"
        );
        assert_eq!(guess_mime_type("s3://b/x.exe"), "application/octet-stream");
    }
}
