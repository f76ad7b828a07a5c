//! `studio dead-letters replay`: applies a dead-lettered event again, now (after a fix, or once
//! whatever it referred to exists). It applies out of order by nature, so it bumps the
//! projection's generation: a live runner drops its cached rows and reloads.

use crate::checkpoint::{self, apply_step, decode_all, now_text, read_checkpoint, StepError};
use crate::db::ReadDb;
use crate::docs::Docs;
use eventlog::EventLog;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    Applied,
    StillFailing(String),
}

pub async fn replay(
    db: &ReadDb,
    log: &dyn EventLog,
    projection_name: &str,
    position: i64,
) -> Result<ReplayOutcome, StepError> {
    let projection = crate::projections::select(&[projection_name.to_string()])
        .map_err(|e| StepError::Poison { position, error: e })?
        .remove(0);
    let events = log.read_all(position - 1, 1).await?;
    let decoded = decode_all(
        events
            .into_iter()
            .filter(|e| e.position == position)
            .collect(),
    );
    let Some(event) = decoded.first() else {
        return Ok(ReplayOutcome::StillFailing(format!(
            "no event at position {position}"
        )));
    };
    let mut tx = db.begin_write().await?;
    let live = |t: &str| t.to_string();
    let mut docs = Docs::default();
    match apply_step(
        projection.as_ref(),
        &mut tx,
        &mut docs,
        &live,
        &[event],
        &HashMap::new(),
    )
    .await
    {
        Ok(()) => {
            let generation = read_checkpoint(&mut tx, projection.name())
                .await?
                .map_or(0, |c| c.generation)
                + 1;
            tx.execute(
                "UPDATE projection_checkpoints SET generation = $1, updated_at = $2 WHERE projection = $3",
                &[generation.into(), now_text().into(), projection.name().into()],
            )
            .await?;
            tx.execute(
                "UPDATE projection_dead_letters SET status = 'replayed' WHERE projection = $1 AND position = $2",
                &[projection.name().into(), position.into()],
            )
            .await?;
            tx.commit().await?;
            Ok(ReplayOutcome::Applied)
        }
        Err(StepError::Poison { error, .. }) => {
            drop(tx);
            let mut tx = db.begin_write().await?;
            let attempts = tx
                .int(
                    "SELECT attempts FROM projection_dead_letters WHERE projection = $1 AND position = $2",
                    &[projection.name().into(), position.into()],
                )
                .await?
                .unwrap_or(0);
            checkpoint::record_dead_letter(
                &mut tx,
                projection.name(),
                &event.0,
                &error,
                (attempts + 1) as u32,
            )
            .await?;
            tx.commit().await?;
            Ok(ReplayOutcome::StillFailing(error))
        }
        Err(e) => Err(e),
    }
}
