//! `benchmarks`: benchmark matrix runs (`benchmark_matrix_runs`), one item per variant
//! (`benchmark_matrix_run_items`) with dispatch counts, cost and latency, and the dispatch
//! artifacts (`run_artifacts`).

use crate::db::SqlValue;
use crate::docs::{Doc, Docs, TableDef};
use crate::hist::LatencyHist;
use crate::projection::Projection;
use eventlog::catalogue::{BenchmarkInput, Outcome};
use eventlog::{EventPayload, FoldEvent};
use serde::{Deserialize, Serialize};

pub const BENCHMARK_RUNS: TableDef = TableDef {
    name: "benchmark_matrix_runs",
    key: "benchmark_run_id",
    columns: &[
        ("dataset", "TEXT"),
        ("status", "TEXT"),
        ("created_position", "BIGINT"),
    ],
    indexes: &["created_position"],
};

pub const BENCHMARK_ITEMS: TableDef = TableDef {
    name: "benchmark_matrix_run_items",
    key: "item_id",
    columns: &[
        ("benchmark_run_id", "TEXT"),
        ("variant_id", "TEXT"),
        ("status", "TEXT"),
        ("dispatched", "BIGINT"),
        ("succeeded", "BIGINT"),
        ("failed", "BIGINT"),
        ("created_position", "BIGINT"),
    ],
    indexes: &["benchmark_run_id"],
};

pub const RUN_ARTIFACTS: TableDef = TableDef {
    name: "run_artifacts",
    key: "artifact_id",
    columns: &[
        ("benchmark_run_id", "TEXT"),
        ("item_id", "TEXT"),
        ("artifact_type", "TEXT"),
        ("uri", "TEXT"),
        ("sha256", "TEXT"),
    ],
    indexes: &["benchmark_run_id"],
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchmarkRun {
    pub benchmark_run_id: String,
    pub dataset: String,
    pub variant_ids: Vec<String>,
    pub inputs: Vec<BenchmarkInput>,
    pub repetitions: u32,
    pub status: String,
    pub created_at: String,
    pub created_position: i64,
    pub completed_at: Option<String>,
}

impl Doc for BenchmarkRun {
    const TABLE: &'static TableDef = &BENCHMARK_RUNS;
    fn key(&self) -> String {
        self.benchmark_run_id.clone()
    }
    fn columns(&self) -> Vec<SqlValue> {
        vec![
            self.dataset.clone().into(),
            self.status.clone().into(),
            self.created_position.into(),
        ]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub artifact_type: String,
    pub uri: String,
    pub sha256: String,
    pub dispatch_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchmarkItem {
    pub item_id: String,
    pub benchmark_run_id: String,
    pub variant_id: String,
    pub status: String,
    pub created_position: i64,
    pub dispatched: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub cost_known: u64,
    pub cost_usd_total: f64,
    pub latency: LatencyHist,
    pub artifacts: Vec<ArtifactRef>,
}

impl BenchmarkItem {
    pub fn completed(&self) -> u64 {
        self.succeeded + self.failed + self.timed_out
    }
}

impl Doc for BenchmarkItem {
    const TABLE: &'static TableDef = &BENCHMARK_ITEMS;
    fn key(&self) -> String {
        self.item_id.clone()
    }
    fn columns(&self) -> Vec<SqlValue> {
        vec![
            self.benchmark_run_id.clone().into(),
            self.variant_id.clone().into(),
            self.status.clone().into(),
            self.dispatched.into(),
            self.succeeded.into(),
            (self.failed + self.timed_out).into(),
            self.created_position.into(),
        ]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunArtifact {
    pub artifact_id: String,
    pub benchmark_run_id: String,
    pub item_id: String,
    pub artifact_type: String,
    pub uri: String,
    pub sha256: String,
    pub dispatch_ids: Vec<String>,
    pub position: i64,
}

impl Doc for RunArtifact {
    const TABLE: &'static TableDef = &RUN_ARTIFACTS;
    fn key(&self) -> String {
        self.artifact_id.clone()
    }
    fn columns(&self) -> Vec<SqlValue> {
        vec![
            self.benchmark_run_id.clone().into(),
            self.item_id.clone().into(),
            self.artifact_type.clone().into(),
            self.uri.clone().into(),
            self.sha256.clone().into(),
        ]
    }
}

pub struct BenchmarksProjection;

fn item_of<'a>(
    docs: &'a mut Docs,
    item_id: &str,
    run_id: &str,
    position: i64,
) -> Result<&'a mut BenchmarkItem, String> {
    let item = docs.get_mut::<BenchmarkItem>(item_id).ok_or_else(|| {
        format!("item {item_id} has no benchmark.item_created before position {position}")
    })?;
    if item.benchmark_run_id != run_id {
        return Err(format!(
            "item {item_id} belongs to {}, not {run_id}",
            item.benchmark_run_id
        ));
    }
    Ok(item)
}

impl Projection for BenchmarksProjection {
    fn name(&self) -> &'static str {
        "benchmarks"
    }
    fn version(&self) -> u32 {
        1
    }
    fn tables(&self) -> &'static [&'static TableDef] {
        &[&BENCHMARK_RUNS, &BENCHMARK_ITEMS, &RUN_ARTIFACTS]
    }

    fn want(&self, _event: &FoldEvent, payload: &EventPayload, docs: &mut Docs) {
        use EventPayload::*;
        match payload {
            BenchmarkRunCreated(p) => docs.want::<BenchmarkRun>(&p.benchmark_run_id),
            BenchmarkRunCompleted(p) => docs.want::<BenchmarkRun>(&p.benchmark_run_id),
            BenchmarkItemCreated(p) => {
                docs.want::<BenchmarkRun>(&p.benchmark_run_id);
                docs.want::<BenchmarkItem>(&p.item_id);
            }
            BenchmarkDispatchSubmitted(p) => docs.want::<BenchmarkItem>(&p.item_id),
            BenchmarkDispatchCompleted(p) => docs.want::<BenchmarkItem>(&p.item_id),
            BenchmarkItemCompleted(p) => docs.want::<BenchmarkItem>(&p.item_id),
            ArtifactRecorded(p) => docs.want::<BenchmarkItem>(&p.item_id),
            _ => {}
        }
    }

    fn apply(
        &self,
        event: &FoldEvent,
        payload: &EventPayload,
        docs: &mut Docs,
    ) -> Result<(), String> {
        use EventPayload::*;
        let position = event.position;
        match payload {
            BenchmarkRunCreated(p) => {
                if docs.get::<BenchmarkRun>(&p.benchmark_run_id).is_some() {
                    return Err(format!(
                        "benchmark run {} was already created",
                        p.benchmark_run_id
                    ));
                }
                docs.put(BenchmarkRun {
                    benchmark_run_id: p.benchmark_run_id.clone(),
                    dataset: p.dataset.clone(),
                    variant_ids: p.variant_ids.clone(),
                    inputs: p.inputs.clone(),
                    repetitions: p.repetitions,
                    status: "running".into(),
                    created_at: event.occurred_at.clone(),
                    created_position: position,
                    completed_at: None,
                });
            }
            BenchmarkItemCreated(p) => {
                let run = docs
                    .get::<BenchmarkRun>(&p.benchmark_run_id)
                    .ok_or_else(|| {
                        format!(
                            "benchmark run {} has no benchmark.run_created",
                            p.benchmark_run_id
                        )
                    })?;
                if !run.variant_ids.contains(&p.variant_id) {
                    return Err(format!(
                        "variant {} is not part of benchmark run {}",
                        p.variant_id, p.benchmark_run_id
                    ));
                }
                docs.put(BenchmarkItem {
                    item_id: p.item_id.clone(),
                    benchmark_run_id: p.benchmark_run_id.clone(),
                    variant_id: p.variant_id.clone(),
                    status: "running".into(),
                    created_position: position,
                    dispatched: 0,
                    succeeded: 0,
                    failed: 0,
                    timed_out: 0,
                    cost_known: 0,
                    cost_usd_total: 0.0,
                    latency: LatencyHist::default(),
                    artifacts: Vec::new(),
                });
            }
            BenchmarkDispatchSubmitted(p) => {
                item_of(docs, &p.item_id, &p.benchmark_run_id, position)?.dispatched += 1
            }
            BenchmarkDispatchCompleted(p) => {
                let item = item_of(docs, &p.item_id, &p.benchmark_run_id, position)?;
                match p.outcome {
                    Outcome::Succeeded => item.succeeded += 1,
                    Outcome::Failed => item.failed += 1,
                    Outcome::TimedOut => item.timed_out += 1,
                }
                item.latency.record_ms(p.latency_ms);
                if let Some(cost) = p.cost_usd {
                    item.cost_known += 1;
                    item.cost_usd_total += cost;
                }
            }
            ArtifactRecorded(p) => {
                let artifact_type = serde_json::to_value(p.artifact_type)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                let item = item_of(docs, &p.item_id, &p.benchmark_run_id, position)?;
                item.artifacts.push(ArtifactRef {
                    artifact_type: artifact_type.clone(),
                    uri: p.uri.clone(),
                    sha256: p.sha256.clone(),
                    dispatch_ids: p.dispatch_ids.clone(),
                });
                docs.put(RunArtifact {
                    artifact_id: format!("{}:{position}", p.item_id),
                    benchmark_run_id: p.benchmark_run_id.clone(),
                    item_id: p.item_id.clone(),
                    artifact_type,
                    uri: p.uri.clone(),
                    sha256: p.sha256.clone(),
                    dispatch_ids: p.dispatch_ids.clone(),
                    position,
                });
            }
            BenchmarkItemCompleted(p) => {
                item_of(docs, &p.item_id, &p.benchmark_run_id, position)?.status =
                    "completed".into()
            }
            BenchmarkRunCompleted(p) => {
                let run = docs
                    .get_mut::<BenchmarkRun>(&p.benchmark_run_id)
                    .ok_or_else(|| {
                        format!(
                            "benchmark run {} has no benchmark.run_created",
                            p.benchmark_run_id
                        )
                    })?;
                run.status = "completed".into();
                run.completed_at = Some(event.occurred_at.clone());
            }
            _ => {}
        }
        Ok(())
    }
}
