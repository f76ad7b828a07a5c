//! [`EventWriter`]: one writer task per run that appends the run's events in batches.
//!
//! Dispatch tasks of every item push events here; the writer appends whatever has queued up
//! while its previous append ran (up to [`BenchmarkOptions::max_batch`] at a time), so a busy
//! run costs a few appends a second, not one per event, and an idle one appends at once. One
//! task, one channel: events are stored in the order they were pushed, so a dispatch's
//! `dispatch_submitted` is always stored before its `dispatch_completed`, and an item's
//! artifact after its dispatches.
//!
//! [`BenchmarkOptions::max_batch`]: super::service::BenchmarkOptions::max_batch

use eventlog::{EventLog, ValidatedEvent};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

enum Message {
    Event(Box<ValidatedEvent>),
    /// Answered once every event pushed before it is durably appended (or with the error that
    /// stopped the writer).
    Flush(oneshot::Sender<Result<(), String>>),
}

/// A handle on the run's writer task; clones share it.
#[derive(Clone)]
pub(crate) struct EventWriter {
    tx: mpsc::UnboundedSender<Message>,
    /// Set once an append failed: nothing more is stored for this run in this process, so
    /// dispatch tasks stop sending work whose results could not be recorded.
    failed: Arc<AtomicBool>,
}

impl EventWriter {
    pub fn spawn(log: Arc<dyn EventLog>, max_batch: usize) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let failed = Arc::new(AtomicBool::new(false));
        let writer_failed = failed.clone();
        let task = tokio::spawn(async move {
            let mut error: Option<String> = None;
            let mut batch: Vec<ValidatedEvent> = Vec::new();
            let mut flushes: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
            while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                while let Some(message) = next.take() {
                    match message {
                        Message::Event(event) => batch.push(*event),
                        Message::Flush(done) => flushes.push(done),
                    }
                    if batch.len() >= max_batch.max(1) {
                        break;
                    }
                    next = rx.try_recv().ok();
                }
                if !batch.is_empty() && error.is_none() {
                    if let Err(err) = log.append(std::mem::take(&mut batch)).await {
                        tracing::error!(error = %err, "cannot append a benchmark run's events");
                        writer_failed.store(true, Ordering::SeqCst);
                        error = Some(err.to_string());
                    }
                }
                batch.clear();
                for done in flushes.drain(..) {
                    let _ = done.send(error.clone().map_or(Ok(()), Err));
                }
            }
        });
        (Self { tx, failed }, task)
    }

    pub fn push(&self, event: ValidatedEvent) {
        // A send fails only when the writer task is gone; the next flush reports it.
        let _ = self.tx.send(Message::Event(Box::new(event)));
    }

    /// Waits until everything pushed so far is durably appended.
    pub async fn flush(&self) -> Result<(), String> {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Message::Flush(done_tx)).is_err() {
            return Err("the run's event writer stopped".into());
        }
        done_rx
            .await
            .unwrap_or_else(|_| Err("the run's event writer stopped".into()))
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}
