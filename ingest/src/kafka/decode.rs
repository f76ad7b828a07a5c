//! One Kafka message → its validated events, exactly as `POST /v1/events` would take the same
//! bytes: one envelope or an array of up to [`crate::MAX_EVENTS_PER_REQUEST`], refused whole
//! when any of them is invalid.
//!
//! **Exactly once.** The consumer commits an offset only after the events up to it are
//! durable, so a crash between the append and the commit re-consumes messages that are already
//! stored. The log's idempotency keys make that re-append a no-op, which is why producers
//! should set `idempotency_key` on every envelope (and must, when the same event may be
//! published twice, e.g. by a retrying producer). An envelope with neither an
//! `idempotency_key` nor a producer-chosen `event_id` gets one derived from the message's
//! coordinates, [`derived_idempotency_key`], so a re-consumed message is still stored once.
//! That derived key is only as unique as the coordinates: a topic deleted and re-created
//! starts its offsets again, and its messages would then be taken for repeats of the old
//! ones; that is one more reason for producers to set their own keys.

use crate::error::ApiError;
use axum::http::StatusCode;
use eventlog::ValidatedEvent;

/// The idempotency key given to the `index`-th envelope of the message at `offset` of
/// `topic`/`partition` when the producer chose neither a key nor an event id.
pub fn derived_idempotency_key(topic: &str, partition: i32, offset: i64, index: usize) -> String {
    format!("kafka:{topic}:{partition}:{offset}:{index}")
}

/// The events of one message, or why it is refused (the same [`ApiError`] the HTTP endpoint
/// would answer, so a dead letter reads like a 4xx body).
pub(crate) fn decode_message(
    topic: &str,
    partition: i32,
    offset: i64,
    payload: Option<&[u8]>,
) -> Result<Vec<ValidatedEvent>, ApiError> {
    let Some(payload) = payload.filter(|p| !p.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_message",
            "the message has no value; publish one envelope or a JSON array of envelopes",
        ));
    };
    let (_, mut events) = crate::http::parse_events(payload)?;
    for (index, event) in events.iter_mut().enumerate() {
        if event.idempotency_key.is_none() && !event.event_id_supplied {
            event.idempotency_key = Some(derived_idempotency_key(topic, partition, offset, index));
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"type":"load_test.run_completed","occurred_at":"2026-11-24T10:00:00Z","producer":"test","payload":{"run_id":"lt_1"}}"#;

    #[test]
    fn an_envelope_without_a_key_gets_one_from_its_coordinates() {
        let events = decode_message("t", 2, 41, Some(VALID.as_bytes())).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].idempotency_key.as_deref(), Some("kafka:t:2:41:0"));
    }

    #[test]
    fn the_same_message_decodes_to_the_same_keys_every_time() {
        let body = format!("[{VALID},{VALID}]");
        let first = decode_message("t", 0, 7, Some(body.as_bytes())).unwrap();
        let again = decode_message("t", 0, 7, Some(body.as_bytes())).unwrap();
        let keys = |events: &[ValidatedEvent]| {
            events
                .iter()
                .map(|e| e.idempotency_key.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&first), ["kafka:t:0:7:0", "kafka:t:0:7:1"]);
        assert_eq!(keys(&first), keys(&again));
    }

    #[test]
    fn a_producer_key_or_event_id_is_kept() {
        let with_key = VALID.replace(r#""producer""#, r#""idempotency_key":"mine","producer""#);
        let events = decode_message("t", 0, 1, Some(with_key.as_bytes())).unwrap();
        assert_eq!(events[0].idempotency_key.as_deref(), Some("mine"));

        let with_id = VALID.replace(
            r#""producer""#,
            r#""event_id":"0190d4a6-9a3e-7b5c-8f00-000000000001","producer""#,
        );
        let events = decode_message("t", 0, 1, Some(with_id.as_bytes())).unwrap();
        assert_eq!(events[0].idempotency_key, None);
        assert!(events[0].event_id_supplied);
    }

    #[test]
    fn one_bad_envelope_refuses_the_whole_message() {
        let body = format!(r#"[{VALID}, {{"type": "load_test.run_completed"}}]"#);
        let err = decode_message("t", 0, 1, Some(body.as_bytes())).unwrap_err();
        assert_eq!(err.code(), "validation_failed");
        assert_eq!(err.details()[0]["index"], 1);
    }

    #[test]
    fn empty_and_broken_messages_are_refused() {
        assert_eq!(
            decode_message("t", 0, 1, None).unwrap_err().code(),
            "empty_message"
        );
        assert_eq!(
            decode_message("t", 0, 1, Some(b"")).unwrap_err().code(),
            "empty_message"
        );
        assert_eq!(
            decode_message("t", 0, 1, Some(b"{nope"))
                .unwrap_err()
                .code(),
            "malformed_json"
        );
    }
}
