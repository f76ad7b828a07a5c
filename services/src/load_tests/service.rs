//! [`LoadTestService`]: the command side of load-test runs (create, start, cancel).

use super::runner::{self, RunnerCommand};
use crate::executor::engine::{self, EngineOptions, RunEnded, RunSpec};
use crate::providers::{DispatchInput, Provider};
use crate::variants::service::read_variant;
use chrono::Utc;
use eventlog::catalogue::{
    self, EventPayload, Executor, RunCancelled, RunCreated, RunMode, RunStarted, RunnerFallback,
    Stage, StopConditions,
};
use eventlog::ids::VariantId;
use eventlog::{EventLog, RecordedEvent, StoreError, ValidatedEvent, ValidationError};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The cost above which a run needs an `approval_ref` (`[economics] approval_threshold_usd`).
pub const DEFAULT_APPROVAL_THRESHOLD_USD: f64 = 50.0;
/// Recorded as the producer of the events this service appends (the engine has its own).
pub const PRODUCER: &str = "services.load_tests";
/// The reason recorded in `load_test.runner_fallback` when a run executes inline.
pub const INLINE_FALLBACK_REASON: &str =
    "STUDIO_LOAD_TEST_RUNNER_COMMAND is not set; the run executes inline in this process";
/// The input id every dispatch of a load test carries; its uri is the run's `input_fixture`.
pub const FIXTURE_INPUT_ID: &str = "fixture";
/// How many times a command decides again after losing an append race. A running engine
/// appends to the run's stream every few tens of milliseconds, so a cancel may lose a race to
/// it; each new decision folds only the events appended since the last one.
pub const MAX_DECISION_ATTEMPTS: u32 = 5;
/// The actor of the events this service appends on its own (a dead runner, an orphaned run).
pub const RECOVERY_ACTOR: &str = "studio:recovery";
/// Events read per `read_stream` call while folding a stream.
const STREAM_PAGE: usize = 5_000;

/// `POST /admin/studio/load-test-runs`: what an operator asks for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    pub name: String,
    pub effect_revision_id: String,
    pub environment_id: String,
    pub variant_id: String,
    pub input_fixture: String,
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub stop_conditions: Option<StopConditions>,
    #[serde(default)]
    pub approval_ref: Option<String>,
}

/// A run as `create` appended it.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub run: RunCreated,
    pub approval_threshold_usd: f64,
    pub position: i64,
    pub stream_version: i64,
}

/// A run as `start` started it.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub run_id: String,
    pub mode: RunMode,
    /// Why the run executes inline (the `load_test.runner_fallback` reason).
    pub runner_fallback: Option<String>,
    /// Position of the last event appended (the fallback, or the start).
    pub position: i64,
}

/// A run as `cancel` cancelled it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancelled {
    pub run_id: String,
    pub reason: String,
    pub actor: String,
    pub position: i64,
    /// True when an engine in this process was running the run and was told to stop.
    pub engine_signalled: bool,
}

/// Why a load-test command was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadTestError {
    /// The catalogue's checks refused the run (each violation names its field).
    #[error("{0}")]
    Invalid(ValidationError),
    /// The variant has no `variant.registered` event.
    #[error("variant {variant_id} is not registered")]
    VariantNotRegistered { variant_id: String },
    #[error("variant {variant_id} is retired ({reason})")]
    VariantRetired { variant_id: String, reason: String },
    /// The variant belongs to another effect revision than the run.
    #[error(
        "variant {variant_id} belongs to effect revision {variant_revision}, not {run_revision}"
    )]
    RevisionMismatch {
        variant_id: String,
        variant_revision: String,
        run_revision: String,
    },
    /// The variant's provider part names no `[providers.<name>]` entry.
    #[error(
        "variant {variant_id} names provider {provider}, which has no [providers.{provider}] entry"
    )]
    ProviderMissing {
        variant_id: String,
        provider: String,
    },
    /// The estimate is above the threshold (or unknown) and no `approval_ref` was given.
    #[error("the run needs an approval_ref (estimate {estimated_cost_usd:?}, threshold {threshold_usd})")]
    ApprovalRequired {
        estimated_cost_usd: Option<f64>,
        threshold_usd: f64,
    },
    #[error("load-test run {run_id} does not exist")]
    NotFound { run_id: String },
    /// The run was started before, or has already ended (`status` says which).
    #[error("load-test run {run_id} is already {status}")]
    AlreadyStarted { run_id: String, status: String },
    #[error("load-test run {run_id} has already ended ({status})")]
    AlreadyEnded { run_id: String, status: String },
    /// The runner command could not be launched; the run was not started.
    #[error("the load-test runner command {command:?} could not be launched: {error}")]
    RunnerFailed { command: String, error: String },
    /// `execute_as_runner` was asked to run a run this process was not started for.
    #[error("load-test run {run_id} is not this runner's to execute: {why}")]
    NotThisRunner { run_id: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LoadTestError {
    fn invalid(path: &str, reason: impl Into<String>) -> Self {
        Self::Invalid(ValidationError::single(path, reason))
    }
}

/// Creates, starts and cancels load-test runs.
///
/// Like the variant registry, every command is decided from the log itself (the run's stream
/// `load_test_run-{id}` and the variant's stream `variant-{id}`), never from the read model,
/// and appended with `expected_version` set to the version it read: two operators racing to
/// start (or cancel) one run cannot both win; the loser decides again on the new stream and is
/// answered 409.
///
/// With a [`RunnerCommand`] (`STUDIO_LOAD_TEST_RUNNER_COMMAND`), `start` launches the runner
/// process and appends `load_test.run_started {mode: runner, executor: <its pid>}`; the runner
/// ([`LoadTestService::execute_as_runner`]) executes the run and follows the run's stream for a
/// cancel. Without one, `start` appends `run_started {mode: inline}` and
/// `load_test.runner_fallback` in one atomic append, then runs [`engine::execute`] in a tokio
/// task whose cancel signal is kept here, by run id, until the engine returns.
#[derive(Clone)]
pub struct LoadTestService {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<dyn EventLog>,
    providers: BTreeMap<String, Arc<dyn Provider>>,
    approval_threshold_usd: f64,
    engine_options: EngineOptions,
    runner: Option<RunnerCommand>,
    /// Cancel signals of the runs executing in this process.
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
}

/// What a run's stream says, folded from its events.
#[derive(Debug, Default)]
struct RunStream {
    version: i64,
    created: Option<RunCreated>,
    started: bool,
    mode: Option<RunMode>,
    executor: Option<Executor>,
    /// `completed`, `cancelled` or `stopped`, from the first ending event.
    ended: Option<&'static str>,
    /// Completed dispatches so far, and how many of them failed or timed out.
    completions: u64,
    failures: u64,
}

impl RunStream {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), StoreError> {
        self.version = event.stream_version;
        let payload = event.typed().map_err(|e| StoreError::Corrupt {
            position: event.position,
            what: e.to_string(),
        })?;
        let ended = match payload {
            EventPayload::RunCreated(p) => {
                self.created = Some(p);
                None
            }
            EventPayload::RunStarted(p) => {
                self.started = true;
                self.mode = Some(p.mode);
                self.executor = p.executor;
                None
            }
            EventPayload::RunCompleted(_) => Some("completed"),
            EventPayload::RunCancelled(_) => Some("cancelled"),
            EventPayload::StopConditionBreached(_) => Some("stopped"),
            EventPayload::LoadDispatchCompleted(p) => {
                self.completions += 1;
                self.failures += u64::from(p.outcome != eventlog::catalogue::Outcome::Succeeded);
                None
            }
            _ => None,
        };
        if self.ended.is_none() {
            self.ended = ended;
        }
        Ok(())
    }

    fn status(&self) -> &'static str {
        match (self.ended, self.started) {
            (Some(ended), _) => ended,
            (None, true) => "running",
            (None, false) => "created",
        }
    }
}

impl LoadTestService {
    pub fn new(
        log: Arc<dyn EventLog>,
        providers: BTreeMap<String, Arc<dyn Provider>>,
        approval_threshold_usd: f64,
        engine_options: EngineOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                log,
                providers,
                approval_threshold_usd,
                engine_options,
                runner: None,
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Executes started runs out of process with `runner` (`None`: inline). Call before the
    /// service is cloned.
    pub fn with_runner(mut self, runner: Option<RunnerCommand>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("configure the runner before cloning the service")
            .runner = runner;
        self
    }

    pub fn approval_threshold_usd(&self) -> f64 {
        self.inner.approval_threshold_usd
    }

    /// Run ids whose engine is executing in this process right now.
    pub fn running_here(&self) -> Vec<String> {
        let running = self.inner.running.lock().expect("running map poisoned");
        running.keys().cloned().collect()
    }

    /// Creates a run: validates it with the catalogue's checks, checks the variant (registered,
    /// active, same effect revision, provider configured), estimates its cost and applies the
    /// cost guard, then appends `load_test.run_created` to a new stream.
    #[tracing::instrument(skip_all, fields(variant_id = %request.variant_id, actor = %actor), err(level = "debug"))]
    pub async fn create(&self, request: CreateRun, actor: &str) -> Result<Created, LoadTestError> {
        let run_id = format!("lt_{}", uuid::Uuid::now_v7().simple());
        if let Some(approval) = &request.approval_ref {
            if approval.trim().is_empty() {
                return Err(LoadTestError::invalid(
                    "approval_ref",
                    "must not be blank; leave it out or name the approval",
                ));
            }
        }
        let mut run = RunCreated {
            run_id,
            name: request.name,
            effect_revision_id: request.effect_revision_id,
            environment_id: request.environment_id,
            variant_id: request.variant_id,
            input_fixture: request.input_fixture,
            stages: request.stages,
            stop_conditions: request.stop_conditions.unwrap_or_default(),
            estimated_cost_usd: None,
            approval_ref: request.approval_ref,
        };
        EventPayload::RunCreated(run.clone())
            .check()
            .map_err(LoadTestError::Invalid)?;

        let variant = read_variant(self.inner.log.as_ref(), &run.variant_id).await?;
        let Some(registered) = variant.registered else {
            return Err(LoadTestError::VariantNotRegistered {
                variant_id: run.variant_id,
            });
        };
        if let Some(reason) = variant.retired {
            return Err(LoadTestError::VariantRetired {
                variant_id: run.variant_id,
                reason,
            });
        }
        if registered.effect_revision_id != run.effect_revision_id {
            return Err(LoadTestError::RevisionMismatch {
                variant_id: run.variant_id,
                variant_revision: registered.effect_revision_id,
                run_revision: run.effect_revision_id,
            });
        }
        if !self.inner.providers.contains_key(&registered.provider) {
            return Err(LoadTestError::ProviderMissing {
                variant_id: run.variant_id,
                provider: registered.provider,
            });
        }

        run.estimated_cost_usd = estimate_cost(&run.stages, registered.unit_cost_usd);
        let threshold = self.inner.approval_threshold_usd;
        let needs_approval = run.estimated_cost_usd.is_none_or(|cost| cost > threshold);
        if needs_approval && run.approval_ref.is_none() {
            return Err(LoadTestError::ApprovalRequired {
                estimated_cost_usd: run.estimated_cost_usd,
                threshold_usd: threshold,
            });
        }

        let payload = EventPayload::RunCreated(run.clone());
        payload.check().map_err(LoadTestError::Invalid)?;
        let mut appended = self.append(&[payload], 0).await?;
        let event = appended.remove(0);
        tracing::info!(
            run_id = %run.run_id,
            position = event.position,
            estimated_cost_usd = ?run.estimated_cost_usd,
            "load-test run created"
        );
        Ok(Created {
            run,
            approval_threshold_usd: threshold,
            position: event.position,
            stream_version: event.stream_version,
        })
    }

    /// Starts a created run inline: appends `run_started {mode: inline}` and
    /// `runner_fallback` atomically, then spawns the engine.
    #[tracing::instrument(skip_all, fields(run_id = %run_id, actor = %actor), err(level = "debug"))]
    pub async fn start(&self, run_id: &str, actor: &str) -> Result<Started, LoadTestError> {
        let stream_name = catalogue::load_test_stream(run_id);
        let mut stream = RunStream::default();
        let mut attempt = 1;
        loop {
            self.fold(&stream_name, &mut stream).await?;
            let Some(run) = stream.created.clone() else {
                return Err(LoadTestError::NotFound {
                    run_id: run_id.to_string(),
                });
            };
            if stream.started || stream.ended.is_some() {
                return Err(LoadTestError::AlreadyStarted {
                    run_id: run_id.to_string(),
                    status: stream.status().to_string(),
                });
            }
            let provider = self.provider_for(&run)?;
            let (mode, executor, mut child) = match &self.inner.runner {
                Some(command) => {
                    let child =
                        command
                            .spawn(run_id)
                            .map_err(|error| LoadTestError::RunnerFailed {
                                command: command.command_line(run_id),
                                error: error.to_string(),
                            })?;
                    let executor = Executor {
                        host: runner::host_name(),
                        pid: child.id().unwrap_or_default(),
                    };
                    (RunMode::Runner, executor, Some(child))
                }
                None => (RunMode::Inline, runner::this_process(), None),
            };
            let mut events = vec![EventPayload::RunStarted(RunStarted {
                run_id: run_id.to_string(),
                mode,
                executor: Some(executor.clone()),
            })];
            if mode == RunMode::Inline {
                events.push(EventPayload::RunnerFallback(RunnerFallback {
                    run_id: run_id.to_string(),
                    reason: INLINE_FALLBACK_REASON.to_string(),
                }));
            }
            match self.append(&events, stream.version).await {
                Ok(appended) => {
                    let position = appended.last().map_or(0, |e| e.position);
                    match child.take() {
                        Some(child) => {
                            tracing::info!(
                                position,
                                pid = executor.pid,
                                "load-test run started in a runner process"
                            );
                            self.watch_runner(run_id.to_string(), child);
                        }
                        None => {
                            tracing::info!(position, "load-test run started inline");
                            self.spawn_engine(run, provider);
                        }
                    }
                    return Ok(Started {
                        run_id: run_id.to_string(),
                        mode,
                        runner_fallback: (mode == RunMode::Inline)
                            .then(|| INLINE_FALLBACK_REASON.to_string()),
                        position,
                    });
                }
                Err(err) => {
                    // The run was not started: the runner must not execute it.
                    if let Some(mut child) = child.take() {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                    }
                    match err {
                        StoreError::Conflict { .. } if attempt < MAX_DECISION_ATTEMPTS => {
                            attempt += 1;
                        }
                        err => return Err(err.into()),
                    }
                }
            }
        }
    }

    /// Cancels a run that has not ended: appends `load_test.run_cancelled`, then tells the
    /// engine running it in this process (if any) to stop sending arrivals.
    #[tracing::instrument(skip_all, fields(run_id = %run_id, actor = %actor), err(level = "debug"))]
    pub async fn cancel(
        &self,
        run_id: &str,
        reason: &str,
        actor: &str,
    ) -> Result<Cancelled, LoadTestError> {
        if reason.trim().is_empty() {
            return Err(LoadTestError::invalid(
                "reason",
                "must say why the run is cancelled",
            ));
        }
        if actor.trim().is_empty() {
            return Err(LoadTestError::invalid(
                "actor",
                "must name who cancels the run",
            ));
        }
        let stream_name = catalogue::load_test_stream(run_id);
        let payload = EventPayload::RunCancelled(RunCancelled {
            run_id: run_id.to_string(),
            reason: reason.to_string(),
            actor: actor.to_string(),
        });
        let mut stream = RunStream::default();
        let mut attempt = 1;
        loop {
            self.fold(&stream_name, &mut stream).await?;
            if stream.created.is_none() {
                return Err(LoadTestError::NotFound {
                    run_id: run_id.to_string(),
                });
            }
            if let Some(ended) = stream.ended {
                return Err(LoadTestError::AlreadyEnded {
                    run_id: run_id.to_string(),
                    status: ended.to_string(),
                });
            }
            match self
                .append(std::slice::from_ref(&payload), stream.version)
                .await
            {
                Ok(appended) => {
                    let position = appended.last().map_or(0, |e| e.position);
                    let engine_signalled = {
                        let running = self.inner.running.lock().expect("running map poisoned");
                        running.get(run_id).is_some_and(|tx| tx.send(true).is_ok())
                    };
                    tracing::info!(position, engine_signalled, "load-test run cancelled");
                    return Ok(Cancelled {
                        run_id: run_id.to_string(),
                        reason: reason.to_string(),
                        actor: actor.to_string(),
                        position,
                        engine_signalled,
                    });
                }
                Err(StoreError::Conflict { .. }) if attempt < MAX_DECISION_ATTEMPTS => {
                    attempt += 1;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// The seed plan's second stop condition: a critical alarm in ALARM stops every run this
    /// process is executing. Each gets `load_test.stop_condition_breached` naming the alarm (with
    /// the run's failure rate so far), and its engine stops sending. Returns the runs stopped.
    pub async fn stop_for_alarm(&self, alarm_name: &str) -> Result<Vec<String>, LoadTestError> {
        let mut stopped = Vec::new();
        for run_id in self.running_here() {
            let stream_name = catalogue::load_test_stream(&run_id);
            let mut stream = RunStream::default();
            let mut attempt = 1;
            loop {
                self.fold(&stream_name, &mut stream).await?;
                if stream.ended.is_some() {
                    break;
                }
                let failure_rate = if stream.completions == 0 {
                    0.0
                } else {
                    stream.failures as f64 / stream.completions as f64
                };
                let payload =
                    EventPayload::StopConditionBreached(catalogue::StopConditionBreached {
                        run_id: run_id.clone(),
                        failure_rate,
                        window_s: 0,
                        alarm_name: Some(alarm_name.to_string()),
                        cost_overrun: None,
                    });
                match self
                    .append(std::slice::from_ref(&payload), stream.version)
                    .await
                {
                    Ok(_) => {
                        let running = self.inner.running.lock().expect("running map poisoned");
                        if let Some(tx) = running.get(&run_id) {
                            let _ = tx.send(true);
                        }
                        stopped.push(run_id.clone());
                        break;
                    }
                    Err(StoreError::Conflict { .. }) if attempt < MAX_DECISION_ATTEMPTS => {
                        attempt += 1
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
        if !stopped.is_empty() {
            tracing::warn!(alarm = alarm_name, runs = ?stopped, "critical alarm stopped running load tests");
        }
        Ok(stopped)
    }

    /// Tails the log from its current head and stops running runs on every alarm that turns
    /// ALARM, until `shutdown` turns true.
    pub async fn watch_alarms(self, mut shutdown: watch::Receiver<bool>) {
        let log = self.inner.log.clone();
        let mut after = match log.head().await {
            Ok(h) => h,
            Err(err) => {
                tracing::error!(error = %err, "alarm watch cannot read the log head");
                return;
            }
        };
        loop {
            if *shutdown.borrow() {
                return;
            }
            match log.read_all(after, 1_000).await {
                Ok(events) if !events.is_empty() => {
                    for event in events {
                        after = event.position;
                        if let Ok(EventPayload::AlarmStateChanged(p)) = event.typed() {
                            if p.new_state == catalogue::AlarmState::Alarm {
                                if let Err(err) = self.stop_for_alarm(&p.alarm_name).await {
                                    tracing::error!(alarm = %p.alarm_name, error = %err, "cannot stop runs for alarm");
                                }
                            }
                        }
                    }
                    continue;
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "alarm watch cannot read the log"),
            }
            tokio::select! {
                _ = eventlog::wait_for_position(log.as_ref(), after, Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    fn provider_for(&self, run: &RunCreated) -> Result<Arc<dyn Provider>, LoadTestError> {
        let id = VariantId::parse(&run.variant_id)
            .map_err(|reason| LoadTestError::invalid("variant_id", reason))?;
        self.inner
            .providers
            .get(&id.provider)
            .cloned()
            .ok_or_else(|| LoadTestError::ProviderMissing {
                variant_id: run.variant_id.clone(),
                provider: id.provider.clone(),
            })
    }

    fn spawn_engine(&self, run: RunCreated, provider: Arc<dyn Provider>) {
        let engine = self.engine(run, provider);
        tokio::spawn(engine);
    }

    /// The engine executing `run`, registered in `running` (so cancel and alarms reach it)
    /// until it returns.
    fn engine(
        &self,
        run: RunCreated,
        provider: Arc<dyn Provider>,
    ) -> impl std::future::Future<Output = Result<RunEnded, engine::EngineError>> + Send + 'static
    {
        let run_id = run.run_id.clone();
        let (cancel_tx, cancel_rx) = watch::channel(false);
        self.inner
            .running
            .lock()
            .expect("running map poisoned")
            .insert(run_id.clone(), cancel_tx);
        let input = DispatchInput {
            input_id: FIXTURE_INPUT_ID.to_string(),
            uri: run.input_fixture.clone(),
        };
        let inner = self.inner.clone();
        async move {
            let ended = engine::execute(
                inner.log.clone(),
                RunSpec { run },
                provider,
                input,
                inner.engine_options.clone(),
                cancel_rx,
            )
            .await;
            inner
                .running
                .lock()
                .expect("running map poisoned")
                .remove(&run_id);
            match &ended {
                Ok(RunEnded::Completed) => tracing::info!(%run_id, "load-test run completed"),
                Ok(RunEnded::Cancelled) => tracing::info!(%run_id, "load-test run cancelled"),
                Ok(RunEnded::Stopped(breach)) => {
                    tracing::warn!(%run_id, ?breach, "load-test run stopped by its stop condition");
                }
                Ok(RunEnded::CostExceeded(overrun)) => {
                    tracing::warn!(%run_id, ?overrun, "load-test run stopped by the cost guard");
                }
                Err(err) => tracing::error!(%run_id, error = %err, "load-test run failed"),
            }
            ended
        }
    }

    /// Waits for a runner process; if it exits before its run ended (a crash, a refusal), the
    /// run is cancelled with the exit status as the reason, so it is never left running.
    fn watch_runner(&self, run_id: String, mut child: tokio::process::Child) {
        let service = self.clone();
        tokio::spawn(async move {
            let pid = child.id().unwrap_or_default();
            let status = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(err) => format!("unknown status ({err})"),
            };
            let reason =
                format!("the runner process (pid {pid}) exited ({status}) before the run ended");
            match service.cancel(&run_id, &reason, RECOVERY_ACTOR).await {
                Ok(_) => {
                    tracing::error!(%run_id, pid, %status, "runner process died; run cancelled")
                }
                Err(LoadTestError::AlreadyEnded { .. }) => {
                    tracing::info!(%run_id, pid, %status, "runner process finished")
                }
                Err(err) => {
                    tracing::error!(%run_id, pid, error = %err, "cannot end the run of a dead runner")
                }
            }
        });
    }

    /// Runner mode, the child's side (`studio run-load-test --run-id ID`): waits (up to
    /// `wait_for_start`) until the run's `run_started` names this process as its executor, then
    /// executes it here, cancelling when a `run_cancelled` or a `stop_condition_breached`
    /// written by another process (an operator's cancel, a critical alarm) appears in the run's
    /// stream, and returns how it ended.
    pub async fn execute_as_runner(
        &self,
        run_id: &str,
        wait_for_start: Duration,
    ) -> Result<RunEnded, LoadTestError> {
        let me = runner::this_process();
        let stream_name = catalogue::load_test_stream(run_id);
        let mut stream = RunStream::default();
        let deadline = tokio::time::Instant::now() + wait_for_start;
        let not_mine = |why: String| LoadTestError::NotThisRunner {
            run_id: run_id.to_string(),
            why,
        };
        let run = loop {
            self.fold(&stream_name, &mut stream).await?;
            let Some(run) = stream.created.clone() else {
                return Err(LoadTestError::NotFound {
                    run_id: run_id.to_string(),
                });
            };
            if let Some(ended) = stream.ended {
                return Err(LoadTestError::AlreadyEnded {
                    run_id: run_id.to_string(),
                    status: ended.to_string(),
                });
            }
            if stream.started {
                match (&stream.mode, &stream.executor) {
                    // The recorded pid is the shell that ran the command, or this process if
                    // the shell exec'd it.
                    (Some(RunMode::Runner), Some(executor))
                        if executor.pid == me.pid
                            || executor.pid == std::os::unix::process::parent_id() =>
                    {
                        break run
                    }
                    (mode, executor) => {
                        return Err(not_mine(format!(
                            "it was started in mode {mode:?} for executor {executor:?}, not pid {}",
                            me.pid
                        )))
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(not_mine(format!(
                    "it was not started for this process within {wait_for_start:?}"
                )));
            }
            let head = self.inner.log.head().await?;
            let _ = eventlog::wait_for_position(
                self.inner.log.as_ref(),
                head,
                Duration::from_millis(200),
            )
            .await;
        };
        let provider = self.provider_for(&run)?;
        let engine = self.engine(run, provider);
        let follow = self.follow_for_cancel(run_id.to_string(), stream.version);
        let ended = tokio::select! {
            ended = engine => ended,
            () = follow => unreachable!("following the stream only ends with the engine"),
        };
        ended.map_err(|err| match err {
            engine::EngineError::Append(err) => LoadTestError::Store(err),
            other => LoadTestError::Invalid(ValidationError::single("run", other.to_string())),
        })
    }

    /// Tails the run's stream after `version` and signals this process's engine when another
    /// process ends the run. Never returns on its own.
    async fn follow_for_cancel(&self, run_id: String, version: i64) {
        let stream_name = catalogue::load_test_stream(&run_id);
        let mut stream = RunStream {
            version,
            ..RunStream::default()
        };
        loop {
            if self.fold(&stream_name, &mut stream).await.is_ok() && stream.ended.is_some() {
                let running = self.inner.running.lock().expect("running map poisoned");
                if let Some(tx) = running.get(&run_id) {
                    let _ = tx.send(true);
                }
            }
            let head = self.inner.log.head().await.unwrap_or(0);
            let _ =
                eventlog::wait_for_position(self.inner.log.as_ref(), head, Duration::from_secs(1))
                    .await;
        }
    }

    /// Ends the runs among `candidates` that are `running` but whose executing process is gone
    /// (it ran on this host and its pid no longer exists, or it recorded no executor), with a
    /// `load_test.run_cancelled` whose reason says so. Runs executing in this process, or on
    /// another host, are left alone. Returns the runs ended.
    pub async fn end_orphaned_runs(
        &self,
        candidates: &[String],
    ) -> Result<Vec<String>, LoadTestError> {
        let here = self.running_here();
        let mut ended = Vec::new();
        for run_id in candidates {
            if here.contains(run_id) {
                continue;
            }
            let mut stream = RunStream::default();
            self.fold(&catalogue::load_test_stream(run_id), &mut stream)
                .await?;
            if stream.status() != "running" {
                continue;
            }
            let reason = match &stream.executor {
                Some(executor) if executor.pid == std::process::id()
                    && executor.host == runner::host_name() =>
                {
                    // Recorded by this very process, yet not executing here: its engine ended
                    // without recording how (an append error).
                    format!("its engine in this process (pid {}) stopped without recording an end", executor.pid)
                }
                Some(executor) if runner::executor_gone(executor) => format!(
                    "its executing process (pid {} on {}, mode {}) is gone; ended on start-up so it \
                     is not left running",
                    executor.pid,
                    executor.host,
                    if stream.mode == Some(RunMode::Runner) { "runner" } else { "inline" }
                ),
                Some(_) => continue,
                None => "it recorded no executor and no process executes it; ended on start-up \
                         so it is not left running"
                    .to_string(),
            };
            match self.cancel(run_id, &reason, RECOVERY_ACTOR).await {
                Ok(_) => {
                    tracing::warn!(%run_id, %reason, "orphaned load-test run ended");
                    ended.push(run_id.clone());
                }
                Err(LoadTestError::AlreadyEnded { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(ended)
    }

    /// Folds the events of `stream_name` after `folded.version` into `folded`.
    async fn fold(&self, stream_name: &str, folded: &mut RunStream) -> Result<(), StoreError> {
        loop {
            let page = self
                .inner
                .log
                .read_stream(stream_name, folded.version, STREAM_PAGE)
                .await?;
            for event in &page {
                folded.apply(event)?;
            }
            if page.len() < STREAM_PAGE {
                return Ok(());
            }
        }
    }

    /// Appends `payloads` to one stream in one atomic call; the first carries
    /// `expected_version`, the rest follow it.
    async fn append(
        &self,
        payloads: &[EventPayload],
        expected_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let now = Utc::now();
        let events = payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| {
                ValidatedEvent::from_payload(payload, PRODUCER, now)
                    .with_expected_version(expected_version + i as i64)
            })
            .collect();
        let appended = self.inner.log.append(events).await?;
        Ok(appended
            .into_iter()
            .map(eventlog::Appended::into_event)
            .collect())
    }
}

/// The cost guard's estimate: Σ stages `round(duration_s × target_rps)` × the variant's unit
/// cost; `None` when the unit cost is unknown.
pub fn estimate_cost(stages: &[Stage], unit_cost_usd: Option<f64>) -> Option<f64> {
    let unit = unit_cost_usd?;
    let arrivals: u64 = catalogue::planned_arrivals(stages).iter().sum();
    Some(arrivals as f64 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{SimulatedProvider, SimulatedSettings};
    use crate::variants::VariantRegistryService;

    const VARIANT: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:sim:exp:e1";

    async fn service() -> (LoadTestService, tempfile::TempDir) {
        let (url, dir) = eventlog::testkit::sqlite_url();
        let log = eventlog::open(&url, true)
            .await
            .expect("open the event log");
        VariantRegistryService::new(log.clone())
            .register(VARIANT, Some(0.01), "tests")
            .await
            .unwrap();
        let sim = SimulatedProvider::new(
            "sim",
            SimulatedSettings {
                latency_ms: 10.0,
                jitter_ms: 0.0,
                failure_rate: 0.0,
                cost_usd: 0.01,
                seed: 1,
            },
        )
        .with_time_scale(0.0);
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        providers.insert("sim".into(), Arc::new(sim));
        let service = LoadTestService::new(
            log,
            providers,
            DEFAULT_APPROVAL_THRESHOLD_USD,
            EngineOptions::default(),
        );
        (service, dir)
    }

    fn request() -> CreateRun {
        CreateRun {
            name: "n".into(),
            effect_revision_id: "er1".into(),
            environment_id: "prod".into(),
            variant_id: VARIANT.into(),
            input_fixture: "s3://in.png".into(),
            stages: vec![stage(30, 1.0)],
            stop_conditions: None,
            approval_ref: None,
        }
    }

    #[tokio::test]
    async fn load_test_service_cancels_a_created_run_and_it_can_then_never_start() {
        let (service, _dir) = service().await;
        let created = service.create(request(), "alice").await.unwrap();
        assert_eq!(created.stream_version, 1);
        let run_id = created.run.run_id.clone();
        let cancelled = service
            .cancel(&run_id, "not needed", "alice")
            .await
            .unwrap();
        assert!(!cancelled.engine_signalled);
        match service.start(&run_id, "bob").await.unwrap_err() {
            LoadTestError::AlreadyStarted { status, .. } => assert_eq!(status, "cancelled"),
            other => panic!("expected AlreadyStarted, got {other:?}"),
        }
        assert!(matches!(
            service.cancel(&run_id, "again", "alice").await.unwrap_err(),
            LoadTestError::AlreadyEnded { .. }
        ));
    }

    #[tokio::test]
    async fn load_test_service_start_appends_start_and_fallback_together_and_cancel_signals_the_engine(
    ) {
        let (service, _dir) = service().await;
        let run_id = service.create(request(), "alice").await.unwrap().run.run_id;
        let started = service.start(&run_id, "alice").await.unwrap();
        assert_eq!(started.mode, RunMode::Inline);
        let events = service
            .inner
            .log
            .read_stream(&catalogue::load_test_stream(&run_id), 0, 3)
            .await
            .unwrap();
        let types: Vec<_> = events.iter().map(|e| e.typed().unwrap()).collect();
        assert!(matches!(types[1], EventPayload::RunStarted(_)), "{types:?}");
        assert!(
            matches!(types[2], EventPayload::RunnerFallback(_)),
            "{types:?}"
        );
        assert_eq!(events[2].position, started.position);
        assert_eq!(service.running_here(), vec![run_id.clone()]);
        let cancelled = service.cancel(&run_id, "stop", "alice").await.unwrap();
        assert!(cancelled.engine_signalled);
        // The engine notices within a second and leaves the map.
        for _ in 0..50 {
            if service.running_here().is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the engine did not stop after the cancel");
    }

    fn stage(duration_s: u64, target_rps: f64) -> Stage {
        Stage {
            name: "s".into(),
            duration_s,
            target_rps,
        }
    }

    #[test]
    fn the_estimate_is_planned_arrivals_times_the_unit_cost() {
        let stages = [stage(10, 2.5), stage(3, 0.5)];
        // 25 + round(1.5) = 25 + 2 = 27 arrivals.
        let estimate = estimate_cost(&stages, Some(0.5)).unwrap();
        assert!((estimate - 13.5).abs() < 1e-9, "{estimate}");
        assert_eq!(estimate_cost(&stages, None), None);
    }
}
