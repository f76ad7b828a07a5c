//! Schema evolution: events are stored exactly as published, with the `schema_version` they were
//! published at, and brought up to the current shape on every read (and before validation on
//! write). A step takes version `n` to `n + 1`; steps chain, so a reader only ever sees the
//! current shape and a producer may keep publishing an older one.

use crate::validation::ValidationError;
use serde_json::Value;

type Step = fn(Value) -> Value;

/// `(event type, from version, step to from + 1)`. Versions not listed here are 1.
const STEPS: &[(&str, u32, Step)] = &[
    // v2 added `service_time_ms` beside `latency_ms`: latency is measured from the scheduled
    // time, service time from the moment the request left. A v1 event never measured it, so it
    // is unknown (null), never zero.
    (
        "load_test.dispatch_completed",
        1,
        dispatch_completed_v1_to_v2,
    ),
];

fn dispatch_completed_v1_to_v2(mut payload: Value) -> Value {
    if let Some(obj) = payload.as_object_mut() {
        obj.entry("service_time_ms").or_insert(Value::Null);
    }
    payload
}

/// The schema version a reader sees for `event_type`.
pub fn current_version(event_type: &str) -> u32 {
    let mut version = 1;
    while STEPS
        .iter()
        .any(|(t, from, _)| *t == event_type && *from == version)
    {
        version += 1;
    }
    version
}

/// Brings `payload`, published at `version`, to the current version of `event_type`.
pub fn upcast(
    event_type: &str,
    version: u32,
    mut payload: Value,
) -> Result<Value, ValidationError> {
    let current = current_version(event_type);
    if version == 0 || version > current {
        return Err(ValidationError::single(
            "schema_version",
            format!("{event_type} has schema versions 1..={current}, not {version}"),
        ));
    }
    for from in version..current {
        let step = STEPS
            .iter()
            .find(|(t, f, _)| *t == event_type && *f == from)
            .map(|(_, _, step)| step)
            .expect("current_version only counts existing steps");
        payload = step(payload);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dispatch_completed_v1_gains_an_unknown_service_time() {
        assert_eq!(current_version("load_test.dispatch_completed"), 2);
        let v1 = json!({"run_id": "lt_1", "latency_ms": 12.5});
        let v2 = upcast("load_test.dispatch_completed", 1, v1).unwrap();
        assert_eq!(
            v2,
            json!({"run_id": "lt_1", "latency_ms": 12.5, "service_time_ms": null})
        );
    }

    #[test]
    fn current_shapes_pass_through_unchanged() {
        let v2 = json!({"service_time_ms": 3.0});
        assert_eq!(
            upcast("load_test.dispatch_completed", 2, v2.clone()).unwrap(),
            v2
        );
        assert_eq!(current_version("variant.registered"), 1);
    }

    #[test]
    fn versions_from_the_future_or_zero_are_refused() {
        assert!(upcast("variant.registered", 2, json!({})).is_err());
        assert!(upcast("variant.registered", 0, json!({})).is_err());
    }
}
