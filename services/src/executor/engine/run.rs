//! [`execute`]: one run's scheduling loop.
//!
//! The loop owns the schedule, the aggregator and the event buffer; dispatches run in their own
//! tasks and report back over a channel, so a slow provider never delays an arrival. On each
//! wake-up the loop starts the stages whose time has come, takes every arrival now due
//! (sending it, or counting it missed when `max_in_flight` dispatches are running or it is
//! already later than `late_after`), records the completions that came in, evaluates the stop
//! condition and flushes the buffer when due. It sleeps until the earliest of the next arrival,
//! the next stage, the next flush and the next evaluation, and wakes early for a completion or
//! the cancel signal.

use super::batcher::{EventBatcher, MissReason};
use super::config::{EngineError, EngineOptions, RunEnded, RunSpec};
use crate::executor::aggregator::LoadTestMetricsAggregator;
use crate::executor::planner::LoadTestStageRatePlanner;
use crate::providers::{DispatchInput, DispatchRequest, DispatchResult, Provider};
use chrono::{DateTime, Utc};
use eventlog::catalogue::{
    CostOverrun, EventPayload, LoadDispatchCompleted, LoadDispatchSubmitted, RunCompleted,
    StageStarted, StopConditionBreached,
};
use eventlog::envelope::format_timestamp;
use eventlog::ids::DispatchId;
use eventlog::EventLog;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tracing::{debug, instrument};

/// What a dispatch task reports when its provider answers.
struct Completion {
    dispatch_id: String,
    stage_index: u32,
    /// The planned instant; latency is measured from it, not from the send.
    scheduled: Instant,
    completed: Instant,
    result: DispatchResult,
}

/// Where the loop is: still sending arrivals, or waiting for the dispatches in flight before
/// it ends the way it has decided.
enum Phase {
    Scheduling,
    Draining(RunEnded),
}

/// Runs `spec`'s schedule against `provider` and records it; see the module docs.
///
/// Appends `stage_started`, `dispatch_submitted`, `dispatch_completed`, `arrivals_missed`, and
/// at the end `stop_condition_breached` or `run_completed`; never `run_started` or
/// `run_cancelled`, which belong to the caller. Returns once every dispatch sent is recorded
/// durably; an append error ends the run with that error.
#[instrument(skip_all, fields(run_id = %spec.run.run_id), err)]
pub async fn execute(
    log: Arc<dyn EventLog>,
    spec: RunSpec,
    provider: Arc<dyn Provider>,
    input: DispatchInput,
    options: EngineOptions,
    mut cancel: watch::Receiver<bool>,
) -> Result<RunEnded, EngineError> {
    let run = spec.run;
    let planner = LoadTestStageRatePlanner::new(&run.stages)?;
    let mut aggregator = LoadTestMetricsAggregator::new(run.stop_conditions.clone());
    let mut batcher = EventBatcher::new(
        log,
        &run.run_id,
        &options.producer,
        options.max_in_flight,
        options.late_after.as_millis(),
    );
    // Permits are held by the dispatch tasks themselves, so a finished dispatch frees its slot
    // at once, before the loop has read its completion.
    let in_flight = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let (completion_tx, mut completion_rx) = mpsc::unbounded_channel::<Completion>();

    let start = Instant::now();
    let start_wall = Utc::now();
    let wall_at = |offset: Duration| -> DateTime<Utc> {
        start_wall + chrono::Duration::from_std(offset).unwrap_or(chrono::Duration::MAX)
    };
    let plan_end = planner.total_duration();
    let end_seq = planner.total_arrivals() + 1;

    let mut phase = Phase::Scheduling;
    let mut next_seq: u64 = 1;
    let mut next_stage: usize = 0;
    let mut outstanding: u64 = 0;
    let mut cancel_open = true;
    let mut next_flush = start + options.flush_every;
    let mut next_evaluation = start + options.stop_evaluation_every;
    let mut spend = Spend::new(run.estimated_cost_usd, options.cost_limit_factor);

    loop {
        let now = Instant::now();
        let now_offset = now - start;

        if matches!(phase, Phase::Scheduling) {
            if cancel_open && *cancel.borrow_and_update() {
                debug!(dispatched = next_seq - 1, "run cancelled");
                phase = Phase::Draining(RunEnded::Cancelled);
            } else {
                while let Some(bounds) = planner.stage_bounds(next_stage) {
                    if bounds.start > now_offset {
                        break;
                    }
                    let stage = &run.stages[next_stage];
                    let payload = EventPayload::StageStarted(StageStarted {
                        run_id: run.run_id.clone(),
                        stage_index: next_stage as u32,
                        target_rps: stage.target_rps,
                    });
                    batcher.push(&payload, wall_at(bounds.start));
                    next_stage += 1;
                }
                for seq in planner.due(next_seq, now_offset) {
                    let Some(arrival) = planner.arrival(seq) else {
                        break;
                    };
                    let stage_index = arrival.stage_index as u32;
                    if now_offset > arrival.offset + options.late_after {
                        batcher.miss(stage_index, MissReason::Late);
                        continue;
                    }
                    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                        batcher.miss(stage_index, MissReason::InFlightLimit);
                        continue;
                    };
                    let dispatch_id = DispatchId::new(&run.run_id, seq).to_string();
                    let payload = EventPayload::LoadDispatchSubmitted(LoadDispatchSubmitted {
                        run_id: run.run_id.clone(),
                        dispatch_id: dispatch_id.clone(),
                        seq,
                        stage_index,
                        variant_id: run.variant_id.clone(),
                        scheduled_at: format_timestamp(wall_at(arrival.offset)),
                    });
                    batcher.push(&payload, Utc::now());
                    let request = DispatchRequest {
                        dispatch_id: dispatch_id.clone(),
                        variant_id: run.variant_id.clone(),
                        input: input.clone(),
                    };
                    let provider = provider.clone();
                    let completion_tx = completion_tx.clone();
                    let scheduled = start + arrival.offset;
                    tokio::spawn(async move {
                        let result = provider.dispatch(&request).await;
                        let completed = Instant::now();
                        drop(permit);
                        // The loop outlives every dispatch it counts as outstanding.
                        let _ = completion_tx.send(Completion {
                            dispatch_id,
                            stage_index,
                            scheduled,
                            completed,
                            result,
                        });
                    });
                    outstanding += 1;
                }
                next_seq = next_seq.max(planner.due(next_seq, now_offset).end);
                if next_seq >= end_seq && now_offset >= plan_end {
                    phase = Phase::Draining(RunEnded::Completed);
                }
            }
        }

        while let Ok(completion) = completion_rx.try_recv() {
            outstanding -= 1;
            spend.add(&completion.result);
            record_completion(
                &run.run_id,
                start,
                &wall_at,
                &mut aggregator,
                &mut batcher,
                completion,
            );
        }

        if matches!(phase, Phase::Scheduling) {
            if let Some(overrun) = spend.overrun() {
                debug!(?overrun, "cost guard stopped the run");
                let payload = EventPayload::StopConditionBreached(StopConditionBreached {
                    run_id: run.run_id.clone(),
                    failure_rate: spend.failure_rate(),
                    window_s: 0,
                    alarm_name: None,
                    cost_overrun: Some(overrun.clone()),
                });
                batcher.push(&payload, Utc::now());
                phase = Phase::Draining(RunEnded::CostExceeded(overrun));
            }
        }

        if now >= next_evaluation {
            next_evaluation = now + options.stop_evaluation_every;
            if matches!(phase, Phase::Scheduling) {
                if let Some(breach) = aggregator.evaluate(now_offset) {
                    debug!(
                        failure_rate = breach.failure_rate,
                        "stop condition breached"
                    );
                    let payload = EventPayload::StopConditionBreached(StopConditionBreached {
                        run_id: run.run_id.clone(),
                        failure_rate: breach.failure_rate,
                        window_s: breach.window_s,
                        alarm_name: None,
                        cost_overrun: None,
                    });
                    batcher.push(&payload, Utc::now());
                    phase = Phase::Draining(RunEnded::Stopped(breach));
                }
            }
        }

        if let Phase::Draining(ended) = &phase {
            if outstanding == 0 {
                let ended = ended.clone();
                if ended == RunEnded::Completed {
                    let payload = EventPayload::RunCompleted(RunCompleted {
                        run_id: run.run_id.clone(),
                    });
                    batcher.push(&payload, Utc::now());
                }
                batcher.close().await?;
                return Ok(ended);
            }
        }

        if batcher.len() >= options.max_batch || now >= next_flush {
            batcher.flush().await?;
            next_flush = Instant::now() + options.flush_every;
        }

        let mut wake = next_flush.min(next_evaluation);
        if matches!(phase, Phase::Scheduling) {
            let next_event = match planner.arrival(next_seq) {
                Some(arrival) => arrival.offset,
                None => plan_end,
            };
            let next_event = planner
                .stage_bounds(next_stage)
                .map_or(next_event, |b| b.start.min(next_event));
            wake = wake.min(start + next_event);
        }
        let watch_cancel = cancel_open && matches!(phase, Phase::Scheduling);
        tokio::select! {
            biased;
            changed = cancel.changed(), if watch_cancel => {
                // A dropped sender can never cancel; stop watching it rather than spin.
                if changed.is_err() {
                    cancel_open = false;
                }
            }
            Some(completion) = completion_rx.recv(), if outstanding > 0 => {
                outstanding -= 1;
                spend.add(&completion.result);
                record_completion(&run.run_id, start, &wall_at, &mut aggregator, &mut batcher, completion);
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// What the run has spent so far, against the cost guard's limit.
struct Spend {
    cost_usd: f64,
    completions: u64,
    failures: u64,
    estimate_usd: Option<f64>,
    limit_factor: f64,
}

impl Spend {
    fn new(estimate_usd: Option<f64>, limit_factor: f64) -> Self {
        Self {
            cost_usd: 0.0,
            completions: 0,
            failures: 0,
            estimate_usd,
            limit_factor,
        }
    }

    fn add(&mut self, result: &DispatchResult) {
        self.cost_usd += result.cost_usd().unwrap_or(0.0);
        self.completions += 1;
        self.failures += u64::from(result.outcome() != eventlog::catalogue::Outcome::Succeeded);
    }

    fn failure_rate(&self) -> f64 {
        if self.completions == 0 {
            0.0
        } else {
            self.failures as f64 / self.completions as f64
        }
    }

    /// The overrun, once the actual cost is above estimate × factor. A run with no estimate
    /// (the variant has no unit cost) was approved without one and has no limit to pass.
    fn overrun(&self) -> Option<CostOverrun> {
        let estimate = self.estimate_usd?;
        (self.cost_usd > estimate * self.limit_factor).then_some(CostOverrun {
            actual_cost_usd: self.cost_usd,
            estimated_cost_usd: estimate,
            limit_factor: self.limit_factor,
        })
    }
}

fn record_completion(
    run_id: &str,
    start: Instant,
    wall_at: &impl Fn(Duration) -> DateTime<Utc>,
    aggregator: &mut LoadTestMetricsAggregator,
    batcher: &mut EventBatcher,
    completion: Completion,
) {
    let outcome = completion.result.outcome();
    aggregator.record(completion.completed - start, outcome);
    let latency = completion
        .completed
        .saturating_duration_since(completion.scheduled);
    let payload = EventPayload::LoadDispatchCompleted(LoadDispatchCompleted {
        run_id: run_id.to_owned(),
        dispatch_id: completion.dispatch_id,
        outcome,
        latency_ms: latency.as_secs_f64() * 1000.0,
        service_time_ms: Some(completion.result.service_time().as_secs_f64() * 1000.0),
        cost_usd: completion.result.cost_usd(),
        error: completion.result.error().map(str::to_owned),
        stage_index: Some(completion.stage_index),
    });
    batcher.push(&payload, wall_at(completion.completed - start));
}
