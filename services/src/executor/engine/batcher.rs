//! Buffers a run's events and appends them in batches.
//!
//! At 2,000 dispatches/s a run produces 4,000 events a second; appending each on its own would
//! be 4,000 transactions. The engine pushes events here in the order they must be stored
//! (a dispatch's `dispatch_submitted` is pushed before its completion can even arrive), and
//! each flush hands the buffer to one writer task. The writer appends batches one after
//! another, so the log keeps the push order, and the scheduling loop never waits on the
//! database unless the writer falls [`WRITER_QUEUE_BATCHES`] batches behind.

use super::config::EngineError;
use eventlog::catalogue::{ArrivalsMissed, EventPayload};
use eventlog::{EventLog, StoreError, ValidatedEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Batches handed to the writer but not yet appended; past this the engine waits for it.
const WRITER_QUEUE_BATCHES: usize = 64;

/// Why arrivals were missed, as recorded in `load_test.arrivals_missed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum MissReason {
    InFlightLimit,
    Late,
}

pub(super) struct EventBatcher {
    run_id: String,
    producer: String,
    buffer: Vec<ValidatedEvent>,
    /// Missed arrivals since the last flush, per stage and reason: one event each per flush.
    missed: BTreeMap<(u32, MissReason), u64>,
    max_in_flight: usize,
    late_after_ms: u128,
    batch_tx: Option<mpsc::Sender<Vec<ValidatedEvent>>>,
    writer: Option<JoinHandle<Result<(), StoreError>>>,
}

impl EventBatcher {
    pub(super) fn new(
        log: Arc<dyn EventLog>,
        run_id: &str,
        producer: &str,
        max_in_flight: usize,
        late_after_ms: u128,
    ) -> Self {
        let (batch_tx, mut batch_rx) = mpsc::channel::<Vec<ValidatedEvent>>(WRITER_QUEUE_BATCHES);
        let writer = tokio::spawn(async move {
            while let Some(batch) = batch_rx.recv().await {
                log.append(batch).await?;
            }
            Ok(())
        });
        Self {
            run_id: run_id.to_owned(),
            producer: producer.to_owned(),
            buffer: Vec::new(),
            missed: BTreeMap::new(),
            max_in_flight,
            late_after_ms,
            batch_tx: Some(batch_tx),
            writer: Some(writer),
        }
    }

    pub(super) fn push(
        &mut self,
        payload: &EventPayload,
        occurred_at: chrono::DateTime<chrono::Utc>,
    ) {
        self.buffer.push(ValidatedEvent::from_payload(
            payload,
            &self.producer,
            occurred_at,
        ));
    }

    pub(super) fn miss(&mut self, stage_index: u32, reason: MissReason) {
        *self.missed.entry((stage_index, reason)).or_default() += 1;
    }

    pub(super) fn len(&self) -> usize {
        self.buffer.len() + self.missed.len()
    }

    /// Hands everything buffered to the writer; an error means the writer has failed.
    pub(super) async fn flush(&mut self) -> Result<(), EngineError> {
        let now = chrono::Utc::now();
        for ((stage_index, reason), count) in std::mem::take(&mut self.missed) {
            let reason = match reason {
                MissReason::InFlightLimit => format!(
                    "{} dispatches were already in flight (max_in_flight)",
                    self.max_in_flight
                ),
                MissReason::Late => format!(
                    "the executor reached them more than {} ms after their planned instant",
                    self.late_after_ms
                ),
            };
            let payload = EventPayload::ArrivalsMissed(ArrivalsMissed {
                run_id: self.run_id.clone(),
                stage_index,
                count,
                reason: Some(reason),
            });
            self.push(&payload, now);
        }
        if self.buffer.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.buffer);
        let sent = match &self.batch_tx {
            Some(tx) => tx.send(batch).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer stopped: its own answer says why.
            self.finish().await.and(Err(EngineError::Writer(
                "the writer stopped before the run ended".into(),
            )))
        }
    }

    /// Flushes, then waits until every batch is appended.
    pub(super) async fn close(mut self) -> Result<(), EngineError> {
        self.flush().await?;
        self.finish().await
    }

    async fn finish(&mut self) -> Result<(), EngineError> {
        self.batch_tx = None;
        match self.writer.take() {
            Some(writer) => match writer.await {
                Ok(result) => Ok(result?),
                Err(e) => Err(EngineError::Writer(e.to_string())),
            },
            None => Ok(()),
        }
    }
}
