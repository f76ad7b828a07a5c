//! [`BenchmarkMatrixService`]: creates benchmark matrix runs, runs them in the background, and
//! finishes the runs a previous process left half-done.

use super::runner::{self, ItemWork, RunOutcome};
use super::stream::{self, read_run, RunState};
use crate::providers::Provider;
use crate::variants::service::read_variant;
use chrono::Utc;
use eventlog::catalogue::{
    BenchmarkInput, BenchmarkItemCreated, BenchmarkRunCreated, EventPayload,
};
use eventlog::ids::VariantId;
use eventlog::{EventLog, StoreError, ValidatedEvent, ValidationError, Violation};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Semaphore};

/// Recorded as the producer of the events this service appends.
pub const PRODUCER: &str = "services.benchmarks";
/// Dispatches in flight per provider, across every run of the process, unless configured.
pub const DEFAULT_MAX_IN_FLIGHT_PER_PROVIDER: usize = 8;
/// Events per append at most.
pub const DEFAULT_MAX_BATCH: usize = 500;
/// Caps on one run, so a typo cannot order a million dispatches.
pub const MAX_VARIANTS: usize = 50;
pub const MAX_INPUTS: usize = 1_000;
pub const MAX_REPETITIONS: u32 = 100;
pub const MAX_DISPATCHES_PER_RUN: u64 = 20_000;
/// Finished runs whose outcome [`BenchmarkMatrixService::wait`] still answers.
const KEEP_FINISHED: usize = 1_024;
/// Events read per `read_all` call while looking for unfinished runs.
const SCAN_PAGE: usize = 5_000;

/// How runs are executed; [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkOptions {
    /// Dispatches in flight per provider at once, shared by every run of this process.
    pub max_in_flight_per_provider: usize,
    /// Overrides of that bound by provider name.
    pub max_in_flight_by_provider: BTreeMap<String, usize>,
    /// Events per append at most.
    pub max_batch: usize,
    /// Recorded as the producer of every event.
    pub producer: String,
}

impl Default for BenchmarkOptions {
    fn default() -> Self {
        Self {
            max_in_flight_per_provider: DEFAULT_MAX_IN_FLIGHT_PER_PROVIDER,
            max_in_flight_by_provider: BTreeMap::new(),
            max_batch: DEFAULT_MAX_BATCH,
            producer: PRODUCER.to_string(),
        }
    }
}

/// `POST /admin/studio/benchmark-matrix-runs`: what an operator asks for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBenchmarkRun {
    pub dataset: String,
    pub variant_ids: Vec<String>,
    pub inputs: Vec<BenchmarkInput>,
    pub repetitions: u32,
}

/// One item of a created run.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedItem {
    pub item_id: String,
    pub variant_id: String,
    pub provider: String,
    pub planned_dispatches: u64,
}

/// A run as `create` appended it; it is running in the background.
#[derive(Debug, Clone)]
pub struct CreatedBenchmarkRun {
    pub run: BenchmarkRunCreated,
    pub items: Vec<CreatedItem>,
    /// Position of the last event appended (the last `benchmark.item_created`).
    pub position: i64,
    pub handle: RunHandle,
}

/// A run `resume_unfinished` took up again.
#[derive(Debug, Clone)]
pub struct ResumedRun {
    pub benchmark_run_id: String,
    /// Planned dispatches without a completion in the log: re-sent now, unless their item's
    /// provider is not configured (then the item is completed without them, and the artifact
    /// lists them under `not_dispatched` with the reason).
    pub missing_dispatches: u64,
    pub handle: RunHandle,
}

/// Awaits the end of a run executing in this process.
#[derive(Debug, Clone)]
pub struct RunHandle {
    benchmark_run_id: String,
    rx: watch::Receiver<Option<RunOutcome>>,
}

impl RunHandle {
    pub fn benchmark_run_id(&self) -> &str {
        &self.benchmark_run_id
    }

    /// Waits until the run has ended, and says how.
    pub async fn wait(mut self) -> RunOutcome {
        match self.rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().expect("waited for Some"),
            Err(_) => RunOutcome::Failed {
                error: "the run's task stopped without an outcome (the runtime is shutting down)"
                    .into(),
            },
        }
    }
}

/// Why a benchmark command was refused.
#[derive(Debug, thiserror::Error)]
pub enum BenchmarkError {
    /// The input fails the catalogue's checks or this service's caps (each violation names its
    /// field).
    #[error("{0}")]
    Invalid(ValidationError),
    #[error("variant {variant_id} is not registered")]
    VariantNotRegistered { variant_id: String },
    #[error("variant {variant_id} is retired ({reason})")]
    VariantRetired { variant_id: String, reason: String },
    /// A variant's provider part names no `[providers.<name>]` entry.
    #[error(
        "variant {variant_id} names provider {provider}, which has no [providers.{provider}] entry"
    )]
    ProviderMissing {
        variant_id: String,
        provider: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates benchmark matrix runs and executes them in the background.
///
/// `create` decides from the log (the variants' streams) and appends the run and its items in
/// one atomic append to a new stream (`expected_version` 0). Execution is
/// [`runner::execute`]: inputs × repetitions dispatches per item through the provider its
/// variant names, a bounded number in flight per provider, events appended in batches, then an
/// artifact per item and the completions.
///
/// The log is the only memory a run has. A process that stops mid-run leaves a run without
/// `benchmark.run_completed`; [`resume_unfinished`](Self::resume_unfinished), called at
/// start-up, folds each such run's stream and finishes it: dispatches without a completion are
/// sent again under the same dispatch ids (their events' idempotency keys make a dispatch that
/// was already recorded a no-op), artifacts are written from the log's completions, and items
/// and the run are completed. An item whose provider is no longer configured cannot be
/// finished: it is completed with what ran, and its artifact lists the dispatches that never
/// ran with the reason.
///
/// Resuming is meant for one process at start-up: two processes resuming the same run at once
/// would send its missing dispatches twice (the log still records each once).
#[derive(Clone)]
pub struct BenchmarkMatrixService {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub log: Arc<dyn EventLog>,
    pub providers: BTreeMap<String, Arc<dyn Provider>>,
    /// One semaphore per provider, shared by every run of the process: the bound is on the
    /// provider's load, not on one run's.
    pub permits: BTreeMap<String, Arc<Semaphore>>,
    /// Absolute, so the `file://` URIs recorded in events do not depend on the working
    /// directory of whoever reads them.
    pub artifact_dir: PathBuf,
    pub options: BenchmarkOptions,
    /// The outcome channel of each run started by this process, by run id.
    runs: Mutex<HashMap<String, watch::Receiver<Option<RunOutcome>>>>,
}

impl BenchmarkMatrixService {
    /// `artifact_dir` is where artifacts are written (`STUDIO_ARTIFACT_DIR`, default
    /// `./artifacts`); a relative path is taken from the current directory now. It is created
    /// when the first artifact is written.
    pub fn new(
        log: Arc<dyn EventLog>,
        providers: BTreeMap<String, Arc<dyn Provider>>,
        artifact_dir: impl Into<PathBuf>,
        options: BenchmarkOptions,
    ) -> std::io::Result<Self> {
        let artifact_dir = std::path::absolute(artifact_dir.into())?;
        let permits = providers
            .keys()
            .map(|name| {
                let bound = options
                    .max_in_flight_by_provider
                    .get(name)
                    .copied()
                    .unwrap_or(options.max_in_flight_per_provider)
                    .max(1);
                (name.clone(), Arc::new(Semaphore::new(bound)))
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                providers,
                permits,
                artifact_dir,
                options,
                runs: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn artifact_dir(&self) -> &std::path::Path {
        &self.inner.artifact_dir
    }

    /// Run ids executing in this process right now.
    pub fn running_here(&self) -> Vec<String> {
        let runs = self.inner.runs.lock().expect("runs map poisoned");
        runs.iter()
            .filter(|(_, rx)| rx.borrow().is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Waits for a run this process started (created or resumed) to end; `None` when this
    /// process never ran it (or ran it so long ago that its outcome was forgotten).
    pub async fn wait(&self, benchmark_run_id: &str) -> Option<RunOutcome> {
        let rx = {
            let runs = self.inner.runs.lock().expect("runs map poisoned");
            runs.get(benchmark_run_id).cloned()?
        };
        let handle = RunHandle {
            benchmark_run_id: benchmark_run_id.to_string(),
            rx,
        };
        Some(handle.wait().await)
    }

    /// Creates a run: checks it (the catalogue's checks, this service's caps, no repeated
    /// variant or input, every variant registered and active with its provider configured),
    /// appends `benchmark.run_created` and one `benchmark.item_created` per variant atomically,
    /// and starts executing it in the background.
    #[tracing::instrument(skip_all, fields(dataset = %request.dataset, variants = request.variant_ids.len()), err(level = "debug"))]
    pub async fn create(
        &self,
        request: CreateBenchmarkRun,
    ) -> Result<CreatedBenchmarkRun, BenchmarkError> {
        let run = BenchmarkRunCreated {
            benchmark_run_id: eventlog::ids::new_benchmark_run_id(),
            dataset: request.dataset,
            variant_ids: request.variant_ids,
            inputs: request.inputs,
            repetitions: request.repetitions,
        };
        EventPayload::BenchmarkRunCreated(run.clone())
            .check()
            .map_err(BenchmarkError::Invalid)?;
        check_shape(&run)?;

        let mut providers = Vec::with_capacity(run.variant_ids.len());
        for variant_id in &run.variant_ids {
            let state = read_variant(self.inner.log.as_ref(), variant_id).await?;
            let Some(registered) = state.registered else {
                return Err(BenchmarkError::VariantNotRegistered {
                    variant_id: variant_id.clone(),
                });
            };
            if let Some(reason) = state.retired {
                return Err(BenchmarkError::VariantRetired {
                    variant_id: variant_id.clone(),
                    reason,
                });
            }
            if !self.inner.providers.contains_key(&registered.provider) {
                return Err(BenchmarkError::ProviderMissing {
                    variant_id: variant_id.clone(),
                    provider: registered.provider,
                });
            }
            providers.push(registered.provider);
        }

        let planned = run.inputs.len() as u64 * u64::from(run.repetitions);
        let items: Vec<BenchmarkItemCreated> = run
            .variant_ids
            .iter()
            .enumerate()
            .map(|(i, variant_id)| BenchmarkItemCreated {
                benchmark_run_id: run.benchmark_run_id.clone(),
                item_id: stream::item_id(&run.benchmark_run_id, i + 1),
                variant_id: variant_id.clone(),
            })
            .collect();
        let now = Utc::now();
        let events: Vec<ValidatedEvent> =
            std::iter::once(EventPayload::BenchmarkRunCreated(run.clone()))
                .chain(
                    items
                        .iter()
                        .cloned()
                        .map(EventPayload::BenchmarkItemCreated),
                )
                .enumerate()
                .map(|(i, payload)| {
                    ValidatedEvent::from_payload(&payload, &self.inner.options.producer, now)
                        .with_expected_version(i as i64)
                })
                .collect();
        let appended = self.inner.log.append(events).await?;
        let position = appended.last().map_or(0, |a| a.event().position);
        tracing::info!(benchmark_run_id = %run.benchmark_run_id, position, planned_per_item = planned, "benchmark run created");

        let created_items = items
            .iter()
            .zip(&providers)
            .map(|(item, provider)| CreatedItem {
                item_id: item.item_id.clone(),
                variant_id: item.variant_id.clone(),
                provider: provider.clone(),
                planned_dispatches: planned,
            })
            .collect();
        let state = RunState {
            version: appended.len() as i64,
            created: Some(run.clone()),
            items,
            ..RunState::default()
        };
        let handle = self.spawn(run.clone(), state);
        Ok(CreatedBenchmarkRun {
            run,
            items: created_items,
            position,
            handle,
        })
    }

    /// Finds the runs the log holds without `benchmark.run_completed` (and not executing in
    /// this process) and finishes each in the background; see the type's docs. Call it once at
    /// start-up, before serving requests.
    #[tracing::instrument(skip_all, err)]
    pub async fn resume_unfinished(&self) -> Result<Vec<ResumedRun>, BenchmarkError> {
        let log = self.inner.log.as_ref();
        let mut created = BTreeSet::new();
        let mut completed = BTreeSet::new();
        let mut after = 0;
        loop {
            let page = log.read_all(after, SCAN_PAGE).await?;
            for event in &page {
                after = event.position;
                let set = match event.event_type.as_str() {
                    "benchmark.run_created" => &mut created,
                    "benchmark.run_completed" => &mut completed,
                    _ => continue,
                };
                if let Some(id) = event.payload["benchmark_run_id"].as_str() {
                    set.insert(id.to_string());
                }
            }
            if page.len() < SCAN_PAGE {
                break;
            }
        }
        let running = self.running_here();
        let mut resumed = Vec::new();
        for run_id in created.difference(&completed) {
            if running.contains(run_id) {
                continue;
            }
            let state = read_run(log, run_id).await?;
            let Some(run) = state.created.clone() else {
                continue;
            };
            if state.completed {
                continue;
            }
            let planned: u64 = (1..=state.items.len())
                .map(|n| {
                    stream::planned_dispatches(&run, n)
                        .iter()
                        .filter(|p| !state.completions.contains_key(&p.dispatch_id))
                        .count() as u64
                })
                .sum();
            tracing::warn!(benchmark_run_id = %run_id, missing_dispatches = planned, "resuming a benchmark run a previous process left unfinished");
            let handle = self.spawn(run, state);
            resumed.push(ResumedRun {
                benchmark_run_id: run_id.clone(),
                missing_dispatches: planned,
                handle,
            });
        }
        Ok(resumed)
    }

    /// Starts executing a run in a tokio task, and remembers its outcome channel.
    fn spawn(&self, run: BenchmarkRunCreated, state: RunState) -> RunHandle {
        let items = state
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let provider_name = VariantId::parse(&item.variant_id)
                    .map(|id| id.provider)
                    .unwrap_or_default();
                ItemWork {
                    item: item.clone(),
                    item_n: i + 1,
                    provider: self.inner.providers.get(&provider_name).cloned(),
                    provider_name,
                }
            })
            .collect();
        let (tx, rx) = watch::channel(None);
        {
            let mut runs = self.inner.runs.lock().expect("runs map poisoned");
            if runs.len() >= KEEP_FINISHED {
                runs.retain(|_, rx| rx.borrow().is_none());
            }
            runs.insert(run.benchmark_run_id.clone(), rx.clone());
        }
        let inner = self.inner.clone();
        let benchmark_run_id = run.benchmark_run_id.clone();
        tokio::spawn(async move {
            let outcome = runner::execute(inner, run, state, items).await;
            let _ = tx.send(Some(outcome));
        });
        RunHandle {
            benchmark_run_id,
            rx,
        }
    }
}

/// The caps, and no repeats: a repeated variant would get two items measuring the same thing,
/// and a repeated input id would make two inputs indistinguishable in the artifact.
fn check_shape(run: &BenchmarkRunCreated) -> Result<(), BenchmarkError> {
    let mut violations = Vec::new();
    if run.variant_ids.len() > MAX_VARIANTS {
        violations.push(Violation::new(
            "variant_ids",
            format!(
                "lists {} variants; at most {MAX_VARIANTS} per run",
                run.variant_ids.len()
            ),
        ));
    }
    if run.inputs.len() > MAX_INPUTS {
        violations.push(Violation::new(
            "inputs",
            format!(
                "lists {} inputs; at most {MAX_INPUTS} per run",
                run.inputs.len()
            ),
        ));
    }
    if run.repetitions > MAX_REPETITIONS {
        violations.push(Violation::new(
            "repetitions",
            format!("is {}; at most {MAX_REPETITIONS}", run.repetitions),
        ));
    }
    let total = run.variant_ids.len() as u64 * run.inputs.len() as u64 * u64::from(run.repetitions);
    if total > MAX_DISPATCHES_PER_RUN {
        violations.push(Violation::new(
            "repetitions",
            format!(
                "variants × inputs × repetitions is {total} dispatches; at most \
                 {MAX_DISPATCHES_PER_RUN} per run — split the run or repeat less"
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, v) in run.variant_ids.iter().enumerate() {
        if !seen.insert(v.as_str()) {
            violations.push(Violation::new(
                format!("variant_ids[{i}]"),
                format!("repeats {v}; list each variant once"),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, input) in run.inputs.iter().enumerate() {
        if !seen.insert(input.input_id.as_str()) {
            violations.push(Violation::new(
                format!("inputs[{i}].input_id"),
                format!("repeats {:?}; each input needs its own id", input.input_id),
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(BenchmarkError::Invalid(ValidationError { violations }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{SimulatedProvider, SimulatedSettings};
    use crate::variants::VariantRegistryService;
    use eventlog::catalogue::Outcome;

    const SIM: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:sim:exp:a";
    const FLAKY: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:flaky:exp:b";
    const NO_PROVIDER: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:gone:exp:c";

    fn sim(name: &str, failure_rate: f64) -> Arc<dyn Provider> {
        Arc::new(
            SimulatedProvider::new(
                name,
                SimulatedSettings {
                    latency_ms: 5.0,
                    jitter_ms: 0.0,
                    failure_rate,
                    cost_usd: 0.01,
                    seed: 3,
                },
            )
            .with_time_scale(0.0),
        )
    }

    async fn setup() -> (BenchmarkMatrixService, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("studio.db").display());
        let log = eventlog::open(&url, true)
            .await
            .expect("open the event log");
        let registry = VariantRegistryService::new(log.clone());
        for v in [SIM, FLAKY, NO_PROVIDER] {
            registry.register(v, Some(0.01), "tests").await.unwrap();
        }
        let mut providers = BTreeMap::new();
        providers.insert("sim".to_string(), sim("sim", 0.0));
        providers.insert("flaky".to_string(), sim("flaky", 1.0));
        let service = BenchmarkMatrixService::new(
            log,
            providers,
            dir.path().join("artifacts"),
            BenchmarkOptions {
                max_in_flight_per_provider: 2,
                max_batch: 7,
                ..BenchmarkOptions::default()
            },
        )
        .unwrap();
        (service, dir)
    }

    fn request(variant_ids: &[&str], inputs: usize, repetitions: u32) -> CreateBenchmarkRun {
        CreateBenchmarkRun {
            dataset: "iteration1-golden-v1".into(),
            variant_ids: variant_ids.iter().map(|v| v.to_string()).collect(),
            inputs: (0..inputs)
                .map(|i| BenchmarkInput {
                    input_id: format!("in-{i}"),
                    uri: format!("s3://golden/{i}.png"),
                })
                .collect(),
            repetitions,
        }
    }

    #[test]
    fn repeats_and_oversized_runs_are_refused_naming_the_field() {
        let run = |variants: Vec<&str>, inputs: Vec<&str>, repetitions| BenchmarkRunCreated {
            benchmark_run_id: "bm_x".into(),
            dataset: "d".into(),
            variant_ids: variants.into_iter().map(String::from).collect(),
            inputs: inputs
                .into_iter()
                .map(|id| BenchmarkInput {
                    input_id: id.into(),
                    uri: "s3://x".into(),
                })
                .collect(),
            repetitions,
        };
        let paths = |r: BenchmarkRunCreated| match check_shape(&r) {
            Err(BenchmarkError::Invalid(e)) => {
                e.violations.into_iter().map(|v| v.path).collect::<Vec<_>>()
            }
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert_eq!(
            paths(run(vec![SIM, SIM], vec!["a", "b", "a"], 1)),
            ["variant_ids[1]", "inputs[2].input_id"]
        );
        assert_eq!(paths(run(vec![SIM], vec!["a"], 101)), ["repetitions"]);
        assert!(check_shape(&run(vec![SIM, FLAKY], vec!["a", "b"], 100)).is_ok());
    }

    #[tokio::test]
    async fn create_refuses_an_unknown_variant_a_missing_provider_and_an_empty_run() {
        let (service, _dir) = setup().await;
        let unknown = "er:er1:wf:wf1:env:prod:stage:render:provider:sim:exp:zz";
        assert!(matches!(
            service.create(request(&[unknown], 1, 1)).await.unwrap_err(),
            BenchmarkError::VariantNotRegistered { .. }
        ));
        match service
            .create(request(&[SIM, NO_PROVIDER], 1, 1))
            .await
            .unwrap_err()
        {
            BenchmarkError::ProviderMissing { provider, .. } => assert_eq!(provider, "gone"),
            other => panic!("expected ProviderMissing, got {other:?}"),
        }
        assert!(matches!(
            service.create(request(&[SIM], 0, 1)).await.unwrap_err(),
            BenchmarkError::Invalid(_)
        ));
        assert!(matches!(
            service.create(request(&[SIM], 1, 0)).await.unwrap_err(),
            BenchmarkError::Invalid(_)
        ));
        assert_eq!(
            service.inner.log.head().await.unwrap(),
            3,
            "only the registrations"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_dispatches_inputs_times_repetitions_per_item_and_records_everything() {
        let (service, _dir) = setup().await;
        let created = service.create(request(&[SIM, FLAKY], 3, 2)).await.unwrap();
        assert_eq!(created.items.len(), 2);
        assert_eq!(created.items[0].planned_dispatches, 6);
        let outcome = created.handle.clone().wait().await;
        assert_eq!(
            outcome,
            RunOutcome::Completed {
                dispatched: 12,
                ended_items: vec![]
            }
        );
        let state = read_run(service.inner.log.as_ref(), &created.run.benchmark_run_id)
            .await
            .unwrap();
        assert!(state.completed);
        assert_eq!(state.submitted.len(), 12);
        assert_eq!(state.completions.len(), 12);
        assert_eq!(state.items_completed.len(), 2);
        for item in &created.items {
            let artifact = &state.artifacts[&item.item_id];
            assert_eq!(artifact.dispatch_ids.len(), 6);
            let path = reqwest::Url::parse(&artifact.uri)
                .unwrap()
                .to_file_path()
                .unwrap();
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(super::super::artifact::sha256_hex(&bytes), artifact.sha256);
            let doc: super::super::artifact::DispatchesArtifact =
                serde_json::from_slice(&bytes).unwrap();
            let expected = if item.variant_id == SIM {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            };
            assert!(doc.dispatches.iter().all(|d| d.outcome == expected));
        }
        assert_eq!(
            service.wait(&created.run.benchmark_run_id).await,
            Some(outcome)
        );
        assert!(service.running_here().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resuming_a_finished_log_starts_nothing() {
        let (service, _dir) = setup().await;
        let created = service.create(request(&[SIM], 2, 1)).await.unwrap();
        created.handle.wait().await;
        assert!(service.resume_unfinished().await.unwrap().is_empty());
    }
}
