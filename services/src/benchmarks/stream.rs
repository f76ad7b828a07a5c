//! A benchmark run's stream `benchmark_run-{id}`, folded; and the dispatches a run plans.
//!
//! Both the runner and [`resume`](super::service::BenchmarkMatrixService::resume_unfinished)
//! decide from this fold alone: what the log says was created, submitted, completed and
//! recorded is what happened, whatever this process remembers.

use eventlog::catalogue::{
    ArtifactRecorded, BenchmarkDispatchCompleted, BenchmarkInput, BenchmarkItemCreated,
    BenchmarkRunCreated, EventPayload,
};
use eventlog::{EventLog, RecordedEvent, StoreError};
use std::collections::{BTreeMap, BTreeSet};

/// Events read per `read_stream` call while folding a run's stream.
const STREAM_PAGE: usize = 5_000;

/// What a run's stream says.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct RunState {
    pub version: i64,
    pub created: Option<BenchmarkRunCreated>,
    /// In the order they were created (the order of the run's `variant_ids`).
    pub items: Vec<BenchmarkItemCreated>,
    pub submitted: BTreeSet<String>,
    /// The first completion of each dispatch, by dispatch id.
    pub completions: BTreeMap<String, BenchmarkDispatchCompleted>,
    /// The first artifact of each item, by item id.
    pub artifacts: BTreeMap<String, ArtifactRecorded>,
    pub items_completed: BTreeSet<String>,
    pub completed: bool,
}

impl RunState {
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), StoreError> {
        self.version = event.stream_version;
        let payload = event.typed().map_err(|e| StoreError::Corrupt {
            position: event.position,
            what: e.to_string(),
        })?;
        match payload {
            EventPayload::BenchmarkRunCreated(p) => self.created = Some(p),
            EventPayload::BenchmarkItemCreated(p) => self.items.push(p),
            EventPayload::BenchmarkDispatchSubmitted(p) => {
                self.submitted.insert(p.dispatch_id);
            }
            EventPayload::BenchmarkDispatchCompleted(p) => {
                self.completions.entry(p.dispatch_id.clone()).or_insert(p);
            }
            EventPayload::ArtifactRecorded(p) => {
                self.artifacts.entry(p.item_id.clone()).or_insert(p);
            }
            EventPayload::BenchmarkItemCompleted(p) => {
                self.items_completed.insert(p.item_id);
            }
            EventPayload::BenchmarkRunCompleted(_) => self.completed = true,
            _ => {}
        }
        Ok(())
    }
}

/// Folds a run's whole stream.
pub(crate) async fn read_run(log: &dyn EventLog, run_id: &str) -> Result<RunState, StoreError> {
    let stream = eventlog::catalogue::benchmark_stream(run_id);
    let mut state = RunState::default();
    loop {
        let page = log.read_stream(&stream, state.version, STREAM_PAGE).await?;
        for event in &page {
            state.apply(event)?;
        }
        if page.len() < STREAM_PAGE {
            return Ok(state);
        }
    }
}

/// One dispatch a run plans for an item: input × repetition, numbered from 1.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedDispatch {
    pub dispatch_id: String,
    /// 1-based: `input_index × repetitions + repetition`.
    pub seq: u64,
    pub input: BenchmarkInput,
    /// 1-based.
    pub repetition: u32,
}

/// The id of the `n`-th item (1-based) of a run: derived, so it is the same wherever it is
/// computed, and unique across runs because the run id is.
pub fn item_id(benchmark_run_id: &str, n: usize) -> String {
    format!("{benchmark_run_id}.item-{n}")
}

/// The id of a dispatch: `studio_benchmark_<run>_<item n>_<seq>`. Deterministic, so a dispatch
/// re-sent after a restart carries the id it was first sent with (its events deduplicate by
/// idempotency keys built from it, and a provider may deduplicate on it too).
pub fn dispatch_id(benchmark_run_id: &str, item_n: usize, seq: u64) -> String {
    format!("studio_benchmark_{benchmark_run_id}_{item_n}_{seq}")
}

/// Every dispatch the run plans for its `item_n`-th item (1-based), in `seq` order: each input
/// in the order given, each repeated `repetitions` times.
pub fn planned_dispatches(run: &BenchmarkRunCreated, item_n: usize) -> Vec<PlannedDispatch> {
    let repetitions = u64::from(run.repetitions);
    run.inputs
        .iter()
        .enumerate()
        .flat_map(|(i, input)| {
            (1..=run.repetitions).map(move |repetition| {
                let seq = i as u64 * repetitions + u64::from(repetition);
                PlannedDispatch {
                    dispatch_id: dispatch_id(&run.benchmark_run_id, item_n, seq),
                    seq,
                    input: input.clone(),
                    repetition,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> BenchmarkRunCreated {
        BenchmarkRunCreated {
            benchmark_run_id: "bm_00000000-0000-0000-0000-000000000001".into(),
            dataset: "golden".into(),
            variant_ids: vec![],
            inputs: vec![
                BenchmarkInput {
                    input_id: "a".into(),
                    uri: "s3://a".into(),
                },
                BenchmarkInput {
                    input_id: "b".into(),
                    uri: "s3://b".into(),
                },
            ],
            repetitions: 3,
        }
    }

    #[test]
    fn a_run_plans_inputs_times_repetitions_numbered_from_one() {
        let planned = planned_dispatches(&run(), 2);
        assert_eq!(planned.len(), 6);
        let seqs: Vec<_> = planned.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        assert_eq!(planned[3].input.input_id, "b");
        assert_eq!(planned[3].repetition, 1);
        assert_eq!(
            planned[0].dispatch_id,
            "studio_benchmark_bm_00000000-0000-0000-0000-000000000001_2_1"
        );
    }

    #[test]
    fn planned_ids_are_the_same_every_time_and_valid_segments() {
        let (a, b) = (planned_dispatches(&run(), 1), planned_dispatches(&run(), 1));
        assert_eq!(a, b);
        for p in &a {
            eventlog::ids::check_segment(&p.dispatch_id).unwrap();
        }
        eventlog::ids::check_segment(&item_id(&run().benchmark_run_id, 12)).unwrap();
    }
}
