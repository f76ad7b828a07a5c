//! The `benchmark_variant_dispatches` artifact: one JSON document per item listing its
//! dispatches and their outputs, written atomically under the artifact directory and named by
//! its content hash.
//!
//! The document holds nothing but what the log holds (no wall-clock field), so an item
//! rewritten after a restart from the same completions gives the same bytes and the same
//! sha256. The file name carries the first 16 hex digits of that sha256: two processes that
//! (wrongly) both finish one run can never overwrite each other's file, so whatever
//! `benchmark.artifact_recorded` names always matches the bytes on disk.

use eventlog::catalogue::Outcome;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The artifact type, as recorded in the event and the document.
pub const ARTIFACT_TYPE: &str = "benchmark_variant_dispatches";

/// The document, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchesArtifact {
    pub artifact_type: String,
    pub benchmark_run_id: String,
    pub dataset: String,
    pub item_id: String,
    pub variant_id: String,
    /// Inputs × repetitions.
    pub planned_dispatches: u64,
    /// Every dispatch that ran, in `seq` order.
    pub dispatches: Vec<ArtifactDispatch>,
    /// Planned dispatches that never ran, each with why (empty for a run that finished).
    pub not_dispatched: Vec<NotDispatched>,
    pub summary: ArtifactSummary,
}

/// One dispatch and its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactDispatch {
    pub dispatch_id: String,
    pub seq: u64,
    pub input_id: String,
    pub input_uri: String,
    pub repetition: u32,
    pub outcome: Outcome,
    pub output_uri: Option<String>,
    pub latency_ms: f64,
    pub service_time_ms: Option<f64>,
    /// `null` when the provider did not say.
    pub cost_usd: Option<f64>,
    pub error: Option<String>,
}

/// A planned dispatch that was never sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotDispatched {
    pub dispatch_id: String,
    pub seq: u64,
    pub input_id: String,
    pub repetition: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactSummary {
    pub dispatched: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// Sum over the dispatches; `null` when any cost is unknown (never a partial sum).
    pub cost_usd_total: Option<f64>,
}

impl DispatchesArtifact {
    /// Builds the document; `dispatches` and `not_dispatched` are sorted by `seq`.
    pub fn new(
        benchmark_run_id: &str,
        dataset: &str,
        item_id: &str,
        variant_id: &str,
        planned_dispatches: u64,
        mut dispatches: Vec<ArtifactDispatch>,
        mut not_dispatched: Vec<NotDispatched>,
    ) -> Self {
        dispatches.sort_by_key(|d| d.seq);
        not_dispatched.sort_by_key(|d| d.seq);
        let count = |o: Outcome| dispatches.iter().filter(|d| d.outcome == o).count() as u64;
        let summary = ArtifactSummary {
            dispatched: dispatches.len() as u64,
            succeeded: count(Outcome::Succeeded),
            failed: count(Outcome::Failed),
            timed_out: count(Outcome::TimedOut),
            cost_usd_total: dispatches.iter().map(|d| d.cost_usd).sum::<Option<f64>>(),
        };
        Self {
            artifact_type: ARTIFACT_TYPE.to_string(),
            benchmark_run_id: benchmark_run_id.to_string(),
            dataset: dataset.to_string(),
            item_id: item_id.to_string(),
            variant_id: variant_id.to_string(),
            planned_dispatches,
            dispatches,
            not_dispatched,
            summary,
        }
    }

    /// The bytes written: pretty JSON with a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("the artifact always serializes");
        bytes.push(b'\n');
        bytes
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a written artifact is: its path, its `file://` URI and its sha256.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenArtifact {
    pub path: PathBuf,
    pub uri: String,
    pub sha256: String,
}

/// Writes `bytes` as `{dir}/benchmark_runs/{run_id}/{item_id}.{sha16}.json` atomically: a
/// temporary file in the same directory, written and fsynced, renamed over the final name,
/// then the directory fsynced so the rename itself survives a crash. A reader sees the whole
/// file or none. Blocking: call it from `spawn_blocking`.
pub fn write_atomically(
    dir: &Path,
    benchmark_run_id: &str,
    item_id: &str,
    bytes: &[u8],
) -> std::io::Result<WrittenArtifact> {
    let sha256 = sha256_hex(bytes);
    let run_dir = dir.join("benchmark_runs").join(benchmark_run_id);
    std::fs::create_dir_all(&run_dir)?;
    let path = run_dir.join(format!("{item_id}.{}.json", &sha256[..16]));
    let temp = run_dir.join(format!(".{item_id}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(err);
    }
    std::fs::File::open(&run_dir)?.sync_all()?;
    let uri = reqwest::Url::from_file_path(&path)
        .map_err(|()| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not an absolute path", path.display()),
            )
        })?
        .to_string();
    Ok(WrittenArtifact { path, uri, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch(seq: u64, outcome: Outcome, cost: Option<f64>) -> ArtifactDispatch {
        ArtifactDispatch {
            dispatch_id: format!("d{seq}"),
            seq,
            input_id: "in".into(),
            input_uri: "s3://in".into(),
            repetition: 1,
            outcome,
            output_uri: None,
            latency_ms: 1.0,
            service_time_ms: Some(1.0),
            cost_usd: cost,
            error: None,
        }
    }

    #[test]
    fn the_sha256_is_lowercase_hex_of_the_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_summary_counts_outcomes_and_an_unknown_cost_makes_the_total_unknown() {
        let doc = DispatchesArtifact::new(
            "bm_1",
            "ds",
            "i",
            "v",
            3,
            vec![
                dispatch(3, Outcome::Failed, Some(0.5)),
                dispatch(1, Outcome::Succeeded, Some(0.25)),
            ],
            vec![],
        );
        assert_eq!(doc.dispatches[0].seq, 1, "sorted by seq");
        assert_eq!((doc.summary.succeeded, doc.summary.failed), (1, 1));
        assert_eq!(doc.summary.cost_usd_total, Some(0.75));
        let doc = DispatchesArtifact::new(
            "bm_1",
            "ds",
            "i",
            "v",
            2,
            vec![
                dispatch(1, Outcome::Succeeded, Some(0.25)),
                dispatch(2, Outcome::TimedOut, None),
            ],
            vec![],
        );
        assert_eq!(doc.summary.cost_usd_total, None);
    }

    #[test]
    fn the_same_document_gives_the_same_bytes_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let doc = DispatchesArtifact::new(
            "bm_1",
            "ds",
            "i",
            "v",
            1,
            vec![dispatch(1, Outcome::Succeeded, Some(0.1))],
            vec![],
        );
        let a = write_atomically(dir.path(), "bm_1", "i", &doc.to_bytes()).unwrap();
        let b = write_atomically(dir.path(), "bm_1", "i", &doc.to_bytes()).unwrap();
        assert_eq!(a, b);
        let on_disk = std::fs::read(&a.path).unwrap();
        assert_eq!(sha256_hex(&on_disk), a.sha256);
        assert!(a.uri.starts_with("file:///"), "{}", a.uri);
        let back: DispatchesArtifact = serde_json::from_slice(&on_disk).unwrap();
        assert_eq!(back, doc);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(a.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
