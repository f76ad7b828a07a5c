//! Prometheus metrics of the publish path, served at `GET /metrics` in OpenMetrics text.
//!
//! The registry is shared: the composition root may register other crates' metrics in it
//! first and hand it to [`crate::AppState::with_registry`], so one endpoint serves them all.

use crate::error::ErrorCode;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::time::Duration;

/// The content type of [`render`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    code: &'static str,
}

/// Handles to the ingest metrics; clones share the same series. One reference count: the
/// refusal-counting middleware clones it for every request.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    series: Arc<Series>,
}

#[derive(Debug)]
struct Series {
    appended_events: Counter,
    duplicate_events: Counter,
    append_requests: Counter,
    append_duration: Histogram,
    batch_size: Histogram,
    refusals: Family<RefusalLabels, Counter>,
}

impl IngestMetrics {
    /// Creates the metrics and registers them under their `studio_ingest_` names.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Series {
            appended_events: Counter::default(),
            duplicate_events: Counter::default(),
            append_requests: Counter::default(),
            // 0.5 ms … ~16 s: a group commit's fsync up to a stalled database.
            append_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            // 1 … 16,384 events, beyond the 10,000 a request may carry.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            refusals: Family::default(),
        };
        registry.register(
            "studio_ingest_appended_events",
            "Events newly stored by POST /v1/events",
            metrics.appended_events.clone(),
        );
        registry.register(
            "studio_ingest_duplicate_events",
            "Published events answered with an already stored event (repeated idempotency key or event id)",
            metrics.duplicate_events.clone(),
        );
        registry.register(
            "studio_ingest_append_requests",
            "Publish requests handed to the event log, whatever the outcome",
            metrics.append_requests.clone(),
        );
        registry.register_with_unit(
            "studio_ingest_append_duration",
            "Time the event log took to append one publish request durably",
            Unit::Seconds,
            metrics.append_duration.clone(),
        );
        registry.register(
            "studio_ingest_batch_size_events",
            "Events per publish request that passed validation",
            metrics.batch_size.clone(),
        );
        registry.register(
            "studio_ingest_refusals",
            "Requests to /v1/events refused, by error code",
            metrics.refusals.clone(),
        );
        Self {
            series: Arc::new(metrics),
        }
    }

    /// Records one call to the event log with `events` events, whatever its outcome.
    pub(crate) fn record_append_call(&self, events: usize, took: Duration) {
        self.series.append_requests.inc();
        self.series.batch_size.observe(events as f64);
        self.series.append_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn record_appended(&self, new: usize, duplicates: usize) {
        self.series.appended_events.inc_by(new as u64);
        self.series.duplicate_events.inc_by(duplicates as u64);
    }

    pub fn record_refusal(&self, code: &'static str) {
        self.series
            .refusals
            .get_or_create(&RefusalLabels { code })
            .inc();
    }
}

/// Middleware counting every [`crate::ApiError`] answer by its code, including those of
/// extractors (auth) that reject before a handler runs.
pub async fn count_refusals(
    State(metrics): State<IngestMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        metrics.record_refusal(code);
    }
    response
}

/// The registry in OpenMetrics text, ending with `# EOF`.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an error would come from a metric's own encoder.
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::warn!(error = %err, "metrics encoding failed");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_refusals_render_under_their_names() {
        let mut registry = Registry::default();
        let metrics = IngestMetrics::register(&mut registry);
        metrics.record_append_call(3, Duration::from_millis(2));
        metrics.record_appended(2, 1);
        metrics.record_refusal("validation_failed");
        let text = render(&registry);
        for line in [
            "studio_ingest_appended_events_total 2",
            "studio_ingest_duplicate_events_total 1",
            "studio_ingest_append_requests_total 1",
            "studio_ingest_append_duration_seconds_count 1",
            "studio_ingest_batch_size_events_sum 3.0",
            "studio_ingest_refusals_total{code=\"validation_failed\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
