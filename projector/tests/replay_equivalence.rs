//! Must-show (DESIGN §6, STYLE 15): live catch-up equals a rebuild from position 0.
//!
//! A property test over random *valid* logs that cover the catalogue. The events go into a real
//! store; a [`Runner`] applies them incrementally with random batch sizes, "crashes" between
//! batches (dropped without a clean stop, or stopped, then replaced by a new runner that resumes
//! from the stored checkpoints) while more events arrive. Every query answer is then taken as
//! bytes, every projection is rebuilt from position 0 on the same database, and the answers are
//! taken again: they must be byte-identical, and both must reflect the log's head.

// `*pick(..)` takes `&str` out of `&&str`; without it `pick` would infer `T = str`.
#![allow(clippy::explicit_auto_deref)]

#[macro_use]
mod common;

use common::{
    at, benchmark_run_id, event, load_dispatch_id, registered, timestamp_ms, variant_id, Store,
    TestDb,
};
use eventlog::catalogue::{
    planned_arrivals, stage_of_seq, ActionLogAcknowledged, AlarmState, AlarmStateChanged,
    ArrivalsMissed, ArtifactRecorded, ArtifactType, BenchmarkDispatchCompleted,
    BenchmarkDispatchSubmitted, BenchmarkInput, BenchmarkItemCompleted, BenchmarkItemCreated,
    BenchmarkRunCompleted, BenchmarkRunCreated, BindingApplied, BindingRolledBack,
    EvaluationCompleted, EvaluationFailed, Evaluator, EventPayload, Evidence,
    LoadDispatchCompleted, LoadDispatchSubmitted, Outcome, PriceSet, RunCancelled, RunCompleted,
    RunCreated, RunMode, RunStarted, RunnerFallback, Stage, StageStarted, StopConditionBreached,
    StopConditions, VariantRetired,
};
use eventlog::ValidatedEvent;
use projector::money_hud::Thresholds;
use projector::query::{self, Snapshot};
use projector::runner::Stepped;
use projector::{ReadDb, Runner};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const CASES_PER_STORE: u32 = 12;

const ERS: [&str; 2] = ["fx-1", "fx-2"];
const STAGES: [&str; 2] = ["render", "upscale"];
const PROVIDERS: [&str; 3] = ["sim-cheap", "sim-fast", "sim-best"];
const RATES: [f64; 4] = [0.5, 1.0, 2.0, 2.5];

fn pick<T>(items: &[T], n: impl Into<u64>) -> &T {
    &items[(n.into() % items.len() as u64) as usize]
}

/// One of the 12 variants of the pool (2 effect revisions × 2 stages × 3 providers).
fn pool_variant(n: u8) -> String {
    let n = u64::from(n);
    variant_id(
        *pick(&ERS, n),
        *pick(&STAGES, n / 2),
        *pick(&PROVIDERS, n / 4),
    )
}

fn outcome(n: u8) -> Outcome {
    *pick(
        &[
            Outcome::Succeeded,
            Outcome::Succeeded,
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::TimedOut,
        ],
        n,
    )
}

/// What to do next, in terms a model turns into valid events: indexes pick among what exists
/// (modulo its count), and an op with nothing to act on is skipped. Shrinking removes ops, and
/// what is left stays valid.
#[derive(Debug, Clone)]
enum Op {
    RegisterVariant {
        variant: u8,
        unit_cost_milli: Option<u16>,
    },
    RetireVariant {
        pick: u8,
    },
    CreateLoadTest {
        variant: u8,
        stages: Vec<(u8, u8)>,
        default_stop: bool,
    },
    StartLoadTest {
        run: u8,
        inline: bool,
    },
    SubmitLoad {
        run: u8,
        count: u8,
        announce_stage: bool,
    },
    CompleteLoad {
        run: u8,
        pick: u16,
        outcome: u8,
        latency_us: u32,
        service_us: Option<u32>,
        cost_micro: Option<u32>,
        with_stage: bool,
    },
    MissArrivals {
        run: u8,
        count: u8,
    },
    EndLoadTest {
        run: u8,
        how: u8,
    },
    CreateBenchmark {
        scope: u8,
        providers: u8,
        inputs: u8,
        repetitions: u8,
    },
    SubmitBench {
        run: u8,
        item: u8,
        input: u8,
    },
    CompleteBench {
        run: u8,
        pick: u16,
        outcome: u8,
        latency_us: u32,
        cost_micro: Option<u32>,
    },
    RecordArtifact {
        run: u8,
        item: u8,
        seed: u64,
    },
    CompleteItem {
        run: u8,
        item: u8,
    },
    CompleteBenchmark {
        run: u8,
    },
    Judge {
        pick: u16,
        score_milli: u16,
        fallback: bool,
    },
    JudgeFailed {
        pick: u16,
        name_variant: bool,
    },
    SetPrice {
        er: u8,
        price_milli: u16,
    },
    ApplyBinding {
        scope: u8,
        provider: u8,
        evidence: bool,
    },
    RollBack {
        scope: u8,
    },
    Noise {
        alarm: bool,
        state: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u8>(), proptest::option::of(0u16..500))
            .prop_map(|(variant, unit_cost_milli)| Op::RegisterVariant { variant, unit_cost_milli }),
        1 => any::<u8>().prop_map(|pick| Op::RetireVariant { pick }),
        2 => (any::<u8>(), proptest::collection::vec((1u8..=12, any::<u8>()), 1..=3), any::<bool>())
            .prop_map(|(variant, stages, default_stop)| Op::CreateLoadTest { variant, stages, default_stop }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(run, inline)| Op::StartLoadTest { run, inline }),
        10 => (any::<u8>(), 1u8..=8, any::<bool>())
            .prop_map(|(run, count, announce_stage)| Op::SubmitLoad { run, count, announce_stage }),
        12 => (any::<u8>(), any::<u16>(), any::<u8>(), 0u32..3_000_000, proptest::option::of(0u32..1_000_000),
               proptest::option::weighted(0.85, 0u32..50_000), any::<bool>())
            .prop_map(|(run, pick, outcome, latency_us, service_us, cost_micro, with_stage)| Op::CompleteLoad {
                run, pick, outcome, latency_us, service_us, cost_micro, with_stage,
            }),
        1 => (any::<u8>(), 1u8..=5).prop_map(|(run, count)| Op::MissArrivals { run, count }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(run, how)| Op::EndLoadTest { run, how }),
        2 => (any::<u8>(), 1u8..8, 1u8..=2, 1u8..=2).prop_map(|(scope, providers, inputs, repetitions)| {
            Op::CreateBenchmark { scope, providers, inputs, repetitions }
        }),
        8 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(run, item, input)| Op::SubmitBench { run, item, input }),
        8 => (any::<u8>(), any::<u16>(), any::<u8>(), 0u32..3_000_000, proptest::option::weighted(0.85, 0u32..80_000))
            .prop_map(|(run, pick, outcome, latency_us, cost_micro)| Op::CompleteBench { run, pick, outcome, latency_us, cost_micro }),
        2 => (any::<u8>(), any::<u8>(), any::<u64>()).prop_map(|(run, item, seed)| Op::RecordArtifact { run, item, seed }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(run, item)| Op::CompleteItem { run, item }),
        1 => any::<u8>().prop_map(|run| Op::CompleteBenchmark { run }),
        5 => (any::<u16>(), 0u16..=1000, proptest::bool::weighted(0.3))
            .prop_map(|(pick, score_milli, fallback)| Op::Judge { pick, score_milli, fallback }),
        2 => (any::<u16>(), any::<bool>()).prop_map(|(pick, name_variant)| Op::JudgeFailed { pick, name_variant }),
        2 => (any::<u8>(), 0u16..2000).prop_map(|(er, price_milli)| Op::SetPrice { er, price_milli }),
        2 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(scope, provider, evidence)| Op::ApplyBinding { scope, provider, evidence }),
        1 => any::<u8>().prop_map(|scope| Op::RollBack { scope }),
        1 => (any::<bool>(), any::<u8>()).prop_map(|(alarm, state)| Op::Noise { alarm, state }),
    ]
}

struct LoadRun {
    id: String,
    stages: Vec<Stage>,
    planned: u64,
    started_at_s: Option<i64>,
    next_seq: u64,
    announced: usize,
    terminal: bool,
    /// Submitted, not yet completed: (seq, stage index).
    pending: Vec<(u64, usize)>,
}

struct Item {
    id: String,
    variant: String,
    completed: bool,
    pending: Vec<(String, String)>,
    done: Vec<String>,
}

struct BenchRun {
    id: String,
    inputs: Vec<String>,
    items: Vec<Item>,
    completed: bool,
    next_dispatch: u64,
}

#[derive(Default)]
struct Scope {
    version: u64,
    current: Option<String>,
    previous: Option<String>,
}

/// Turns ops into a valid log, keeping what the events so far created.
#[derive(Default)]
struct Model {
    events: Vec<EventPayload>,
    registered: BTreeSet<String>,
    load_runs: Vec<LoadRun>,
    bench_runs: Vec<BenchRun>,
    /// Succeeded benchmark dispatches: (run, item, variant, dispatch); judged (and how) or not.
    outputs: Vec<(String, String, String, String)>,
    judged: BTreeMap<String, bool>,
    evaluations: u64,
    scopes: BTreeMap<(String, String), Scope>,
    prices: BTreeSet<String>,
}

impl Model {
    fn now_s(&self) -> i64 {
        self.events.len() as i64
    }

    fn push(&mut self, payload: EventPayload) {
        self.events.push(payload);
    }

    /// Applies `op`, or what it needs first when there is nothing for it to act on yet (a
    /// completion without a submission submits, a submission without a run creates one, …).
    fn apply(&mut self, op: &Op) {
        let mut op = op.clone();
        for _ in 0..8 {
            if self.try_apply(&op) {
                return;
            }
            op = Self::precursor(&op);
        }
        panic!("no precursor chain ends in an event for {op:?}");
    }

    fn precursor(op: &Op) -> Op {
        match *op {
            Op::RetireVariant { pick } => Op::RegisterVariant {
                variant: pick,
                unit_cost_milli: None,
            },
            Op::StartLoadTest { run, .. } => Op::CreateLoadTest {
                variant: run,
                stages: vec![(run % 12 + 1, run)],
                default_stop: true,
            },
            Op::SubmitLoad { run, .. } => Op::StartLoadTest {
                run,
                inline: run % 3 == 0,
            },
            Op::CompleteLoad { run, .. }
            | Op::MissArrivals { run, .. }
            | Op::EndLoadTest { run, .. } => Op::SubmitLoad {
                run,
                count: 3,
                announce_stage: true,
            },
            Op::SubmitBench { run, item, .. } => Op::CreateBenchmark {
                scope: run,
                providers: item % 7 + 1,
                inputs: 1,
                repetitions: 1,
            },
            Op::CompleteBench { run, pick, .. } => Op::SubmitBench {
                run,
                item: pick as u8,
                input: 0,
            },
            Op::CompleteBenchmark { run } => Op::CompleteItem { run, item: run },
            Op::RecordArtifact { run, item, .. } | Op::CompleteItem { run, item } => {
                Op::CompleteBench {
                    run,
                    pick: u16::from(item),
                    outcome: 0,
                    latency_us: 250_000,
                    cost_micro: Some(1_500),
                }
            }
            Op::Judge { pick, .. } | Op::JudgeFailed { pick, .. } => Op::CompleteBench {
                run: pick as u8,
                pick,
                outcome: 0,
                latency_us: 180_000,
                cost_micro: Some(2_000),
            },
            Op::RollBack { scope } => Op::ApplyBinding {
                scope,
                provider: scope,
                evidence: false,
            },
            ref other => panic!("{other:?} always applies"),
        }
    }

    /// Applies `op` when there is something for it to act on; false when there is not.
    fn try_apply(&mut self, op: &Op) -> bool {
        match op {
            Op::RegisterVariant {
                variant,
                unit_cost_milli,
            } => {
                let v = pool_variant(*variant);
                self.registered.insert(v.clone());
                self.push(registered(
                    &v,
                    unit_cost_milli.map(|c| f64::from(c) / 1000.0),
                ));
            }
            Op::RetireVariant { pick: n } => {
                let list: Vec<String> = self.registered.iter().cloned().collect();
                if list.is_empty() {
                    return false;
                }
                let variant_id = pick(&list, *n).clone();
                self.push(EventPayload::VariantRetired(VariantRetired {
                    variant_id,
                    reason: "superseded".into(),
                }));
            }
            Op::CreateLoadTest {
                variant,
                stages,
                default_stop,
            } => {
                let id = format!("lt_{}", self.load_runs.len() + 1);
                let stages: Vec<Stage> = stages
                    .iter()
                    .enumerate()
                    .map(|(i, (duration_s, rate))| Stage {
                        name: format!("stage-{i}"),
                        duration_s: u64::from(*duration_s) + 1,
                        target_rps: *pick(&RATES, *rate),
                    })
                    .collect();
                let planned = planned_arrivals(&stages).iter().sum();
                self.push(EventPayload::RunCreated(RunCreated {
                    run_id: id.clone(),
                    name: format!("load test {id}"),
                    effect_revision_id: ERS[0].into(),
                    environment_id: "staging".into(),
                    variant_id: pool_variant(*variant),
                    input_fixture: "fixtures/small.json".into(),
                    stages: stages.clone(),
                    stop_conditions: if *default_stop {
                        StopConditions::default()
                    } else {
                        StopConditions {
                            max_failure_rate: 0.3,
                            sustained_s: 30,
                        }
                    },
                    estimated_cost_usd: default_stop.then_some(1.25),
                    approval_ref: None,
                }));
                self.load_runs.push(LoadRun {
                    id,
                    stages,
                    planned,
                    started_at_s: None,
                    next_seq: 1,
                    announced: 0,
                    terminal: false,
                    pending: Vec::new(),
                });
            }
            Op::StartLoadTest { run, inline } => {
                let now = self.now_s();
                let Some(r) = self.pick_load_run(*run, |r| r.started_at_s.is_none() && !r.terminal)
                else {
                    return false;
                };
                let run_id = self.load_runs[r].id.clone();
                self.load_runs[r].started_at_s = Some(now);
                if *inline {
                    self.push(EventPayload::RunnerFallback(RunnerFallback {
                        run_id: run_id.clone(),
                        reason: "runner not configured".into(),
                    }));
                }
                let mode = if *inline {
                    RunMode::Inline
                } else {
                    RunMode::Runner
                };
                self.push(EventPayload::RunStarted(RunStarted {
                    run_id,
                    mode,
                    executor: None,
                }));
            }
            Op::SubmitLoad {
                run,
                count,
                announce_stage,
            } => {
                let Some(r) = self.pick_load_run(*run, |r| {
                    r.started_at_s.is_some() && !r.terminal && r.next_seq <= r.planned
                }) else {
                    return false;
                };
                for _ in 0..*count {
                    let run = &self.load_runs[r];
                    if run.next_seq > run.planned {
                        break;
                    }
                    let seq = run.next_seq;
                    let stage = stage_of_seq(&run.stages, seq).expect("seq within the plan");
                    let mut out = Vec::new();
                    if stage >= run.announced && *announce_stage {
                        out.push(EventPayload::StageStarted(StageStarted {
                            run_id: run.id.clone(),
                            stage_index: stage as u32,
                            target_rps: run.stages[stage].target_rps,
                        }));
                    }
                    // Open model: arrival k of a stage is due k / rate seconds after the stage starts.
                    let planned = planned_arrivals(&run.stages);
                    let first_seq: u64 = planned[..stage].iter().sum::<u64>() + 1;
                    let stage_offset_s: u64 =
                        run.stages[..stage].iter().map(|s| s.duration_s).sum();
                    let offset_ms = stage_offset_s as f64 * 1000.0
                        + (seq - first_seq) as f64 * 1000.0 / run.stages[stage].target_rps;
                    let scheduled_at = timestamp_ms(
                        run.started_at_s.unwrap_or(0) * 1000 + offset_ms.round() as i64,
                    );
                    out.push(EventPayload::LoadDispatchSubmitted(LoadDispatchSubmitted {
                        run_id: run.id.clone(),
                        dispatch_id: load_dispatch_id(&run.id, seq),
                        seq,
                        stage_index: stage as u32,
                        variant_id: pool_variant(0),
                        scheduled_at,
                    }));
                    let run = &mut self.load_runs[r];
                    run.announced = run.announced.max(stage + 1);
                    run.next_seq += 1;
                    run.pending.push((seq, stage));
                    for p in out {
                        self.push(p);
                    }
                }
            }
            Op::CompleteLoad {
                run,
                pick: n,
                outcome: o,
                latency_us,
                service_us,
                cost_micro,
                with_stage,
            } => {
                let Some(r) = self.pick_load_run(*run, |r| !r.pending.is_empty()) else {
                    return false;
                };
                let run = &mut self.load_runs[r];
                let (seq, stage) = run.pending.remove(*n as usize % run.pending.len());
                let outcome = outcome(*o);
                let payload = LoadDispatchCompleted {
                    run_id: run.id.clone(),
                    dispatch_id: load_dispatch_id(&run.id, seq),
                    outcome,
                    latency_ms: f64::from(*latency_us) / 1000.0,
                    service_time_ms: service_us.map(|s| f64::from(s.min(*latency_us)) / 1000.0),
                    cost_usd: cost_micro.map(|c| f64::from(c) / 1e6),
                    error: (outcome != Outcome::Succeeded).then(|| "provider said no".to_string()),
                    stage_index: with_stage.then_some(stage as u32),
                };
                self.push(EventPayload::LoadDispatchCompleted(payload));
            }
            Op::MissArrivals { run, count } => {
                let Some(r) = self.pick_load_run(*run, |r| r.started_at_s.is_some() && !r.terminal)
                else {
                    return false;
                };
                let run = &self.load_runs[r];
                let stage = run.announced.saturating_sub(1);
                self.push(EventPayload::ArrivalsMissed(ArrivalsMissed {
                    run_id: run.id.clone(),
                    stage_index: stage as u32,
                    count: u64::from(*count),
                    reason: Some("executor fell behind".into()),
                }));
            }
            Op::EndLoadTest { run, how } => {
                let Some(r) = self.pick_load_run(*run, |r| r.started_at_s.is_some() && !r.terminal)
                else {
                    return false;
                };
                let run_id = self.load_runs[r].id.clone();
                self.load_runs[r].terminal = true;
                self.push(match how % 4 {
                    0 => EventPayload::StopConditionBreached(StopConditionBreached {
                        run_id,
                        failure_rate: 0.42,
                        window_s: 30,
                        alarm_name: None,
                        cost_overrun: None,
                    }),
                    1 => EventPayload::StopConditionBreached(StopConditionBreached {
                        run_id,
                        failure_rate: 0.0,
                        window_s: 60,
                        alarm_name: Some("studio-render-errors".into()),
                        cost_overrun: None,
                    }),
                    2 => EventPayload::RunCancelled(RunCancelled {
                        run_id,
                        reason: "budget".into(),
                        actor: "ops@example.com".into(),
                    }),
                    _ => EventPayload::RunCompleted(RunCompleted { run_id }),
                });
            }
            Op::CreateBenchmark {
                scope,
                providers,
                inputs,
                repetitions,
            } => {
                let k = self.bench_runs.len() as u64 + 1;
                let id = benchmark_run_id(k);
                let (er, stage) = (*pick(&ERS, *scope), *pick(&STAGES, *scope / 2));
                let variants: Vec<String> = PROVIDERS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| providers & (1 << i) != 0)
                    .map(|(_, p)| variant_id(er, stage, p))
                    .collect();
                let inputs: Vec<BenchmarkInput> = (0..*inputs)
                    .map(|i| BenchmarkInput {
                        input_id: format!("in-{i}"),
                        uri: format!("s3://golden/{i}.json"),
                    })
                    .collect();
                self.push(EventPayload::BenchmarkRunCreated(BenchmarkRunCreated {
                    benchmark_run_id: id.clone(),
                    dataset: "iteration1-golden-v1".into(),
                    variant_ids: variants.clone(),
                    inputs: inputs.clone(),
                    repetitions: u32::from(*repetitions),
                }));
                let mut items = Vec::new();
                for (i, variant) in variants.into_iter().enumerate() {
                    let item_id = format!("item-{k}-{i}");
                    self.push(EventPayload::BenchmarkItemCreated(BenchmarkItemCreated {
                        benchmark_run_id: id.clone(),
                        item_id: item_id.clone(),
                        variant_id: variant.clone(),
                    }));
                    items.push(Item {
                        id: item_id,
                        variant,
                        completed: false,
                        pending: Vec::new(),
                        done: Vec::new(),
                    });
                }
                self.bench_runs.push(BenchRun {
                    id,
                    inputs: inputs.into_iter().map(|i| i.input_id).collect(),
                    items,
                    completed: false,
                    next_dispatch: 1,
                });
            }
            Op::SubmitBench { run, item, input } => {
                let now = self.now_s();
                let Some(r) = self.pick_bench_run(*run, |b| b.items.iter().any(|i| !i.completed))
                else {
                    return false;
                };
                let b = &mut self.bench_runs[r];
                let open: Vec<usize> = (0..b.items.len())
                    .filter(|i| !b.items[*i].completed)
                    .collect();
                let i = *pick(&open, *item);
                let seq = b.next_dispatch;
                b.next_dispatch += 1;
                let dispatch_id = format!("bd-{}-{seq}", &b.id[b.id.len() - 4..]);
                let input_id = pick(&b.inputs, *input).clone();
                b.items[i]
                    .pending
                    .push((dispatch_id.clone(), input_id.clone()));
                let payload = BenchmarkDispatchSubmitted {
                    benchmark_run_id: b.id.clone(),
                    item_id: b.items[i].id.clone(),
                    input_id,
                    dispatch_id,
                    seq,
                    variant_id: b.items[i].variant.clone(),
                    scheduled_at: timestamp_ms(now * 1000),
                };
                self.push(EventPayload::BenchmarkDispatchSubmitted(payload));
            }
            Op::CompleteBench {
                run,
                pick: n,
                outcome: o,
                latency_us,
                cost_micro,
            } => {
                let Some(r) =
                    self.pick_bench_run(*run, |b| b.items.iter().any(|i| !i.pending.is_empty()))
                else {
                    return false;
                };
                let b = &mut self.bench_runs[r];
                let busy: Vec<usize> = (0..b.items.len())
                    .filter(|i| !b.items[*i].pending.is_empty())
                    .collect();
                let item = &mut b.items[*pick(&busy, *n)];
                let (dispatch_id, input_id) = item.pending.remove(*n as usize % item.pending.len());
                item.done.push(dispatch_id.clone());
                let (run_id, item_id, variant) =
                    (b.id.clone(), item.id.clone(), item.variant.clone());
                let outcome = outcome(*o);
                if outcome == Outcome::Succeeded {
                    self.outputs.push((
                        run_id.clone(),
                        item_id.clone(),
                        variant,
                        dispatch_id.clone(),
                    ));
                }
                let payload = BenchmarkDispatchCompleted {
                    benchmark_run_id: run_id,
                    item_id,
                    input_id,
                    dispatch_id: dispatch_id.clone(),
                    outcome,
                    latency_ms: f64::from(*latency_us) / 1000.0,
                    service_time_ms: None,
                    cost_usd: cost_micro.map(|c| f64::from(c) / 1e6),
                    error: None,
                    output_uri: (outcome == Outcome::Succeeded)
                        .then(|| format!("s3://outputs/{dispatch_id}.png")),
                };
                self.push(EventPayload::BenchmarkDispatchCompleted(payload));
            }
            Op::RecordArtifact { run, item, seed } => {
                let Some(r) = self.pick_bench_run(*run, |b| {
                    b.items.iter().any(|i| !i.completed && !i.done.is_empty())
                }) else {
                    return false;
                };
                let b = &self.bench_runs[r];
                let ready: Vec<usize> = (0..b.items.len())
                    .filter(|i| !b.items[*i].completed && !b.items[*i].done.is_empty())
                    .collect();
                let item = &b.items[*pick(&ready, *item)];
                let sha256: String = (0..4u64)
                    .map(|i| format!("{:016x}", seed.rotate_left(i as u32 * 16) ^ i))
                    .collect();
                self.push(EventPayload::ArtifactRecorded(ArtifactRecorded {
                    benchmark_run_id: b.id.clone(),
                    item_id: item.id.clone(),
                    artifact_type: ArtifactType::BenchmarkVariantDispatches,
                    uri: format!("s3://artifacts/{}/{}.jsonl", b.id, item.id),
                    dispatch_ids: item.done.clone(),
                    sha256,
                }));
            }
            Op::CompleteItem { run, item } => {
                let Some(r) = self.pick_bench_run(*run, |b| {
                    b.items.iter().any(|i| !i.completed && i.pending.is_empty())
                }) else {
                    return false;
                };
                let b = &mut self.bench_runs[r];
                let idle: Vec<usize> = (0..b.items.len())
                    .filter(|i| !b.items[*i].completed && b.items[*i].pending.is_empty())
                    .collect();
                let i = *pick(&idle, *item);
                b.items[i].completed = true;
                let payload = BenchmarkItemCompleted {
                    benchmark_run_id: b.id.clone(),
                    item_id: b.items[i].id.clone(),
                };
                self.push(EventPayload::BenchmarkItemCompleted(payload));
            }
            Op::CompleteBenchmark { run } => {
                let Some(r) = self.pick_bench_run(*run, |b| {
                    !b.completed && b.items.iter().all(|i| i.completed)
                }) else {
                    return false;
                };
                self.bench_runs[r].completed = true;
                let benchmark_run_id = self.bench_runs[r].id.clone();
                self.push(EventPayload::BenchmarkRunCompleted(BenchmarkRunCompleted {
                    benchmark_run_id,
                }));
            }
            Op::Judge {
                pick: n,
                score_milli,
                fallback,
            } => {
                if self.outputs.is_empty() {
                    return false;
                }
                let (run, item, variant, dispatch) = pick(&self.outputs, *n).clone();
                self.evaluations += 1;
                let score = f64::from(*score_milli) / 1000.0;
                let criteria = BTreeMap::from([
                    ("fidelity".to_string(), score),
                    ("style".to_string(), 1.0 - score),
                ]);
                self.judged.insert(dispatch.clone(), true);
                self.push(EventPayload::EvaluationCompleted(EvaluationCompleted {
                    benchmark_run_id: run,
                    evaluation_id: format!("ev-{}", self.evaluations),
                    item_id: item,
                    variant_id: variant,
                    dispatch_id: dispatch,
                    evaluator: if *fallback {
                        Evaluator {
                            provider: "heuristic".into(),
                            model: "rules-v1".into(),
                        }
                    } else {
                        Evaluator {
                            provider: "judge".into(),
                            model: "vision-large".into(),
                        }
                    },
                    score,
                    criteria,
                    rationale: "compared with the golden output".into(),
                    fallback: *fallback,
                    fallback_reason: fallback.then(|| "judge timed out".to_string()),
                }));
            }
            Op::JudgeFailed {
                pick: n,
                name_variant,
            } => {
                if self.outputs.is_empty() {
                    return false;
                }
                let (run, item, variant, dispatch) = pick(&self.outputs, *n).clone();
                // An unjudged verdict for an output judged before names its variant (the quality
                // projection takes the old score out of that variant's mean).
                let was_judged = self.judged.get(&dispatch).copied().unwrap_or(false);
                let name_variant = *name_variant || was_judged;
                self.evaluations += 1;
                self.judged.insert(dispatch.clone(), false);
                self.push(EventPayload::EvaluationFailed(EvaluationFailed {
                    benchmark_run_id: run,
                    evaluation_id: format!("ev-{}", self.evaluations),
                    dispatch_id: dispatch,
                    reason: "judge returned no score".into(),
                    item_id: name_variant.then_some(item),
                    variant_id: name_variant.then_some(variant),
                }));
            }
            Op::SetPrice { er, price_milli } => {
                let effect_revision_id = pick(&ERS, *er).to_string();
                self.prices.insert(effect_revision_id.clone());
                self.push(EventPayload::PriceSet(PriceSet {
                    effect_revision_id,
                    price_usd: f64::from(*price_milli) / 1000.0,
                }));
            }
            Op::ApplyBinding {
                scope,
                provider,
                evidence,
            } => {
                let (er, stage) = (
                    pick(&ERS, *scope).to_string(),
                    pick(&STAGES, *scope / 2).to_string(),
                );
                let variant = variant_id(&er, &stage, *pick(&PROVIDERS, *provider));
                let evidence = match (evidence, self.bench_runs.last()) {
                    (true, Some(b)) => Some(Evidence {
                        benchmark_run_id: b.id.clone(),
                    }),
                    _ => None,
                };
                let s = self.scopes.entry((er.clone(), stage.clone())).or_default();
                s.version += 1;
                s.previous = s.current.replace(variant.clone());
                let payload = BindingApplied {
                    effect_revision_id: er,
                    stage,
                    variant_id: variant,
                    previous_variant_id: s.previous.clone(),
                    binding_version: s.version,
                    reason: "cheapest eligible variant".into(),
                    actor: "ops@example.com".into(),
                    evidence,
                };
                self.push(EventPayload::BindingApplied(payload));
            }
            Op::RollBack { scope } => {
                let key = (
                    pick(&ERS, *scope).to_string(),
                    pick(&STAGES, *scope / 2).to_string(),
                );
                let Some(s) = self.scopes.get_mut(&key) else {
                    return false;
                };
                let (Some(from), Some(to)) = (s.current.clone(), s.previous.clone()) else {
                    return false;
                };
                s.version += 1;
                s.current = Some(to.clone());
                s.previous = Some(from.clone());
                let payload = BindingRolledBack {
                    effect_revision_id: key.0,
                    stage: key.1,
                    from_variant_id: from,
                    to_variant_id: to,
                    binding_version: s.version,
                    reason: "quality regression".into(),
                    actor: "ops@example.com".into(),
                };
                self.push(EventPayload::BindingRolledBack(payload));
            }
            Op::Noise { alarm, state } => {
                self.push(if *alarm {
                    let states = [
                        AlarmState::Ok,
                        AlarmState::Alarm,
                        AlarmState::InsufficientData,
                    ];
                    EventPayload::AlarmStateChanged(AlarmStateChanged {
                        alarm_name: "studio-render-errors".into(),
                        old_state: *pick(&states, *state),
                        new_state: *pick(&states, *state / 3),
                        reason: "threshold crossed".into(),
                    })
                } else {
                    EventPayload::ActionLogAcknowledged(ActionLogAcknowledged {
                        action_log_id: format!("al-{state}"),
                        actor: "ops@example.com".into(),
                        note: None,
                    })
                });
            }
        }
        true
    }

    fn pick_load_run(&self, n: u8, ok: impl Fn(&LoadRun) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.load_runs.len())
            .filter(|i| ok(&self.load_runs[*i]))
            .collect();
        (!candidates.is_empty()).then(|| *pick(&candidates, n))
    }

    fn pick_bench_run(&self, n: u8, ok: impl Fn(&BenchRun) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.bench_runs.len())
            .filter(|i| ok(&self.bench_runs[*i]))
            .collect();
        (!candidates.is_empty()).then(|| *pick(&candidates, n))
    }
}

/// How the runner meets the log: each runner instance gets the next batch size.
#[derive(Debug, Clone)]
enum Action {
    /// One `Runner::step`.
    Step,
    /// The runner goes away between batches: dropped as a crashed process would be, or stopped
    /// cleanly; a new one takes over from the stored checkpoints.
    Restart { clean: bool },
    /// More events reach the log.
    Append(u8),
}

#[derive(Debug, Clone)]
struct Schedule {
    initial_percent: u8,
    batch_sizes: Vec<usize>,
    actions: Vec<Action>,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    let batch = prop_oneof![8 => 1usize..=40, 1 => Just(projector::runner::BATCH_EVENTS)];
    let action = prop_oneof![
        6 => Just(Action::Step),
        2 => any::<bool>().prop_map(|clean| Action::Restart { clean }),
        2 => (1u8..=60).prop_map(Action::Append),
    ];
    (
        0u8..=100,
        proptest::collection::vec(batch, 1..8),
        proptest::collection::vec(action, 5..60),
    )
        .prop_map(|(initial_percent, batch_sizes, actions)| Schedule {
            initial_percent,
            batch_sizes,
            actions,
        })
}

#[derive(Debug, Clone)]
struct Scenario {
    ops: Vec<Op>,
    schedule: Schedule,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (proptest::collection::vec(op(), 40..200), schedule())
        .prop_map(|(ops, schedule)| Scenario { ops, schedule })
}

/// The ids a scenario created, to ask every query about each of them.
struct Ids {
    load_runs: Vec<String>,
    variants: Vec<String>,
    bench_runs: Vec<String>,
}

fn build(ops: &[Op]) -> (Vec<ValidatedEvent>, Ids) {
    let mut model = Model::default();
    for op in ops {
        model.apply(op);
    }
    let events = model
        .events
        .iter()
        .enumerate()
        .map(|(i, p)| event(p, at(i as i64)))
        .collect();
    let ids = Ids {
        load_runs: model.load_runs.iter().map(|r| r.id.clone()).collect(),
        variants: model.registered.iter().cloned().collect(),
        bench_runs: model.bench_runs.iter().map(|b| b.id.clone()).collect(),
    };
    (events, ids)
}

/// Every query answer, labelled, as the bytes a client would get. Each snapshot is let go
/// before the next is opened, as a request handler would.
async fn answers(db: &ReadDb, ids: &Ids) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    {
        let mut s = Snapshot::open(db, &["load_tests"]).await.unwrap();
        out.push((
            "load_test_runs".into(),
            query::load_test_runs(&mut s, None).await.unwrap(),
        ));
        out.push((
            "load_test_runs?status=running".into(),
            query::load_test_runs(&mut s, Some("running"))
                .await
                .unwrap(),
        ));
        for id in &ids.load_runs {
            let run = query::load_test_run(&mut s, id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("load-test run {id} is missing"));
            out.push((format!("load_test_run {id}"), run));
        }
    }
    {
        let mut s = Snapshot::open(db, &["variants"]).await.unwrap();
        out.push((
            "variants".into(),
            query::variants(&mut s, None).await.unwrap(),
        ));
        for id in &ids.variants {
            let variant = query::variant(&mut s, id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("variant {id} is missing"));
            out.push((format!("variant {id}"), variant));
        }
    }
    {
        let mut s = Snapshot::open(db, &["benchmarks"]).await.unwrap();
        out.push((
            "benchmark_runs".into(),
            query::benchmark_runs(&mut s).await.unwrap(),
        ));
        for id in &ids.bench_runs {
            let run = query::benchmark_run(&mut s, id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("benchmark run {id} is missing"));
            out.push((format!("benchmark_run {id}"), run));
        }
    }
    {
        let mut s = Snapshot::open(db, &["quality"]).await.unwrap();
        for id in &ids.bench_runs {
            out.push((
                format!("quality_evaluations {id}"),
                query::quality_evaluations(&mut s, id).await.unwrap(),
            ));
        }
    }
    {
        let mut s = Snapshot::open(db, query::MONEY_HUD_PROJECTIONS)
            .await
            .unwrap();
        for id in &ids.bench_runs {
            let hud = query::money_hud(&mut s, id, Thresholds::default())
                .await
                .unwrap()
                .expect("money hud of a known run");
            out.push((format!("money_hud {id}"), hud));
        }
    }
    {
        let mut s = Snapshot::open(db, &["pricing"]).await.unwrap();
        out.push(("prices".into(), query::prices(&mut s).await.unwrap()));
    }
    {
        let mut s = Snapshot::open(db, &["routing"]).await.unwrap();
        out.push((
            "bindings".into(),
            query::bindings(&mut s, None, None).await.unwrap(),
        ));
    }
    out
}

fn as_bytes(answers: &[(String, Value)]) -> Vec<(String, String)> {
    answers
        .iter()
        .map(|(label, v)| (label.clone(), serde_json::to_string(v).unwrap()))
        .collect()
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

async fn restart(t: &TestDb, runner: Runner, clean: bool, batch: usize) -> Runner {
    let mut runner = runner;
    if clean {
        runner.stop().await;
    }
    drop(runner);
    // PostgreSQL frees a session's locks shortly after the session ends, cleanly or not; a
    // successor that tried before that would wait out the takeover interval.
    common::wait_until_projection_locks_are_free(&t.db).await;
    t.runner().with_batch_events(batch)
}

async fn step(t: &TestDb, runner: &mut Runner) -> Result<bool, String> {
    match runner.step().await {
        Stepped::Applied => Ok(true),
        Stepped::Idle => Ok(false),
        other => Err(format!(
            "a valid log made the runner answer {other:?}; errors: {:?}",
            t.runner_errors()
        )),
    }
}

async fn live_catch_up_equals_rebuild(store: Store, scenario: &Scenario) -> Result<(), String> {
    let (events, ids) = build(&scenario.ops);
    let t = TestDb::open(store).await;
    let total = events.len();
    let mut pending = events.into_iter();
    let initial = total * usize::from(scenario.schedule.initial_percent) / 100;
    t.append(pending.by_ref().take(initial).collect()).await;

    let sizes = &scenario.schedule.batch_sizes;
    let mut instances = 0;
    let mut runner = t.runner().with_batch_events(sizes[0]);
    for action in &scenario.schedule.actions {
        match action {
            Action::Step => {
                step(&t, &mut runner).await?;
            }
            Action::Restart { clean } => {
                instances += 1;
                runner = restart(&t, runner, *clean, sizes[instances % sizes.len()]).await;
            }
            Action::Append(n) => {
                t.append(pending.by_ref().take(usize::from(*n)).collect())
                    .await;
            }
        }
    }
    t.append(pending.collect()).await;
    let mut steps = 0;
    while step(&t, &mut runner).await? {
        steps += 1;
        ensure!(steps < 10_000, "the runner never became idle");
    }
    runner.stop().await;
    drop(runner);

    let head = t.head().await;
    ensure!(
        head == total as i64,
        "the log holds {head} events, {total} were appended"
    );
    let checkpoints = t.checkpoints().await;
    ensure!(
        checkpoints.len() == projector::all_projections().len(),
        "not every projection has a checkpoint: {checkpoints:?}"
    );
    for (name, position) in checkpoints {
        ensure!(
            position == head,
            "projection {name} stopped at {position}, the head is {head}"
        );
    }
    let dead = projector::checkpoint::dead_letters(&t.db, None, true)
        .await
        .unwrap();
    ensure!(dead.is_empty(), "a valid log was dead-lettered: {dead:#?}");

    let live = answers(&t.db, &ids).await;
    for projection in projector::all_projections() {
        let report =
            projector::rebuild::rebuild(&t.db, t.log.as_ref(), projection.as_ref(), &|_| {})
                .await
                .unwrap();
        ensure!(
            report.position == head,
            "rebuild of {} ended at {}, not {head}",
            projection.name(),
            report.position
        );
        ensure!(
            report.dead_letters == 0,
            "rebuild of {} dead-lettered {} valid events",
            projection.name(),
            report.dead_letters
        );
    }
    let rebuilt = answers(&t.db, &ids).await;
    t.close().await;

    for (label, answer) in live.iter().chain(&rebuilt) {
        ensure!(
            answer["as_of_position"] == head,
            "{label} reflects {}, not the head {head}",
            answer["as_of_position"]
        );
    }
    let (live, rebuilt) = (as_bytes(&live), as_bytes(&rebuilt));
    ensure!(
        live.len() == rebuilt.len(),
        "{} answers live, {} after the rebuild",
        live.len(),
        rebuilt.len()
    );
    for ((label, a), (_, b)) in live.iter().zip(&rebuilt) {
        ensure!(
            a == b,
            "{label} differs after a rebuild from position 0:\nlive:    {a}\nrebuilt: {b}"
        );
    }
    Ok(())
}

fn check_on(store: Store) {
    let config = Config {
        cases: CASES_PER_STORE,
        max_shrink_iters: 24,
        max_shrink_time: 60_000,
        failure_persistence: None,
        ..Config::default()
    };
    let mut cases = TestRunner::new(config);
    let outcome = cases.run(&scenario(), |scenario| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(live_catch_up_equals_rebuild(store, &scenario))
            .map_err(TestCaseError::fail)
    });
    if let Err(err) = outcome {
        panic!("{err}");
    }
}

mod sqlite {
    #[test]
    fn live_catch_up_with_crashes_and_random_batches_equals_a_rebuild_from_position_0() {
        super::check_on(super::Store::Sqlite);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cost_total_reloaded_between_batches_equals_the_one_summed_by_a_rebuild() {
        super::a_cost_total_reloaded_between_batches_equals_the_one_summed_by_a_rebuild(
            super::Store::Sqlite,
        )
        .await;
    }
}

mod postgres {
    #[test]
    fn live_catch_up_with_crashes_and_random_batches_equals_a_rebuild_from_position_0() {
        super::check_on(super::Store::Postgres);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cost_total_reloaded_between_batches_equals_the_one_summed_by_a_rebuild() {
        super::a_cost_total_reloaded_between_batches_equals_the_one_summed_by_a_rebuild(
            super::Store::Postgres,
        )
        .await;
    }
}

#[test]
fn generated_logs_cover_the_catalogue() {
    // The property above is only as good as its logs: over a few hundred generated scenarios,
    // every event type the projections read must appear.
    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    let mut lengths = Vec::new();
    for _ in 0..200 {
        let scenario = scenario().new_tree(&mut runner).unwrap().current();
        let mut model = Model::default();
        for op in &scenario.ops {
            model.apply(op);
        }
        lengths.push(model.events.len());
        seen.extend(model.events.iter().map(|e| e.event_type()));
    }
    let missing: Vec<&str> = eventlog::catalogue::EVENT_TYPES
        .iter()
        .copied()
        .filter(|t| !seen.contains(t))
        .collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
    lengths.sort();
    let (min, median, max) = (
        lengths[0],
        lengths[lengths.len() / 2],
        lengths[lengths.len() - 1],
    );
    assert!(
        min >= 50 && median >= 100 && max <= 400,
        "log lengths: min {min}, median {median}, max {max}"
    );
}

fn bench_completed(bm: &str, dispatch: &str, cost_usd: f64) -> EventPayload {
    EventPayload::BenchmarkDispatchCompleted(BenchmarkDispatchCompleted {
        benchmark_run_id: bm.into(),
        item_id: "item-f".into(),
        input_id: "in-0".into(),
        dispatch_id: dispatch.into(),
        outcome: Outcome::Succeeded,
        latency_ms: 100.0,
        service_time_ms: None,
        cost_usd: Some(cost_usd),
        error: None,
        output_uri: None,
    })
}

/// The property above, pinned to one case it found: 0.068101 + 0.041149 is
/// 0.10924999999999999, which a JSON parser that is not exact reads back as 0.10925; a runner
/// that reloads the item between batches then adds 0.00001 to another number than a rebuild,
/// which keeps the sum in memory, and the two answers differ in the last digit.
async fn a_cost_total_reloaded_between_batches_equals_the_one_summed_by_a_rebuild(store: Store) {
    let t = TestDb::open(store).await;
    let bm = benchmark_run_id(1);
    let variant = pool_variant(0);
    let mut given = vec![
        EventPayload::BenchmarkRunCreated(BenchmarkRunCreated {
            benchmark_run_id: bm.clone(),
            dataset: "iteration1-golden-v1".into(),
            variant_ids: vec![variant.clone()],
            inputs: vec![BenchmarkInput {
                input_id: "in-0".into(),
                uri: "s3://golden/0.json".into(),
            }],
            repetitions: 3,
        }),
        EventPayload::BenchmarkItemCreated(BenchmarkItemCreated {
            benchmark_run_id: bm.clone(),
            item_id: "item-f".into(),
            variant_id: variant.clone(),
        }),
    ];
    for (seq, dispatch) in [(1, "d1"), (2, "d2"), (3, "d3")] {
        given.push(EventPayload::BenchmarkDispatchSubmitted(
            BenchmarkDispatchSubmitted {
                benchmark_run_id: bm.clone(),
                item_id: "item-f".into(),
                input_id: "in-0".into(),
                dispatch_id: dispatch.into(),
                seq,
                variant_id: variant.clone(),
                scheduled_at: timestamp_ms(0),
            },
        ));
    }
    given.push(bench_completed(&bm, "d1", 0.068101));
    given.push(bench_completed(&bm, "d2", 0.041149));
    t.append_payloads(&given).await;
    let mut runner = t.runner();
    t.drive(&mut runner).await;
    runner.stop().await;
    drop(runner);

    // When a new runner applies the last completion from the stored item.
    t.append_payloads(&[bench_completed(&bm, "d3", 0.00001)])
        .await;
    let mut runner = t.runner();
    t.drive(&mut runner).await;
    runner.stop().await;
    let answer = |db: ReadDb, id: String| async move {
        let mut s = Snapshot::open(&db, &["benchmarks"]).await.unwrap();
        serde_json::to_string(&query::benchmark_run(&mut s, &id).await.unwrap().unwrap()).unwrap()
    };
    let live = answer(t.db.clone(), bm.clone()).await;
    let benchmarks = projector::projections::select(&["benchmarks".to_string()])
        .unwrap()
        .remove(0);
    projector::rebuild::rebuild(&t.db, t.log.as_ref(), benchmarks.as_ref(), &|_| {})
        .await
        .unwrap();
    let rebuilt = answer(t.db.clone(), bm.clone()).await;
    t.close().await;

    // Then the live answer is the rebuilt one, byte for byte.
    assert_eq!(
        live, rebuilt,
        "the live item total drifted from the rebuilt one"
    );
}
