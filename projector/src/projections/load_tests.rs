//! `load_tests`: one row per load-test run in `load_test_runs`, with per-stage counts, cost and
//! latency histograms. Latency is measured from each dispatch's scheduled instant (no
//! coordinated omission); service time is kept beside it; missed arrivals are counted.

use crate::db::SqlValue;
use crate::docs::{Doc, Docs, TableDef};
use crate::hist::{LatencyHist, Percentiles};
use crate::projection::Projection;
use chrono::DateTime;
use eventlog::catalogue::{stage_of_seq, Outcome, Stage, StopConditions};
use eventlog::{EventPayload, FoldEvent};
use serde::{Deserialize, Serialize};

pub const LOAD_TEST_RUNS: TableDef = TableDef {
    name: "load_test_runs",
    key: "run_id",
    columns: &[
        ("status", "TEXT"),
        ("mode", "TEXT"),
        ("variant_id", "TEXT"),
        ("dispatched", "BIGINT"),
        ("failure_rate", "DOUBLE PRECISION"),
        ("created_position", "BIGINT"),
    ],
    indexes: &["status", "created_position"],
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageState {
    pub name: String,
    pub duration_s: u64,
    pub target_rps: f64,
    pub started_at: Option<String>,
    pub last_scheduled_at: Option<String>,
    pub dispatched: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub missed: u64,
    pub cost_usd: f64,
    pub cost_unknown: u64,
    pub latency: LatencyHist,
    pub service_time: LatencyHist,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadTestRun {
    pub run_id: String,
    pub name: String,
    pub effect_revision_id: String,
    pub environment_id: String,
    pub variant_id: String,
    pub input_fixture: String,
    pub status: String,
    pub mode: Option<String>,
    pub runner_fallback_reason: Option<String>,
    pub stop_reason: Option<String>,
    pub stop_conditions: StopConditions,
    pub estimated_cost_usd: Option<f64>,
    pub approval_ref: Option<String>,
    pub created_at: String,
    pub created_position: i64,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub stages: Vec<StageState>,
}

impl Doc for LoadTestRun {
    const TABLE: &'static TableDef = &LOAD_TEST_RUNS;
    fn key(&self) -> String {
        self.run_id.clone()
    }
    fn columns(&self) -> Vec<SqlValue> {
        let totals = self.totals();
        vec![
            self.status.clone().into(),
            self.mode.clone().into(),
            self.variant_id.clone().into(),
            totals.dispatched.into(),
            totals.failure_rate.into(),
            self.created_position.into(),
        ]
    }
}

/// Counts of a stage or of the whole run, as answered by the API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figures {
    pub dispatched: u64,
    pub completed: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub missed: u64,
    pub failure_rate: Option<f64>,
    pub achieved_rps: Option<f64>,
    pub latency_ms: Percentiles,
    pub service_time_ms: Percentiles,
    /// `null` while any completed dispatch's cost is unknown.
    pub cost_usd: Option<f64>,
    pub cost_unknown_dispatches: u64,
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let a = DateTime::parse_from_rfc3339(from).ok()?;
    let b = DateTime::parse_from_rfc3339(to).ok()?;
    Some((b - a).num_microseconds()? as f64 / 1e6)
}

fn figures(
    counts: (u64, u64, u64, u64, u64),
    cost: (f64, u64),
    latency: &LatencyHist,
    service: &LatencyHist,
    window_s: Option<f64>,
) -> Figures {
    let (dispatched, succeeded, failed, timed_out, missed) = counts;
    let completed = succeeded + failed + timed_out;
    Figures {
        dispatched,
        completed,
        succeeded,
        failed,
        timed_out,
        missed,
        failure_rate: (completed > 0)
            .then(|| round((failed + timed_out) as f64 / completed as f64, 6)),
        achieved_rps: window_s
            .filter(|w| *w > 0.0)
            .map(|w| round(dispatched as f64 / w, 3)),
        latency_ms: latency.percentiles(),
        service_time_ms: service.percentiles(),
        cost_usd: (cost.1 == 0).then(|| round(cost.0, 6)),
        cost_unknown_dispatches: cost.1,
    }
}

impl StageState {
    /// Seconds this stage has run: its planned duration once over, else up to its latest
    /// scheduled arrival (so a live run's rate is not diluted by time not yet reached).
    fn window_s(&self, finished: bool) -> Option<f64> {
        if finished {
            return Some(self.duration_s as f64);
        }
        let elapsed = seconds_between(
            self.started_at.as_deref()?,
            self.last_scheduled_at.as_deref()?,
        )?;
        Some(
            elapsed
                .max(1.0 / self.target_rps)
                .min(self.duration_s as f64),
        )
    }

    pub fn figures(&self, finished: bool) -> Figures {
        figures(
            (
                self.dispatched,
                self.succeeded,
                self.failed,
                self.timed_out,
                self.missed,
            ),
            (self.cost_usd, self.cost_unknown),
            &self.latency,
            &self.service_time,
            self.window_s(finished),
        )
    }
}

impl LoadTestRun {
    /// The run's stage plan, as created.
    pub fn plan(&self) -> Vec<Stage> {
        self.stages
            .iter()
            .map(|s| Stage {
                name: s.name.clone(),
                duration_s: s.duration_s,
                target_rps: s.target_rps,
            })
            .collect()
    }

    fn terminal(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "cancelled" | "stopped")
    }

    /// Whether stage `i` is over: a later stage started, or the run ended.
    pub fn stage_finished(&self, i: usize) -> bool {
        self.terminal()
            || self
                .stages
                .iter()
                .skip(i + 1)
                .any(|s| s.started_at.is_some())
    }

    pub fn totals(&self) -> Figures {
        let (mut latency, mut service) = (LatencyHist::default(), LatencyHist::default());
        let mut counts = (0, 0, 0, 0, 0);
        let mut cost = (0.0, 0);
        let mut window = 0.0;
        for (i, s) in self.stages.iter().enumerate() {
            latency.merge(&s.latency);
            service.merge(&s.service_time);
            counts.0 += s.dispatched;
            counts.1 += s.succeeded;
            counts.2 += s.failed;
            counts.3 += s.timed_out;
            counts.4 += s.missed;
            cost.0 += s.cost_usd;
            cost.1 += s.cost_unknown;
            window += s.window_s(self.stage_finished(i)).unwrap_or(0.0);
        }
        figures(counts, cost, &latency, &service, Some(window))
    }

    fn stage_mut(&mut self, index: usize, what: &str) -> Result<&mut StageState, String> {
        let n = self.stages.len();
        self.stages.get_mut(index).ok_or_else(|| {
            format!(
                "{what} names stage {index} but run {} has {n} stage(s)",
                self.run_id
            )
        })
    }
}

fn run_id(payload: &EventPayload) -> Option<&str> {
    use EventPayload::*;
    Some(match payload {
        RunCreated(p) => &p.run_id,
        RunStarted(p) => &p.run_id,
        RunnerFallback(p) => &p.run_id,
        StageStarted(p) => &p.run_id,
        LoadDispatchSubmitted(p) => &p.run_id,
        LoadDispatchCompleted(p) => &p.run_id,
        ArrivalsMissed(p) => &p.run_id,
        StopConditionBreached(p) => &p.run_id,
        RunCancelled(p) => &p.run_id,
        RunCompleted(p) => &p.run_id,
        _ => return None,
    })
}

pub struct LoadTestsProjection;

impl Projection for LoadTestsProjection {
    fn name(&self) -> &'static str {
        "load_tests"
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static TableDef] {
        &[&LOAD_TEST_RUNS]
    }

    fn want(&self, _event: &FoldEvent, payload: &EventPayload, docs: &mut Docs) {
        if let Some(run_id) = run_id(payload) {
            docs.want::<LoadTestRun>(run_id);
        }
    }

    fn apply(
        &self,
        event: &FoldEvent,
        payload: &EventPayload,
        docs: &mut Docs,
    ) -> Result<(), String> {
        use EventPayload::*;
        let Some(id) = run_id(payload) else {
            return Ok(());
        };
        if let RunCreated(p) = payload {
            if docs.get::<LoadTestRun>(id).is_some() {
                return Err(format!("run {id} was already created"));
            }
            docs.put(LoadTestRun {
                run_id: p.run_id.clone(),
                name: p.name.clone(),
                effect_revision_id: p.effect_revision_id.clone(),
                environment_id: p.environment_id.clone(),
                variant_id: p.variant_id.clone(),
                input_fixture: p.input_fixture.clone(),
                status: "created".into(),
                mode: None,
                runner_fallback_reason: None,
                stop_reason: None,
                stop_conditions: p.stop_conditions.clone(),
                estimated_cost_usd: p.estimated_cost_usd,
                approval_ref: p.approval_ref.clone(),
                created_at: event.occurred_at.clone(),
                created_position: event.position,
                started_at: None,
                ended_at: None,
                stages: p
                    .stages
                    .iter()
                    .map(|s: &Stage| StageState {
                        name: s.name.clone(),
                        duration_s: s.duration_s,
                        target_rps: s.target_rps,
                        ..Default::default()
                    })
                    .collect(),
            });
            return Ok(());
        }
        let run = docs.get_mut::<LoadTestRun>(id).ok_or_else(|| {
            format!(
                "run {id} has no load_test.run_created before position {}",
                event.position
            )
        })?;
        let at = event.occurred_at.clone();
        match payload {
            RunStarted(p) => {
                if run.status == "created" {
                    run.status = "running".into();
                }
                run.mode = Some(
                    serde_json::to_value(p.mode)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                );
                run.started_at = Some(at);
            }
            RunnerFallback(p) => run.runner_fallback_reason = Some(p.reason.clone()),
            StageStarted(p) => {
                let stage = run.stage_mut(p.stage_index as usize, "load_test.stage_started")?;
                stage.started_at = Some(at);
            }
            LoadDispatchSubmitted(p) => {
                let stages = run.plan();
                let planned = stage_of_seq(&stages, p.seq);
                if planned.is_some_and(|i| i != p.stage_index as usize) {
                    return Err(format!(
                        "dispatch seq {} belongs to stage {} by the run's plan, not stage {}",
                        p.seq,
                        planned.unwrap_or_default(),
                        p.stage_index
                    ));
                }
                let stage =
                    run.stage_mut(p.stage_index as usize, "load_test.dispatch_submitted")?;
                stage.dispatched += 1;
                if stage.started_at.is_none() {
                    stage.started_at = Some(p.scheduled_at.clone());
                }
                if stage
                    .last_scheduled_at
                    .as_deref()
                    .is_none_or(|last| seconds_between(last, &p.scheduled_at).unwrap_or(0.0) > 0.0)
                {
                    stage.last_scheduled_at = Some(p.scheduled_at.clone());
                }
            }
            LoadDispatchCompleted(p) => {
                let index = match p.stage_index {
                    Some(i) => i as usize,
                    None => {
                        let seq = eventlog::ids::DispatchId::parse(&p.dispatch_id)
                            .map_err(|e| e.to_string())?
                            .seq;
                        let stages = run.plan();
                        stage_of_seq(&stages, seq)
                            .ok_or_else(|| format!("dispatch seq {seq} is beyond the run's plan"))?
                    }
                };
                let stage = run.stage_mut(index, "load_test.dispatch_completed")?;
                match p.outcome {
                    Outcome::Succeeded => stage.succeeded += 1,
                    Outcome::Failed => stage.failed += 1,
                    Outcome::TimedOut => stage.timed_out += 1,
                }
                stage.latency.record_ms(p.latency_ms);
                if let Some(service) = p.service_time_ms {
                    stage.service_time.record_ms(service);
                }
                match p.cost_usd {
                    Some(c) => stage.cost_usd += c,
                    None => stage.cost_unknown += 1,
                }
            }
            ArrivalsMissed(p) => {
                run.stage_mut(p.stage_index as usize, "load_test.arrivals_missed")?
                    .missed += p.count
            }
            StopConditionBreached(p) => {
                run.status = "stopped".into();
                run.ended_at.get_or_insert(at);
                run.stop_reason = Some(match (&p.alarm_name, &p.cost_overrun) {
                    (Some(alarm), _) => format!("critical alarm {alarm} is in ALARM"),
                    (None, Some(cost)) => format!(
                        "actual cost ${:.2} passed the estimate ${:.2} by more than {:.0}%",
                        cost.actual_cost_usd,
                        cost.estimated_cost_usd,
                        (cost.limit_factor - 1.0) * 100.0
                    ),
                    (None, None) => format!(
                        "failure rate {:.1}% above the {:.1}% limit for {} s",
                        p.failure_rate * 100.0,
                        run.stop_conditions.max_failure_rate * 100.0,
                        p.window_s
                    ),
                });
            }
            RunCancelled(p) if !run.terminal() => {
                run.status = "cancelled".into();
                run.stop_reason = Some(format!("cancelled by {}: {}", p.actor, p.reason));
                run.ended_at = Some(at);
            }
            RunCompleted(_) if !run.terminal() => {
                run.status = "completed".into();
                run.ended_at = Some(at);
            }
            _ => {}
        }
        Ok(())
    }
}
