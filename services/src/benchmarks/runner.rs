//! [`execute`]: runs what a benchmark run's stream says is still to do, to the end.
//!
//! Given the run's folded stream, each item not yet completed gets a task that sends its
//! missing dispatches (planned minus completed) through its variant's provider, at most
//! `max_in_flight_per_provider` at a time per provider (the bound is shared by every run of the
//! process, so two runs do not double a provider's load), then writes the item's artifact from
//! every completion of the item — those the log already held and the new ones — records it,
//! and completes the item. When every item is done the run is completed.
//!
//! Every event carries an idempotency key derived from the run, item and dispatch ids, so a run
//! resumed after a restart — or, by mistake, by two processes — stores each fact once.

use super::artifact::{self, ArtifactDispatch, DispatchesArtifact, NotDispatched};
use super::service::Inner;
use super::stream::{planned_dispatches, read_run, PlannedDispatch, RunState};
use super::writer::EventWriter;
use crate::providers::{DispatchInput, DispatchRequest, Provider};
use chrono::Utc;
use eventlog::catalogue::{
    ArtifactRecorded, ArtifactType, BenchmarkDispatchCompleted, BenchmarkDispatchSubmitted,
    BenchmarkItemCompleted, BenchmarkItemCreated, BenchmarkRunCompleted, BenchmarkRunCreated,
    EventPayload,
};
use eventlog::envelope::format_timestamp;
use eventlog::ValidatedEvent;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::task::JoinSet;

/// How a run ended in this process.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// `benchmark.run_completed` is in the log.
    Completed {
        /// Dispatches sent by this process (a resumed run counts only the missing ones).
        dispatched: u64,
        /// Items completed without all their planned dispatches, and why.
        ended_items: Vec<EndedItem>,
    },
    /// Recording failed; the run stays unfinished in the log and is resumed at the next start.
    Failed { error: String },
}

/// An item completed without all its planned dispatches.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedItem {
    pub item_id: String,
    pub variant_id: String,
    pub not_dispatched: u64,
    pub reason: String,
}

/// What one item needs done.
pub(crate) struct ItemWork {
    pub item: BenchmarkItemCreated,
    pub item_n: usize,
    /// `None` when the variant's provider is not configured in this process.
    pub provider: Option<Arc<dyn Provider>>,
    pub provider_name: String,
}

/// Runs the rest of a run; see the module docs.
#[tracing::instrument(skip_all, fields(benchmark_run_id = %run.benchmark_run_id))]
pub(crate) async fn execute(
    inner: Arc<Inner>,
    run: BenchmarkRunCreated,
    state: RunState,
    items: Vec<ItemWork>,
) -> RunOutcome {
    let (writer, writer_task) = EventWriter::spawn(inner.log.clone(), inner.options.max_batch);
    let state = Arc::new(state);
    let run = Arc::new(run);
    let mut tasks = JoinSet::new();
    for work in items {
        if state.items_completed.contains(&work.item.item_id) {
            continue;
        }
        tasks.spawn(run_item(
            inner.clone(),
            run.clone(),
            state.clone(),
            writer.clone(),
            work,
        ));
    }
    let mut dispatched = 0;
    let mut ended_items = Vec::new();
    let mut error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((sent, ended))) => {
                dispatched += sent;
                ended_items.extend(ended);
            }
            Ok(Err(err)) => {
                error.get_or_insert(err);
            }
            Err(join) => {
                error.get_or_insert(format!("an item task ended abnormally: {join}"));
            }
        }
    }
    let outcome = match error {
        Some(error) => RunOutcome::Failed { error },
        None => {
            writer.push(event(
                &inner,
                EventPayload::BenchmarkRunCompleted(BenchmarkRunCompleted {
                    benchmark_run_id: run.benchmark_run_id.clone(),
                }),
                format!("{}:completed", run.benchmark_run_id),
            ));
            match writer.flush().await {
                Ok(()) => RunOutcome::Completed {
                    dispatched,
                    ended_items,
                },
                Err(error) => RunOutcome::Failed { error },
            }
        }
    };
    drop(writer);
    let _ = writer_task.await;
    match &outcome {
        RunOutcome::Completed {
            dispatched,
            ended_items,
        } => tracing::info!(
            dispatched,
            ended_items = ended_items.len(),
            "benchmark run completed"
        ),
        RunOutcome::Failed { error } => tracing::error!(
            %error,
            "benchmark run could not be recorded; it stays unfinished and resumes at the next start"
        ),
    }
    outcome
}

fn event(inner: &Inner, payload: EventPayload, idempotency_key: String) -> ValidatedEvent {
    ValidatedEvent::from_payload(&payload, &inner.options.producer, Utc::now())
        .with_idempotency_key(idempotency_key)
}

/// Sends the item's missing dispatches, then writes and records its artifact and completes
/// it. Answers how many dispatches it sent and, when some could not be sent, why.
async fn run_item(
    inner: Arc<Inner>,
    run: Arc<BenchmarkRunCreated>,
    state: Arc<RunState>,
    writer: EventWriter,
    work: ItemWork,
) -> Result<(u64, Option<EndedItem>), String> {
    let item = &work.item;
    let planned = planned_dispatches(&run, work.item_n);
    let mut completions: BTreeMap<String, BenchmarkDispatchCompleted> = planned
        .iter()
        .filter_map(|p| state.completions.get(&p.dispatch_id))
        .map(|c| (c.dispatch_id.clone(), c.clone()))
        .collect();
    let missing: Vec<PlannedDispatch> = planned
        .iter()
        .filter(|p| !completions.contains_key(&p.dispatch_id))
        .cloned()
        .collect();

    let mut sent = 0;
    let mut not_dispatched = Vec::new();
    let mut ended = None;
    match (&work.provider, missing.is_empty()) {
        (_, true) => {}
        (None, false) => {
            let reason = format!(
                "not dispatched: provider {:?} has no [providers.{}] entry in the process that \
                 resumed the run; the item was completed with what had run",
                work.provider_name, work.provider_name
            );
            tracing::warn!(item_id = %item.item_id, missing = missing.len(), %reason, "benchmark item ended early");
            not_dispatched = missing
                .iter()
                .map(|p| NotDispatched {
                    dispatch_id: p.dispatch_id.clone(),
                    seq: p.seq,
                    input_id: p.input.input_id.clone(),
                    repetition: p.repetition,
                    reason: reason.clone(),
                })
                .collect();
            ended = Some(EndedItem {
                item_id: item.item_id.clone(),
                variant_id: item.variant_id.clone(),
                not_dispatched: missing.len() as u64,
                reason,
            });
        }
        (Some(provider), false) => {
            let permits = inner
                .permits
                .get(&work.provider_name)
                .cloned()
                .ok_or_else(|| {
                    format!("no concurrency bound for provider {}", work.provider_name)
                })?;
            let mut dispatches = JoinSet::new();
            for planned in missing {
                let (provider, permits, writer) =
                    (provider.clone(), permits.clone(), writer.clone());
                let (inner, item) = (inner.clone(), item.clone());
                dispatches.spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return None;
                    };
                    if writer.failed() {
                        return None;
                    }
                    Some(dispatch(&inner, &writer, &item, provider.as_ref(), planned).await)
                });
            }
            while let Some(joined) = dispatches.join_next().await {
                match joined {
                    Ok(Some(completed)) => {
                        sent += 1;
                        completions.insert(completed.dispatch_id.clone(), completed);
                    }
                    Ok(None) => {}
                    Err(join) => return Err(format!("a dispatch task ended abnormally: {join}")),
                }
            }
        }
    }
    // The artifact describes what the log holds, read back once every completion is durable:
    // were another process finishing the same run, its completions are the ones that count.
    writer.flush().await?;
    let stored = read_run(inner.log.as_ref(), &run.benchmark_run_id)
        .await
        .map_err(|e| {
            format!(
                "cannot read back benchmark run {}: {e}",
                run.benchmark_run_id
            )
        })?;
    for p in &planned {
        if let Some(c) = stored.completions.get(&p.dispatch_id) {
            completions.insert(p.dispatch_id.clone(), c.clone());
        }
    }
    if completions.len() + not_dispatched.len() < planned.len() {
        return Err(format!(
            "item {} has {} of {} dispatches recorded",
            item.item_id,
            completions.len(),
            planned.len()
        ));
    }

    if !stored.artifacts.contains_key(&item.item_id) {
        let by_id: BTreeMap<&str, &PlannedDispatch> = planned
            .iter()
            .map(|p| (p.dispatch_id.as_str(), p))
            .collect();
        let dispatches = completions
            .values()
            .filter_map(|c| {
                let p = by_id.get(c.dispatch_id.as_str())?;
                Some(ArtifactDispatch {
                    dispatch_id: c.dispatch_id.clone(),
                    seq: p.seq,
                    input_id: c.input_id.clone(),
                    input_uri: p.input.uri.clone(),
                    repetition: p.repetition,
                    outcome: c.outcome,
                    output_uri: c.output_uri.clone(),
                    latency_ms: c.latency_ms,
                    service_time_ms: c.service_time_ms,
                    cost_usd: c.cost_usd,
                    error: c.error.clone(),
                })
            })
            .collect();
        let document = DispatchesArtifact::new(
            &run.benchmark_run_id,
            &run.dataset,
            &item.item_id,
            &item.variant_id,
            planned.len() as u64,
            dispatches,
            not_dispatched,
        );
        let dispatch_ids = document
            .dispatches
            .iter()
            .map(|d| d.dispatch_id.clone())
            .collect();
        let bytes = document.to_bytes();
        let (dir, run_id, item_id) = (
            inner.artifact_dir.clone(),
            run.benchmark_run_id.clone(),
            item.item_id.clone(),
        );
        let written = tokio::task::spawn_blocking(move || {
            artifact::write_atomically(&dir, &run_id, &item_id, &bytes)
        })
        .await
        .map_err(|e| format!("the artifact writer ended abnormally: {e}"))?
        .map_err(|e| {
            format!(
                "cannot write the artifact of item {} under {}: {e}",
                item.item_id,
                inner.artifact_dir.display()
            )
        })?;
        writer.push(event(
            &inner,
            EventPayload::ArtifactRecorded(ArtifactRecorded {
                benchmark_run_id: run.benchmark_run_id.clone(),
                item_id: item.item_id.clone(),
                artifact_type: ArtifactType::BenchmarkVariantDispatches,
                uri: written.uri,
                dispatch_ids,
                sha256: written.sha256,
            }),
            format!("{}:artifact", item.item_id),
        ));
    }
    writer.push(event(
        &inner,
        EventPayload::BenchmarkItemCompleted(BenchmarkItemCompleted {
            benchmark_run_id: run.benchmark_run_id.clone(),
            item_id: item.item_id.clone(),
        }),
        format!("{}:completed", item.item_id),
    ));
    writer.flush().await?;
    Ok((sent, ended))
}

/// Sends one dispatch and records it: `dispatch_submitted` when it is sent (the permit is
/// held), `dispatch_completed` when the provider answers. Latency runs from the send, so the
/// wait for a permit is not charged to the provider.
async fn dispatch(
    inner: &Inner,
    writer: &EventWriter,
    item: &BenchmarkItemCreated,
    provider: &dyn Provider,
    planned: PlannedDispatch,
) -> BenchmarkDispatchCompleted {
    let sent_at = Utc::now();
    let started = std::time::Instant::now();
    writer.push(event(
        inner,
        EventPayload::BenchmarkDispatchSubmitted(BenchmarkDispatchSubmitted {
            benchmark_run_id: item.benchmark_run_id.clone(),
            item_id: item.item_id.clone(),
            input_id: planned.input.input_id.clone(),
            dispatch_id: planned.dispatch_id.clone(),
            seq: planned.seq,
            variant_id: item.variant_id.clone(),
            scheduled_at: format_timestamp(sent_at),
        }),
        format!("{}:submitted", planned.dispatch_id),
    ));
    let request = DispatchRequest {
        dispatch_id: planned.dispatch_id.clone(),
        variant_id: item.variant_id.clone(),
        input: DispatchInput {
            input_id: planned.input.input_id.clone(),
            uri: planned.input.uri.clone(),
        },
    };
    let result = provider.dispatch(&request).await;
    let completed = BenchmarkDispatchCompleted {
        benchmark_run_id: item.benchmark_run_id.clone(),
        item_id: item.item_id.clone(),
        input_id: planned.input.input_id,
        dispatch_id: planned.dispatch_id.clone(),
        outcome: result.outcome(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        service_time_ms: Some(result.service_time().as_secs_f64() * 1000.0),
        cost_usd: result.cost_usd(),
        error: result.error().map(str::to_owned),
        output_uri: result.output_uri().map(str::to_owned),
    };
    writer.push(event(
        inner,
        EventPayload::BenchmarkDispatchCompleted(completed.clone()),
        format!("{}:completed", planned.dispatch_id),
    ));
    completed
}
