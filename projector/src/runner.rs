//! The live runner: catches every owned projection up from its checkpoint, then tails the log.
//!
//! Each batch is one transaction: every projection's documents and its checkpoint advance
//! together, so a crash never double-counts or skips. Checkpoints advance by compare-and-set
//! (position and generation), so a rebuild swap or a second instance is noticed, never
//! overwritten. On PostgreSQL a session advisory lock per projection makes one instance its
//! owner; when that instance dies its session ends, the lock is released, and another
//! instance's next attempt takes the projection over.

use crate::checkpoint::{
    self, advance, apply_step, decode_all, read_checkpoint, Checkpoint, StepError,
};
use crate::db::ReadDb;
use crate::docs::Docs;
use crate::projection::Projection;
use crate::status::StatusBoard;
use eventlog::EventLog;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Events read and applied per transaction.
pub const BATCH_EVENTS: usize = 2_000;
/// How often a runner that owns nothing tries to take projections over.
pub const TAKEOVER_INTERVAL: Duration = Duration::from_secs(2);

/// How poison events are retried before they are dead-lettered.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            first_backoff: Duration::from_millis(100),
        }
    }
}

struct Owned {
    projection: Arc<dyn Projection>,
    checkpoint: Checkpoint,
    docs: Docs,
    /// Failed attempts per position; at `RetryPolicy::attempts` the position goes to `dead`.
    attempts: HashMap<i64, u32>,
    dead: HashMap<i64, (String, u32)>,
}

pub struct Runner {
    db: ReadDb,
    log: Arc<dyn EventLog>,
    projections: Vec<Arc<dyn Projection>>,
    status: Arc<StatusBoard>,
    retry: RetryPolicy,
    batch_events: usize,
    owned: Vec<Owned>,
    locks: Option<crate::ownership::Ownership>,
    next_takeover: tokio::time::Instant,
}

/// What one [`Runner::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepped {
    /// A batch was applied (or a poison event was retried to its end).
    Applied,
    /// Nothing new in the log.
    Idle,
    /// This runner owns no projection (another instance does).
    NotOwner,
    /// Failed; try again after the pause.
    Backoff(Duration),
}

impl Runner {
    pub fn new(
        db: ReadDb,
        log: Arc<dyn EventLog>,
        projections: Vec<Arc<dyn Projection>>,
        status: Arc<StatusBoard>,
    ) -> Self {
        Self {
            db,
            log,
            projections,
            status,
            retry: RetryPolicy::default(),
            batch_events: BATCH_EVENTS,
            owned: Vec::new(),
            locks: None,
            next_takeover: tokio::time::Instant::now(),
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

    /// Runs until `shutdown` turns true; the batch under way commits first.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let pause = match self.step().await {
                Stepped::Applied => continue,
                Stepped::Idle => {
                    let from = self
                        .owned
                        .iter()
                        .map(|o| o.checkpoint.position)
                        .min()
                        .unwrap_or(0);
                    tokio::select! {
                        _ = eventlog::wait_for_position(self.log.as_ref(), from, Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                Stepped::NotOwner => TAKEOVER_INTERVAL,
                Stepped::Backoff(pause) => pause,
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
            self.status.set_owned(o.projection.name(), false);
        }
        self.owned.clear();
        if let Some(mut locks) = self.locks.take() {
            locks.release_all().await;
        }
    }

    /// Takes over what it can, then applies at most one batch.
    pub async fn step(&mut self) -> Stepped {
        self.take_over().await;
        if self.owned.is_empty() {
            return Stepped::NotOwner;
        }
        match self.apply_next().await {
            Ok(true) => Stepped::Applied,
            Ok(false) => Stepped::Idle,
            Err(pause) => Stepped::Backoff(pause),
        }
    }

    /// Applies batches until the log holds nothing new for any owned projection.
    pub async fn catch_up(&mut self) -> Result<(), Duration> {
        loop {
            match self.step().await {
                Stepped::Applied => {}
                Stepped::Idle | Stepped::NotOwner => return Ok(()),
                Stepped::Backoff(pause) => return Err(pause),
            }
        }
    }

    async fn take_over(&mut self) {
        if self.owned.len() == self.projections.len()
            || tokio::time::Instant::now() < self.next_takeover
        {
            return;
        }
        self.next_takeover = tokio::time::Instant::now() + TAKEOVER_INTERVAL;
        if self.locks.is_none() {
            self.locks = Some(crate::ownership::Ownership::new(&self.db).await);
        }
        for projection in self.projections.clone() {
            if self
                .owned
                .iter()
                .any(|o| o.projection.name() == projection.name())
            {
                continue;
            }
            let locks = self.locks.as_mut().expect("created above");
            if !locks.try_acquire(projection.name()).await {
                continue;
            }
            match self.prepare(projection.clone()).await {
                Ok(o) => {
                    self.status.set_owned(projection.name(), true);
                    self.owned.push(o);
                }
                Err(err) => {
                    tracing::error!(projection = projection.name(), error = %err, "cannot start projection");
                    self.status.set_error(projection.name(), &err.to_string());
                    if let Some(locks) = self.locks.as_mut() {
                        locks.release(projection.name()).await;
                    }
                }
            }
        }
    }

    /// Creates tables, checks the fingerprint (rebuilding on a mismatch) and loads the checkpoint.
    async fn prepare(&self, projection: Arc<dyn Projection>) -> Result<Owned, StepError> {
        let mut checkpoint = checkpoint::ensure_live(&self.db, projection.as_ref()).await?;
        if checkpoint.fingerprint != projection.fingerprint() {
            tracing::warn!(projection = projection.name(), stored = %checkpoint.fingerprint, "projection changed shape; rebuilding");
            crate::rebuild::rebuild(&self.db, self.log.as_ref(), projection.as_ref(), &|_| {})
                .await?;
            checkpoint = checkpoint::ensure_live(&self.db, projection.as_ref()).await?;
        }
        self.status
            .set_checkpoint(projection.name(), checkpoint.position, false);
        Ok(Owned {
            projection,
            checkpoint,
            docs: Docs::default(),
            attempts: HashMap::new(),
            dead: HashMap::new(),
        })
    }

    /// Applies one batch. `Ok(false)`: nothing new. `Err(backoff)`: retry after a pause.
    async fn apply_next(&mut self) -> Result<bool, Duration> {
        let from = self
            .owned
            .iter()
            .map(|o| o.checkpoint.position)
            .min()
            .unwrap_or(0);
        let events = match self.log.read_all(from, self.batch_events).await {
            Ok(e) => e,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the log");
                return Err(self.retry.first_backoff * 10);
            }
        };
        if events.is_empty() {
            return Ok(false);
        }
        let decoded = decode_all(events);
        let owned = &mut self.owned;
        match apply_batch(&self.db, &self.status, owned, &decoded).await {
            Ok(()) => Ok(true),
            Err((name, StepError::Poison { position, error })) => {
                for o in owned.iter_mut() {
                    o.docs.clear();
                }
                let o = owned
                    .iter_mut()
                    .find(|o| o.projection.name() == name)
                    .expect("owned");
                let attempts = o.attempts.entry(position).or_default();
                *attempts += 1;
                let attempts = *attempts;
                tracing::warn!(projection = name, position, attempts, %error, "event cannot be applied");
                self.status
                    .set_error(name, &format!("position {position}: {error}"));
                if attempts >= self.retry.attempts {
                    o.dead.insert(position, (error, attempts));
                    return Ok(true);
                }
                Err(self.retry.first_backoff * 2u32.saturating_pow(attempts - 1))
            }
            Err((name, StepError::Moved(_))) => {
                // A rebuild swapped the tables or another instance advanced: start over from
                // what is stored.
                tracing::info!(projection = name, "checkpoint moved; reloading");
                for o in owned.iter_mut() {
                    o.docs.clear();
                }
                Ok(true)
            }
            Err((name, err)) => {
                tracing::error!(projection = name, error = %err, "projection batch failed; retrying");
                self.status.set_error(name, &err.to_string());
                for o in owned.iter_mut() {
                    o.docs.clear();
                }
                Err(self.retry.first_backoff * 10)
            }
        }
    }
}

async fn apply_batch(
    db: &ReadDb,
    status: &StatusBoard,
    owned: &mut [Owned],
    decoded: &[checkpoint::Decoded],
) -> Result<(), (&'static str, StepError)> {
    let live = |t: &str| t.to_string();
    let mut tx = db.begin_write().await.map_err(|e| ("*", e.into()))?;
    let mut advanced = Vec::new();
    for (i, o) in owned.iter_mut().enumerate() {
        let name = o.projection.name();
        let stored = read_checkpoint(&mut tx, name)
            .await
            .map_err(|e| (name, e.into()))?;
        if stored.as_ref() != Some(&o.checkpoint) {
            o.docs.clear();
            o.checkpoint = stored.ok_or((name, StepError::Moved(name)))?;
        }
        let events: Vec<&checkpoint::Decoded> = decoded
            .iter()
            .filter(|(e, _)| e.position > o.checkpoint.position)
            .collect();
        let Some(last) = events.last().map(|(e, _)| e.position) else {
            continue;
        };
        apply_step(
            o.projection.as_ref(),
            &mut tx,
            &mut o.docs,
            &live,
            &events,
            &o.dead,
        )
        .await
        .map_err(|e| (name, e))?;
        advance(&mut tx, name, &o.checkpoint, last)
            .await
            .map_err(|e| (name, e))?;
        advanced.push((i, last));
    }
    tx.commit().await.map_err(|e| ("*", e.into()))?;
    for (i, last) in advanced {
        let o = &mut owned[i];
        o.checkpoint.position = last;
        let had_dead = !o.dead.is_empty();
        o.dead.retain(|p, _| *p > last);
        o.attempts.retain(|p, _| *p > last);
        status.set_checkpoint(o.projection.name(), last, !had_dead);
    }
    Ok(())
}
