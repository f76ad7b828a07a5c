//! The read path of folds (rebuilds): [`EventLog::scan_typed`](super::EventLog::scan_typed).
//!
//! A rebuild reads the whole log once and only needs each event's envelope and typed payload.
//! The general read path (`read_all`) parses every payload text into a `serde_json::Value`,
//! upcasts it and only then into the typed payload; measured on 1,000,000 events that costs
//! several times the fold itself. Here a payload stored at its type's current schema version is
//! parsed straight from its text into the typed struct, and the stores read ahead on a
//! background task and decode on the blocking pool, so reading, decoding and folding overlap.

use super::StoreError;
use crate::catalogue::EventPayload;
use crate::envelope::{upcast_payload, FoldEvent};
use crate::upcast;
use crate::validation::ValidationError;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;

/// An event read for a fold, with its typed payload or why it has none (the error
/// [`RecordedEvent::typed`](crate::RecordedEvent::typed) gives for the same stored event).
pub type TypedEvent = (FoldEvent, Result<EventPayload, ValidationError>);

/// Batches of typed events in position order: see
/// [`EventLog::scan_typed`](super::EventLog::scan_typed).
pub struct TypedScan<'a> {
    batches: futures::stream::Fuse<BoxStream<'a, Result<Vec<TypedEvent>, StoreError>>>,
}

impl<'a> TypedScan<'a> {
    pub(crate) fn new(batches: BoxStream<'a, Result<Vec<TypedEvent>, StoreError>>) -> Self {
        Self {
            batches: batches.fuse(),
        }
    }

    /// The next batch; `None` once the scan reached the end of the log, and on every call after.
    pub async fn next(&mut self) -> Option<Result<Vec<TypedEvent>, StoreError>> {
        self.batches.next().await
    }
}

/// Pages a store may read ahead of the fold: enough to keep the reader busy while a batch is
/// folded, few enough to bound memory (a page holds a few MB of events).
pub(crate) const PAGES_AHEAD: usize = 4;

/// The columns of a stored event a fold reads, borrowed from the row or page they were read
/// from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawEvent<'a> {
    pub position: i64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: i64,
    pub occurred_at: &'a str,
    pub payload: &'a str,
}

impl RawEvent<'_> {
    /// Decodes the typed payload. A payload at its type's current schema version is parsed from
    /// its text without an intermediate `Value`; anything else (an older version to upcast, a
    /// type outside the catalogue, a payload the typed parse refuses) takes the path of
    /// `read_all` followed by [`RecordedEvent::typed`](crate::RecordedEvent::typed), so the outcome, and any error, is the
    /// same.
    pub(crate) fn into_typed(self) -> Result<TypedEvent, StoreError> {
        let current = upcast::current_version(self.event_type);
        let fast = if i64::from(current) == self.schema_version {
            parse_current_payload(self.event_type, self.payload).and_then(Result::ok)
        } else {
            None
        };
        let typed = match fast {
            Some(payload) => Ok(payload),
            None => {
                let value = upcast_payload(
                    self.position,
                    self.event_type,
                    self.schema_version,
                    self.payload,
                )?;
                EventPayload::parse(self.event_type, &value)
            }
        };
        let event = FoldEvent::new(
            self.position,
            self.event_id,
            self.event_type,
            self.occurred_at.to_string(),
            &typed,
        );
        Ok((event, typed))
    }
}

/// An event id stored as text, read for a [`RawEvent`].
pub(crate) fn parse_event_id(position: i64, text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt {
        position,
        what: format!("event_id: {e}"),
    })
}

/// Parses a payload of the current schema version of `event_type` from its JSON text. `None`
/// for a type the catalogue does not know (the caller then takes the `Value` path). Where it
/// succeeds it gives what [`EventPayload::parse`] gives for the same text parsed into a `Value`:
/// the same serde derive reads the same JSON, and stored payloads have no duplicate keys (they
/// were written by serde_json from a `Value` or a typed payload). On failure the caller takes the `Value` path,
/// which names the field at fault.
fn parse_current_payload(
    event_type: &str,
    text: &str,
) -> Option<Result<EventPayload, serde_json::Error>> {
    EventPayload::parse_text(event_type, text)
}

/// The default scan: `read_all` page by page, each event typed as the live runner types it.
pub(crate) fn scan_by_pages<L: super::EventLog + ?Sized>(
    log: &L,
    after_position: i64,
    limit: usize,
) -> TypedScan<'_> {
    let batches = futures::stream::try_unfold(after_position, move |after| async move {
        let events = log.read_all(after, limit).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(None);
        };
        let typed = events.into_iter().map(FoldEvent::typed).collect();
        Ok(Some((typed, last)))
    });
    TypedScan::new(batches.boxed())
}

/// Reads and decodes pages ahead on a thread of the blocking pool, for a store whose client reads
/// synchronously in place (SQLite through rusqlite): `read_page(after)` gives the decoded page
/// after a position, empty at the end of the log. Up to [`PAGES_AHEAD`] pages wait for the
/// caller, so the thread reads page `n + 1` while the caller folds page `n`. Dropping the scan
/// stops the thread after the page it is reading.
pub(crate) fn read_ahead_blocking<R>(after_position: i64, mut read_page: R) -> TypedScan<'static>
where
    R: FnMut(i64) -> Result<Vec<TypedEvent>, StoreError> + Send + 'static,
{
    let (page_tx, page_rx) = mpsc::channel::<Result<Vec<TypedEvent>, StoreError>>(PAGES_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut after = after_position;
        loop {
            let page = read_page(after);
            let next = match &page {
                Ok(events) => events.last().map(|(event, _)| event.position),
                Err(_) => None,
            };
            if page.as_ref().is_ok_and(Vec::is_empty) || page_tx.blocking_send(page).is_err() {
                return; // the end of the log, or the scan was dropped
            }
            match next {
                Some(last) => after = last,
                None => return, // an error was sent
            }
        }
    });
    let batches = futures::stream::unfold(page_rx, |mut page_rx| async move {
        let page = page_rx.recv().await?;
        Some((page, page_rx))
    });
    TypedScan::new(batches.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::EVENT_TYPES;
    use crate::ids::DispatchId;
    use serde_json::json;

    fn raw<'a>(event_type: &'a str, version: i64, payload: &'a str) -> RawEvent<'a> {
        RawEvent {
            position: 9,
            event_id: Uuid::parse_str("01a2106c-363a-7794-891e-64c2658c898e").unwrap(),
            event_type,
            schema_version: version,
            occurred_at: "2026-11-24T00:00:00.010Z",
            payload,
        }
    }

    /// What `read_all` followed by `RecordedEvent::typed` gives for the same row.
    fn by_value(event: RawEvent<'_>) -> TypedEvent {
        let row = crate::envelope::StoredRow {
            position: event.position,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.to_string(),
            schema_version: event.schema_version,
            stream: "load_test_run-lt_1".into(),
            stream_version: 3,
            idempotency_key: Some("k-1".into()),
            correlation_id: None,
            causation_id: Some("c-1".into()),
            producer: Some("executor".into()),
            occurred_at: event.occurred_at.to_string(),
            recorded_at: "2026-11-24T00:00:01Z".into(),
            payload: event.payload.to_string(),
        };
        FoldEvent::typed(row.into_recorded().unwrap())
    }

    fn completed(service_time: bool) -> String {
        let mut payload = json!({
            "run_id": "lt_1",
            "dispatch_id": DispatchId::new("lt_1", 1).to_string(),
            "outcome": "succeeded",
            "latency_ms": 212.5,
            "cost_usd": 0.004,
            "error": null,
            "stage_index": 0
        });
        if service_time {
            payload["service_time_ms"] = json!(0.1 + 0.2);
        }
        payload.to_string()
    }

    #[test]
    fn every_catalogue_type_has_a_text_parser() {
        for event_type in EVENT_TYPES {
            assert!(
                parse_current_payload(event_type, "{}").is_some(),
                "{event_type} would always take the slower Value path"
            );
        }
    }

    #[test]
    fn a_current_payload_parses_from_text_as_it_does_through_a_value() {
        let text = completed(true);
        let event = raw("load_test.dispatch_completed", 2, &text);
        let fast = event.into_typed().unwrap();
        assert_eq!(fast, by_value(event));
        assert!(fast.1.is_ok());
        // The type's name is the catalogue's: no allocation per event.
        assert!(matches!(fast.0.event_type, std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn an_older_schema_version_is_upcast_on_the_value_path() {
        let text = completed(false);
        let event = raw("load_test.dispatch_completed", 1, &text);
        let (fast, fast_typed) = event.into_typed().unwrap();
        assert_eq!((fast, fast_typed.clone()), by_value(event));
        match fast_typed.unwrap() {
            EventPayload::LoadDispatchCompleted(p) => assert_eq!(p.service_time_ms, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_payload_the_catalogue_refuses_keeps_the_same_error() {
        // A current-version event that lacks its required service time: poison for a fold.
        let text = completed(false);
        let event = raw("load_test.dispatch_completed", 2, &text);
        let fast = event.into_typed().unwrap();
        assert!(fast.1.is_err());
        assert_eq!(fast, by_value(event));

        let event = raw("nobody.knows_me", 1, "{}");
        let unknown = event.into_typed().unwrap();
        assert_eq!(unknown, by_value(event));
        assert_eq!(unknown.0.event_type, "nobody.knows_me");
    }

    #[test]
    fn an_array_is_not_taken_for_an_object() {
        let event = raw("load_test.run_completed", 1, r#"["lt_1"]"#);
        let (_, typed) = event.into_typed().unwrap();
        assert_eq!(typed, by_value(event).1);
        assert!(typed.is_err());
    }

    #[test]
    fn corrupt_rows_are_errors_on_both_paths() {
        let event = raw("load_test.run_completed", 1, r#"{"run_id": "lt_1""#);
        assert!(matches!(
            event.into_typed(),
            Err(StoreError::Corrupt { position: 9, .. })
        ));
        assert!(matches!(
            parse_event_id(9, "not-a-uuid"),
            Err(StoreError::Corrupt { position: 9, .. })
        ));
    }

    /// The same log through `scan_typed` and through `read_all` + `typed()`, on both stores:
    /// optional columns set and unset, text beyond ASCII, an event stored at an older schema
    /// version, pages smaller than the log.
    async fn scan_matches_read_all(url: &str) {
        let log = crate::open(url, true).await.unwrap();
        let at = chrono::Utc::now();
        let mut events = Vec::new();
        for n in 0..7 {
            let payload = EventPayload::RunCancelled(crate::catalogue::RunCancelled {
                run_id: format!("lt_{n}"),
                reason: format!("arrêt n° {n} — ✓ \"quoted\" \\ back\nslash"),
                actor: "opé".into(),
            });
            let mut event = crate::ValidatedEvent::from_payload(&payload, "tést", at);
            if n % 2 == 0 {
                event = event
                    .with_idempotency_key(format!("clé-{n}"))
                    .with_correlation_id("corr-é");
            }
            events.push(event);
        }
        let mut v1 = json!({
            "type": "load_test.dispatch_completed",
            "occurred_at": "2026-11-24T10:00:00.5+01:00",
            "payload": serde_json::from_str::<serde_json::Value>(&completed(false)).unwrap()
        });
        v1["payload"]["cost_usd"] = json!(null);
        events.push(crate::ValidatedEvent::parse(&v1).unwrap());
        log.append(events).await.unwrap();

        let expected: Vec<TypedEvent> = log
            .read_all(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(FoldEvent::typed)
            .collect();
        assert_eq!(expected.len(), 8);
        let mut scan = log.scan_typed(1, 3);
        let mut scanned = Vec::new();
        while let Some(page) = scan.next().await {
            let page = page.unwrap();
            assert!(page.len() <= 3);
            scanned.extend(page);
        }
        assert!(scan.next().await.is_none());
        assert_eq!(scanned, expected[1..]);
        assert!(scanned.iter().all(|(_, typed)| typed.is_ok()));
        // The v1 event went through the upcaster.
        match &scanned[6].1 {
            Ok(EventPayload::LoadDispatchCompleted(p)) => assert_eq!(p.service_time_ms, None),
            other => panic!("{other:?}"),
        }
        log.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_scan_matches_read_all() {
        let (url, _dir) = crate::testkit::sqlite_url();
        scan_matches_read_all(&url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_scan_matches_read_all() {
        scan_matches_read_all(&crate::testkit::postgres_database().await).await;
    }
}
