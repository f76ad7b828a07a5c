//! The sink runner: each owned sink reads the log after its own checkpoint, gets the events it
//! wants, and its checkpoint moves only past what was delivered or dead-lettered.
//!
//! - Delivery is at least once: a crash between `deliver` and the checkpoint write re-delivers,
//!   and sinks are idempotent per `event_id`.
//! - `Retryable` failures back off exponentially with jitter (the same batch again); after
//!   [`RetryPolicy::attempts`] each event of the batch becomes a dead letter (one row each) and
//!   the checkpoint moves on. `Permanent` failures dead-letter at once; in a batch of several
//!   events the runner delivers them one by one to find the event at fault.
//! - A sink naming another in `after()` never passes that sink's checkpoint.
//! - Sinks are independent: one backing off never holds another back.
//! - Live tail waits on [`eventlog::wait_for_position`], which wakes on this process's appends
//!   and checks the store now and then for other processes' appends; nothing polls hot.
//! - On PostgreSQL a session advisory lock per sink ([`crate::ownership`]) makes one instance
//!   its owner; when that instance dies its session ends and another takes over.

use crate::checkpoint;
use crate::ownership::SinkOwnership;
use crate::sink::{Sink, SinkError};
use crate::status::SinkStatusBoard;
use eventlog::{EventLog, RecordedEvent};
use projector::db::ReadDb;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Events read per sink and step.
pub const BATCH_EVENTS: usize = 500;
/// How often a runner that does not own every sink tries to take the others over.
pub const TAKEOVER_INTERVAL: Duration = Duration::from_secs(2);
/// How often a sink held back by another sink's checkpoint looks again. That sink may be
/// delivered by another instance, so its progress cannot be awaited, only observed.
pub const AFTER_POLL: Duration = Duration::from_millis(250);
/// Longest idle wait before the runner looks at ticks and take-overs again.
pub const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Pause after a database or log error (not a sink's failure).
pub const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How retryable failures are retried before the batch is dead-lettered.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delivery attempts of one batch, the first included.
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause after the `failures`-th failure: doubling from `first_backoff`, capped, with
    /// "equal jitter" (half fixed, half random) so instances that failed together do not retry
    /// together.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .first_backoff
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
            .min(self.max_backoff);
        let half = exp / 2;
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let jitter_nanos = random % (half.as_nanos().max(1) as u64);
        half + Duration::from_nanos(jitter_nanos)
    }
}

/// What one [`SinkRunner::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepped {
    /// At least one sink moved its checkpoint.
    Applied,
    /// Nothing new for any owned sink.
    Idle,
    /// This runner owns no sink (another instance does).
    NotOwner,
    /// A sink failed and waits out this pause before its next attempt.
    Backoff(Duration),
}

struct Owned {
    sink: Arc<dyn Sink>,
    checkpoint: i64,
    /// Consecutive retryable failures of the batch after `checkpoint`.
    failures: u32,
    retry_at: Option<Instant>,
    next_tick: Option<Instant>,
    /// Held back by its `after()` sink at the last step.
    blocked: bool,
}

/// What to do with the events of one failed attempt.
struct DeadLetter {
    event: RecordedEvent,
    error: String,
    attempts: u32,
}

pub struct SinkRunner {
    db: ReadDb,
    log: Arc<dyn EventLog>,
    sinks: Vec<Arc<dyn Sink>>,
    status: Arc<SinkStatusBoard>,
    retry: RetryPolicy,
    batch_events: usize,
    owned: Vec<Owned>,
    locks: Option<SinkOwnership>,
    next_takeover: Instant,
}

impl SinkRunner {
    pub fn new(
        db: ReadDb,
        log: Arc<dyn EventLog>,
        sinks: Vec<Arc<dyn Sink>>,
        status: Arc<SinkStatusBoard>,
    ) -> Self {
        Self {
            db,
            log,
            sinks,
            status,
            retry: RetryPolicy::default(),
            batch_events: BATCH_EVENTS,
            owned: Vec::new(),
            locks: None,
            next_takeover: Instant::now(),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn with_batch_events(mut self, n: usize) -> Self {
        self.batch_events = n.max(1);
        self
    }

    /// Names of the sinks this runner owns now.
    pub fn owned(&self) -> Vec<&'static str> {
        self.owned.iter().map(|o| o.sink.name()).collect()
    }

    /// Runs until `shutdown` turns true; the delivery under way finishes and its checkpoint is
    /// written first.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let pause = match self.step().await {
                Stepped::Applied => continue,
                Stepped::Idle => {
                    self.wait_for_work(&mut shutdown).await;
                    continue;
                }
                Stepped::NotOwner => TAKEOVER_INTERVAL,
                Stepped::Backoff(pause) => pause.min(self.until_next_deadline()),
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.stop().await;
    }

    /// Gives up ownership (a clean stop; a crash gives it up by ending the session).
    pub async fn stop(&mut self) {
        for o in &self.owned {
            self.status.set_owned(o.sink.name(), false);
        }
        self.owned.clear();
        if let Some(mut locks) = self.locks.take() {
            locks.release_all().await;
        }
    }

    /// Takes over what it can, runs due ticks, then delivers at most one batch per sink.
    pub async fn step(&mut self) -> Stepped {
        self.take_over().await;
        if self.owned.is_empty() {
            return Stepped::NotOwner;
        }
        let mut applied = false;
        let mut pause: Option<Duration> = None;
        for i in 0..self.owned.len() {
            self.tick_if_due(i).await;
            let now = Instant::now();
            if let Some(at) = self.owned[i].retry_at {
                if at > now {
                    pause = Some(pause.map_or(at - now, |p| p.min(at - now)));
                    continue;
                }
                self.owned[i].retry_at = None;
            }
            match self.deliver_next(i).await {
                Ok(true) => applied = true,
                Ok(false) => {}
                Err(p) => pause = Some(pause.map_or(p, |q| q.min(p))),
            }
        }
        match (applied, pause) {
            (true, _) => Stepped::Applied,
            (false, Some(p)) => Stepped::Backoff(p),
            (false, None) => Stepped::Idle,
        }
    }

    /// Steps until no owned sink has anything new, sleeping out back-offs (tests, `catch-up`).
    pub async fn catch_up(&mut self) {
        loop {
            match self.step().await {
                Stepped::Applied => {}
                Stepped::Idle | Stepped::NotOwner => return,
                Stepped::Backoff(pause) => tokio::time::sleep(pause).await,
            }
        }
    }

    fn until_next_deadline(&self) -> Duration {
        let now = Instant::now();
        self.owned
            .iter()
            .flat_map(|o| [o.retry_at, o.next_tick])
            .flatten()
            .map(|at| at.saturating_duration_since(now))
            .min()
            .unwrap_or(IDLE_WAIT)
            .min(IDLE_WAIT)
    }

    /// Waits until the log may hold something for a sink that can move, a tick or retry is
    /// due, or shutdown.
    async fn wait_for_work(&self, shutdown: &mut watch::Receiver<bool>) {
        let mut timeout = self.until_next_deadline();
        let free = self
            .owned
            .iter()
            .filter(|o| !o.blocked && o.retry_at.is_none())
            .map(|o| o.checkpoint)
            .min();
        if self.owned.iter().any(|o| o.blocked) {
            timeout = timeout.min(AFTER_POLL);
        }
        match free {
            Some(from) => {
                tokio::select! {
                    _ = eventlog::wait_for_position(self.log.as_ref(), from, timeout) => {}
                    _ = shutdown.changed() => {}
                }
            }
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    async fn take_over(&mut self) {
        if self.owned.len() == self.sinks.len() || Instant::now() < self.next_takeover {
            return;
        }
        self.next_takeover = Instant::now() + TAKEOVER_INTERVAL;
        let locks = self
            .locks
            .get_or_insert_with(|| SinkOwnership::new(&self.db));
        for sink in &self.sinks {
            let name = sink.name();
            if self.owned.iter().any(|o| o.sink.name() == name) {
                continue;
            }
            if !locks.try_acquire(name).await {
                continue;
            }
            match checkpoint::ensure(&self.db, name).await {
                Ok(position) => {
                    tracing::info!(sink = name, checkpoint = position, "sink owned");
                    self.status.set_owned(name, true);
                    self.status.set_checkpoint(name, position);
                    self.owned.push(Owned {
                        sink: sink.clone(),
                        checkpoint: position,
                        failures: 0,
                        retry_at: None,
                        next_tick: None,
                        blocked: false,
                    });
                }
                Err(err) => {
                    tracing::error!(sink = name, error = %err, "cannot start sink");
                    self.status.set_error(name, &err.to_string());
                    locks.release(name).await;
                }
            }
        }
    }

    async fn tick_if_due(&mut self, i: usize) {
        let o = &mut self.owned[i];
        let Some(interval) = o.sink.tick_interval() else {
            return;
        };
        let now = Instant::now();
        if o.next_tick.is_some_and(|at| now < at) {
            return;
        }
        o.next_tick = Some(now + interval);
        if let Err(err) = o.sink.tick().await {
            tracing::warn!(sink = o.sink.name(), error = %err, "sink tick failed");
            self.status
                .set_error(o.sink.name(), &format!("tick: {err}"));
        }
    }

    /// Delivers the next batch of sink `i`. `Ok(false)`: nothing new it may take.
    /// `Err(pause)`: it failed and waits.
    async fn deliver_next(&mut self, i: usize) -> Result<bool, Duration> {
        let sink = self.owned[i].sink.clone();
        let name = sink.name();
        let from = self.owned[i].checkpoint;
        let bound = match sink.after() {
            Some(other) => match checkpoint::position(&self.db, other).await {
                Ok(p) => Some(p),
                Err(err) => return Err(self.infra_error(name, &err)),
            },
            None => None,
        };
        let read = match self.log.read_all(from, self.batch_events).await {
            Ok(events) => events,
            Err(err) => return Err(self.infra_error(name, &err)),
        };
        let read_any = !read.is_empty();
        let events: Vec<RecordedEvent> = read
            .into_iter()
            .filter(|e| bound.is_none_or(|b| e.position <= b))
            .collect();
        self.owned[i].blocked = read_any && events.is_empty();
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(false);
        };
        let wanted: Vec<RecordedEvent> = events.into_iter().filter(|e| sink.wants(e)).collect();
        if wanted.is_empty() {
            return self.commit(i, last, Vec::new()).await.map(|()| true);
        }
        match sink.deliver(&wanted).await {
            Ok(()) => {
                self.status.delivered(name, wanted.len());
                self.commit(i, last, Vec::new()).await.map(|()| true)
            }
            Err(SinkError::Retryable(error)) => self.retryable(i, last, wanted, error).await,
            Err(SinkError::Permanent(error)) if wanted.len() == 1 => {
                self.status.failed(name, &error);
                tracing::warn!(sink = name, position = wanted[0].position, %error, "event cannot be delivered; dead-lettered");
                let dead = vec![DeadLetter {
                    event: wanted.into_iter().next().expect("one event"),
                    error,
                    attempts: 1,
                }];
                self.commit(i, last, dead).await.map(|()| true)
            }
            Err(SinkError::Permanent(error)) => {
                self.status.failed(name, &error);
                self.one_by_one(i, last, wanted).await
            }
        }
    }

    /// A batch failed permanently: delivers its events one at a time, dead-lettering those that
    /// fail permanently, so one bad event does not take its neighbours with it.
    async fn one_by_one(
        &mut self,
        i: usize,
        last: i64,
        wanted: Vec<RecordedEvent>,
    ) -> Result<bool, Duration> {
        let sink = self.owned[i].sink.clone();
        let name = sink.name();
        let mut dead = Vec::new();
        for (k, event) in wanted.iter().enumerate() {
            match sink.deliver(std::slice::from_ref(event)).await {
                Ok(()) => self.status.delivered(name, 1),
                Err(SinkError::Permanent(error)) => {
                    self.status.failed(name, &error);
                    tracing::warn!(sink = name, position = event.position, %error, "event cannot be delivered; dead-lettered");
                    dead.push(DeadLetter {
                        event: event.clone(),
                        error,
                        attempts: 1,
                    });
                }
                Err(SinkError::Retryable(error)) => {
                    // Keep what is settled, then retry from this event.
                    self.commit(i, event.position - 1, dead).await?;
                    let rest = wanted[k..].to_vec();
                    return self.retryable(i, last, rest, error).await;
                }
            }
        }
        self.commit(i, last, dead).await.map(|()| true)
    }

    async fn retryable(
        &mut self,
        i: usize,
        last: i64,
        wanted: Vec<RecordedEvent>,
        error: String,
    ) -> Result<bool, Duration> {
        let name = self.owned[i].sink.name();
        self.status.failed(name, &error);
        let o = &mut self.owned[i];
        o.failures += 1;
        let failures = o.failures;
        if failures < self.retry.attempts {
            let pause = self.retry.backoff(failures);
            o.retry_at = Some(Instant::now() + pause);
            tracing::warn!(sink = name, failures, pause_ms = pause.as_millis() as u64, %error, "delivery failed; retrying");
            return Err(pause);
        }
        tracing::error!(sink = name, events = wanted.len(), failures, %error, "delivery kept failing; dead-lettering the batch");
        let dead = wanted
            .into_iter()
            .map(|event| DeadLetter {
                event,
                error: error.clone(),
                attempts: failures,
            })
            .collect();
        self.commit(i, last, dead).await.map(|()| true)
    }

    /// Records dead letters and moves the checkpoint to `to`, in one transaction.
    async fn commit(&mut self, i: usize, to: i64, dead: Vec<DeadLetter>) -> Result<(), Duration> {
        let name = self.owned[i].sink.name();
        let from = self.owned[i].checkpoint;
        if to <= from && dead.is_empty() {
            return Ok(());
        }
        let result: Result<bool, sqlx::Error> = async {
            let mut tx = self.db.begin_write().await?;
            for d in &dead {
                checkpoint::record_dead_letter(&mut tx, name, &d.event, &d.error, d.attempts)
                    .await?;
            }
            if !checkpoint::advance(&mut tx, name, from, to.max(from)).await? {
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        }
        .await;
        match result {
            Ok(true) => {
                let o = &mut self.owned[i];
                o.checkpoint = to.max(from);
                o.failures = 0;
                o.retry_at = None;
                self.status.set_checkpoint(name, o.checkpoint);
                if !dead.is_empty() {
                    self.status.dead_lettered(name, dead.len());
                }
                Ok(())
            }
            Ok(false) => {
                // Reset by an operator or moved by another runner: start over from what is
                // stored; the sink's idempotency makes the repeat harmless.
                let stored = checkpoint::position(&self.db, name).await;
                tracing::info!(sink = name, ?stored, "sink checkpoint moved; reloading");
                let o = &mut self.owned[i];
                o.failures = 0;
                o.retry_at = None;
                if let Ok(p) = stored {
                    o.checkpoint = p;
                    self.status.set_checkpoint(name, p);
                }
                Ok(())
            }
            Err(err) => Err(self.infra_error(name, &err)),
        }
    }

    fn infra_error(&self, name: &str, err: &dyn std::fmt::Display) -> Duration {
        tracing::warn!(sink = name, error = %err, "sink bookkeeping failed; retrying");
        self.status.set_error(name, &err.to_string());
        ERROR_PAUSE
    }
}

/// How a dead-letter replay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Delivered now; the letter is marked `replayed`.
    Delivered,
    /// Failed again; the letter stays open with the new error and one more attempt.
    StillFailing(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event log: {0}")]
    Log(#[from] eventlog::StoreError),
    #[error("no sink named {name:?}; known sinks: {known}")]
    UnknownSink { name: String, known: String },
    #[error("sink {sink} has no dead letter at position {position}; list them with `studio dead-letters list --sink {sink}`")]
    NoDeadLetter { sink: String, position: i64 },
}

/// `studio dead-letters replay --sink NAME --position N`: delivers the dead-lettered event
/// through the sink named `sink_name` again (after a fix, or once the destination is back).
/// The sink's idempotency by event id makes a replay of something already delivered harmless.
pub async fn replay_dead_letter(
    db: &ReadDb,
    log: &dyn EventLog,
    sinks: &[Arc<dyn Sink>],
    sink_name: &str,
    position: i64,
) -> Result<ReplayOutcome, ReplayError> {
    let sink = sinks
        .iter()
        .find(|s| s.name() == sink_name)
        .ok_or_else(|| ReplayError::UnknownSink {
            name: sink_name.to_string(),
            known: sinks
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let attempts = projector::on_db!(db, pool =>
        sqlx::query_scalar::<_, i64>("SELECT attempts FROM sink_dead_letters WHERE sink = $1 AND position = $2")
            .bind(sink_name)
            .bind(position)
            .fetch_optional(pool)
            .await)?
    .ok_or_else(|| ReplayError::NoDeadLetter {
        sink: sink_name.to_string(),
        position,
    })?;
    let event = log
        .read_all(position - 1, 1)
        .await?
        .into_iter()
        .find(|e| e.position == position)
        .ok_or_else(|| ReplayError::NoDeadLetter {
            sink: sink_name.to_string(),
            position,
        })?;
    // Delivered before the bookkeeping transaction opens: the sink may write to the same
    // database, and on SQLite a second writer would wait for ours.
    let delivered = sink.deliver(std::slice::from_ref(&event)).await;
    let mut tx = db.begin_write().await?;
    let outcome = match delivered {
        Ok(()) => {
            tx.execute(
                "UPDATE sink_dead_letters SET status = 'replayed' WHERE sink = $1 AND position = $2",
                &[sink_name.into(), position.into()],
            )
            .await?;
            ReplayOutcome::Delivered
        }
        Err(err) => {
            let error = match err {
                SinkError::Retryable(e) | SinkError::Permanent(e) => e,
            };
            let attempts = u32::try_from(attempts + 1).unwrap_or(u32::MAX);
            checkpoint::record_dead_letter(&mut tx, sink_name, &event, &error, attempts).await?;
            ReplayOutcome::StillFailing(error)
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Replays every open dead letter of a sink, in position order; returns each outcome.
pub async fn replay_all_dead_letters(
    db: &ReadDb,
    log: &dyn EventLog,
    sinks: &[Arc<dyn Sink>],
    sink_name: &str,
) -> Result<Vec<(i64, ReplayOutcome)>, ReplayError> {
    let mut outcomes = Vec::new();
    for letter in checkpoint::list_dead_letters(db, Some(sink_name), false).await? {
        let outcome = replay_dead_letter(db, log, sinks, sink_name, letter.position).await?;
        outcomes.push((letter.position, outcome));
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter_band_and_is_capped() {
        let policy = RetryPolicy {
            attempts: 10,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for (failures, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (9, 1_000),
        ] {
            let full = Duration::from_millis(full);
            for _ in 0..50 {
                let pause = policy.backoff(failures);
                assert!(
                    pause >= full / 2 && pause < full,
                    "failure {failures}: {pause:?} outside [{:?}, {full:?})",
                    full / 2
                );
            }
        }
    }
}
