//! `LoadTestMetricsAggregator`: completions in a sliding window, and the run's stop condition.
//!
//! The seed plan stops a run on "failure rate > 20% sustained for > 10 minutes"
//! ([`StopConditions`], default 0.20 / 600 s). Here that sentence means, precisely:
//!
//! - Completions are counted in **one bucket per whole second** of run time: a completion at
//!   offset `at` lands in second `floor(at)`. `failed` and `timed_out` are both failures.
//! - The condition is checked at every **tick**, i.e. every whole second `t` of run time, over
//!   the trailing **evaluation window** of the `W` complete seconds before it, `[t − W, t)`,
//!   where `W = min(EVALUATION_WINDOW_S, sustained_s)` (at least 1 s).
//! - Tick `t` is **in excess** when that window holds at least [`MIN_COMPLETIONS_TO_EVALUATE`]
//!   completions and its failure rate is strictly above `max_failure_rate`.
//! - The excess is **sustained** once every tick from the first excess tick `t0` up to `now`
//!   was in excess and `floor(now) − t0 ≥ sustained_s`. Any tick not in excess — a dip below
//!   the limit, or too few completions to judge — resets the clock.
//!
//! Why a 60 s window rather than the whole 600 s: an average over the full sustained span would
//! call three minutes at 60% plus seven healthy minutes "sustained", and would keep a run
//! flagged for minutes after it recovered. A per-second rate is the other extreme: at low rates
//! one second holds a handful of completions and the clock would reset on noise. Sixty seconds
//! smooths second-to-second noise, yet a recovery of about a minute clears the condition.
//!
//! Ticks are evaluated for every whole second between calls, so the answer depends only on
//! what was recorded, not on how often the executor calls [`LoadTestMetricsAggregator::evaluate`].
//! Completions are expected roughly in time order: recording one at `at` first evaluates the
//! ticks up to `floor(at)` (they cannot include it). A completion recorded later than a tick
//! that could have counted it still counts for the ticks after; one too old for any future
//! window is counted in the totals only (see [`LoadTestMetricsAggregator::late_dropped`]).
//!
//! Memory is bounded: only the buckets of the current window are kept (at most `W + 1`).

use eventlog::catalogue::{Outcome, StopConditions};
use std::collections::VecDeque;
use std::time::Duration;

/// The longest trailing window the stop condition is evaluated over; see the module docs.
pub const EVALUATION_WINDOW_S: u64 = 60;

/// Fewer completions than this in the window never count as excess: 1 failure out of 1 is not
/// a failure rate.
pub const MIN_COMPLETIONS_TO_EVALUATE: u64 = 20;

/// Completions by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompletionCounts {
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
}

impl CompletionCounts {
    pub fn completions(&self) -> u64 {
        self.succeeded + self.failed + self.timed_out
    }

    /// Failed and timed out alike.
    pub fn failures(&self) -> u64 {
        self.failed + self.timed_out
    }

    /// Failures over completions, or `None` without completions.
    pub fn failure_rate(&self) -> Option<f64> {
        let completions = self.completions();
        (completions > 0).then(|| self.failures() as f64 / completions as f64)
    }

    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Succeeded => self.succeeded += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::TimedOut => self.timed_out += 1,
        }
    }

    fn merge(&mut self, other: &CompletionCounts) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.timed_out += other.timed_out;
    }
}

/// The stop condition held: what `load_test.stop_condition_breached` reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Breach {
    /// The failure rate over the evaluation window at the latest tick.
    pub failure_rate: f64,
    /// The evaluation window's length in seconds.
    pub window_s: u64,
    /// The first tick of the uninterrupted excess, from the run's start.
    pub since: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    second: u64,
    counts: CompletionCounts,
}

/// See the module docs for what it counts and when it reports a breach.
#[derive(Debug, Clone)]
pub struct LoadTestMetricsAggregator {
    conditions: StopConditions,
    window_s: u64,
    /// Sorted by second; only seconds `tick − window_s ..= tick` are kept.
    buckets: VecDeque<Bucket>,
    /// The last whole second evaluated.
    tick: u64,
    /// The evaluation window's counts at `tick`.
    window_at_tick: CompletionCounts,
    excess_since: Option<u64>,
    totals: CompletionCounts,
    late_dropped: u64,
}

impl LoadTestMetricsAggregator {
    /// A rate that is NaN never trips; a rate of 1.0 or more cannot be exceeded.
    pub fn new(conditions: StopConditions) -> Self {
        let window_s = conditions.sustained_s.clamp(1, EVALUATION_WINDOW_S);
        Self {
            conditions,
            window_s,
            buckets: VecDeque::with_capacity(window_s as usize + 1),
            tick: 0,
            window_at_tick: CompletionCounts::default(),
            excess_since: None,
            totals: CompletionCounts::default(),
            late_dropped: 0,
        }
    }

    pub fn conditions(&self) -> &StopConditions {
        &self.conditions
    }

    /// The evaluation window `W`, in seconds.
    pub fn window_s(&self) -> u64 {
        self.window_s
    }

    /// Records one completion at `at` (its offset from the run's start).
    pub fn record(&mut self, at: Duration, outcome: Outcome) {
        self.totals.add(outcome);
        let second = at.as_secs();
        self.advance_to(second);
        // The next tick, `self.tick + 1`, looks back to `self.tick + 1 − W`.
        if second + self.window_s <= self.tick {
            self.late_dropped += 1;
            return;
        }
        let position = self.buckets.partition_point(|b| b.second < second);
        match self.buckets.get_mut(position) {
            Some(bucket) if bucket.second == second => bucket.counts.add(outcome),
            _ => {
                let mut counts = CompletionCounts::default();
                counts.add(outcome);
                self.buckets.insert(position, Bucket { second, counts });
            }
        }
    }

    /// Evaluates every tick up to `floor(now)` and reports a breach when the failure rate has
    /// been above the limit for `sustained_s` (see the module docs). Keeps reporting it while
    /// the excess lasts. A `now` earlier than one already seen changes nothing.
    pub fn evaluate(&mut self, now: Duration) -> Option<Breach> {
        self.advance_to(now.as_secs());
        let since = self.excess_since?;
        if self.tick - since < self.conditions.sustained_s {
            return None;
        }
        Some(Breach {
            failure_rate: self.window_at_tick.failure_rate().unwrap_or(0.0),
            window_s: self.window_s,
            since: Duration::from_secs(since),
        })
    }

    /// Since when the failure rate has been above the limit without a break, if it is now.
    pub fn excess_since(&self) -> Option<Duration> {
        self.excess_since.map(Duration::from_secs)
    }

    /// The last whole second evaluated, from the run's start.
    pub fn evaluated_through(&self) -> Duration {
        Duration::from_secs(self.tick)
    }

    /// Completions in the trailing `window` of complete seconds before the last tick,
    /// `window` rounded up to whole seconds and capped at the evaluation window (older seconds
    /// are not kept).
    pub fn window_counts(&self, window: Duration) -> CompletionCounts {
        let mut seconds = window.as_secs();
        if window.subsec_nanos() > 0 {
            seconds += 1;
        }
        let from = self.tick.saturating_sub(seconds.min(self.window_s));
        let mut counts = CompletionCounts::default();
        for bucket in self
            .buckets
            .iter()
            .filter(|b| b.second >= from && b.second < self.tick)
        {
            counts.merge(&bucket.counts);
        }
        counts
    }

    /// The failure rate over [`Self::window_counts`], or `None` without completions.
    pub fn failure_rate_over(&self, window: Duration) -> Option<f64> {
        self.window_counts(window).failure_rate()
    }

    /// Every completion recorded since the run started.
    pub fn totals(&self) -> CompletionCounts {
        self.totals
    }

    /// Completions recorded too late for any future window (counted in the totals only).
    pub fn late_dropped(&self) -> u64 {
        self.late_dropped
    }

    /// How many per-second buckets are held (at most `window_s + 1`).
    pub fn retained_buckets(&self) -> usize {
        self.buckets.len()
    }

    fn advance_to(&mut self, target: u64) {
        while self.tick < target {
            let tick = self.tick + 1;
            let from = tick.saturating_sub(self.window_s);
            while self.buckets.front().is_some_and(|b| b.second < from) {
                self.buckets.pop_front();
            }
            if self.buckets.is_empty() {
                // Nothing recorded in any window up to `target`: every tick is not in excess.
                self.tick = target;
                self.window_at_tick = CompletionCounts::default();
                self.excess_since = None;
                return;
            }
            let mut window = CompletionCounts::default();
            for bucket in self.buckets.iter().take_while(|b| b.second < tick) {
                window.merge(&bucket.counts);
            }
            let in_excess = window.completions() >= MIN_COMPLETIONS_TO_EVALUATE
                && window
                    .failure_rate()
                    .is_some_and(|rate| rate > self.conditions.max_failure_rate);
            self.excess_since = match (in_excess, self.excess_since) {
                (false, _) => None,
                (true, Some(since)) => Some(since),
                (true, None) => Some(tick),
            };
            self.window_at_tick = window;
            self.tick = tick;
        }
    }
}

#[cfg(test)]
mod load_test_metrics_aggregator_test {
    use super::*;

    /// Ten completions in each second from `from` to `to` (exclusive), `failures` of them
    /// failed, recorded mid-second.
    fn run_seconds(
        aggregator: &mut LoadTestMetricsAggregator,
        from: u64,
        to: u64,
        failures: u64,
    ) -> Option<Breach> {
        let mut first_breach = None;
        for second in from..to {
            for i in 0..10u64 {
                let outcome = if i < failures {
                    Outcome::Failed
                } else {
                    Outcome::Succeeded
                };
                aggregator.record(Duration::from_millis(second * 1_000 + 50 + i * 90), outcome);
            }
            let breach = aggregator.evaluate(Duration::from_secs(second + 1));
            first_breach = first_breach.or(breach);
        }
        first_breach
    }

    fn seed_default() -> LoadTestMetricsAggregator {
        LoadTestMetricsAggregator::new(StopConditions::default())
    }

    #[test]
    fn the_seed_default_is_above_20_percent_for_600_s_over_a_60_s_window() {
        let aggregator = seed_default();
        assert_eq!(aggregator.conditions(), &StopConditions::default());
        assert_eq!(aggregator.conditions().max_failure_rate, 0.20);
        assert_eq!(aggregator.conditions().sustained_s, 600);
        assert_eq!(aggregator.window_s(), 60);
    }

    #[test]
    fn a_failure_rate_below_the_limit_never_breaches() {
        let mut aggregator = seed_default();
        assert_eq!(run_seconds(&mut aggregator, 0, 3_600, 1), None);
        assert_eq!(aggregator.excess_since(), None);
        assert_eq!(
            aggregator.failure_rate_over(Duration::from_secs(60)),
            Some(0.1)
        );
    }

    #[test]
    fn a_failure_rate_exactly_at_the_limit_is_not_above_it() {
        let mut aggregator = seed_default();
        assert_eq!(run_seconds(&mut aggregator, 0, 3_600, 2), None);
        assert_eq!(
            aggregator.failure_rate_over(Duration::from_secs(60)),
            Some(0.2)
        );
    }

    #[test]
    fn a_breach_comes_after_sustained_s_of_continuous_excess_and_not_a_second_before() {
        let mut aggregator = seed_default();
        // Healthy at 10% for two minutes, then 50% from second 120. At tick 120 + k the
        // window holds 60 − k healthy and k failing seconds: (60 + 4k) / 600 > 0.2 from k = 16.
        assert_eq!(run_seconds(&mut aggregator, 0, 120, 1), None);
        assert_eq!(run_seconds(&mut aggregator, 120, 135, 5), None);
        assert_eq!(aggregator.excess_since(), None);
        assert_eq!(run_seconds(&mut aggregator, 135, 136, 5), None);
        assert_eq!(aggregator.excess_since(), Some(Duration::from_secs(136)));
        // 136 + 599 = 735: not yet.
        assert_eq!(run_seconds(&mut aggregator, 136, 735, 5), None);
        assert_eq!(aggregator.evaluate(Duration::from_millis(735_999)), None);
        let breach = aggregator
            .evaluate(Duration::from_secs(736))
            .expect("breached");
        assert_eq!(
            breach,
            Breach {
                failure_rate: 0.5,
                window_s: 60,
                since: Duration::from_secs(136),
            }
        );
        // It keeps reporting while the excess lasts.
        assert!(run_seconds(&mut aggregator, 736, 740, 5).is_some());
    }

    #[test]
    fn the_answer_does_not_depend_on_how_often_evaluate_is_called() {
        // Same completions; one aggregator evaluated every 100 ms, the other only at the end.
        let mut often = seed_default();
        let mut once = seed_default();
        let mut first_breach = None;
        for second in 0..800u64 {
            let failures = if second < 120 { 1 } else { 5 };
            for i in 0..10u64 {
                let outcome = if i < failures {
                    Outcome::TimedOut
                } else {
                    Outcome::Succeeded
                };
                let at = Duration::from_millis(second * 1_000 + i * 100);
                often.record(at, outcome);
                once.record(at, outcome);
                let now = at + Duration::from_millis(50);
                if let (None, Some(breach)) = (first_breach, often.evaluate(now)) {
                    first_breach = Some((now, breach));
                }
            }
        }
        let (at, breach) = first_breach.expect("breached");
        assert_eq!(at, Duration::from_millis(736_050));
        assert_eq!(breach.since, Duration::from_secs(136));
        let now = Duration::from_secs(800);
        assert_eq!(once.evaluate(now), often.evaluate(now));
        assert_eq!(once.excess_since(), Some(Duration::from_secs(136)));
    }

    #[test]
    fn a_dip_below_the_limit_resets_the_clock() {
        let mut aggregator = seed_default();
        assert_eq!(run_seconds(&mut aggregator, 0, 120, 1), None);
        assert_eq!(run_seconds(&mut aggregator, 120, 400, 5), None);
        assert_eq!(aggregator.excess_since(), Some(Duration::from_secs(136)));
        // A healthy minute: the window falls to (300 − 4j) / 600, at the limit from j = 45.
        assert_eq!(run_seconds(&mut aggregator, 400, 444, 1), None);
        assert_eq!(aggregator.excess_since(), Some(Duration::from_secs(136)));
        assert_eq!(run_seconds(&mut aggregator, 444, 445, 1), None);
        assert_eq!(aggregator.excess_since(), None);
        assert_eq!(run_seconds(&mut aggregator, 445, 460, 1), None);
        // Failing again from 460: in excess from 476 on, so no breach at 736 but one at 1,076.
        assert_eq!(run_seconds(&mut aggregator, 460, 1_075, 5), None);
        assert_eq!(aggregator.excess_since(), Some(Duration::from_secs(476)));
        let breach = run_seconds(&mut aggregator, 1_075, 1_076, 5).expect("breached");
        assert_eq!(breach.since, Duration::from_secs(476));
    }

    #[test]
    fn too_few_completions_never_trip_it() {
        let mut aggregator = seed_default();
        aggregator.record(Duration::from_millis(10), Outcome::Failed);
        assert_eq!(aggregator.evaluate(Duration::from_secs(700)), None);
        // Every completion fails, one every 4 s: 15 in any 60 s window, below the minimum of 20.
        for second in (700..8_000u64).step_by(4) {
            aggregator.record(Duration::from_secs(second), Outcome::Failed);
            assert_eq!(aggregator.evaluate(Duration::from_secs(second)), None);
        }
        assert_eq!(aggregator.evaluate(Duration::from_secs(8_000)), None);
        assert_eq!(
            aggregator.failure_rate_over(Duration::from_secs(60)),
            Some(1.0)
        );
        assert_eq!(
            aggregator
                .window_counts(Duration::from_secs(60))
                .completions(),
            15
        );
    }

    #[test]
    fn timed_out_counts_as_a_failure() {
        let conditions = StopConditions {
            max_failure_rate: 0.20,
            sustained_s: 30,
        };
        let mut aggregator = LoadTestMetricsAggregator::new(conditions);
        assert_eq!(aggregator.window_s(), 30);
        // 30% failures from the first second; the first second alone (10 completions) is too
        // few to judge, so the excess starts at tick 2 and is sustained at tick 32.
        let mut first_breach = None;
        for second in 0..32u64 {
            for i in 0..10u64 {
                let outcome = match i {
                    0 | 1 => Outcome::TimedOut,
                    2 => Outcome::Failed,
                    _ => Outcome::Succeeded,
                };
                aggregator.record(Duration::from_millis(second * 1_000 + i * 100), outcome);
            }
            let now = Duration::from_secs(second + 1);
            match aggregator.evaluate(now) {
                Some(breach) if first_breach.is_none() => first_breach = Some((now, breach)),
                _ => {}
            }
        }
        let (at, breach) = first_breach.expect("breached");
        assert_eq!(at, Duration::from_secs(32));
        assert_eq!(breach.since, Duration::from_secs(2));
        assert_eq!(breach.window_s, 30);
        assert!((breach.failure_rate - 0.3).abs() < 1e-12);
        let window = aggregator.window_counts(Duration::from_secs(30));
        assert_eq!(
            (window.failed, window.timed_out, window.failures()),
            (30, 60, 90)
        );
        assert_eq!(aggregator.totals().failures(), 96);
    }

    #[test]
    fn old_buckets_are_dropped_so_memory_stays_bounded() {
        let mut aggregator = seed_default();
        // Five hours at 50 completions per second.
        for second in 0..5 * 3_600u64 {
            for i in 0..50u64 {
                aggregator.record(
                    Duration::from_millis(second * 1_000 + i * 20),
                    Outcome::Succeeded,
                );
            }
            assert!(aggregator.retained_buckets() <= 61, "{second}");
            if second % 7 == 0 {
                aggregator.evaluate(Duration::from_secs(second));
            }
        }
        assert_eq!(aggregator.totals().completions(), 5 * 3_600 * 50);
        assert!(aggregator.retained_buckets() <= 61);
        aggregator.evaluate(Duration::from_secs(10 * 3_600));
        assert_eq!(aggregator.retained_buckets(), 0);
        assert_eq!(aggregator.failure_rate_over(Duration::from_secs(60)), None);
    }

    #[test]
    fn live_figures_cover_the_requested_trailing_window() {
        let mut aggregator = seed_default();
        run_seconds(&mut aggregator, 0, 50, 0);
        run_seconds(&mut aggregator, 50, 60, 10);
        assert_eq!(aggregator.evaluated_through(), Duration::from_secs(60));
        assert_eq!(
            aggregator.failure_rate_over(Duration::from_secs(10)),
            Some(1.0)
        );
        assert_eq!(
            aggregator.failure_rate_over(Duration::from_secs(20)),
            Some(0.5)
        );
        assert_eq!(
            aggregator
                .window_counts(Duration::from_millis(19_001))
                .completions(),
            200
        );
        // Capped at the evaluation window.
        assert_eq!(
            aggregator
                .window_counts(Duration::from_secs(3_600))
                .completions(),
            600
        );
        assert_eq!(aggregator.totals().completions(), 600);
    }

    #[test]
    fn a_completion_too_old_for_any_window_counts_in_the_totals_only() {
        let mut aggregator = seed_default();
        aggregator.evaluate(Duration::from_secs(100));
        aggregator.record(Duration::from_secs(30), Outcome::Failed);
        assert_eq!(aggregator.late_dropped(), 1);
        assert_eq!(aggregator.retained_buckets(), 0);
        // Late, but still inside the next window: kept.
        aggregator.record(Duration::from_secs(70), Outcome::Failed);
        assert_eq!(aggregator.late_dropped(), 1);
        assert_eq!(aggregator.retained_buckets(), 1);
        assert_eq!(aggregator.totals().failed, 2);
    }
}
