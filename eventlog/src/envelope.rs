//! The envelope (DESIGN §3): what producers publish and what readers get back.

use crate::catalogue::EventPayload;
use crate::upcast;
use crate::validation::{ValidationError, Violation};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use uuid::Uuid;

/// Longest accepted string for idempotency keys, correlation ids and producer names.
pub const MAX_TAG_LEN: usize = 256;

const ENVELOPE_FIELDS: &[&str] = &[
    "event_id",
    "type",
    "schema_version",
    "stream",
    "expected_version",
    "idempotency_key",
    "correlation_id",
    "causation_id",
    "producer",
    "occurred_at",
    "payload",
];

/// An event that passed validation and is ready to append. The payload is kept exactly as it
/// was published (at `schema_version`); readers get it upcast.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedEvent {
    pub event_id: Uuid,
    /// True when the producer chose the id: a repeat of it is then a retry, answered like a
    /// repeated idempotency key.
    pub event_id_supplied: bool,
    pub event_type: &'static str,
    pub schema_version: u32,
    pub stream: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub producer: Option<String>,
    /// Normalised RFC 3339 in UTC.
    pub occurred_at: String,
    pub payload: Value,
}

impl ValidatedEvent {
    /// Builds an event from a typed payload, as a producer inside this process would.
    pub fn from_payload(
        payload: &EventPayload,
        producer: &str,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_id_supplied: false,
            event_type: payload.event_type(),
            schema_version: upcast::current_version(payload.event_type()),
            stream: payload.stream(),
            expected_version: None,
            idempotency_key: None,
            correlation_id: None,
            causation_id: None,
            producer: Some(producer.to_string()),
            occurred_at: format_timestamp(occurred_at),
            payload: payload.to_value(),
        }
    }

    pub fn with_expected_version(mut self, version: i64) -> Self {
        self.expected_version = Some(version);
        self
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Parses and validates one published envelope. Every violation is reported, each with the
    /// path of the field at fault.
    pub fn parse(value: &Value) -> Result<Self, ValidationError> {
        let obj = envelope_object(value)?;
        Self::validate(obj, obj.get("payload").cloned())
    }

    /// [`Self::parse`] of an envelope the caller gives up: its payload is moved into the event
    /// instead of copied (the publish path, where the copy was ~1% of the workers' time).
    pub fn parse_owned(mut value: Value) -> Result<Self, ValidationError> {
        let payload = value.as_object_mut().and_then(|obj| obj.remove("payload"));
        Self::validate(envelope_object(&value)?, payload)
    }

    /// Validates the envelope's fields, `payload` being its `payload` field, taken out of `obj`
    /// or copied from it.
    fn validate(obj: &Map<String, Value>, payload: Option<Value>) -> Result<Self, ValidationError> {
        let mut violations = Vec::new();
        for key in obj.keys() {
            if !ENVELOPE_FIELDS.contains(&key.as_str()) {
                violations.push(Violation::new(
                    key.clone(),
                    format!(
                        "unknown envelope field; expected one of {}",
                        ENVELOPE_FIELDS.join(", ")
                    ),
                ));
            }
        }
        let mut fields = Fields { obj, violations };

        let event_id = match fields.string("event_id") {
            None => None,
            Some(s) => match Uuid::parse_str(&s) {
                Ok(id) => Some(id),
                Err(_) => {
                    fields.fail("event_id", format!("{s:?} is not a UUID"));
                    None
                }
            },
        };
        let event_type = fields.required_string("type");
        let schema_version = match obj.get("schema_version") {
            None | Some(Value::Null) => Some(1),
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Some(n),
                None => {
                    fields.fail("schema_version", "must be a positive integer");
                    None
                }
            },
        };
        let stream = fields.string("stream");
        let expected_version = match obj.get("expected_version") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64().filter(|n| *n >= 0) {
                Some(n) => Some(n),
                None => {
                    fields.fail(
                        "expected_version",
                        "must be an integer ≥ 0 (0: the stream must be empty)",
                    );
                    None
                }
            },
        };
        let idempotency_key = fields.tag("idempotency_key");
        let correlation_id = fields.tag("correlation_id");
        let causation_id = fields.tag("causation_id");
        let producer = fields.tag("producer");
        let occurred_at = match fields.required_string("occurred_at") {
            None => None,
            Some(s) => match DateTime::parse_from_rfc3339(&s) {
                Ok(t) => Some(format_timestamp(t.with_timezone(&Utc))),
                Err(_) => {
                    fields.fail("occurred_at", format!("{s:?} is not an RFC 3339 timestamp"));
                    None
                }
            },
        };
        let payload = match payload {
            Some(p @ Value::Object(_)) => Some(p),
            Some(_) => {
                fields.fail("payload", "must be a JSON object");
                None
            }
            None => {
                fields.fail("payload", "is required");
                None
            }
        };

        // The payload can only be checked once its type and version are known.
        let mut typed = None;
        if let (Some(event_type), Some(version), Some(payload)) =
            (&event_type, schema_version, &payload)
        {
            match check_payload(event_type, version, payload) {
                Ok(p) => typed = Some(p),
                Err(err) => fields.violations.extend(err.violations),
            }
        }
        if let (Some(p), Some(given)) = (&typed, &stream) {
            let derived = p.stream();
            if *given != derived {
                fields.fail(
                    "stream",
                    format!("is {given:?} but this payload belongs to stream {derived:?}"),
                );
            }
        }

        let violations = fields.violations;
        match (typed, schema_version, occurred_at, payload) {
            (Some(typed), Some(schema_version), Some(occurred_at), Some(payload))
                if violations.is_empty() =>
            {
                Ok(Self {
                    event_id: event_id.unwrap_or_else(Uuid::now_v7),
                    event_id_supplied: event_id.is_some(),
                    event_type: typed.event_type(),
                    schema_version,
                    stream: typed.stream(),
                    expected_version,
                    idempotency_key,
                    correlation_id,
                    causation_id,
                    producer,
                    occurred_at,
                    payload,
                })
            }
            _ => Err(ValidationError { violations }),
        }
    }
}

fn envelope_object(value: &Value) -> Result<&Map<String, Value>, ValidationError> {
    value
        .as_object()
        .ok_or_else(|| ValidationError::single(".", "an event must be a JSON object"))
}

/// Upcasts, parses and checks a payload published at `version`.
fn check_payload(
    event_type: &str,
    version: u32,
    payload: &Value,
) -> Result<EventPayload, ValidationError> {
    if !crate::catalogue::EVENT_TYPES.contains(&event_type) {
        return EventPayload::parse(event_type, payload);
    }
    // A payload published at the current version is parsed as it is; only an older one is
    // copied to be upcast.
    let upcast;
    let current = if version == upcast::current_version(event_type) {
        payload
    } else {
        upcast = upcast::upcast(event_type, version, payload.clone())?;
        &upcast
    };
    let typed = EventPayload::parse(event_type, current).map_err(|e| e.nested("payload"))?;
    typed.check().map_err(|e| e.nested("payload"))?;
    Ok(typed)
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    violations: Vec<Violation>,
}

impl Fields<'_> {
    fn fail(&mut self, path: &str, reason: impl Into<String>) {
        self.violations.push(Violation::new(path, reason));
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.fail(key, "must be a string");
                None
            }
        }
    }

    fn required_string(&mut self, key: &str) -> Option<String> {
        if self.obj.get(key).is_none_or(Value::is_null) {
            self.fail(key, "is required");
            return None;
        }
        self.string(key)
    }

    fn tag(&mut self, key: &str) -> Option<String> {
        let s = self.string(key)?;
        if s.is_empty() || s.len() > MAX_TAG_LEN {
            self.fail(key, format!("must be 1 to {MAX_TAG_LEN} characters"));
            return None;
        }
        Some(s)
    }
}

/// The one timestamp format of the log: RFC 3339, UTC, `Z`, as many fraction digits as needed.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// An event as stored and returned: the envelope, upcast to the current schema version, with
/// what the log assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub position: i64,
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    pub stream: String,
    pub stream_version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    pub occurred_at: String,
    pub recorded_at: String,
    pub payload: Value,
}

impl RecordedEvent {
    /// The typed payload. Stored events were validated on append, so an error here means the
    /// catalogue changed incompatibly: a poison event for whoever reads it.
    pub fn typed(&self) -> Result<EventPayload, ValidationError> {
        EventPayload::parse(&self.event_type, &self.payload)
    }
}

/// What a fold (a projection) reads of a recorded event beside its typed payload: where it is
/// in the log, which event it is and when it happened. A scan of the whole log reads only
/// these columns (see [`EventLog::scan_typed`](crate::EventLog::scan_typed)): the stream,
/// idempotency key, correlation, producer and recording time cost the server a field each and
/// the reader an allocation each, for a rebuild that never looks at them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldEvent {
    pub position: i64,
    pub event_id: Uuid,
    /// The catalogue's own `&'static` name when the payload is typed, so the common case
    /// allocates nothing; the stored text for a type the catalogue does not know.
    pub event_type: Cow<'static, str>,
    pub occurred_at: String,
}

impl FoldEvent {
    /// The fold's view of an event whose typed payload (or its error) is `typed`.
    pub fn new(
        position: i64,
        event_id: Uuid,
        event_type: &str,
        occurred_at: String,
        typed: &Result<EventPayload, ValidationError>,
    ) -> Self {
        let event_type = match typed {
            Ok(payload) => Cow::Borrowed(payload.event_type()),
            Err(_) => Cow::Owned(event_type.to_string()),
        };
        Self {
            position,
            event_id,
            event_type,
            occurred_at,
        }
    }

    /// The fold's view of a recorded event, with its typed payload (`event_type` borrowed from
    /// the catalogue where the payload is typed).
    pub fn typed(event: RecordedEvent) -> (Self, Result<EventPayload, ValidationError>) {
        let typed = event.typed();
        let fold = Self::new(
            event.position,
            event.event_id,
            &event.event_type,
            event.occurred_at,
            &typed,
        );
        (fold, typed)
    }
}

/// The raw columns of a stored event, before upcasting.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub position: i64,
    pub event_id: String,
    pub event_type: String,
    pub schema_version: i64,
    pub stream: String,
    pub stream_version: i64,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub producer: Option<String>,
    pub occurred_at: String,
    pub recorded_at: String,
    pub payload: String,
}

impl StoredRow {
    /// Decodes and upcasts a stored row.
    pub fn into_recorded(self) -> Result<RecordedEvent, crate::StoreError> {
        let corrupt = |what: String| crate::StoreError::Corrupt {
            position: self.position,
            what,
        };
        let event_id =
            Uuid::parse_str(&self.event_id).map_err(|e| corrupt(format!("event_id: {e}")))?;
        let payload = upcast_payload(
            self.position,
            &self.event_type,
            self.schema_version,
            &self.payload,
        )?;
        Ok(RecordedEvent {
            position: self.position,
            event_id,
            schema_version: upcast::current_version(&self.event_type),
            event_type: self.event_type,
            stream: self.stream,
            stream_version: self.stream_version,
            idempotency_key: self.idempotency_key,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            producer: self.producer,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            payload,
        })
    }
}

impl From<&RecordedEvent> for FoldEvent {
    fn from(event: &RecordedEvent) -> Self {
        Self {
            position: event.position,
            event_id: event.event_id,
            event_type: Cow::Owned(event.event_type.clone()),
            occurred_at: event.occurred_at.clone(),
        }
    }
}

/// A stored payload's text parsed and upcast from `schema_version` to its type's current one.
pub(crate) fn upcast_payload(
    position: i64,
    event_type: &str,
    schema_version: i64,
    text: &str,
) -> Result<Value, crate::StoreError> {
    let corrupt = |what: String| crate::StoreError::Corrupt { position, what };
    let payload: Value =
        serde_json::from_str(text).map_err(|e| corrupt(format!("payload: {e}")))?;
    let version =
        u32::try_from(schema_version).map_err(|e| corrupt(format!("schema_version: {e}")))?;
    upcast::upcast(event_type, version, payload).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn completed_v1() -> Value {
        let dispatch_id = crate::ids::DispatchId::new("lt_1", 1).to_string();
        json!({
            "type": "load_test.dispatch_completed",
            "occurred_at": "2026-11-24T10:00:00.5+01:00",
            "producer": "executor",
            "payload": {"run_id": "lt_1", "dispatch_id": dispatch_id, "outcome": "failed",
                        "latency_ms": 80.0, "cost_usd": null, "error": "HTTP 503"}
        })
    }

    #[test]
    fn absent_stream_is_derived_and_time_normalised_to_utc() {
        let event = ValidatedEvent::parse(&completed_v1()).unwrap();
        assert_eq!(event.stream, "load_test_run-lt_1");
        assert_eq!(event.schema_version, 1);
        assert_eq!(event.occurred_at, "2026-11-24T09:00:00.500Z");
        assert!(!event.event_id_supplied);
    }

    /// The publish path's `parse_owned` moves the payload instead of copying it, and must accept
    /// and refuse exactly what `parse` does.
    #[test]
    fn parsing_an_owned_envelope_gives_what_parsing_a_borrowed_one_gives() {
        let mut valid = completed_v1();
        valid["event_id"] = json!("0193a3c4-8d2e-7c1a-9b4f-3e2d1c0b9a87");
        let mut bad_payload = completed_v1();
        bad_payload["payload"]["latency_ms"] = json!(-1);
        let mut payload_not_an_object = completed_v1();
        payload_not_an_object["payload"] = json!([1, 2]);
        let mut no_payload = completed_v1();
        no_payload.as_object_mut().unwrap().remove("payload");
        let mut unknown_field = completed_v1();
        unknown_field["colour"] = json!("red");
        for value in [
            valid,
            bad_payload,
            payload_not_an_object,
            no_payload,
            unknown_field,
            json!("not an object"),
        ] {
            let borrowed = ValidatedEvent::parse(&value);
            assert_eq!(
                ValidatedEvent::parse_owned(value.clone()),
                borrowed,
                "{value}"
            );
        }
        let value = completed_v1();
        let event = ValidatedEvent::parse_owned(value.clone()).unwrap();
        assert_eq!(event.payload, value["payload"]);
    }

    #[test]
    fn a_stream_that_disagrees_with_the_payload_is_refused() {
        let mut value = completed_v1();
        value["stream"] = json!("load_test_run-lt_2");
        let err = ValidatedEvent::parse(&value).unwrap_err();
        assert_eq!(err.violations[0].path, "stream");
    }

    #[test]
    fn every_envelope_violation_is_reported_at_once() {
        let mut value = completed_v1();
        value["occurred_at"] = json!("yesterday");
        value["event_id"] = json!("nope");
        value["colour"] = json!("red");
        value["payload"]["latency_ms"] = json!(-1);
        let err = ValidatedEvent::parse(&value).unwrap_err();
        let mut paths: Vec<_> = err.violations.iter().map(|v| v.path.clone()).collect();
        paths.sort();
        assert_eq!(
            paths,
            ["colour", "event_id", "occurred_at", "payload.latency_ms"]
        );
    }

    #[test]
    fn an_older_schema_version_is_validated_after_upcasting() {
        let mut value = completed_v1();
        // The same payload is valid at v1 (the upcaster adds service_time_ms: null) but a v2
        // event must say its service time, even if only as null.
        value["schema_version"] = json!(2);
        let err = ValidatedEvent::parse(&value).unwrap_err();
        assert!(
            err.to_string().contains("missing field `service_time_ms`"),
            "{err}"
        );
    }

    #[test]
    fn stored_rows_are_upcast_on_read() {
        let event = ValidatedEvent::parse(&completed_v1()).unwrap();
        let row = StoredRow {
            position: 7,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.to_string(),
            schema_version: event.schema_version as i64,
            stream: event.stream.clone(),
            stream_version: 1,
            idempotency_key: None,
            correlation_id: None,
            causation_id: None,
            producer: event.producer.clone(),
            occurred_at: event.occurred_at.clone(),
            recorded_at: "2026-11-24T09:00:01Z".into(),
            payload: event.payload.to_string(),
        };
        let recorded = row.into_recorded().unwrap();
        assert_eq!(recorded.schema_version, 2);
        assert_eq!(recorded.payload["service_time_ms"], Value::Null);
        assert!(matches!(
            recorded.typed().unwrap(),
            EventPayload::LoadDispatchCompleted(_)
        ));
    }
}
