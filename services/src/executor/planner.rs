//! `LoadTestStageRatePlanner`: the open-model schedule of a load-test run.
//!
//! Each stage sends `target_rps` for `duration_s`: it plans
//! `n = round(duration_s × target_rps)` arrivals (the rule of
//! [`eventlog::catalogue::planned_arrivals`], which the projections also use), and the i-th
//! arrival of a stage (0-based) is planned at `stage_start + i × duration / n`. Arrivals happen
//! at those instants whatever the provider does — an open model — so a slow provider shows up
//! as latency and missed arrivals, never as a lower offered rate.
//!
//! Dispatch `seq` numbers start at 1 and run across the stages in order, exactly as
//! [`eventlog::catalogue::stage_of_seq`] assumes.
//!
//! Everything is integer nanoseconds computed from the stage's own start, never an accumulated
//! float step: a 0.3 rps stage of 10,000 s has the same spacing at its end as at its start. A
//! planned instant that is not a whole nanosecond is rounded *up*, so an arrival is never
//! offered before its planned instant.
//!
//! The planner is pure: time is an offset from the run's start, passed in by the caller.

use eventlog::catalogue::{planned_arrivals, Stage};
use std::iter::FusedIterator;
use std::ops::Range;
use std::time::Duration;

/// The largest plan the executor accepts. At 2,000 dispatches/s this is over 80 minutes; a
/// larger plan is almost certainly a typo in `duration_s` or `target_rps`, and each arrival
/// becomes two events in the log.
pub const MAX_PLANNED_ARRIVALS: u64 = 10_000_000;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Why a list of stages cannot be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("a load test needs at least one stage")]
    NoStages,
    #[error("stage {index} ({name:?}) has a duration of 0 s")]
    ZeroDuration { index: usize, name: String },
    #[error("stage {index} ({name:?}) has target_rps {target_rps}; it must be a positive number")]
    NonPositiveRate {
        index: usize,
        name: String,
        target_rps: f64,
    },
    #[error("the plan has {planned} arrivals; at most {MAX_PLANNED_ARRIVALS} are allowed")]
    TooManyArrivals { planned: u64 },
    #[error("the stages' durations add up to more than {} s", u64::MAX)]
    DurationOverflow,
}

/// One planned dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// 1-based, running across stages.
    pub seq: u64,
    pub stage_index: usize,
    /// The planned instant, from the run's start.
    pub offset: Duration,
}

/// Where a stage sits in time and in seq numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageBounds {
    /// From the run's start; the stage covers `start..end`.
    pub start: Duration,
    pub end: Duration,
    /// The seq numbers the stage dispatches; empty when the stage rounds to no arrival.
    pub seqs: Range<u64>,
}

impl StageBounds {
    pub fn arrivals(&self) -> u64 {
        self.seqs.end - self.seqs.start
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedStage {
    start_ns: u128,
    duration_ns: u128,
    first_seq: u64,
    arrivals: u64,
}

impl PlannedStage {
    /// One past the last seq of this stage.
    fn end_seq(&self) -> u64 {
        self.first_seq + self.arrivals
    }

    fn end_ns(&self) -> u128 {
        self.start_ns + self.duration_ns
    }

    /// `start + ceil(i × duration / n)`, for `i < n`.
    fn offset_ns_of(&self, i: u64) -> u128 {
        let n = u128::from(self.arrivals);
        self.start_ns + (u128::from(i) * self.duration_ns).div_ceil(n)
    }

    /// How many of this stage's arrivals are planned at or before `t_ns` into the stage.
    ///
    /// `ceil(i·D/n) ≤ t` ⟺ `i·D/n ≤ t` (t is whole) ⟺ `i ≤ floor(t·n/D)`.
    fn due_within(&self, t_ns: u128) -> u64 {
        if self.arrivals == 0 {
            return 0;
        }
        let last_due = t_ns * u128::from(self.arrivals) / self.duration_ns;
        // `last_due + 1` can only exceed `arrivals` when `t_ns ≥ duration`, bounded by `n`.
        u64::try_from(last_due + 1).map_or(self.arrivals, |due| due.min(self.arrivals))
    }
}

/// The open-model schedule of one run; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadTestStageRatePlanner {
    stages: Vec<PlannedStage>,
    total_arrivals: u64,
    total_ns: u128,
}

impl LoadTestStageRatePlanner {
    /// Plans `stages`, refusing an empty plan, a stage of 0 s, a rate that is not a positive
    /// finite number and plans above [`MAX_PLANNED_ARRIVALS`].
    ///
    /// A stage whose `duration_s × target_rps` rounds to 0 is accepted: it occupies its time
    /// and sends nothing, as the projections count it.
    pub fn new(stages: &[Stage]) -> Result<Self, PlanError> {
        if stages.is_empty() {
            return Err(PlanError::NoStages);
        }
        for (index, stage) in stages.iter().enumerate() {
            if stage.duration_s == 0 {
                return Err(PlanError::ZeroDuration {
                    index,
                    name: stage.name.clone(),
                });
            }
            if !(stage.target_rps.is_finite() && stage.target_rps > 0.0) {
                return Err(PlanError::NonPositiveRate {
                    index,
                    name: stage.name.clone(),
                    target_rps: stage.target_rps,
                });
            }
        }
        let counts = planned_arrivals(stages);
        let planned = counts.iter().fold(0u64, |sum, n| sum.saturating_add(*n));
        if planned > MAX_PLANNED_ARRIVALS {
            return Err(PlanError::TooManyArrivals { planned });
        }
        let total_s = stages
            .iter()
            .try_fold(0u64, |sum, s| sum.checked_add(s.duration_s))
            .ok_or(PlanError::DurationOverflow)?;

        let mut planned_stages = Vec::with_capacity(stages.len());
        let (mut start_ns, mut first_seq) = (0u128, 1u64);
        for (stage, arrivals) in stages.iter().zip(counts) {
            let duration_ns = u128::from(stage.duration_s) * NANOS_PER_SECOND;
            planned_stages.push(PlannedStage {
                start_ns,
                duration_ns,
                first_seq,
                arrivals,
            });
            start_ns += duration_ns;
            first_seq += arrivals;
        }
        Ok(Self {
            stages: planned_stages,
            total_arrivals: planned,
            total_ns: u128::from(total_s) * NANOS_PER_SECOND,
        })
    }

    pub fn total_arrivals(&self) -> u64 {
        self.total_arrivals
    }

    pub fn total_duration(&self) -> Duration {
        duration_from_ns(self.total_ns)
    }

    pub fn stage_count(&self) -> usize {
        self.stages.len()
    }

    /// Stage `k`'s time span and seq numbers, or `None` past the last stage.
    pub fn stage_bounds(&self, k: usize) -> Option<StageBounds> {
        self.stages.get(k).map(|s| StageBounds {
            start: duration_from_ns(s.start_ns),
            end: duration_from_ns(s.end_ns()),
            seqs: s.first_seq..s.end_seq(),
        })
    }

    /// The stage running at `offset` (stages cover `start..end`), or `None` once the plan is over.
    pub fn stage_at(&self, offset: Duration) -> Option<usize> {
        let ns = offset.as_nanos();
        (ns < self.total_ns).then(|| self.stages.partition_point(|s| s.end_ns() <= ns))
    }

    /// The stage dispatch `seq` belongs to; agrees with [`eventlog::catalogue::stage_of_seq`].
    pub fn stage_of_seq(&self, seq: u64) -> Option<usize> {
        (1..=self.total_arrivals)
            .contains(&seq)
            .then(|| self.stages.partition_point(|s| s.end_seq() <= seq))
    }

    /// Arrival `seq`, or `None` when the plan has no such seq.
    pub fn arrival(&self, seq: u64) -> Option<Arrival> {
        let stage_index = self.stage_of_seq(seq)?;
        let stage = &self.stages[stage_index];
        Some(Arrival {
            seq,
            stage_index,
            offset: duration_from_ns(stage.offset_ns_of(seq - stage.first_seq)),
        })
    }

    /// Every arrival in seq order (offsets are non-decreasing).
    pub fn arrivals(&self) -> Arrivals<'_> {
        self.arrivals_from(1)
    }

    /// The arrivals from `seq` on, e.g. to resume a run after its last submitted dispatch.
    pub fn arrivals_from(&self, seq: u64) -> Arrivals<'_> {
        let next_seq = seq.max(1);
        Arrivals {
            planner: self,
            next_seq,
            end_seq: self.total_arrivals + 1,
            stage_index: self.stage_of_seq(next_seq).unwrap_or(self.stages.len()),
        }
    }

    /// How many arrivals are planned at or before `now` (all of them once the plan is over).
    pub fn due_count(&self, now: Duration) -> u64 {
        let ns = now.as_nanos();
        match self.stage_at(now) {
            None => self.total_arrivals,
            Some(k) => {
                let stage = &self.stages[k];
                stage.first_seq - 1 + stage.due_within(ns - stage.start_ns)
            }
        }
    }

    /// The seq numbers from `from_seq` (the first not yet handled) whose planned instant is at
    /// or before `now`. The executor calls this on each timer tick and then passes `range.end`
    /// as the next `from_seq`; arrivals are never returned before their instant.
    pub fn due(&self, from_seq: u64, now: Duration) -> Range<u64> {
        let start = from_seq.max(1);
        let end = self.due_count(now) + 1;
        start..end.max(start)
    }
}

/// Iterator over planned arrivals; see [`LoadTestStageRatePlanner::arrivals`].
#[derive(Debug, Clone)]
pub struct Arrivals<'a> {
    planner: &'a LoadTestStageRatePlanner,
    next_seq: u64,
    end_seq: u64,
    stage_index: usize,
}

impl Iterator for Arrivals<'_> {
    type Item = Arrival;

    fn next(&mut self) -> Option<Arrival> {
        if self.next_seq >= self.end_seq {
            return None;
        }
        let seq = self.next_seq;
        // Skips finished stages and stages that round to no arrival.
        while self.planner.stages[self.stage_index].end_seq() <= seq {
            self.stage_index += 1;
        }
        let stage = &self.planner.stages[self.stage_index];
        self.next_seq += 1;
        Some(Arrival {
            seq,
            stage_index: self.stage_index,
            offset: duration_from_ns(stage.offset_ns_of(seq - stage.first_seq)),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end_seq.saturating_sub(self.next_seq);
        let left = usize::try_from(left).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Arrivals<'_> {}
impl FusedIterator for Arrivals<'_> {}

fn duration_from_ns(ns: u128) -> Duration {
    // Offsets are bounded by the plan's total, whose seconds fit in a u64 (checked in `new`).
    let secs = u64::try_from(ns / NANOS_PER_SECOND).unwrap_or(u64::MAX);
    let nanos = u32::try_from(ns % NANOS_PER_SECOND).unwrap_or(0);
    Duration::new(secs, nanos)
}

#[cfg(test)]
mod load_test_stage_rate_planner_test {
    use super::*;
    use eventlog::catalogue::stage_of_seq;

    fn stage(name: &str, duration_s: u64, target_rps: f64) -> Stage {
        Stage {
            name: name.to_owned(),
            duration_s,
            target_rps,
        }
    }

    fn plan(stages: &[Stage]) -> LoadTestStageRatePlanner {
        LoadTestStageRatePlanner::new(stages).expect("a valid plan")
    }

    fn secs_f(seconds: u64, nanos: u32) -> Duration {
        Duration::new(seconds, nanos)
    }

    #[test]
    fn each_stage_plans_duration_times_rps_rounded_to_whole_arrivals() {
        let stages = [
            stage("warm-up", 60, 10.0),
            stage("ramp", 30, 2.5),
            stage("steady", 7, 0.3),
            stage("spike", 10, 1_000.0),
        ];
        let planner = plan(&stages);
        let per_stage: Vec<u64> = (0..stages.len())
            .map(|k| planner.stage_bounds(k).unwrap().arrivals())
            .collect();
        assert_eq!(per_stage, vec![600, 75, 2, 10_000]);
        assert_eq!(planner.total_arrivals(), 600 + 75 + 2 + 10_000);
        assert_eq!(planner.arrivals().len(), 10_677);
        let mut counted = vec![0u64; stages.len()];
        for arrival in planner.arrivals() {
            counted[arrival.stage_index] += 1;
        }
        assert_eq!(counted, per_stage);
        assert_eq!(planner.total_duration(), Duration::from_secs(107));
    }

    #[test]
    fn arrivals_and_stages_agree_with_the_projection_for_every_seq() {
        let plans = [
            vec![stage("a", 60, 10.0), stage("b", 30, 2.5)],
            vec![stage("a", 7, 0.3), stage("b", 3, 2.5), stage("c", 11, 0.3)],
            vec![stage("a", 1, 0.4), stage("b", 5, 1.5), stage("c", 1, 0.2)],
            vec![
                stage("a", 3, 0.5),
                stage("b", 100, 33.3),
                stage("c", 2, 1.0),
            ],
        ];
        for stages in &plans {
            let planner = plan(stages);
            let planned: u64 = planned_arrivals(stages).iter().sum();
            assert_eq!(planner.total_arrivals(), planned, "{stages:?}");
            for seq in 0..=planned + 2 {
                assert_eq!(
                    planner.stage_of_seq(seq),
                    stage_of_seq(stages, seq),
                    "seq {seq} of {stages:?}"
                );
                assert_eq!(
                    planner.arrival(seq).map(|a| a.stage_index),
                    stage_of_seq(stages, seq),
                    "seq {seq} of {stages:?}"
                );
            }
            let from_iterator: Vec<(u64, usize)> =
                planner.arrivals().map(|a| (a.seq, a.stage_index)).collect();
            let from_projection: Vec<(u64, usize)> = (1..=planned)
                .map(|seq| (seq, stage_of_seq(stages, seq).unwrap()))
                .collect();
            assert_eq!(from_iterator, from_projection, "{stages:?}");
        }
    }

    #[test]
    fn a_stage_that_rounds_to_no_arrival_keeps_its_time_and_sends_nothing() {
        // 0.4 arrivals round to 0, as in `planned_arrivals`.
        let stages = [
            stage("a", 2, 1.0),
            stage("quiet", 1, 0.4),
            stage("b", 2, 1.0),
        ];
        let planner = plan(&stages);
        assert_eq!(planner.stage_bounds(1).unwrap().seqs, 3..3);
        assert_eq!(planner.stage_at(secs_f(2, 500_000_000)), Some(1));
        let arrivals: Vec<(u64, usize, Duration)> = planner
            .arrivals()
            .map(|a| (a.seq, a.stage_index, a.offset))
            .collect();
        assert_eq!(
            arrivals,
            vec![
                (1, 0, secs_f(0, 0)),
                (2, 0, secs_f(1, 0)),
                (3, 2, secs_f(3, 0)),
                (4, 2, secs_f(4, 0)),
            ]
        );
        assert_eq!(planner.due(3, secs_f(2, 999_999_999)), 3..3);
        assert_eq!(planner.due(3, secs_f(3, 0)), 3..4);
    }

    #[test]
    fn arrivals_are_evenly_spaced_from_their_stage_start() {
        let planner = plan(&[stage("a", 10, 4.0), stage("b", 3, 2.5)]);
        let offsets: Vec<Duration> = planner.arrivals().map(|a| a.offset).collect();
        for (i, offset) in offsets[..40].iter().enumerate() {
            assert_eq!(*offset, Duration::from_millis(250 * i as u64));
        }
        // 2.5 rps × 3 s = 7.5, rounded to 8 arrivals spread over 3 s: every 375 ms.
        for (i, offset) in offsets[40..].iter().enumerate() {
            assert_eq!(*offset, Duration::from_millis(10_000 + 375 * i as u64));
        }
        assert_eq!(offsets.len(), 48);
    }

    #[test]
    fn an_arrival_is_never_due_before_its_planned_instant() {
        let planner = plan(&[stage("a", 7, 0.3), stage("b", 3, 3.0), stage("c", 2, 7.0)]);
        let all: Vec<Arrival> = planner.arrivals().collect();
        let mut next = 1;
        // A coarse, jittery timer: ticks every 37 ms plus some nanoseconds, up to past the end.
        for tick in 0..400u64 {
            let now = Duration::from_nanos(tick * 37_000_000 + tick % 7);
            let due = planner.due(next, now);
            assert_eq!(due.start, next);
            for seq in due.clone() {
                assert!(
                    all[(seq - 1) as usize].offset <= now,
                    "seq {seq} at {now:?}"
                );
            }
            if let Some(following) = all.get((due.end - 1) as usize) {
                assert!(following.offset > now, "seq {} at {now:?}", following.seq);
            }
            assert_eq!(due.end - 1, planner.due_count(now));
            next = due.end;
        }
        assert_eq!(next, planner.total_arrivals() + 1);
        // Exactly at an instant the arrival is due; one nanosecond before it is not.
        let third = all[2].offset;
        assert_eq!(planner.due_count(third), 3);
        assert_eq!(planner.due_count(third - Duration::from_nanos(1)), 2);
    }

    #[test]
    fn a_range_already_handled_is_not_returned_again() {
        let planner = plan(&[stage("a", 10, 1.0)]);
        assert_eq!(planner.due(1, secs_f(4, 0)), 1..6);
        assert_eq!(planner.due(6, secs_f(4, 500)), 6..6);
        assert_eq!(planner.due(9, secs_f(4, 0)), 9..9);
        assert_eq!(planner.due(0, secs_f(0, 0)), 1..2);
        assert_eq!(planner.due(6, secs_f(3_600, 0)), 6..11);
    }

    #[test]
    fn the_first_arrival_of_a_stage_is_at_its_start_and_the_last_is_before_the_next_stage() {
        let stages = [
            stage("a", 60, 10.0),
            stage("b", 30, 2.5),
            stage("c", 7, 0.3),
            stage("d", 1, 3.0),
        ];
        let planner = plan(&stages);
        let mut expected_start = Duration::ZERO;
        for (k, stage) in stages.iter().enumerate() {
            let bounds = planner.stage_bounds(k).unwrap();
            assert_eq!(bounds.start, expected_start);
            assert_eq!(
                bounds.end,
                expected_start + Duration::from_secs(stage.duration_s)
            );
            let first = planner.arrival(bounds.seqs.start).unwrap();
            let last = planner.arrival(bounds.seqs.end - 1).unwrap();
            assert_eq!((first.stage_index, first.offset), (k, bounds.start));
            assert_eq!(last.stage_index, k);
            assert!(last.offset < bounds.end, "stage {k}: {last:?}");
            assert_eq!(planner.stage_at(bounds.start), Some(k));
            assert_eq!(
                planner.stage_at(bounds.end - Duration::from_nanos(1)),
                Some(k)
            );
            expected_start = bounds.end;
        }
        assert_eq!(planner.stage_at(expected_start), None);
        assert_eq!(planner.stage_bounds(stages.len()), None);
        assert_eq!(planner.arrival(planner.total_arrivals() + 1), None);
        assert_eq!(planner.arrival(0), None);
    }

    #[test]
    fn rounding_over_a_long_stage_does_not_drift() {
        let planner = plan(&[stage("slow", 10_000, 0.3), stage("after", 1, 1.0)]);
        assert_eq!(planner.stage_bounds(0).unwrap().arrivals(), 3_000);
        let slow: Vec<Arrival> = planner.arrivals().take(3_000).collect();
        for (i, arrival) in slow.iter().enumerate() {
            // i × 10,000 s / 3,000 = i × 10/3 s, rounded up to the nanosecond.
            let exact_ns = (i as u128 * 10_000_000_000).div_ceil(3);
            assert_eq!(arrival.offset.as_nanos(), exact_ns, "arrival {i}");
        }
        let last = slow.last().unwrap();
        assert_eq!(last.seq, 3_000);
        // 2,999 × 10/3 s = 9,996.666… s.
        assert_eq!(last.offset, secs_f(9_996, 666_666_667));
        assert!(last.offset < Duration::from_secs(10_000));
        assert_eq!(
            planner.arrival(3_001).unwrap().offset,
            Duration::from_secs(10_000)
        );
    }

    #[test]
    fn two_thousand_rps_for_a_minute_is_120_000_non_decreasing_arrivals() {
        let planner = plan(&[stage("peak", 60, 2_000.0)]);
        assert_eq!(planner.total_arrivals(), 120_000);
        let mut previous = Duration::ZERO;
        let mut count = 0u64;
        for arrival in planner.arrivals() {
            assert!(arrival.offset >= previous, "{arrival:?}");
            assert_eq!(
                arrival.offset,
                Duration::from_micros(500 * (arrival.seq - 1))
            );
            previous = arrival.offset;
            count += 1;
        }
        assert_eq!(count, 120_000);
        assert!(previous < Duration::from_secs(60));
        assert_eq!(planner.due_count(Duration::from_secs(30)), 60_001);
    }

    #[test]
    fn arrivals_can_resume_from_any_seq() {
        let planner = plan(&[stage("a", 4, 2.5), stage("b", 3, 1.0)]);
        let all: Vec<Arrival> = planner.arrivals().collect();
        for seq in 1..=all.len() as u64 + 1 {
            let resumed: Vec<Arrival> = planner.arrivals_from(seq).collect();
            assert_eq!(resumed, all[(seq - 1) as usize..], "from {seq}");
            assert_eq!(planner.arrivals_from(seq).len(), resumed.len());
        }
    }

    #[test]
    fn plans_that_cannot_run_are_refused() {
        assert_eq!(LoadTestStageRatePlanner::new(&[]), Err(PlanError::NoStages));
        assert!(matches!(
            LoadTestStageRatePlanner::new(&[stage("a", 1, 1.0), stage("b", 0, 1.0)]),
            Err(PlanError::ZeroDuration { index: 1, .. })
        ));
        for rps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(
                    LoadTestStageRatePlanner::new(&[stage("a", 1, rps)]),
                    Err(PlanError::NonPositiveRate { index: 0, .. })
                ),
                "{rps}"
            );
        }
        assert_eq!(
            LoadTestStageRatePlanner::new(&[
                stage("a", 3_600, 2_000.0),
                stage("b", 3_600, 1_000.0)
            ]),
            Err(PlanError::TooManyArrivals {
                planned: 10_800_000
            })
        );
        assert_eq!(
            LoadTestStageRatePlanner::new(&[
                stage("a", 1e19 as u64, 1e-30),
                stage("b", 1e19 as u64, 1e-30)
            ]),
            Err(PlanError::DurationOverflow)
        );
        assert!(LoadTestStageRatePlanner::new(&[stage("a", 5_000, 2_000.0)]).is_ok());
    }
}
