//! Latency histograms stored in documents: HdrHistogram (mergeable, no sorted samples), in
//! microseconds, serialised with the V2 format as base64 so a document stays JSON.

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One hour in microseconds: the longest latency recorded as itself; longer ones are clamped.
const MAX_MICROS: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

#[derive(Debug, Clone)]
pub struct LatencyHist(Histogram<u64>);

impl Default for LatencyHist {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, MAX_MICROS, SIGNIFICANT_DIGITS).expect("valid bounds"))
    }
}

/// Percentiles in milliseconds; `None` when nothing was recorded (unknown, not zero).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

fn ms(micros: u64) -> f64 {
    (micros as f64 / 1000.0 * 1000.0).round() / 1000.0
}

impl LatencyHist {
    pub fn record_ms(&mut self, value_ms: f64) {
        let micros = (value_ms * 1000.0).round().clamp(1.0, MAX_MICROS as f64) as u64;
        self.0.saturating_record(micros);
    }

    pub fn merge(&mut self, other: &LatencyHist) {
        self.0.add(&other.0).expect("same bounds");
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| ms(self.0.value_at_quantile(q)))
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50: self.quantile_ms(0.50),
            p95: self.quantile_ms(0.95),
            p99: self.quantile_ms(0.99),
            max: (!self.0.is_empty()).then(|| ms(self.0.max())),
        }
    }
}

impl Serialize for LatencyHist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut bytes)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for LatencyHist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        let hist: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(serde::de::Error::custom)?;
        Ok(Self(hist))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram_in_milliseconds() {
        let mut h = LatencyHist::default();
        for v in 1..=1000 {
            h.record_ms(v as f64);
        }
        let p = h.percentiles();
        assert!((p.p50.unwrap() - 500.0).abs() <= 0.5, "{p:?}");
        assert!((p.p99.unwrap() - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.max.unwrap() - 1000.0).abs() <= 1.0);
    }

    #[test]
    fn an_empty_histogram_has_unknown_percentiles() {
        assert_eq!(LatencyHist::default().percentiles().p50, None);
    }

    #[test]
    fn histograms_round_trip_through_json_byte_for_byte() {
        let mut h = LatencyHist::default();
        h.record_ms(12.5);
        h.record_ms(900.0);
        let json = serde_json::to_string(&h).unwrap();
        let back: LatencyHist = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn merged_histograms_equal_one_recorded_in_one_go() {
        let (mut a, mut b, mut all) = (
            LatencyHist::default(),
            LatencyHist::default(),
            LatencyHist::default(),
        );
        for v in [1.0, 5.0, 80.0] {
            a.record_ms(v);
            all.record_ms(v);
        }
        for v in [3.0, 7000.0] {
            b.record_ms(v);
            all.record_ms(v);
        }
        a.merge(&b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&all).unwrap()
        );
    }
}
