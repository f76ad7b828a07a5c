//! `quality`: every evaluation in `quality_evaluations`, the latest verdict per judged output
//! (`quality_verdicts`: judged with a score, or unjudged with the reason) and per-variant sums
//! (`quality_summaries`) that leave unjudged outputs out instead of counting them as 0.

use crate::db::SqlValue;
use crate::docs::{Doc, Docs, TableDef};
use crate::projection::Projection;
use eventlog::catalogue::Evaluator;
use eventlog::{EventPayload, FoldEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const QUALITY_EVALUATIONS: TableDef = TableDef {
    name: "quality_evaluations",
    key: "evaluation_id",
    columns: &[
        ("benchmark_run_id", "TEXT"),
        ("item_id", "TEXT"),
        ("variant_id", "TEXT"),
        ("dispatch_id", "TEXT"),
        ("score", "DOUBLE PRECISION"),
        ("fallback", "BIGINT"),
        ("position", "BIGINT"),
    ],
    indexes: &["benchmark_run_id"],
};

pub const QUALITY_VERDICTS: TableDef = TableDef {
    name: "quality_verdicts",
    key: "dispatch_id",
    columns: &[
        ("benchmark_run_id", "TEXT"),
        ("status", "TEXT"),
        ("position", "BIGINT"),
    ],
    indexes: &["benchmark_run_id"],
};

pub const QUALITY_SUMMARIES: TableDef = TableDef {
    name: "quality_summaries",
    key: "summary_id",
    columns: &[("benchmark_run_id", "TEXT"), ("variant_id", "TEXT")],
    indexes: &["benchmark_run_id"],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub evaluation_id: String,
    pub benchmark_run_id: String,
    pub item_id: String,
    pub variant_id: String,
    pub dispatch_id: String,
    pub score: f64,
    pub criteria: BTreeMap<String, f64>,
    pub rationale: String,
    pub evaluator: Evaluator,
    pub fallback: bool,
    pub fallback_reason: Option<String>,
    pub position: i64,
}

impl Doc for Evaluation {
    const TABLE: &'static TableDef = &QUALITY_EVALUATIONS;
    fn key(&self) -> String {
        self.evaluation_id.clone()
    }
    fn columns(&self) -> Vec<SqlValue> {
        vec![
            self.benchmark_run_id.clone().into(),
            self.item_id.clone().into(),
            self.variant_id.clone().into(),
            self.dispatch_id.clone().into(),
            self.score.into(),
            i64::from(self.fallback).into(),
            self.position.into(),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub dispatch_id: String,
    pub benchmark_run_id: String,
    pub variant_id: Option<String>,
    pub status: String,
    pub score: Option<f64>,
    pub reason: Option<String>,
    pub evaluation_id: String,
    pub position: i64,
}

impl Doc for Verdict {
    const TABLE: &'static TableDef = &QUALITY_VERDICTS;
    fn key(&self) -> String {
        self.dispatch_id.clone()
    }
    fn columns(&self) -> Vec<SqlValue> {
        vec![
            self.benchmark_run_id.clone().into(),
            self.status.clone().into(),
            self.position.into(),
        ]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualitySummary {
    pub benchmark_run_id: String,
    pub variant_id: String,
    pub judged: u64,
    pub score_sum: f64,
    pub fallbacks: u64,
}

pub fn summary_key(benchmark_run_id: &str, variant_id: &str) -> String {
    format!("{benchmark_run_id}|{variant_id}")
}

impl Doc for QualitySummary {
    const TABLE: &'static TableDef = &QUALITY_SUMMARIES;
    fn key(&self) -> String {
        summary_key(&self.benchmark_run_id, &self.variant_id)
    }
    fn columns(&self) -> Vec<SqlValue> {
        vec![
            self.benchmark_run_id.clone().into(),
            self.variant_id.clone().into(),
        ]
    }
}

pub struct QualityProjection;

/// Takes a previous judged verdict out of its variant's summary.
fn forget_previous(docs: &mut Docs, dispatch_id: &str) {
    let Some(prev) = docs.get::<Verdict>(dispatch_id).cloned() else {
        return;
    };
    if let (Some(variant), Some(score)) = (&prev.variant_id, prev.score) {
        if let Some(summary) =
            docs.get_mut::<QualitySummary>(&summary_key(&prev.benchmark_run_id, variant))
        {
            summary.judged -= 1;
            summary.score_sum -= score;
        }
    }
}

impl Projection for QualityProjection {
    fn name(&self) -> &'static str {
        "quality"
    }
    fn version(&self) -> u32 {
        1
    }
    fn tables(&self) -> &'static [&'static TableDef] {
        &[&QUALITY_EVALUATIONS, &QUALITY_VERDICTS, &QUALITY_SUMMARIES]
    }

    fn want(&self, _event: &FoldEvent, payload: &EventPayload, docs: &mut Docs) {
        match payload {
            EventPayload::EvaluationCompleted(p) => {
                docs.want::<Verdict>(&p.dispatch_id);
                docs.want::<QualitySummary>(summary_key(&p.benchmark_run_id, &p.variant_id));
            }
            EventPayload::EvaluationFailed(p) => {
                docs.want::<Verdict>(&p.dispatch_id);
                if let Some(variant) = &p.variant_id {
                    docs.want::<QualitySummary>(summary_key(&p.benchmark_run_id, variant));
                }
            }
            _ => {}
        }
    }

    fn apply(
        &self,
        event: &FoldEvent,
        payload: &EventPayload,
        docs: &mut Docs,
    ) -> Result<(), String> {
        match payload {
            EventPayload::EvaluationCompleted(p) => {
                // The summary a previous verdict counted in may be another variant's; loading it
                // happens here, on the rare re-judge, rather than for every event.
                if let Some(prev) = docs.get::<Verdict>(&p.dispatch_id) {
                    if prev
                        .variant_id
                        .as_deref()
                        .is_some_and(|v| v != p.variant_id)
                    {
                        return Err(format!(
                            "dispatch {} was judged for another variant before",
                            p.dispatch_id
                        ));
                    }
                }
                forget_previous(docs, &p.dispatch_id);
                let key = summary_key(&p.benchmark_run_id, &p.variant_id);
                let mut summary =
                    docs.get::<QualitySummary>(&key)
                        .cloned()
                        .unwrap_or(QualitySummary {
                            benchmark_run_id: p.benchmark_run_id.clone(),
                            variant_id: p.variant_id.clone(),
                            ..Default::default()
                        });
                summary.judged += 1;
                summary.score_sum += p.score;
                summary.fallbacks += u64::from(p.fallback);
                docs.put(summary);
                docs.put(Verdict {
                    dispatch_id: p.dispatch_id.clone(),
                    benchmark_run_id: p.benchmark_run_id.clone(),
                    variant_id: Some(p.variant_id.clone()),
                    status: "judged".into(),
                    score: Some(p.score),
                    reason: None,
                    evaluation_id: p.evaluation_id.clone(),
                    position: event.position,
                });
                docs.put(Evaluation {
                    evaluation_id: p.evaluation_id.clone(),
                    benchmark_run_id: p.benchmark_run_id.clone(),
                    item_id: p.item_id.clone(),
                    variant_id: p.variant_id.clone(),
                    dispatch_id: p.dispatch_id.clone(),
                    score: p.score,
                    criteria: p.criteria.clone(),
                    rationale: p.rationale.clone(),
                    evaluator: p.evaluator.clone(),
                    fallback: p.fallback,
                    fallback_reason: p.fallback_reason.clone(),
                    position: event.position,
                });
            }
            EventPayload::EvaluationFailed(p) => {
                // The latest verdict wins: a score judged before leaves the mean, so the summary
                // of the variant that held it must be the one this event names.
                if let Some(prev) = docs.get::<Verdict>(&p.dispatch_id) {
                    if prev.score.is_some() && prev.variant_id != p.variant_id {
                        return Err(format!(
                            "dispatch {} was judged for {:?}; an unjudged verdict must name the same variant",
                            p.dispatch_id, prev.variant_id
                        ));
                    }
                }
                forget_previous(docs, &p.dispatch_id);
                docs.put(Verdict {
                    dispatch_id: p.dispatch_id.clone(),
                    benchmark_run_id: p.benchmark_run_id.clone(),
                    variant_id: p.variant_id.clone(),
                    status: "unjudged".into(),
                    score: None,
                    reason: Some(p.reason.clone()),
                    evaluation_id: p.evaluation_id.clone(),
                    position: event.position,
                });
            }
            _ => {}
        }
        Ok(())
    }
}
