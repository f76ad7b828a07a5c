//! What operators see of each sink in this process: checkpoint, delivered and failed counts,
//! last error, ownership. Lag and dead letters come from the database at query time, so they
//! are right whichever instance owns the sink.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SinkStatus {
    pub checkpoint: i64,
    /// Events delivered by this process since it started.
    pub delivered: u64,
    /// Failed delivery attempts (retryable and permanent) by this process.
    pub failed: u64,
    /// Events this process dead-lettered.
    pub dead_lettered: u64,
    pub last_error: Option<String>,
    /// Wall-clock time of the last checkpoint move (RFC 3339); operational only.
    pub last_progress_at: Option<String>,
    pub owned_here: bool,
}

/// Shared between the runner (writes) and the HTTP side (reads).
#[derive(Debug, Default)]
pub struct SinkStatusBoard {
    inner: Mutex<BTreeMap<String, SinkStatus>>,
}

impl SinkStatusBoard {
    fn with(&self, name: &str, f: impl FnOnce(&mut SinkStatus)) {
        let mut map = self.inner.lock().expect("sink status lock");
        f(map.entry(name.to_string()).or_default());
    }

    pub fn set_checkpoint(&self, name: &str, position: i64) {
        self.with(name, |s| {
            if s.checkpoint != position || s.last_progress_at.is_none() {
                s.last_progress_at = Some(crate::checkpoint::now_text());
            }
            s.checkpoint = position;
        });
    }

    pub fn delivered(&self, name: &str, events: usize) {
        self.with(name, |s| {
            s.delivered += events as u64;
            s.last_error = None;
        });
    }

    pub fn failed(&self, name: &str, error: &str) {
        self.with(name, |s| {
            s.failed += 1;
            s.last_error = Some(error.to_string());
        });
    }

    pub fn dead_lettered(&self, name: &str, events: usize) {
        self.with(name, |s| s.dead_lettered += events as u64);
    }

    pub fn set_error(&self, name: &str, error: &str) {
        self.with(name, |s| s.last_error = Some(error.to_string()));
    }

    pub fn set_owned(&self, name: &str, owned: bool) {
        self.with(name, |s| s.owned_here = owned);
    }

    pub fn snapshot(&self) -> BTreeMap<String, SinkStatus> {
        self.inner.lock().expect("sink status lock").clone()
    }
}
