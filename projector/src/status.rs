//! What operators see of each projection: checkpoint, lag, last progress, dead letters.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProjectionStatus {
    pub checkpoint: i64,
    /// Wall-clock time of the last batch applied (RFC 3339); operational, never in a read model.
    pub last_progress_at: Option<String>,
    pub last_error: Option<String>,
    pub owned_here: bool,
    #[serde(skip)]
    pub last_progress: Option<SystemTime>,
}

/// Shared between the runner (writes) and the HTTP/metrics side (reads).
#[derive(Debug, Default)]
pub struct StatusBoard {
    inner: Mutex<BTreeMap<String, ProjectionStatus>>,
}

impl StatusBoard {
    pub fn set_checkpoint(&self, name: &str, position: i64, clear_error: bool) {
        let mut map = self.inner.lock().expect("status lock");
        let s = map.entry(name.to_string()).or_default();
        if position != s.checkpoint || s.last_progress.is_none() {
            s.last_progress = Some(SystemTime::now());
            s.last_progress_at = Some(eventlog::envelope::format_timestamp(chrono::Utc::now()));
        }
        s.checkpoint = position;
        if clear_error {
            s.last_error = None;
        }
    }

    pub fn set_error(&self, name: &str, error: &str) {
        let mut map = self.inner.lock().expect("status lock");
        map.entry(name.to_string()).or_default().last_error = Some(error.to_string());
    }

    pub fn set_owned(&self, name: &str, owned: bool) {
        let mut map = self.inner.lock().expect("status lock");
        map.entry(name.to_string()).or_default().owned_here = owned;
    }

    pub fn snapshot(&self) -> BTreeMap<String, ProjectionStatus> {
        self.inner.lock().expect("status lock").clone()
    }
}
