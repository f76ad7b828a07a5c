//! Refusals that name the offending field.

use serde::Serialize;
use std::fmt;

/// One thing wrong with an input, located by a JSON path such as `payload.stages[0].target_rps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub path: String,
    pub reason: String,
}

impl Violation {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every violation found in one event. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", .violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ValidationError {
    pub violations: Vec<Violation>,
}

impl ValidationError {
    pub fn single(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            violations: vec![Violation::new(path, reason)],
        }
    }

    /// Prefixes every path, e.g. with `payload`.
    pub fn nested(mut self, prefix: &str) -> Self {
        for v in &mut self.violations {
            v.path = join_path(prefix, &v.path);
        }
        self
    }
}

pub(crate) fn join_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty() || path == ".") {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Collects violations while a payload checks its own semantic rules.
#[derive(Debug, Default)]
pub struct Checks {
    violations: Vec<Violation>,
}

impl Checks {
    pub fn fail(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.violations.push(Violation::new(path, reason));
    }

    pub fn non_negative(&mut self, path: &str, value: f64) {
        if !(value.is_finite() && value >= 0.0) {
            self.fail(path, format!("must be a finite number ≥ 0, got {value}"));
        }
    }

    pub fn positive(&mut self, path: &str, value: f64) {
        if !(value.is_finite() && value > 0.0) {
            self.fail(path, format!("must be a finite number > 0, got {value}"));
        }
    }

    pub fn fraction(&mut self, path: &str, value: f64) {
        if !(0.0..=1.0).contains(&value) {
            self.fail(path, format!("must be between 0 and 1, got {value}"));
        }
    }

    pub fn opt_non_negative(&mut self, path: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.non_negative(path, v);
        }
    }

    pub fn not_blank(&mut self, path: &str, value: &str) {
        if value.trim().is_empty() {
            self.fail(path, "must not be empty");
        }
    }

    pub fn segment(&mut self, path: &str, value: &str) {
        if let Err(reason) = crate::ids::check_segment(value) {
            self.fail(path, reason);
        }
    }

    pub fn rfc3339(&mut self, path: &str, value: &str) {
        if chrono::DateTime::parse_from_rfc3339(value).is_err() {
            self.fail(path, format!("{value:?} is not an RFC 3339 timestamp"));
        }
    }

    pub fn variant_id(&mut self, path: &str, value: &str) -> Option<crate::ids::VariantId> {
        match crate::ids::VariantId::parse(value) {
            Ok(id) => Some(id),
            Err(reason) => {
                self.fail(path, reason);
                None
            }
        }
    }

    pub fn benchmark_run_id(&mut self, path: &str, value: &str) {
        if let Err(reason) = crate::ids::check_benchmark_run_id(value) {
            self.fail(path, reason);
        }
    }

    pub fn finish(self) -> Result<(), ValidationError> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                violations: self.violations,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_paths_join_fields_and_indexes() {
        let err = ValidationError::single("stages[0].target_rps", "bad").nested("payload");
        assert_eq!(err.violations[0].path, "payload.stages[0].target_rps");
        let err = ValidationError::single("[2]", "bad").nested("events");
        assert_eq!(err.violations[0].path, "events[2]");
        let err = ValidationError::single(".", "bad").nested("payload");
        assert_eq!(err.violations[0].path, "payload");
    }

    #[test]
    fn checks_refuse_negative_and_out_of_range_numbers() {
        let mut checks = Checks::default();
        checks.non_negative("latency_ms", -1.0);
        checks.fraction("failure_rate", 1.5);
        checks.positive("target_rps", 0.0);
        checks.non_negative("ok", 0.0);
        let err = checks.finish().unwrap_err();
        let paths: Vec<_> = err.violations.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["latency_ms", "failure_rate", "target_rps"]);
    }
}
