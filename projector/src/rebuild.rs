//! `studio rebuild`: replays the log from position 0 into fresh shadow tables, then swaps them in
//! with the checkpoint in one transaction, so readers see the old model until the swap and the
//! whole new one after. It works with the server stopped or serving: the live runner notices the
//! new generation at its next batch and continues from the rebuilt checkpoint. A rebuild only
//! writes read-model tables; sinks keep their own checkpoints, so no side effect fires again.

use crate::checkpoint::{self, apply_step, decode_all, now_text, read_checkpoint, StepError};
use crate::db::ReadDb;
use crate::docs::Docs;
use crate::projection::Projection;
use eventlog::EventLog;
use std::collections::HashMap;
use std::time::Instant;

/// Events per rebuild transaction: larger than the live runner's, since nobody waits on it.
pub const REBUILD_BATCH: usize = 10_000;
const SHADOW_SUFFIX: &str = "__rebuild";

/// Progress of a rebuild, for a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub position: i64,
    pub head: i64,
    pub events: u64,
    pub elapsed_s: f64,
}

impl Progress {
    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed_s.max(1e-9)
    }

    pub fn eta_s(&self) -> f64 {
        (self.head - self.position).max(0) as f64 / self.events_per_s().max(1e-9)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RebuildReport {
    pub position: i64,
    pub events: u64,
    pub dead_letters: usize,
    pub elapsed_s: f64,
}

fn shadow(table: &str) -> String {
    format!("{table}{SHADOW_SUFFIX}")
}

pub async fn rebuild(
    db: &ReadDb,
    log: &dyn EventLog,
    projection: &dyn Projection,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<RebuildReport, StepError> {
    let started = Instant::now();
    checkpoint::ensure_live(db, projection).await?;
    let mut tx = db.begin_write().await?;
    for def in projection.tables() {
        tx.execute(&format!("DROP TABLE IF EXISTS {}", shadow(def.name)), &[])
            .await?;
        checkpoint::create_table(&mut tx, def, &shadow(def.name)).await?;
    }
    tx.commit().await?;

    let mut docs = Docs::default();
    // Applying is deterministic: an event that fails once fails every time, so a rebuild
    // dead-letters it at once instead of retrying.
    let mut dead: HashMap<i64, (String, u32)> = HashMap::new();
    let mut position = 0i64;
    let mut events_done = 0u64;
    let mut head = log.head().await?;
    loop {
        let events = log.read_all(position, REBUILD_BATCH).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        let decoded = decode_all(events);
        let refs: Vec<&checkpoint::Decoded> = decoded.iter().collect();
        let mut tx = db.begin_write().await?;
        apply_with_dead_letters(projection, &mut tx, &mut docs, &refs, &mut dead, db).await?;
        tx.commit().await?;
        events_done += decoded.len() as u64;
        position = last;
        head = head.max(last);
        progress(Progress {
            position,
            head,
            events: events_done,
            elapsed_s: started.elapsed().as_secs_f64(),
        });
    }

    // The swap: catch up with whatever arrived meanwhile, then replace the live tables and the
    // checkpoint in one transaction.
    loop {
        let mut tx = db.begin_write().await?;
        let mut caught_up = position;
        let mut batch_failed = None;
        loop {
            let events = log.read_all(caught_up, REBUILD_BATCH).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                break;
            };
            let decoded = decode_all(events);
            let refs: Vec<&checkpoint::Decoded> = decoded.iter().collect();
            match apply_step(projection, &mut tx, &mut docs, &shadow, &refs, &dead).await {
                Ok(()) => {
                    events_done += decoded.len() as u64;
                    caught_up = last;
                }
                Err(StepError::Poison { position: p, error }) => {
                    batch_failed = Some((p, error));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some((p, error)) = batch_failed {
            drop(tx);
            docs.clear();
            dead.insert(p, (error, 1));
            continue;
        }
        let generation = read_checkpoint(&mut tx, projection.name())
            .await?
            .map_or(0, |c| c.generation)
            + 1;
        for def in projection.tables() {
            tx.execute(&format!("DROP TABLE IF EXISTS {}", def.name), &[])
                .await?;
            tx.execute(
                &format!("ALTER TABLE {} RENAME TO {}", shadow(def.name), def.name),
                &[],
            )
            .await?;
        }
        tx.execute(
            "UPDATE projection_checkpoints SET position = $1, fingerprint = $2, generation = $3, updated_at = $4 \
             WHERE projection = $5",
            &[caught_up.into(), projection.fingerprint().into(), generation.into(), now_text().into(), projection.name().into()],
        )
        .await?;
        tx.commit().await?;
        return Ok(RebuildReport {
            position: caught_up,
            events: events_done,
            dead_letters: dead.len(),
            elapsed_s: started.elapsed().as_secs_f64(),
        });
    }
}

/// Applies a batch to the shadow tables, dead-lettering poison events until it goes through.
async fn apply_with_dead_letters(
    projection: &dyn Projection,
    tx: &mut crate::db::ReadTx,
    docs: &mut Docs,
    events: &[&checkpoint::Decoded],
    dead: &mut HashMap<i64, (String, u32)>,
    db: &ReadDb,
) -> Result<(), StepError> {
    loop {
        match apply_step(projection, tx, docs, &shadow, events, dead).await {
            Ok(()) => return Ok(()),
            Err(StepError::Poison { position, error }) => {
                tracing::warn!(projection = projection.name(), position, %error, "dead-lettering during rebuild");
                dead.insert(position, (error, 1));
                docs.clear();
                // The failed attempt may have written part of the batch: start it again.
                let fresh = db.begin_write().await?;
                let old = std::mem::replace(tx, fresh);
                drop(old);
            }
            Err(e) => return Err(e),
        }
    }
}
