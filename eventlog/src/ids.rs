//! Identifier grammars shared by every producer and reader.
//!
//! - variant id: `er:<id>:wf:<id>:env:<id>:stage:<stage>:provider:<name>:exp:<id>`
//! - load-test dispatch id: `studio_load_test_<run>_<seq>_<uuid>`
//! - benchmark run id: `bm_<uuid>`
//!
//! Every `<id>` part is a *segment*: ASCII letters, digits, `.`, `_` and `-`, starting with a
//! letter or digit, at most [`MAX_SEGMENT_LEN`] characters. Colons never appear inside a segment,
//! which is what keeps the variant id unambiguous.

use serde::Serialize;
use std::fmt;
use uuid::Uuid;

pub const MAX_SEGMENT_LEN: usize = 128;
pub const DISPATCH_ID_PREFIX: &str = "studio_load_test_";
pub const BENCHMARK_RUN_PREFIX: &str = "bm_";

/// Checks one id segment; the error says what is wrong with it.
pub fn check_segment(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_SEGMENT_LEN {
        return Err(format!("must be at most {MAX_SEGMENT_LEN} characters"));
    }
    let first = value.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return Err("must start with a letter or digit".into());
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// A parsed variant id. `Display` gives back the canonical string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct VariantId {
    pub effect_revision_id: String,
    pub workflow_id: String,
    pub environment_id: String,
    pub stage: String,
    pub provider: String,
    pub experiment_id: String,
}

const VARIANT_LABELS: [&str; 6] = ["er", "wf", "env", "stage", "provider", "exp"];

impl VariantId {
    pub fn parse(value: &str) -> Result<Self, String> {
        let grammar = "expected er:<id>:wf:<id>:env:<id>:stage:<stage>:provider:<name>:exp:<id>";
        let tokens: Vec<&str> = value.split(':').collect();
        if tokens.len() != 12 {
            return Err(format!(
                "has {} ':'-separated parts; {grammar}",
                tokens.len()
            ));
        }
        let mut parts = Vec::with_capacity(6);
        for (i, label) in VARIANT_LABELS.iter().enumerate() {
            let (found, part) = (tokens[2 * i], tokens[2 * i + 1]);
            if found != *label {
                return Err(format!(
                    "part {} is {found:?} where {label:?} belongs; {grammar}",
                    2 * i + 1
                ));
            }
            check_segment(part).map_err(|e| format!("the {label} part {e}"))?;
            parts.push(part.to_string());
        }
        let mut parts = parts.into_iter();
        let mut next = || parts.next().unwrap_or_default();
        Ok(Self {
            effect_revision_id: next(),
            workflow_id: next(),
            environment_id: next(),
            stage: next(),
            provider: next(),
            experiment_id: next(),
        })
    }
}

impl fmt::Display for VariantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "er:{}:wf:{}:env:{}:stage:{}:provider:{}:exp:{}",
            self.effect_revision_id,
            self.workflow_id,
            self.environment_id,
            self.stage,
            self.provider,
            self.experiment_id
        )
    }
}

/// A parsed load-test dispatch id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchId {
    pub run_id: String,
    pub seq: u64,
    pub uuid: Uuid,
}

impl DispatchId {
    pub fn new(run_id: &str, seq: u64) -> Self {
        Self {
            run_id: run_id.to_string(),
            seq,
            uuid: Uuid::new_v4(),
        }
    }

    /// Parses `studio_load_test_<run>_<seq>_<uuid>`. The run id may itself contain `_`
    /// (e.g. `lt_<uuid>`), so the string is taken apart from the right.
    pub fn parse(value: &str) -> Result<Self, String> {
        let grammar = "expected studio_load_test_<run>_<seq>_<uuid>";
        let rest = value
            .strip_prefix(DISPATCH_ID_PREFIX)
            .ok_or_else(|| format!("does not start with {DISPATCH_ID_PREFIX:?}; {grammar}"))?;
        let (rest, uuid) = rest.rsplit_once('_').ok_or_else(|| grammar.to_string())?;
        let uuid = Uuid::parse_str(uuid)
            .map_err(|_| format!("ends in {uuid:?}, not a UUID; {grammar}"))?;
        let (run_id, seq) = rest.rsplit_once('_').ok_or_else(|| grammar.to_string())?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("has sequence {seq:?}, not a number; {grammar}"));
        }
        let seq = seq
            .parse()
            .map_err(|_| format!("sequence {seq:?} is too large"))?;
        check_segment(run_id).map_err(|e| format!("run part {e}"))?;
        Ok(Self {
            run_id: run_id.to_string(),
            seq,
            uuid,
        })
    }
}

impl fmt::Display for DispatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{DISPATCH_ID_PREFIX}{}_{}_{}",
            self.run_id,
            self.seq,
            self.uuid.as_hyphenated()
        )
    }
}

/// Checks a benchmark run id, `bm_<uuid>`.
pub fn check_benchmark_run_id(value: &str) -> Result<(), String> {
    let uuid = value
        .strip_prefix(BENCHMARK_RUN_PREFIX)
        .ok_or_else(|| "expected bm_<uuid>".to_string())?;
    Uuid::parse_str(uuid)
        .map(|_| ())
        .map_err(|_| format!("{uuid:?} is not a UUID; expected bm_<uuid>"))
}

pub fn new_benchmark_run_id() -> String {
    format!("{BENCHMARK_RUN_PREFIX}{}", Uuid::now_v7().as_hyphenated())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARIANT: &str = "er:fx-42:wf:comfy-1:env:staging:stage:render:provider:sim-cheap:exp:e1";

    #[test]
    fn variant_id_round_trips_through_its_parts() {
        let parsed = VariantId::parse(VARIANT).unwrap();
        assert_eq!(parsed.effect_revision_id, "fx-42");
        assert_eq!(parsed.stage, "render");
        assert_eq!(parsed.provider, "sim-cheap");
        assert_eq!(parsed.to_string(), VARIANT);
    }

    #[test]
    fn variant_id_with_wrong_label_or_count_is_refused() {
        assert!(VariantId::parse("er:a:wf:b")
            .unwrap_err()
            .contains("4 ':'-separated parts"));
        let swapped = VARIANT.replace("wf:", "wx:");
        assert!(VariantId::parse(&swapped).unwrap_err().contains("\"wx\""));
        let empty = VARIANT.replace("exp:e1", "exp:");
        assert!(VariantId::parse(&empty)
            .unwrap_err()
            .contains("exp part must not be empty"));
        let spaced = VARIANT.replace("fx-42", "fx 42");
        assert!(VariantId::parse(&spaced).is_err());
    }

    #[test]
    fn dispatch_id_parses_run_ids_that_contain_underscores() {
        let id = DispatchId::new("lt_0193", 17);
        let parsed = DispatchId::parse(&id.to_string()).unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.run_id, "lt_0193");
        assert_eq!(parsed.seq, 17);
    }

    #[test]
    fn malformed_dispatch_ids_are_refused() {
        for bad in [
            "load_test_lt_1_1_00000000-0000-0000-0000-000000000000",
            "studio_load_test_lt_1_x_00000000-0000-0000-0000-000000000000",
            "studio_load_test_lt_1_1_not-a-uuid",
            "studio_load_test__1_00000000-0000-0000-0000-000000000000",
        ] {
            assert!(DispatchId::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn benchmark_run_ids_need_the_bm_prefix_and_a_uuid() {
        assert!(check_benchmark_run_id(&new_benchmark_run_id()).is_ok());
        assert!(check_benchmark_run_id("bm_42").is_err());
        assert!(check_benchmark_run_id("00000000-0000-0000-0000-000000000000").is_err());
    }
}
