//! Metric data folded per minute and split into PutMetricData calls within CloudWatch's limits
//! (DESIGN §7), as pure functions.
//!
//! A PutMetricData call takes at most [`MAX_METRIC_DATA_PER_CALL`] metric data, each with at
//! most [`MAX_VALUES_PER_DATUM`] values (with as many counts) and
//! [`MAX_DIMENSIONS_PER_DATUM`] dimensions, in a request of at most 1 MB. Latencies and 0/1
//! failure flags go as values with counts, so CloudWatch keeps their distribution (percentiles,
//! averages); values are rounded to three significant digits first, which keeps a busy
//! minute's distinct values (and so the calls) few while moving a percentile by under 0.5 %.
//!
//! Like log events, data older than two weeks or more than 2 h ahead would be refused; such
//! points are re-timed into the window (see [`fit_log_timestamp`]) rather than dropped.

use super::log_batch::fit_log_timestamp;
use std::collections::BTreeMap;

pub const MAX_METRIC_DATA_PER_CALL: usize = 1_000;
pub const MAX_VALUES_PER_DATUM: usize = 150;
pub const MAX_DIMENSIONS_PER_DATUM: usize = 30;
/// PutMetricData's request limit is 1 MB; the estimate below stays under it with room to spare.
pub const MAX_METRIC_CALL_BYTES: usize = 900_000;
const MINUTE_MS: i64 = 60_000;

/// One metric datum as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDatumSpec {
    pub name: String,
    pub dimensions: Vec<(String, String)>,
    pub unit: &'static str,
    pub timestamp_ms: i64,
    /// A single value (counts, gauges); `None` when `values`/`counts` carry the data.
    pub value: Option<f64>,
    pub values: Vec<f64>,
    pub counts: Vec<f64>,
}

impl MetricDatumSpec {
    /// A generous estimate of the datum's size in a request.
    pub fn estimated_bytes(&self) -> usize {
        64 + self.name.len()
            + self
                .dimensions
                .iter()
                .map(|(k, v)| k.len() + v.len() + 16)
                .sum::<usize>()
            + 24 * (self.values.len() + self.counts.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct SeriesKey {
    name: String,
    dimensions: Vec<(String, String)>,
    unit: &'static str,
    timestamp_ms: i64,
}

/// Data points folded per metric, dimension set and minute, in a deterministic order (the same
/// events always give the same calls).
#[derive(Debug, Default)]
pub struct MetricAggregator {
    now_ms: i64,
    sums: BTreeMap<SeriesKey, f64>,
    /// Quantised value (in thousandths) → count.
    distributions: BTreeMap<SeriesKey, BTreeMap<i64, f64>>,
    gauges: BTreeMap<SeriesKey, f64>,
}

/// `v` rounded to three significant digits.
pub fn quantize(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return 0.0;
    }
    let magnitude = 10f64.powi(v.abs().log10().floor() as i32 - 2);
    (v / magnitude).round() * magnitude
}

fn dims(dimensions: &[(&str, &str)]) -> Vec<(String, String)> {
    dimensions
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl MetricAggregator {
    /// `now_ms` is the clock used to re-time points outside CloudWatch's window.
    pub fn new(now_ms: i64) -> Self {
        Self {
            now_ms,
            ..Self::default()
        }
    }

    fn key(
        &self,
        name: &str,
        dimensions: &[(&str, &str)],
        unit: &'static str,
        ts_ms: i64,
    ) -> SeriesKey {
        let (ts, _) = fit_log_timestamp(ts_ms, self.now_ms);
        SeriesKey {
            name: name.to_string(),
            dimensions: dims(dimensions),
            unit,
            timestamp_ms: ts - ts.rem_euclid(MINUTE_MS),
        }
    }

    /// Adds `n` to a per-minute sum.
    pub fn count(
        &mut self,
        name: &str,
        dimensions: &[(&str, &str)],
        unit: &'static str,
        ts_ms: i64,
        n: f64,
    ) {
        let key = self.key(name, dimensions, unit, ts_ms);
        *self.sums.entry(key).or_default() += n;
    }

    /// Records one observation of a distribution.
    pub fn observe(
        &mut self,
        name: &str,
        dimensions: &[(&str, &str)],
        unit: &'static str,
        ts_ms: i64,
        value: f64,
    ) {
        let key = self.key(name, dimensions, unit, ts_ms);
        let q = (quantize(value) * 1000.0).round() as i64;
        *self
            .distributions
            .entry(key)
            .or_default()
            .entry(q)
            .or_default() += 1.0;
    }

    /// A reading at `ts_ms` (the last one of a minute wins).
    pub fn gauge(
        &mut self,
        name: &str,
        dimensions: &[(&str, &str)],
        unit: &'static str,
        ts_ms: i64,
        value: f64,
    ) {
        let (ts, _) = fit_log_timestamp(ts_ms, self.now_ms);
        let key = SeriesKey {
            name: name.to_string(),
            dimensions: dims(dimensions),
            unit,
            timestamp_ms: ts,
        };
        self.gauges.insert(key, value);
    }

    pub fn is_empty(&self) -> bool {
        self.sums.is_empty() && self.distributions.is_empty() && self.gauges.is_empty()
    }

    /// The data to send: a distribution with more distinct values than one datum holds is
    /// split over several data of the same metric and minute (CloudWatch merges them).
    pub fn into_data(self) -> Vec<MetricDatumSpec> {
        let mut out = Vec::new();
        let single = |k: SeriesKey, v: f64| MetricDatumSpec {
            name: k.name,
            dimensions: k.dimensions,
            unit: k.unit,
            timestamp_ms: k.timestamp_ms,
            value: Some(v),
            values: Vec::new(),
            counts: Vec::new(),
        };
        out.extend(self.sums.into_iter().map(|(k, v)| single(k, v)));
        out.extend(self.gauges.into_iter().map(|(k, v)| single(k, v)));
        for (k, dist) in self.distributions {
            let pairs: Vec<(i64, f64)> = dist.into_iter().collect();
            for chunk in pairs.chunks(MAX_VALUES_PER_DATUM) {
                out.push(MetricDatumSpec {
                    name: k.name.clone(),
                    dimensions: k.dimensions.clone(),
                    unit: k.unit,
                    timestamp_ms: k.timestamp_ms,
                    value: None,
                    values: chunk.iter().map(|(q, _)| *q as f64 / 1000.0).collect(),
                    counts: chunk.iter().map(|(_, c)| *c).collect(),
                });
            }
        }
        out
    }
}

/// Splits data into PutMetricData calls: at most 1,000 data and ~1 MB each. A datum that breaks
/// a per-datum limit (over 150 values, over 30 dimensions) is a bug in the caller, refused
/// with the datum named rather than sent to be refused by CloudWatch.
pub fn plan_metric_batches(
    data: Vec<MetricDatumSpec>,
) -> Result<Vec<Vec<MetricDatumSpec>>, String> {
    let mut batches = Vec::new();
    let mut current: Vec<MetricDatumSpec> = Vec::new();
    let mut bytes = 0usize;
    for datum in data {
        if datum.values.len() > MAX_VALUES_PER_DATUM || datum.values.len() != datum.counts.len() {
            return Err(format!(
                "metric {} has {} values and {} counts (at most {MAX_VALUES_PER_DATUM}, as many counts as values)",
                datum.name,
                datum.values.len(),
                datum.counts.len()
            ));
        }
        if datum.dimensions.len() > MAX_DIMENSIONS_PER_DATUM {
            return Err(format!(
                "metric {} has {} dimensions (at most {MAX_DIMENSIONS_PER_DATUM})",
                datum.name,
                datum.dimensions.len()
            ));
        }
        let size = datum.estimated_bytes();
        if !current.is_empty()
            && (current.len() >= MAX_METRIC_DATA_PER_CALL || bytes + size > MAX_METRIC_CALL_BYTES)
        {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(datum);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn datum(values: usize, dims: usize) -> MetricDatumSpec {
        MetricDatumSpec {
            name: "M".into(),
            dimensions: (0..dims).map(|i| (format!("D{i}"), "v".into())).collect(),
            unit: "Count",
            timestamp_ms: NOW,
            value: (values == 0).then_some(1.0),
            values: (0..values).map(|v| v as f64).collect(),
            counts: vec![1.0; values],
        }
    }

    #[test]
    fn a_thousand_data_fit_one_call_and_the_next_opens_another() {
        let b = plan_metric_batches(vec![datum(0, 1); 1_000]).unwrap();
        assert_eq!(b.len(), 1);
        let b = plan_metric_batches(vec![datum(0, 1); 2_001]).unwrap();
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1_000, 1_000, 1]
        );
    }

    #[test]
    fn a_distribution_is_split_into_data_of_at_most_150_values() {
        let mut agg = MetricAggregator::new(NOW);
        for i in 0..400 {
            agg.observe(
                "DispatchLatency",
                &[("Source", "load_test")],
                "Milliseconds",
                NOW,
                100.0 + i as f64,
            );
        }
        let data = agg.into_data();
        assert_eq!(
            data.iter().map(|d| d.values.len()).collect::<Vec<_>>(),
            vec![150, 150, 100]
        );
        assert!(data.iter().all(|d| d.values.len() == d.counts.len()));
        let total: f64 = data.iter().flat_map(|d| d.counts.iter()).sum();
        assert_eq!(total, 400.0);
        assert!(plan_metric_batches(data).is_ok());
    }

    #[test]
    fn exactly_150_values_and_30_dimensions_pass_one_more_of_either_is_refused() {
        assert!(plan_metric_batches(vec![datum(150, 30)]).is_ok());
        let err = plan_metric_batches(vec![datum(151, 1)]).unwrap_err();
        assert!(err.contains("151 values"), "{err}");
        let err = plan_metric_batches(vec![datum(1, 31)]).unwrap_err();
        assert!(err.contains("31 dimensions"), "{err}");
    }

    #[test]
    fn big_data_split_on_bytes_before_the_count_limit() {
        // 1,000 data of 150 values each would be ~7 MB: the byte limit splits them.
        let data = vec![datum(150, 2); 1_000];
        let batches = plan_metric_batches(data).unwrap();
        assert!(batches.len() > 1);
        for b in &batches {
            let bytes: usize = b.iter().map(MetricDatumSpec::estimated_bytes).sum();
            assert!(bytes <= MAX_METRIC_CALL_BYTES);
        }
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 1_000);
    }

    #[test]
    fn counts_are_summed_per_minute_and_dimension_set() {
        let mut agg = MetricAggregator::new(NOW);
        let minute = NOW - NOW % 60_000;
        agg.count("Dispatches", &[("RunId", "a")], "Count", minute + 1, 1.0);
        agg.count(
            "Dispatches",
            &[("RunId", "a")],
            "Count",
            minute + 59_999,
            1.0,
        );
        agg.count(
            "Dispatches",
            &[("RunId", "a")],
            "Count",
            minute + 60_000,
            1.0,
        );
        agg.count("Dispatches", &[("RunId", "b")], "Count", minute + 5, 1.0);
        let data = agg.into_data();
        let got: Vec<(String, i64, f64)> = data
            .iter()
            .map(|d| {
                (
                    d.dimensions[0].1.clone(),
                    d.timestamp_ms - minute,
                    d.value.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), 0, 2.0),
                ("a".into(), 60_000, 1.0),
                ("b".into(), 0, 1.0)
            ]
        );
    }

    #[test]
    fn failure_flags_as_values_and_counts_average_to_the_failure_rate() {
        let mut agg = MetricAggregator::new(NOW);
        for i in 0..10 {
            agg.observe(
                "RunFailureRate",
                &[("RunId", "a")],
                "None",
                NOW,
                if i < 3 { 1.0 } else { 0.0 },
            );
        }
        let data = agg.into_data();
        assert_eq!(data.len(), 1);
        let d = &data[0];
        let mean: f64 = d
            .values
            .iter()
            .zip(&d.counts)
            .map(|(v, c)| v * c)
            .sum::<f64>()
            / d.counts.iter().sum::<f64>();
        assert!((mean - 0.3).abs() < 1e-12);
    }

    #[test]
    fn values_keep_three_significant_digits() {
        assert_eq!(quantize(1234.5), 1230.0);
        assert!((quantize(87.65) - 87.7).abs() < 1e-9);
        assert_eq!(quantize(0.0), 0.0);
        assert_eq!(quantize(1.0), 1.0);
    }

    #[test]
    fn points_outside_the_two_week_window_are_retimed_not_dropped() {
        let mut agg = MetricAggregator::new(NOW);
        agg.count("Dispatches", &[], "Count", 0, 1.0);
        agg.count("Dispatches", &[], "Count", NOW + 3 * 3_600_000, 1.0);
        let data = agg.into_data();
        assert_eq!(data.len(), 2);
        for d in &data {
            assert!(d.timestamp_ms >= NOW - 14 * 24 * 3_600_000 && d.timestamp_ms <= NOW);
        }
    }
}
