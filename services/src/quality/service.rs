//! [`QualityEvaluationService`]: judges every successful output of a finished benchmark run.

use super::evaluator::{EvaluationOutcome, EvaluationRequest, QualityEvaluator};
use chrono::Utc;
use eventlog::catalogue::{
    self, BenchmarkDispatchCompleted, EvaluationCompleted, EvaluationFailed, EventPayload, Outcome,
};
use eventlog::{EventLog, RecordedEvent, StoreError, ValidatedEvent};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Semaphore};

/// Recorded as the producer of the events this service appends.
pub const PRODUCER: &str = "services.quality";
/// Events read per `read_stream` call while folding a stream.
const STREAM_PAGE: usize = 5_000;

/// The stream a run's verdicts go to (DESIGN §4).
pub fn quality_stream(benchmark_run_id: &str) -> String {
    format!("quality-{benchmark_run_id}")
}

/// The idempotency key of the verdict on one output: one verdict per output, however often the
/// evaluation is posted and by however many processes.
pub fn idempotency_key(benchmark_run_id: &str, dispatch_id: &str) -> String {
    format!("quality:{benchmark_run_id}:{dispatch_id}")
}

/// Why an evaluation could not start.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("benchmark_run_id {benchmark_run_id:?}: {reason}")]
    InvalidRunId {
        benchmark_run_id: String,
        reason: String,
    },
    #[error("benchmark run {benchmark_run_id} does not exist")]
    NotFound { benchmark_run_id: String },
    /// The run has no `benchmark.run_completed` yet: its outputs are not all known.
    #[error("benchmark run {benchmark_run_id} has not completed ({completed_dispatches} dispatches completed so far)")]
    NotCompleted {
        benchmark_run_id: String,
        completed_dispatches: usize,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a finished batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchSummary {
    /// `quality.evaluation_completed` appended (fallbacks included).
    pub judged: usize,
    pub fallbacks: usize,
    /// `quality.evaluation_failed` appended (safety blocks).
    pub unjudged: usize,
    /// Verdicts whose append failed; the next POST judges those outputs again.
    pub not_recorded: usize,
}

/// A batch running (or run) in this process. Cloning it is cheap; every clone can wait.
#[derive(Debug, Clone)]
pub struct BatchHandle {
    pub evaluation_batch_id: String,
    pub outputs: usize,
    done_rx: watch::Receiver<Option<BatchSummary>>,
}

impl BatchHandle {
    /// Waits until every output of the batch has its verdict appended (or its append failed).
    pub async fn wait(&self) -> BatchSummary {
        let mut rx = self.done_rx.clone();
        let summary = match rx.wait_for(Option::is_some).await {
            Ok(summary) => summary.clone().unwrap_or_default(),
            // The batch task is gone without a summary (the runtime is shutting down).
            Err(_) => BatchSummary::default(),
        };
        summary
    }

    pub fn is_finished(&self) -> bool {
        self.done_rx.borrow().is_some()
    }
}

/// What `start` answered.
#[derive(Debug, Clone)]
pub struct Started {
    pub benchmark_run_id: String,
    /// The batch judging the outstanding outputs; `None` when every output already has a
    /// verdict (nothing to do).
    pub batch: Option<BatchHandle>,
    /// Outputs this batch judges.
    pub outputs: usize,
    /// Successful outputs that already had a verdict in `quality-{run}` and are skipped.
    pub already_judged: usize,
    /// True when a batch for this run was already running here and this call joined it.
    pub joined_running_batch: bool,
}

impl Started {
    pub fn status(&self) -> &'static str {
        match &self.batch {
            Some(batch) if !batch.is_finished() => "running",
            _ => "completed",
        }
    }
}

/// One successful output of a run, with what its verdict records.
#[derive(Debug, Clone)]
struct Output {
    item_id: String,
    variant_id: String,
    request: EvaluationRequest,
}

/// Judges benchmark outputs and appends one verdict per output to `quality-{run}`.
///
/// The outputs are found in the log, never in a read model: `benchmark.run_created` gives the
/// inputs' uris, `benchmark.item_created` each item's variant, and every
/// `benchmark.dispatch_completed` with outcome `succeeded` and an `output_uri` is one output.
/// Only a run with `benchmark.run_completed` is evaluated (409 otherwise): before that its set
/// of outputs is not final, and judging half of it would leave the rest to a second post.
///
/// Re-posting never judges an output twice: outputs with a verdict in `quality-{run}`
/// (`evaluation_completed` *or* `evaluation_failed`) are skipped before any judge is called, a
/// post while this process is still judging the run joins the running batch, and each verdict
/// is appended with the idempotency key `quality:{run}:{dispatch}`, so even two processes
/// racing append one verdict per output (the loser's judge call is wasted, its event is not
/// stored). A verdict whose append failed is retried by the next post. Batches run in tokio
/// tasks; a process that stops mid-batch leaves the rest to the next post.
#[derive(Clone)]
pub struct QualityEvaluationService {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<dyn EventLog>,
    evaluator: Arc<dyn QualityEvaluator>,
    concurrency: usize,
    /// Batches in this process by benchmark run id, so a second post joins the first instead of
    /// judging the same outputs again. A finished batch stays until the next post replaces it.
    batches: Mutex<HashMap<String, BatchHandle>>,
}

impl QualityEvaluationService {
    /// `concurrency` is how many outputs are judged at once (`[quality] concurrency`, ≥ 1).
    pub fn new(
        log: Arc<dyn EventLog>,
        evaluator: Arc<dyn QualityEvaluator>,
        concurrency: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                log,
                evaluator,
                concurrency: concurrency.max(1),
                batches: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn evaluator(&self) -> eventlog::catalogue::Evaluator {
        self.inner.evaluator.evaluator()
    }

    /// The batch of a run in this process, running or finished, if any.
    pub fn batch(&self, benchmark_run_id: &str) -> Option<BatchHandle> {
        self.inner
            .batches
            .lock()
            .expect("batches map poisoned")
            .get(benchmark_run_id)
            .cloned()
    }

    /// Waits for the run's batch in this process, if there is one.
    pub async fn wait(&self, benchmark_run_id: &str) -> Option<BatchSummary> {
        let batch = self.batch(benchmark_run_id)?;
        Some(batch.wait().await)
    }

    /// Starts judging every successful output of a completed run that has no verdict yet.
    #[tracing::instrument(skip_all, fields(benchmark_run_id = %benchmark_run_id), err(level = "debug"))]
    pub async fn start(&self, benchmark_run_id: &str) -> Result<Started, QualityError> {
        eventlog::ids::check_benchmark_run_id(benchmark_run_id).map_err(|reason| {
            QualityError::InvalidRunId {
                benchmark_run_id: benchmark_run_id.to_string(),
                reason,
            }
        })?;
        if let Some(batch) = self.batch(benchmark_run_id).filter(|b| !b.is_finished()) {
            return Ok(Started {
                benchmark_run_id: benchmark_run_id.to_string(),
                outputs: batch.outputs,
                batch: Some(batch),
                already_judged: 0,
                joined_running_batch: true,
            });
        }

        let outputs = self.read_outputs(benchmark_run_id).await?;
        let judged = self.read_verdicts(benchmark_run_id).await?;
        let total = outputs.len();
        let pending: Vec<Output> = outputs
            .into_iter()
            .filter(|o| !judged.contains(&o.request.dispatch_id))
            .collect();
        let already_judged = total - pending.len();
        if pending.is_empty() {
            tracing::info!(already_judged, "every output already has a verdict");
            return Ok(Started {
                benchmark_run_id: benchmark_run_id.to_string(),
                batch: None,
                outputs: 0,
                already_judged,
                joined_running_batch: false,
            });
        }

        let batch_id = format!("qb_{}", uuid::Uuid::now_v7().simple());
        let (done_tx, done_rx) = watch::channel(None);
        let handle = BatchHandle {
            evaluation_batch_id: batch_id.clone(),
            outputs: pending.len(),
            done_rx,
        };
        {
            // Checked again under the lock: another post may have started a batch meanwhile.
            let mut batches = self.inner.batches.lock().expect("batches map poisoned");
            if let Some(running) = batches.get(benchmark_run_id).filter(|b| !b.is_finished()) {
                return Ok(Started {
                    benchmark_run_id: benchmark_run_id.to_string(),
                    outputs: running.outputs,
                    batch: Some(running.clone()),
                    already_judged,
                    joined_running_batch: true,
                });
            }
            batches.insert(benchmark_run_id.to_string(), handle.clone());
        }
        tracing::info!(
            evaluation_batch_id = %batch_id,
            outputs = pending.len(),
            already_judged,
            evaluator = ?self.inner.evaluator.evaluator(),
            "quality evaluation started"
        );
        let inner = self.inner.clone();
        let run_id = benchmark_run_id.to_string();
        tokio::spawn(async move {
            let summary = run_batch(inner, run_id.clone(), batch_id.clone(), pending).await;
            tracing::info!(
                benchmark_run_id = %run_id,
                evaluation_batch_id = %batch_id,
                judged = summary.judged,
                fallbacks = summary.fallbacks,
                unjudged = summary.unjudged,
                not_recorded = summary.not_recorded,
                "quality evaluation finished"
            );
            let _ = done_tx.send(Some(summary));
        });
        Ok(Started {
            benchmark_run_id: benchmark_run_id.to_string(),
            outputs: handle.outputs,
            batch: Some(handle),
            already_judged,
            joined_running_batch: false,
        })
    }

    /// The successful outputs of a completed run, in the order they completed.
    async fn read_outputs(&self, benchmark_run_id: &str) -> Result<Vec<Output>, QualityError> {
        let mut created = None;
        let mut completed = false;
        let mut items: HashMap<String, String> = HashMap::new();
        let mut submitted: HashMap<String, String> = HashMap::new();
        let mut successes: Vec<BenchmarkDispatchCompleted> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut completions = 0;
        let stream = catalogue::benchmark_stream(benchmark_run_id);
        self.fold(&stream, |payload| match payload {
            EventPayload::BenchmarkRunCreated(p) => created = Some(p),
            EventPayload::BenchmarkItemCreated(p) => {
                items.insert(p.item_id, p.variant_id);
            }
            EventPayload::BenchmarkDispatchSubmitted(p) => {
                submitted.insert(p.dispatch_id, p.variant_id);
            }
            EventPayload::BenchmarkDispatchCompleted(p) => {
                completions += 1;
                // A dispatch completed twice (a retried append after a restart) is one output.
                if p.outcome == Outcome::Succeeded
                    && p.output_uri
                        .as_deref()
                        .is_some_and(|u| !u.trim().is_empty())
                    && seen.insert(p.dispatch_id.clone())
                {
                    successes.push(p);
                }
            }
            EventPayload::BenchmarkRunCompleted(_) => completed = true,
            _ => {}
        })
        .await?;
        let Some(created) = created else {
            return Err(QualityError::NotFound {
                benchmark_run_id: benchmark_run_id.to_string(),
            });
        };
        if !completed {
            return Err(QualityError::NotCompleted {
                benchmark_run_id: benchmark_run_id.to_string(),
                completed_dispatches: completions,
            });
        }
        let inputs: BTreeMap<&str, &str> = created
            .inputs
            .iter()
            .map(|i| (i.input_id.as_str(), i.uri.as_str()))
            .collect();
        let mut outputs = Vec::with_capacity(successes.len());
        for p in successes {
            let variant_id = items
                .get(&p.item_id)
                .or_else(|| submitted.get(&p.dispatch_id))
                .cloned();
            let Some(variant_id) = variant_id else {
                // The catalogue cannot record a judged output without its variant.
                tracing::warn!(dispatch_id = %p.dispatch_id, item_id = %p.item_id, "output of an unknown item is not judged");
                continue;
            };
            outputs.push(Output {
                item_id: p.item_id,
                variant_id,
                request: EvaluationRequest {
                    input_uri: inputs.get(p.input_id.as_str()).map(|u| u.to_string()),
                    output_uri: p.output_uri.unwrap_or_default(),
                    latency_ms: p.latency_ms,
                    dispatch_id: p.dispatch_id,
                },
            });
        }
        Ok(outputs)
    }

    /// Dispatch ids with a verdict (judged or unjudged) in `quality-{run}`.
    async fn read_verdicts(&self, benchmark_run_id: &str) -> Result<BTreeSet<String>, StoreError> {
        let mut judged = BTreeSet::new();
        self.fold(&quality_stream(benchmark_run_id), |payload| match payload {
            EventPayload::EvaluationCompleted(p) => {
                judged.insert(p.dispatch_id);
            }
            EventPayload::EvaluationFailed(p) => {
                judged.insert(p.dispatch_id);
            }
            _ => {}
        })
        .await?;
        Ok(judged)
    }

    async fn fold(
        &self,
        stream: &str,
        mut apply: impl FnMut(EventPayload),
    ) -> Result<(), StoreError> {
        let mut version = 0;
        loop {
            let page = self
                .inner
                .log
                .read_stream(stream, version, STREAM_PAGE)
                .await?;
            for event in &page {
                version = event.stream_version;
                apply(typed(event)?);
            }
            if page.len() < STREAM_PAGE {
                return Ok(());
            }
        }
    }
}

fn typed(event: &RecordedEvent) -> Result<EventPayload, StoreError> {
    event.typed().map_err(|e| StoreError::Corrupt {
        position: event.position,
        what: e.to_string(),
    })
}

/// Judges `outputs` at most `concurrency` at a time, appending each verdict as it comes.
async fn run_batch(
    inner: Arc<Inner>,
    benchmark_run_id: String,
    batch_id: String,
    outputs: Vec<Output>,
) -> BatchSummary {
    // The semaphore, not the task count, bounds the calls to the judge: every output gets a
    // task at once, but only `concurrency` of them hold a permit while judging.
    let permits = Arc::new(Semaphore::new(inner.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for output in outputs {
        let permit = permits.clone();
        let inner = inner.clone();
        let run_id = benchmark_run_id.clone();
        let batch_id = batch_id.clone();
        tasks.spawn(async move {
            let _permit = permit
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let outcome = inner.evaluator.evaluate(&output.request).await;
            record(&inner, &run_id, &batch_id, &output, outcome).await
        });
    }
    let mut summary = BatchSummary::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Recorded::Judged { fallback }) => {
                summary.judged += 1;
                summary.fallbacks += usize::from(fallback);
            }
            Ok(Recorded::Unjudged) => summary.unjudged += 1,
            Ok(Recorded::NotStored) => summary.not_recorded += 1,
            Err(err) => {
                tracing::error!(error = %err, "a quality evaluation task failed");
                summary.not_recorded += 1;
            }
        }
    }
    summary
}

enum Recorded {
    Judged { fallback: bool },
    Unjudged,
    NotStored,
}

async fn record(
    inner: &Inner,
    benchmark_run_id: &str,
    batch_id: &str,
    output: &Output,
    outcome: EvaluationOutcome,
) -> Recorded {
    let evaluation_id = format!("qe_{}", uuid::Uuid::now_v7().simple());
    let dispatch_id = output.request.dispatch_id.clone();
    let (payload, recorded) = match outcome {
        EvaluationOutcome::Judged(j) => {
            let fallback = j.fallback;
            (
                EventPayload::EvaluationCompleted(EvaluationCompleted {
                    benchmark_run_id: benchmark_run_id.to_string(),
                    evaluation_id,
                    item_id: output.item_id.clone(),
                    variant_id: output.variant_id.clone(),
                    dispatch_id: dispatch_id.clone(),
                    evaluator: j.evaluator,
                    score: j.score,
                    criteria: j.criteria,
                    rationale: j.rationale,
                    fallback: j.fallback,
                    fallback_reason: j.fallback_reason,
                }),
                Recorded::Judged { fallback },
            )
        }
        EvaluationOutcome::Unjudged { reason } => (
            EventPayload::EvaluationFailed(EvaluationFailed {
                benchmark_run_id: benchmark_run_id.to_string(),
                evaluation_id,
                dispatch_id: dispatch_id.clone(),
                reason,
                item_id: Some(output.item_id.clone()),
                variant_id: Some(output.variant_id.clone()),
            }),
            Recorded::Unjudged,
        ),
    };
    if let Err(err) = payload.check() {
        // An evaluator answered something the catalogue refuses: a bug, not a verdict.
        tracing::error!(%dispatch_id, error = %err, "verdict refused by the catalogue; not recorded");
        return Recorded::NotStored;
    }
    let event = ValidatedEvent::from_payload(&payload, PRODUCER, Utc::now())
        .with_idempotency_key(idempotency_key(benchmark_run_id, &dispatch_id))
        .with_correlation_id(batch_id);
    match inner.log.append(vec![event]).await {
        Ok(appended) => {
            if appended.first().is_some_and(|a| !a.is_new()) {
                // Another process recorded this output's verdict first; its verdict stands.
                tracing::debug!(%dispatch_id, "verdict already recorded elsewhere");
            }
            recorded
        }
        Err(err) => {
            tracing::error!(%dispatch_id, error = %err, "cannot append the verdict; the next evaluation post retries it");
            Recorded::NotStored
        }
    }
}
