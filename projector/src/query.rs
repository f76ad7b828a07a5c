//! The read side: answers built from the projections alone (no wall clock), each with the
//! position it reflects (`as_of_position`), so the same log always gives the same bytes.

use crate::checkpoint;
use crate::db::{ReadDb, ReadTx, SqlValue};
use crate::docs::Doc;
use crate::money_hud::{self, HudInput, Price, Thresholds, VariantEvidence};
use crate::projections::benchmarks::{BenchmarkItem, BenchmarkRun, RunArtifact};
use crate::projections::load_tests::LoadTestRun;
use crate::projections::pricing::PriceEntry;
use crate::projections::quality::{summary_key, Evaluation, QualitySummary, Verdict};
use crate::projections::routing::{scope_key, Binding};
use crate::projections::variants::Variant;
use serde_json::{json, Value};
use std::time::Duration;

/// Longest a query waits for `min_position`.
pub const MAX_MIN_POSITION_WAIT: Duration = Duration::from_secs(10);
const WAIT_STEP: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored read model is not readable: {0}")]
    Decode(#[from] serde_json::Error),
    /// `min_position` was not reached in time.
    #[error("projection {projection} is at position {at}, below min_position {wanted}, after waiting {waited_ms} ms")]
    NotCaughtUp {
        projection: String,
        at: i64,
        wanted: i64,
        waited_ms: u128,
    },
}

/// Waits (bounded) until every named projection reached `min_position`.
pub async fn wait_for(
    db: &ReadDb,
    projections: &[&str],
    min_position: Option<i64>,
    max_wait: Duration,
) -> Result<(), QueryError> {
    let Some(wanted) = min_position else {
        return Ok(());
    };
    let started = tokio::time::Instant::now();
    loop {
        let positions = checkpoint::positions(db).await?;
        let behind = projections
            .iter()
            .map(|p| (*p, positions.get(*p).copied().unwrap_or(0)))
            .find(|(_, at)| *at < wanted);
        match behind {
            None => return Ok(()),
            Some((projection, at)) if started.elapsed() >= max_wait => {
                return Err(QueryError::NotCaughtUp {
                    projection: projection.to_string(),
                    at,
                    wanted,
                    waited_ms: started.elapsed().as_millis(),
                })
            }
            Some(_) => tokio::time::sleep(WAIT_STEP).await,
        }
    }
}

/// A consistent read: the checkpoints and the rows come from one snapshot.
pub struct Snapshot {
    tx: ReadTx,
    pub as_of_position: i64,
}

impl Snapshot {
    /// Opens a snapshot; `as_of_position` is the lowest checkpoint among `projections`.
    pub async fn open(db: &ReadDb, projections: &[&str]) -> Result<Self, QueryError> {
        let mut tx = db.begin_read().await?;
        let mut as_of = i64::MAX;
        for p in projections {
            let at = checkpoint::read_checkpoint(&mut tx, p)
                .await?
                .map_or(0, |c| c.position);
            as_of = as_of.min(at);
        }
        Ok(Self {
            tx,
            as_of_position: if as_of == i64::MAX { 0 } else { as_of },
        })
    }

    /// Documents of `T` matching `filter` (SQL over the table's plain columns), in `order`.
    pub async fn docs<T: Doc>(
        &mut self,
        filter: &str,
        values: &[SqlValue],
        order: &str,
    ) -> Result<Vec<T>, QueryError> {
        let table = T::TABLE.name;
        // A projection that never ran has no table yet: that is an empty answer, not an error.
        if !checkpoint::table_exists(&mut self.tx, table).await? {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT doc FROM {table} WHERE {filter} ORDER BY {order}");
        self.tx
            .texts(&sql, values)
            .await?
            .iter()
            .map(|d| Ok(serde_json::from_str(d)?))
            .collect()
    }

    pub async fn doc<T: Doc>(&mut self, key: &str) -> Result<Option<T>, QueryError> {
        let filter = format!("{} = $1", T::TABLE.key);
        Ok(self
            .docs::<T>(&filter, &[key.into()], T::TABLE.key)
            .await?
            .into_iter()
            .next())
    }
}

fn load_test_run_json(run: &LoadTestRun) -> Value {
    let stages: Vec<Value> = run
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut v =
                serde_json::to_value(s.figures(run.stage_finished(i))).expect("figures serialize");
            v["stage_index"] = json!(i);
            v["name"] = json!(s.name);
            v["target_rps"] = json!(s.target_rps);
            v["duration_s"] = json!(s.duration_s);
            v
        })
        .collect();
    json!({
        "run_id": run.run_id,
        "name": run.name,
        "effect_revision_id": run.effect_revision_id,
        "environment_id": run.environment_id,
        "variant_id": run.variant_id,
        "input_fixture": run.input_fixture,
        "status": run.status,
        "mode": run.mode,
        "runner_fallback_reason": run.runner_fallback_reason,
        "stop_reason": run.stop_reason,
        "stop_conditions": run.stop_conditions,
        "estimated_cost_usd": run.estimated_cost_usd,
        "approval_ref": run.approval_ref,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "stages": stages,
        "totals": run.totals(),
    })
}

pub async fn load_test_runs(s: &mut Snapshot, status: Option<&str>) -> Result<Value, QueryError> {
    let runs: Vec<LoadTestRun> = match status {
        Some(st) => {
            s.docs("status = $1", &[st.into()], "created_position")
                .await?
        }
        None => s.docs("1 = 1", &[], "created_position").await?,
    };
    Ok(
        json!({"runs": runs.iter().map(load_test_run_json).collect::<Vec<_>>(), "as_of_position": s.as_of_position}),
    )
}

pub async fn load_test_run(s: &mut Snapshot, run_id: &str) -> Result<Option<Value>, QueryError> {
    Ok(s.doc::<LoadTestRun>(run_id).await?.map(|run| {
        let mut v = load_test_run_json(&run);
        v["as_of_position"] = json!(s.as_of_position);
        v
    }))
}

pub async fn variants(
    s: &mut Snapshot,
    effect_revision_id: Option<&str>,
) -> Result<Value, QueryError> {
    let list: Vec<Variant> = match effect_revision_id {
        Some(er) => {
            s.docs("effect_revision_id = $1", &[er.into()], "variant_id")
                .await?
        }
        None => s.docs("1 = 1", &[], "variant_id").await?,
    };
    Ok(json!({"variants": list, "as_of_position": s.as_of_position}))
}

pub async fn variant(s: &mut Snapshot, variant_id: &str) -> Result<Option<Value>, QueryError> {
    Ok(s.doc::<Variant>(variant_id).await?.map(|v| {
        let mut value = serde_json::to_value(v).expect("variant serializes");
        value["as_of_position"] = json!(s.as_of_position);
        value
    }))
}

fn item_json(item: &BenchmarkItem) -> Value {
    json!({
        "item_id": item.item_id,
        "variant_id": item.variant_id,
        "status": item.status,
        "dispatched": item.dispatched,
        "completed": item.completed(),
        "succeeded": item.succeeded,
        "failed": item.failed + item.timed_out,
        "timed_out": item.timed_out,
        "cost_usd_total": (item.cost_known == item.completed()).then_some(item.cost_usd_total),
        "latency_ms": item.latency.percentiles(),
        "artifacts": item.artifacts,
    })
}

pub async fn benchmark_runs(s: &mut Snapshot) -> Result<Value, QueryError> {
    let runs: Vec<BenchmarkRun> = s.docs("1 = 1", &[], "created_position").await?;
    Ok(json!({"benchmark_runs": runs, "as_of_position": s.as_of_position}))
}

pub async fn benchmark_run(s: &mut Snapshot, id: &str) -> Result<Option<Value>, QueryError> {
    let Some(run) = s.doc::<BenchmarkRun>(id).await? else {
        return Ok(None);
    };
    let items: Vec<BenchmarkItem> = s
        .docs("benchmark_run_id = $1", &[id.into()], "created_position")
        .await?;
    let artifacts: Vec<RunArtifact> = s
        .docs("benchmark_run_id = $1", &[id.into()], "artifact_id")
        .await?;
    Ok(Some(json!({
        "benchmark_run_id": run.benchmark_run_id,
        "dataset": run.dataset,
        "status": run.status,
        "variant_ids": run.variant_ids,
        "inputs": run.inputs,
        "repetitions": run.repetitions,
        "created_at": run.created_at,
        "completed_at": run.completed_at,
        "items": items.iter().map(item_json).collect::<Vec<_>>(),
        "run_artifacts": artifacts,
        "as_of_position": s.as_of_position,
    })))
}

pub async fn quality_evaluations(
    s: &mut Snapshot,
    benchmark_run_id: &str,
) -> Result<Value, QueryError> {
    let evaluations: Vec<Evaluation> = s
        .docs(
            "benchmark_run_id = $1",
            &[benchmark_run_id.into()],
            "position",
        )
        .await?;
    let unjudged: Vec<Verdict> = s
        .docs(
            "benchmark_run_id = $1 AND status = 'unjudged'",
            &[benchmark_run_id.into()],
            "position",
        )
        .await?;
    let unjudged: Vec<Value> = unjudged
        .iter()
        .map(|v| json!({"dispatch_id": v.dispatch_id, "variant_id": v.variant_id, "reason": v.reason, "evaluation_id": v.evaluation_id}))
        .collect();
    Ok(
        json!({"benchmark_run_id": benchmark_run_id, "evaluations": evaluations, "unjudged": unjudged, "as_of_position": s.as_of_position}),
    )
}

pub async fn bindings(
    s: &mut Snapshot,
    effect_revision_id: Option<&str>,
    stage: Option<&str>,
) -> Result<Value, QueryError> {
    let list: Vec<Binding> = match effect_revision_id {
        Some(er) => {
            s.docs("effect_revision_id = $1", &[er.into()], "scope")
                .await?
        }
        None => s.docs("1 = 1", &[], "scope").await?,
    };
    let list: Vec<Binding> = list
        .into_iter()
        .filter(|b| stage.is_none_or(|st| b.stage == st))
        .collect();
    Ok(json!({"bindings": list, "as_of_position": s.as_of_position}))
}

pub async fn binding(
    s: &mut Snapshot,
    effect_revision_id: &str,
    stage: &str,
) -> Result<Option<Binding>, QueryError> {
    s.doc::<Binding>(&scope_key(effect_revision_id, stage))
        .await
}

pub async fn prices(s: &mut Snapshot) -> Result<Value, QueryError> {
    let list: Vec<PriceEntry> = s.docs("1 = 1", &[], "effect_revision_id").await?;
    Ok(json!({"prices": list, "as_of_position": s.as_of_position}))
}

/// Projections the Money HUD reads.
pub const MONEY_HUD_PROJECTIONS: &[&str] = &["benchmarks", "quality", "pricing", "routing"];

/// The Money HUD of a benchmark run, or `None` when the run is unknown.
pub async fn money_hud(
    s: &mut Snapshot,
    benchmark_run_id: &str,
    thresholds: Thresholds,
) -> Result<Option<Value>, QueryError> {
    let Some(run) = s.doc::<BenchmarkRun>(benchmark_run_id).await? else {
        return Ok(None);
    };
    let items: Vec<BenchmarkItem> = s
        .docs(
            "benchmark_run_id = $1",
            &[benchmark_run_id.into()],
            "created_position",
        )
        .await?;
    let summaries: Vec<QualitySummary> = s
        .docs(
            "benchmark_run_id = $1",
            &[benchmark_run_id.into()],
            "summary_id",
        )
        .await?;
    let mut variants = Vec::new();
    let mut scope = None;
    for item in &items {
        let parsed = eventlog::ids::VariantId::parse(&item.variant_id).ok();
        let price = match &parsed {
            Some(id) => s.doc::<PriceEntry>(&id.effect_revision_id).await?,
            None => None,
        };
        if scope.is_none() {
            scope = parsed
                .as_ref()
                .map(|id| (id.effect_revision_id.clone(), id.stage.clone()));
        }
        let quality = summaries
            .iter()
            .find(|q| q.key() == summary_key(benchmark_run_id, &item.variant_id));
        let latency = item.latency.percentiles();
        variants.push(VariantEvidence {
            variant_id: item.variant_id.clone(),
            dispatches: item.completed(),
            succeeded: item.succeeded,
            cost_known: item.cost_known,
            cost_usd_total: item.cost_usd_total,
            latency_p50_ms: latency.p50,
            latency_p95_ms: latency.p95,
            quality_sum: quality.map_or(0.0, |q| q.score_sum),
            quality_n: quality.map_or(0, |q| q.judged),
            price: price.map(|p| Price {
                price_usd: p.price_usd,
                position: p.position,
            }),
        });
    }
    let current_binding = match &scope {
        Some((er, stage)) => binding(s, er, stage).await?.map(|b| b.variant_id),
        None => None,
    };
    let hud = money_hud::evaluate(&HudInput {
        variants,
        current_binding: current_binding.clone(),
        thresholds,
    });
    let mut value = serde_json::to_value(hud)?;
    value["benchmark_run_id"] = json!(run.benchmark_run_id);
    value["dataset"] = json!(run.dataset);
    value["current_binding"] = json!(current_binding);
    value["thresholds"] = serde_json::to_value(thresholds)?;
    value["as_of_position"] = json!(s.as_of_position);
    Ok(Some(value))
}
