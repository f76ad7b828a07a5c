//! The one mapping from events (and periodic health readings) to CloudWatch metrics, which the
//! metric sink publishes, the alarms watch and the dashboard draws. Adding a metric here adds
//! it everywhere.

use super::config::CloudWatchSettings;
use crate::MappingEntry;

/// Where a metric's data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricSource {
    /// Folded from these event types as they are delivered.
    Events(&'static [&'static str]),
    /// Read from the database on every tick.
    Tick(&'static str),
}

/// How a metric's data points are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// One summed value per minute.
    Count,
    /// Values with counts (PutMetricData `Values`/`Counts`), so CloudWatch keeps the
    /// distribution: percentiles for latency, the mean of 0/1 values for a failure rate.
    Distribution,
    /// A reading at the time of the tick.
    Gauge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    /// Dimension names; each distinct dimension set is its own CloudWatch metric.
    pub dimensions: &'static [&'static str],
    /// A CloudWatch `StandardUnit` name.
    pub unit: &'static str,
    pub kind: MetricKind,
    pub source: MetricSource,
    /// The statistic dashboards and alarms read it with.
    pub statistic: &'static str,
    pub title: &'static str,
}

pub const DISPATCH_EVENTS: &[&str] = &[
    "load_test.dispatch_completed",
    "benchmark.dispatch_completed",
];
pub const LOAD_TEST_DISPATCH: &[&str] = &["load_test.dispatch_completed"];
/// Events whose severity (DESIGN §4) is warn or critical for some payload.
pub const SEVERITY_EVENTS: &[&str] = &["severity:warn", "severity:critical"];

pub const DISPATCHES: &str = "Dispatches";
pub const DISPATCH_FAILURES: &str = "DispatchFailures";
pub const DISPATCH_LATENCY: &str = "DispatchLatency";
/// Every completed load-test dispatch is a 1 (failed or timed out) or a 0 (succeeded), so the
/// `Average` over any period is the run's failure rate in that period: what the stop condition
/// watches, and what the run alarm compares with `max_failure_rate`.
pub const RUN_FAILURE_RATE: &str = "RunFailureRate";
pub const ACTION_LOGS: &str = "ActionLogs";
pub const PROJECTION_LAG: &str = "ProjectionLag";
pub const SINK_LAG: &str = "SinkLag";
pub const DEAD_LETTERS: &str = "DeadLetters";

pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: DISPATCHES,
        dimensions: &["Source"],
        unit: "Count",
        kind: MetricKind::Count,
        source: MetricSource::Events(DISPATCH_EVENTS),
        statistic: "Sum",
        title: "Dispatches completed",
    },
    MetricDef {
        name: DISPATCHES,
        dimensions: &["Source", "RunId"],
        unit: "Count",
        kind: MetricKind::Count,
        source: MetricSource::Events(DISPATCH_EVENTS),
        statistic: "Sum",
        title: "Dispatches per run",
    },
    MetricDef {
        name: DISPATCH_FAILURES,
        dimensions: &["Source"],
        unit: "Count",
        kind: MetricKind::Count,
        source: MetricSource::Events(DISPATCH_EVENTS),
        statistic: "Sum",
        title: "Dispatch failures (failed or timed out)",
    },
    MetricDef {
        name: DISPATCH_FAILURES,
        dimensions: &["Source", "RunId"],
        unit: "Count",
        kind: MetricKind::Count,
        source: MetricSource::Events(DISPATCH_EVENTS),
        statistic: "Sum",
        title: "Dispatch failures per run",
    },
    MetricDef {
        name: DISPATCH_LATENCY,
        dimensions: &["Source"],
        unit: "Milliseconds",
        kind: MetricKind::Distribution,
        source: MetricSource::Events(DISPATCH_EVENTS),
        statistic: "p95",
        title: "Dispatch latency from the scheduled instant (p95)",
    },
    MetricDef {
        name: DISPATCH_LATENCY,
        dimensions: &["Source", "RunId"],
        unit: "Milliseconds",
        kind: MetricKind::Distribution,
        source: MetricSource::Events(DISPATCH_EVENTS),
        statistic: "p95",
        title: "Dispatch latency per run (p95)",
    },
    MetricDef {
        name: RUN_FAILURE_RATE,
        dimensions: &["RunId"],
        unit: "None",
        kind: MetricKind::Distribution,
        source: MetricSource::Events(LOAD_TEST_DISPATCH),
        statistic: "Average",
        title: "Load-test failure rate per run",
    },
    MetricDef {
        name: ACTION_LOGS,
        dimensions: &["Severity"],
        unit: "Count",
        kind: MetricKind::Count,
        source: MetricSource::Events(SEVERITY_EVENTS),
        statistic: "Sum",
        title: "Warn and critical events (action logs) by severity",
    },
    MetricDef {
        name: PROJECTION_LAG,
        dimensions: &["Projection"],
        unit: "Count",
        kind: MetricKind::Gauge,
        source: MetricSource::Tick("projection_checkpoints"),
        statistic: "Maximum",
        title: "Projection lag (events behind the log head)",
    },
    MetricDef {
        name: PROJECTION_LAG,
        dimensions: &[],
        unit: "Count",
        kind: MetricKind::Gauge,
        source: MetricSource::Tick("projection_checkpoints"),
        statistic: "Maximum",
        title: "Largest projection lag",
    },
    MetricDef {
        name: SINK_LAG,
        dimensions: &["Sink"],
        unit: "Count",
        kind: MetricKind::Gauge,
        source: MetricSource::Tick("sink_checkpoints"),
        statistic: "Maximum",
        title: "Sink lag (events behind the log head)",
    },
    MetricDef {
        name: DEAD_LETTERS,
        dimensions: &["Kind"],
        unit: "Count",
        kind: MetricKind::Gauge,
        source: MetricSource::Tick("projection_dead_letters, sink_dead_letters"),
        statistic: "Maximum",
        title: "Dead letters waiting (projections, sinks)",
    },
    MetricDef {
        name: DEAD_LETTERS,
        dimensions: &[],
        unit: "Count",
        kind: MetricKind::Gauge,
        source: MetricSource::Tick("projection_dead_letters, sink_dead_letters"),
        statistic: "Maximum",
        title: "Dead letters waiting in total",
    },
];

/// `Name[Dim,Dim]`, how mapping entries name a metric and its dimension set.
pub fn metric_target(settings: &CloudWatchSettings, def: &MetricDef) -> String {
    format!(
        "{}/{}[{}]",
        settings.namespace,
        def.name,
        def.dimensions.join(",")
    )
}

pub fn metric_mapping(settings: &CloudWatchSettings) -> Vec<MappingEntry> {
    let mut out = Vec::new();
    for def in METRICS {
        let events: Vec<String> = match def.source {
            MetricSource::Events(events) => events.iter().map(|e| e.to_string()).collect(),
            MetricSource::Tick(table) => vec![format!("tick:{table}")],
        };
        for event in events {
            out.push(MappingEntry {
                event,
                destination: "metric".into(),
                target: metric_target(settings, def),
            });
        }
    }
    out
}
