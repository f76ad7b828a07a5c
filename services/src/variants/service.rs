//! [`VariantRegistryService`]: the command side of the variant registry.

use chrono::Utc;
use eventlog::catalogue::{self, EventPayload, VariantRegistered, VariantRetired};
use eventlog::ids::VariantId;
use eventlog::{EventLog, RecordedEvent, StoreError, ValidatedEvent};
use std::sync::Arc;

/// How many times a command decides again after losing an append race. Each lost race means
/// another writer changed the stream in between, and a variant stream only ever gets a
/// registration and a retirement, so a third loss means something else is wrong.
pub const MAX_DECISION_ATTEMPTS: u32 = 3;
/// Events read per `read_stream` call while folding a variant stream.
const STREAM_PAGE: usize = 1_000;

/// Registers and retires variants.
///
/// Every command is decided from the variant's own stream in the log (`variant-{id}`), read
/// just before appending, and appended with `expected_version` set to the version it read. It
/// never consults the read model: a projection may lag the log, and a command decided on a
/// stale view could register twice or retire a variant it cannot see. The stream is the
/// consistent view, and the expected version turns any write that slipped in between the read
/// and the append into a [`StoreError::Conflict`], so two racing commands cannot both win. The
/// loser decides again on the new stream (a repeat of the winner's registration then answers
/// as unchanged; a different one as [`RegistryError::Conflict`]).
#[derive(Clone)]
pub struct VariantRegistryService {
    log: Arc<dyn EventLog>,
}

/// A registration as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub variant: VariantRegistered,
    /// Position of the `variant.registered` event (the new one, or the one already stored).
    pub position: i64,
    pub stream_version: i64,
    /// True when the same registration was already there and nothing was appended.
    pub unchanged: bool,
}

/// A retirement as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Retirement {
    pub variant_id: String,
    pub reason: String,
    /// Position of the `variant.retired` event (the new one, or the one already stored).
    pub position: i64,
    pub stream_version: i64,
    /// True when the variant was already retired and nothing was appended.
    pub unchanged: bool,
}

/// Why a registry command was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The input is invalid; `field` names the input at fault.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The variant is registered with other details.
    #[error(
        "variant {variant_id} is already registered with unit_cost_usd {stored:?}, not {requested:?}"
    )]
    Conflict {
        variant_id: String,
        stored: Option<f64>,
        requested: Option<f64>,
    },
    /// The variant was retired; a retired id is never registered again.
    #[error("variant {variant_id} is retired ({reason})")]
    Retired { variant_id: String, reason: String },
    #[error("variant {variant_id} is not registered")]
    NotFound { variant_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// What a variant's stream says, folded from its events.
#[derive(Debug, Default)]
struct VariantStream {
    version: i64,
    /// The latest registration, with its position and stream version.
    registered: Option<(VariantRegistered, i64, i64)>,
    /// The first retirement, with its position and stream version.
    retired: Option<(VariantRetired, i64, i64)>,
}

impl VariantStream {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), StoreError> {
        self.version = event.stream_version;
        let payload = event.typed().map_err(|e| StoreError::Corrupt {
            position: event.position,
            what: e.to_string(),
        })?;
        match payload {
            EventPayload::VariantRegistered(p) => {
                self.registered = Some((p, event.position, event.stream_version));
            }
            EventPayload::VariantRetired(p) if self.retired.is_none() => {
                self.retired = Some((p, event.position, event.stream_version));
            }
            _ => {}
        }
        Ok(())
    }
}

impl VariantRegistryService {
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self { log }
    }

    /// Registers a variant: appends `variant.registered` unless the same registration is
    /// already in the log (then answers with it, `unchanged`). A different unit cost is a
    /// [`RegistryError::Conflict`]; a retired variant is [`RegistryError::Retired`].
    /// `producer` is recorded as the event's producer.
    #[tracing::instrument(skip_all, fields(variant_id = %variant_id), err(level = "debug"))]
    pub async fn register(
        &self,
        variant_id: &str,
        unit_cost_usd: Option<f64>,
        producer: &str,
    ) -> Result<Registration, RegistryError> {
        let id = parse_variant_id(variant_id)?;
        if let Some(cost) = unit_cost_usd {
            if !cost.is_finite() || cost < 0.0 {
                return Err(RegistryError::invalid(
                    "unit_cost_usd",
                    format!("is {cost}; it must be a finite number ≥ 0 (USD per dispatch)"),
                ));
            }
        }
        let requested = catalogue::variant_registered(&id, unit_cost_usd);
        let payload = EventPayload::VariantRegistered(requested.clone());
        check(&payload)?;
        let mut attempt = 1;
        loop {
            let stream = self.read(&payload.stream()).await?;
            if let Some((retired, _, _)) = stream.retired {
                return Err(RegistryError::Retired {
                    variant_id: requested.variant_id,
                    reason: retired.reason,
                });
            }
            if let Some((stored, position, stream_version)) = stream.registered {
                if stored.unit_cost_usd != requested.unit_cost_usd {
                    return Err(RegistryError::Conflict {
                        variant_id: requested.variant_id,
                        stored: stored.unit_cost_usd,
                        requested: requested.unit_cost_usd,
                    });
                }
                return Ok(Registration {
                    variant: stored,
                    position,
                    stream_version,
                    unchanged: true,
                });
            }
            match self.append(&payload, producer, stream.version).await {
                Ok(event) => {
                    tracing::info!(position = event.position, "variant registered");
                    return Ok(Registration {
                        variant: requested,
                        position: event.position,
                        stream_version: event.stream_version,
                        unchanged: false,
                    });
                }
                Err(StoreError::Conflict { .. }) if attempt < MAX_DECISION_ATTEMPTS => {
                    attempt += 1;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Retires a registered variant: appends `variant.retired` unless it is already retired
    /// (then answers with the stored retirement, `unchanged`). An unknown variant is
    /// [`RegistryError::NotFound`].
    #[tracing::instrument(skip_all, fields(variant_id = %variant_id), err(level = "debug"))]
    pub async fn retire(
        &self,
        variant_id: &str,
        reason: &str,
        producer: &str,
    ) -> Result<Retirement, RegistryError> {
        let id = parse_variant_id(variant_id)?;
        if reason.trim().is_empty() {
            return Err(RegistryError::invalid(
                "reason",
                "must say why the variant is retired",
            ));
        }
        let payload = EventPayload::VariantRetired(VariantRetired {
            variant_id: id.to_string(),
            reason: reason.to_string(),
        });
        check(&payload)?;
        let mut attempt = 1;
        loop {
            let stream = self.read(&payload.stream()).await?;
            if let Some((retired, position, stream_version)) = stream.retired {
                return Ok(Retirement {
                    variant_id: retired.variant_id,
                    reason: retired.reason,
                    position,
                    stream_version,
                    unchanged: true,
                });
            }
            if stream.registered.is_none() {
                return Err(RegistryError::NotFound {
                    variant_id: id.to_string(),
                });
            }
            match self.append(&payload, producer, stream.version).await {
                Ok(event) => {
                    tracing::info!(position = event.position, "variant retired");
                    return Ok(Retirement {
                        variant_id: id.to_string(),
                        reason: reason.to_string(),
                        position: event.position,
                        stream_version: event.stream_version,
                        unchanged: false,
                    });
                }
                Err(StoreError::Conflict { .. }) if attempt < MAX_DECISION_ATTEMPTS => {
                    attempt += 1;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Folds a whole variant stream, page by page.
    async fn read(&self, stream: &str) -> Result<VariantStream, StoreError> {
        let mut folded = VariantStream::default();
        loop {
            let page = self
                .log
                .read_stream(stream, folded.version, STREAM_PAGE)
                .await?;
            for event in &page {
                folded.apply(event)?;
            }
            if page.len() < STREAM_PAGE {
                return Ok(folded);
            }
        }
    }

    async fn append(
        &self,
        payload: &EventPayload,
        producer: &str,
        expected_version: i64,
    ) -> Result<RecordedEvent, StoreError> {
        let event = ValidatedEvent::from_payload(payload, producer, Utc::now())
            .with_expected_version(expected_version);
        let mut appended = self.log.append(vec![event]).await?;
        Ok(appended.remove(0).into_event())
    }
}

fn parse_variant_id(value: &str) -> Result<VariantId, RegistryError> {
    VariantId::parse(value).map_err(|reason| RegistryError::invalid("variant_id", reason))
}

/// The catalogue's own checks, so an event built here is one `POST /v1/events` would accept.
fn check(payload: &EventPayload) -> Result<(), RegistryError> {
    payload.check().map_err(|err| {
        let first = err.violations.first();
        RegistryError::Invalid {
            field: first.map_or_else(|| ".".to_string(), |v| v.path.clone()),
            reason: first.map_or_else(|| err.to_string(), |v| v.reason.clone()),
        }
    })
}

/// What a variant's stream says.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct VariantState {
    pub registered: Option<VariantRegistered>,
    pub retired: Option<String>,
}

/// Folds a variant's stream `variant-{id}`: its registration and its first retirement. The
/// commands that name a variant (load-test runs, benchmark matrices, routing) decide from it.
pub(crate) async fn read_variant(
    log: &dyn EventLog,
    variant_id: &str,
) -> Result<VariantState, StoreError> {
    let stream = format!("variant-{variant_id}");
    let mut state = VariantState::default();
    let mut version = 0;
    loop {
        let page = log.read_stream(&stream, version, STREAM_PAGE).await?;
        for event in &page {
            version = event.stream_version;
            match event.typed().map_err(|e| StoreError::Corrupt {
                position: event.position,
                what: e.to_string(),
            })? {
                EventPayload::VariantRegistered(p) => state.registered = Some(p),
                EventPayload::VariantRetired(p) if state.retired.is_none() => {
                    state.retired = Some(p.reason)
                }
                _ => {}
            }
        }
        if page.len() < STREAM_PAGE {
            return Ok(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARIANT: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:simulated:exp:e1";
    const PRODUCER: &str = "services-tests";

    async fn service(url: &str) -> VariantRegistryService {
        let log = eventlog::open(url, true).await.expect("open the event log");
        VariantRegistryService::new(log)
    }

    async fn sqlite_service() -> (VariantRegistryService, tempfile::TempDir) {
        let (url, dir) = eventlog::testkit::sqlite_url();
        (service(&url).await, dir)
    }

    #[tokio::test]
    async fn variant_registry_service_refuses_a_malformed_id() {
        let (registry, _dir) = sqlite_service().await;
        let err = registry
            .register("er:er1:wf:wf1", Some(0.01), PRODUCER)
            .await
            .unwrap_err();
        match err {
            RegistryError::Invalid { field, reason } => {
                assert_eq!(field, "variant_id");
                assert!(reason.contains("er:<id>:wf:<id>"), "{reason}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert_eq!(registry.log.head().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn variant_registry_service_refuses_a_negative_or_nan_cost() {
        let (registry, _dir) = sqlite_service().await;
        for cost in [-0.5, f64::NAN, f64::INFINITY] {
            let err = registry
                .register(VARIANT, Some(cost), PRODUCER)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, RegistryError::Invalid { field, .. } if field == "unit_cost_usd"),
                "{err:?}"
            );
        }
    }

    #[tokio::test]
    async fn variant_registry_service_registers_a_new_variant_with_its_parts() {
        let (registry, _dir) = sqlite_service().await;
        let r = registry
            .register(VARIANT, Some(0.02), PRODUCER)
            .await
            .unwrap();
        assert!(!r.unchanged);
        assert_eq!((r.position, r.stream_version), (1, 1));
        assert_eq!(r.variant.provider, "simulated");
        assert_eq!(r.variant.stage, "render");
        assert_eq!(r.variant.unit_cost_usd, Some(0.02));
    }

    #[tokio::test]
    async fn variant_registry_service_repeating_a_registration_appends_nothing() {
        let (registry, _dir) = sqlite_service().await;
        let first = registry
            .register(VARIANT, Some(0.02), PRODUCER)
            .await
            .unwrap();
        let again = registry
            .register(VARIANT, Some(0.02), PRODUCER)
            .await
            .unwrap();
        assert!(again.unchanged);
        assert_eq!(again.position, first.position);
        assert_eq!(again.variant, first.variant);
        assert_eq!(registry.log.head().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn variant_registry_service_a_conflicting_registration_is_a_conflict() {
        let (registry, _dir) = sqlite_service().await;
        registry
            .register(VARIANT, Some(0.02), PRODUCER)
            .await
            .unwrap();
        for other in [Some(0.03), None] {
            let err = registry
                .register(VARIANT, other, PRODUCER)
                .await
                .unwrap_err();
            match err {
                RegistryError::Conflict {
                    stored, requested, ..
                } => assert_eq!((stored, requested), (Some(0.02), other)),
                other => panic!("expected Conflict, got {other:?}"),
            }
        }
        assert_eq!(registry.log.head().await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn variant_registry_service_two_racing_registrations_cannot_both_win() {
        let (url, _dir) = eventlog::testkit::sqlite_url();
        let registry = service(&url).await;
        race_with_different_costs(&registry).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn variant_registry_service_two_racing_registrations_cannot_both_win_on_postgres() {
        let url = eventlog::testkit::postgres_database().await;
        let registry = service(&url).await;
        race_with_different_costs(&registry).await;
    }

    /// Many rounds, each on a fresh variant, so the two calls really overlap in some of them.
    async fn race_with_different_costs(registry: &VariantRegistryService) {
        for round in 0..20 {
            let id = format!("er:er1:wf:wf1:env:prod:stage:render:provider:simulated:exp:r{round}");
            let (a, b) = tokio::join!(
                tokio::spawn({
                    let (registry, id) = (registry.clone(), id.clone());
                    async move { registry.register(&id, Some(0.01), PRODUCER).await }
                }),
                tokio::spawn({
                    let (registry, id) = (registry.clone(), id.clone());
                    async move { registry.register(&id, Some(0.05), PRODUCER).await }
                }),
            );
            let results = [a.unwrap(), b.unwrap()];
            let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(won.len(), 1, "round {round}: {results:?}");
            assert!(!won[0].unchanged);
            assert!(
                results.iter().any(|r| matches!(
                    r,
                    Err(RegistryError::Conflict { .. }
                        | RegistryError::Store(StoreError::Conflict { .. }))
                )),
                "round {round}: {results:?}"
            );
            let stream = registry.read(&format!("variant-{id}")).await.unwrap();
            assert_eq!(stream.version, 1, "round {round}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn variant_registry_service_racing_identical_registrations_append_once() {
        let (registry, _dir) = sqlite_service().await;
        let (a, b) = tokio::join!(
            tokio::spawn({
                let registry = registry.clone();
                async move { registry.register(VARIANT, Some(0.01), PRODUCER).await }
            }),
            tokio::spawn({
                let registry = registry.clone();
                async move { registry.register(VARIANT, Some(0.01), PRODUCER).await }
            }),
        );
        let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
        assert_eq!(
            [a.unchanged, b.unchanged].iter().filter(|u| !**u).count(),
            1
        );
        assert_eq!(a.position, b.position);
        assert_eq!(registry.log.head().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn variant_registry_service_retiring_an_unknown_variant_is_not_found() {
        let (registry, _dir) = sqlite_service().await;
        let err = registry
            .retire(VARIANT, "superseded", PRODUCER)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn variant_registry_service_retires_once_and_repeats_as_unchanged() {
        let (registry, _dir) = sqlite_service().await;
        registry.register(VARIANT, None, PRODUCER).await.unwrap();
        let retired = registry
            .retire(VARIANT, "superseded", PRODUCER)
            .await
            .unwrap();
        assert!(!retired.unchanged);
        assert_eq!((retired.position, retired.stream_version), (2, 2));
        let again = registry
            .retire(VARIANT, "another reason", PRODUCER)
            .await
            .unwrap();
        assert!(again.unchanged);
        assert_eq!(again.position, 2);
        assert_eq!(again.reason, "superseded");
        assert_eq!(registry.log.head().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn variant_registry_service_refuses_to_register_a_retired_variant() {
        let (registry, _dir) = sqlite_service().await;
        registry.register(VARIANT, None, PRODUCER).await.unwrap();
        registry
            .retire(VARIANT, "superseded", PRODUCER)
            .await
            .unwrap();
        let err = registry
            .register(VARIANT, None, PRODUCER)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Retired { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn variant_registry_service_refuses_a_blank_retirement_reason() {
        let (registry, _dir) = sqlite_service().await;
        let err = registry.retire(VARIANT, "  ", PRODUCER).await.unwrap_err();
        assert!(
            matches!(&err, RegistryError::Invalid { field, .. } if field == "reason"),
            "{err:?}"
        );
    }
}
