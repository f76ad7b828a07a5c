//! Projection health in Prometheus: checkpoint, lag, dead letters and time since progress, per
//! projection, refreshed in the background so a scrape never waits on the database.

use crate::http::ReadState;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

type Labels = Vec<(String, String)>;

#[derive(Clone, Default)]
pub struct ProjectorMetrics {
    checkpoint: Family<Labels, Gauge>,
    lag: Family<Labels, Gauge>,
    dead_letters: Family<Labels, Gauge>,
    since_progress: Family<Labels, Gauge<f64, AtomicU64>>,
}

pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

impl ProjectorMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "studio_projection_checkpoint",
            "Last position applied, per projection",
            m.checkpoint.clone(),
        );
        registry.register(
            "studio_projection_lag_events",
            "Events in the log not yet applied, per projection",
            m.lag.clone(),
        );
        registry.register(
            "studio_projection_dead_letters",
            "Events a projection could not apply",
            m.dead_letters.clone(),
        );
        registry.register(
            "studio_projection_seconds_since_progress",
            "Seconds since this instance last advanced the projection",
            m.since_progress.clone(),
        );
        m
    }

    pub async fn refresh(&self, state: &ReadState) {
        let Ok(health) = crate::http::projection_health(state).await else {
            return;
        };
        let live = state.status.snapshot();
        for p in health["projections"].as_array().into_iter().flatten() {
            let name = p["projection"].as_str().unwrap_or_default().to_string();
            let labels = vec![("projection".to_string(), name.clone())];
            self.checkpoint
                .get_or_create(&labels)
                .set(p["checkpoint"].as_i64().unwrap_or(0));
            self.lag
                .get_or_create(&labels)
                .set(p["lag_events"].as_i64().unwrap_or(0));
            self.dead_letters
                .get_or_create(&labels)
                .set(p["dead_letters"].as_i64().unwrap_or(0));
            if let Some(at) = live.get(&name).and_then(|s| s.last_progress) {
                let secs = SystemTime::now()
                    .duration_since(at)
                    .unwrap_or_default()
                    .as_secs_f64();
                self.since_progress.get_or_create(&labels).set(secs);
            }
        }
    }

    /// Refreshes until `shutdown` turns true.
    pub async fn run(self, state: ReadState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.refresh(&state).await;
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
