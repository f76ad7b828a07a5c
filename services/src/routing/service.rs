//! [`RoutingService`]: apply and roll back routing bindings.
//!
//! # Rollback semantics
//!
//! A scope's binding history is a **stack of applied variants**, folded from the scope's stream
//! in the log and nothing else:
//!
//! - `apply V` pushes `V`; `V` becomes the active variant. Applying the variant that is already
//!   active is refused (it would add a version that changes nothing and make the next rollback a
//!   no-op).
//! - `rollback` pops the active variant; the variant below it — the one that was active before
//!   the current one was applied — becomes active again. Repeated rollbacks walk back through the
//!   applies in reverse order, one per call.
//! - With fewer than two variants on the stack (no binding yet, or only the first apply left)
//!   there is nothing to restore: the rollback is refused with [`RoutingError::NoPreviousBinding`],
//!   never turned into "no binding".
//!
//! Every apply and every rollback appends one event and so adds one **version**; versions only
//! grow (a rollback is a new version, not a return to an old one). `binding_version` in the event
//! equals the scope stream's version after the append, which is why the version an operator
//! reads in `GET /routing/bindings` is the `expected_version` the next change must send.
//!
//! Example: apply A (v1), apply B (v2), rollback (v3: A active, stack `[A]`), rollback → refused,
//! apply C (v4: stack `[A, C]`), rollback (v5: A).
//!
//! # Compare-and-set
//!
//! `expected_version` is required (0 for a scope with no binding yet). The service checks it
//! against the stream it folded, and appends with the same `expected_version`, so a change that
//! slips in between the read and the append makes the log refuse the append: two operators
//! acting on the same version cannot both win, and the loser learns the current version. The
//! service never retries on the caller's behalf: the caller decided on a version that is gone.

use crate::variants::service::read_variant;
use chrono::Utc;
use eventlog::catalogue::{self, BindingApplied, BindingRolledBack, EventPayload, Evidence};
use eventlog::ids::VariantId;
use eventlog::{EventLog, RecordedEvent, StoreError, ValidatedEvent, ValidationError};
use std::sync::Arc;

/// Recorded as the producer of the events this service appends.
pub const PRODUCER: &str = "services.routing";
/// Events read per `read_stream` call while folding a stream.
const STREAM_PAGE: usize = 1_000;

/// `POST /admin/studio/routing/apply`, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyBinding {
    pub effect_revision_id: String,
    pub stage: String,
    pub variant_id: String,
    /// The binding version the caller read (0: no binding yet).
    pub expected_version: i64,
    pub reason: String,
    pub evidence: Option<Evidence>,
    pub actor: String,
}

/// `POST /admin/studio/routing/rollback`, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackBinding {
    pub effect_revision_id: String,
    pub stage: String,
    pub expected_version: i64,
    pub reason: String,
    pub actor: String,
}

/// What an apply or a rollback appended, and the binding it left.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingChange {
    pub effect_revision_id: String,
    pub stage: String,
    /// `"applied"` or `"rolled_back"`.
    pub action: &'static str,
    /// The variant active after the change.
    pub variant_id: String,
    /// The variant active before the change (for a rollback: the one rolled back).
    pub previous_variant_id: Option<String>,
    /// The binding version after the change.
    pub version: u64,
    pub reason: String,
    pub actor: String,
    pub evidence: Option<Evidence>,
    /// The variant a rollback would restore now, if any.
    pub rollback_target: Option<String>,
    pub position: i64,
    pub event_id: String,
    pub occurred_at: String,
}

/// Why a routing command was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// An input fails its grammar or is blank (each violation names its field).
    #[error("{0}")]
    Invalid(ValidationError),
    #[error("variant {variant_id} is not registered")]
    VariantNotRegistered { variant_id: String },
    #[error("variant {variant_id} is retired ({reason})")]
    VariantRetired { variant_id: String, reason: String },
    /// The variant belongs to another effect revision or stage than the scope. `field` is
    /// `effect_revision_id` or `stage`.
    #[error("variant {variant_id} has {field} {variant_value}, but the scope's is {scope_value}")]
    OutOfScope {
        variant_id: String,
        field: &'static str,
        variant_value: String,
        scope_value: String,
    },
    /// The evidence names a benchmark run the log does not hold.
    #[error("benchmark run {benchmark_run_id} does not exist")]
    EvidenceNotFound { benchmark_run_id: String },
    /// `expected_version` is not the scope's current version.
    #[error("the binding of {scope} is at version {current}, not {expected}")]
    StaleVersion {
        scope: String,
        expected: i64,
        current: i64,
        current_variant_id: Option<String>,
    },
    /// The variant to apply is the active one already.
    #[error("variant {variant_id} is already active for {scope} at version {version}")]
    AlreadyActive {
        scope: String,
        variant_id: String,
        version: i64,
    },
    /// A rollback with nothing to restore.
    #[error("the binding of {scope} has no previous variant to roll back to")]
    NoPreviousBinding {
        scope: String,
        version: i64,
        current_variant_id: Option<String>,
    },
    /// The variant a rollback would restore was retired since it was replaced.
    #[error("rollback would restore variant {variant_id}, which is retired ({reason})")]
    RollbackTargetRetired { variant_id: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RoutingError {
    fn invalid(path: &str, reason: impl Into<String>) -> Self {
        Self::Invalid(ValidationError::single(path, reason))
    }
}

/// A scope's stream, folded: its version and the stack of applied variants (see the module
/// docs). The last element is the active variant.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ScopeStream {
    pub version: i64,
    pub stack: Vec<String>,
}

impl ScopeStream {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), StoreError> {
        self.version = event.stream_version;
        match event.typed().map_err(|e| corrupt(event, e))? {
            EventPayload::BindingApplied(p) => self.stack.push(p.variant_id),
            EventPayload::BindingRolledBack(p) => {
                self.stack.pop();
                // The stack below the popped variant already ends in `to_variant_id` when the
                // log was written by this service; keep the log's word if it says otherwise.
                if self.stack.last() != Some(&p.to_variant_id) {
                    self.stack.push(p.to_variant_id);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn active(&self) -> Option<&String> {
        self.stack.last()
    }

    /// The variant a rollback would restore.
    fn rollback_target(&self) -> Option<&String> {
        self.stack.len().checked_sub(2).map(|i| &self.stack[i])
    }
}

fn corrupt(event: &RecordedEvent, err: ValidationError) -> StoreError {
    StoreError::Corrupt {
        position: event.position,
        what: err.to_string(),
    }
}

/// Applies and rolls back routing bindings; see the module docs for the semantics.
#[derive(Clone)]
pub struct RoutingService {
    log: Arc<dyn EventLog>,
}

impl RoutingService {
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self { log }
    }

    /// Binds `variant_id` to the scope: checks the inputs, the variant (registered, active, of
    /// the scope's effect revision and stage), the evidence (a benchmark run the log holds) and
    /// `expected_version`, then appends `routing.binding_applied` with that expected version.
    #[tracing::instrument(skip_all, fields(effect_revision_id = %request.effect_revision_id, stage = %request.stage, variant_id = %request.variant_id), err(level = "debug"))]
    pub async fn apply(&self, request: ApplyBinding) -> Result<BindingChange, RoutingError> {
        check_scope(
            &request.effect_revision_id,
            &request.stage,
            request.expected_version,
        )?;
        check_words(&request.reason, &request.actor)?;
        let id = VariantId::parse(&request.variant_id)
            .map_err(|reason| RoutingError::invalid("variant_id", reason))?;
        for (field, variant_value, scope_value) in [
            (
                "effect_revision_id",
                &id.effect_revision_id,
                &request.effect_revision_id,
            ),
            ("stage", &id.stage, &request.stage),
        ] {
            if variant_value != scope_value {
                return Err(RoutingError::OutOfScope {
                    variant_id: request.variant_id,
                    field,
                    variant_value: variant_value.clone(),
                    scope_value: scope_value.clone(),
                });
            }
        }
        let variant = read_variant(self.log.as_ref(), &request.variant_id).await?;
        if variant.registered.is_none() {
            return Err(RoutingError::VariantNotRegistered {
                variant_id: request.variant_id,
            });
        }
        if let Some(reason) = variant.retired {
            return Err(RoutingError::VariantRetired {
                variant_id: request.variant_id,
                reason,
            });
        }
        if let Some(evidence) = &request.evidence {
            eventlog::ids::check_benchmark_run_id(&evidence.benchmark_run_id)
                .map_err(|reason| RoutingError::invalid("evidence.benchmark_run_id", reason))?;
            let stream = catalogue::benchmark_stream(&evidence.benchmark_run_id);
            if self.log.stream_version(&stream).await? == 0 {
                return Err(RoutingError::EvidenceNotFound {
                    benchmark_run_id: evidence.benchmark_run_id.clone(),
                });
            }
        }

        let scope = self
            .read_scope(&request.effect_revision_id, &request.stage)
            .await?;
        self.check_version(
            &request.effect_revision_id,
            &request.stage,
            request.expected_version,
            &scope,
        )?;
        if scope.active() == Some(&request.variant_id) {
            return Err(RoutingError::AlreadyActive {
                scope: scope_name(&request.effect_revision_id, &request.stage),
                variant_id: request.variant_id,
                version: scope.version,
            });
        }
        let applied = BindingApplied {
            effect_revision_id: request.effect_revision_id.clone(),
            stage: request.stage.clone(),
            variant_id: request.variant_id.clone(),
            previous_variant_id: scope.active().cloned(),
            binding_version: next_version(request.expected_version),
            reason: request.reason.clone(),
            actor: request.actor.clone(),
            evidence: request.evidence.clone(),
        };
        let payload = EventPayload::BindingApplied(applied.clone());
        payload.check().map_err(RoutingError::Invalid)?;
        let event = self
            .append(
                &payload,
                &request.effect_revision_id,
                &request.stage,
                request.expected_version,
            )
            .await?;
        tracing::info!(
            position = event.position,
            version = applied.binding_version,
            "routing binding applied"
        );
        Ok(BindingChange {
            effect_revision_id: applied.effect_revision_id,
            stage: applied.stage,
            action: "applied",
            rollback_target: applied.previous_variant_id.clone(),
            variant_id: applied.variant_id,
            previous_variant_id: applied.previous_variant_id,
            version: applied.binding_version,
            reason: applied.reason,
            actor: applied.actor,
            evidence: applied.evidence,
            position: event.position,
            event_id: event.event_id.to_string(),
            occurred_at: event.occurred_at,
        })
    }

    /// Restores the variant that was active before the current one (see the module docs):
    /// checks `expected_version`, that there is a previous variant and that it is still active,
    /// then appends `routing.binding_rolled_back` with that expected version.
    #[tracing::instrument(skip_all, fields(effect_revision_id = %request.effect_revision_id, stage = %request.stage), err(level = "debug"))]
    pub async fn rollback(&self, request: RollbackBinding) -> Result<BindingChange, RoutingError> {
        check_scope(
            &request.effect_revision_id,
            &request.stage,
            request.expected_version,
        )?;
        check_words(&request.reason, &request.actor)?;
        let scope = self
            .read_scope(&request.effect_revision_id, &request.stage)
            .await?;
        self.check_version(
            &request.effect_revision_id,
            &request.stage,
            request.expected_version,
            &scope,
        )?;
        let (Some(from), Some(to)) = (scope.active(), scope.rollback_target()) else {
            return Err(RoutingError::NoPreviousBinding {
                scope: scope_name(&request.effect_revision_id, &request.stage),
                version: scope.version,
                current_variant_id: scope.active().cloned(),
            });
        };
        let target = read_variant(self.log.as_ref(), to).await?;
        if let Some(reason) = target.retired {
            return Err(RoutingError::RollbackTargetRetired {
                variant_id: to.clone(),
                reason,
            });
        }
        let rolled_back = BindingRolledBack {
            effect_revision_id: request.effect_revision_id.clone(),
            stage: request.stage.clone(),
            from_variant_id: from.clone(),
            to_variant_id: to.clone(),
            binding_version: next_version(request.expected_version),
            reason: request.reason.clone(),
            actor: request.actor.clone(),
        };
        let payload = EventPayload::BindingRolledBack(rolled_back.clone());
        payload.check().map_err(RoutingError::Invalid)?;
        let event = self
            .append(
                &payload,
                &request.effect_revision_id,
                &request.stage,
                request.expected_version,
            )
            .await?;
        tracing::info!(
            position = event.position,
            version = rolled_back.binding_version,
            "routing binding rolled back"
        );
        let stack_after = &scope.stack[..scope.stack.len() - 1];
        Ok(BindingChange {
            effect_revision_id: rolled_back.effect_revision_id,
            stage: rolled_back.stage,
            action: "rolled_back",
            variant_id: rolled_back.to_variant_id,
            previous_variant_id: Some(rolled_back.from_variant_id),
            version: rolled_back.binding_version,
            reason: rolled_back.reason,
            actor: rolled_back.actor,
            evidence: None,
            rollback_target: stack_after
                .len()
                .checked_sub(2)
                .map(|i| stack_after[i].clone()),
            position: event.position,
            event_id: event.event_id.to_string(),
            occurred_at: event.occurred_at,
        })
    }

    fn check_version(
        &self,
        effect_revision_id: &str,
        stage: &str,
        expected: i64,
        scope: &ScopeStream,
    ) -> Result<(), RoutingError> {
        if scope.version == expected {
            return Ok(());
        }
        Err(RoutingError::StaleVersion {
            scope: scope_name(effect_revision_id, stage),
            expected,
            current: scope.version,
            current_variant_id: scope.active().cloned(),
        })
    }

    /// Folds the scope's stream from the start.
    pub(crate) async fn read_scope(
        &self,
        effect_revision_id: &str,
        stage: &str,
    ) -> Result<ScopeStream, StoreError> {
        let stream = catalogue::routing_stream(effect_revision_id, stage);
        let mut folded = ScopeStream::default();
        loop {
            let page = self
                .log
                .read_stream(&stream, folded.version, STREAM_PAGE)
                .await?;
            for event in &page {
                folded.apply(event)?;
            }
            if page.len() < STREAM_PAGE {
                return Ok(folded);
            }
        }
    }

    /// Appends with `expected_version`; a lost race is answered with the version that won.
    async fn append(
        &self,
        payload: &EventPayload,
        effect_revision_id: &str,
        stage: &str,
        expected_version: i64,
    ) -> Result<RecordedEvent, RoutingError> {
        let event = ValidatedEvent::from_payload(payload, PRODUCER, Utc::now())
            .with_expected_version(expected_version);
        match self.log.append(vec![event]).await {
            Ok(mut appended) => Ok(appended.remove(0).into_event()),
            Err(StoreError::Conflict { .. }) => {
                let scope = self.read_scope(effect_revision_id, stage).await?;
                Err(RoutingError::StaleVersion {
                    scope: scope_name(effect_revision_id, stage),
                    expected: expected_version,
                    current: scope.version,
                    current_variant_id: scope.active().cloned(),
                })
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// `{effect_revision_id}:{stage}`, as in the stream name and the read model's key.
fn scope_name(effect_revision_id: &str, stage: &str) -> String {
    format!("{effect_revision_id}:{stage}")
}

fn next_version(expected_version: i64) -> u64 {
    u64::try_from(expected_version).unwrap_or(0) + 1
}

fn check_scope(effect_revision_id: &str, stage: &str, expected: i64) -> Result<(), RoutingError> {
    let mut violations = Vec::new();
    for (path, value) in [("effect_revision_id", effect_revision_id), ("stage", stage)] {
        if let Err(reason) = eventlog::ids::check_segment(value) {
            violations.push(eventlog::Violation::new(path, reason));
        }
    }
    if expected < 0 {
        violations.push(eventlog::Violation::new(
            "expected_version",
            format!(
                "is {expected}; it must be the binding version you read (0 for no binding yet)"
            ),
        ));
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(RoutingError::Invalid(ValidationError { violations }))
    }
}

fn check_words(reason: &str, actor: &str) -> Result<(), RoutingError> {
    if reason.trim().is_empty() {
        return Err(RoutingError::invalid(
            "reason",
            "must say why the binding changes; it is kept in the binding's history",
        ));
    }
    if actor.trim().is_empty() {
        return Err(RoutingError::invalid(
            "actor",
            "must name who changes the binding",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variants::VariantRegistryService;

    const A: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:sim:exp:a";
    const B: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:sim:exp:b";
    const C: &str = "er:er1:wf:wf1:env:prod:stage:render:provider:sim:exp:c";

    async fn service(url: &str) -> RoutingService {
        let log = eventlog::open(url, true).await.expect("open the event log");
        let registry = VariantRegistryService::new(log.clone());
        for v in [A, B, C] {
            registry.register(v, Some(0.01), "tests").await.unwrap();
        }
        RoutingService::new(log)
    }

    fn apply(variant_id: &str, expected_version: i64) -> ApplyBinding {
        ApplyBinding {
            effect_revision_id: "er1".into(),
            stage: "render".into(),
            variant_id: variant_id.into(),
            expected_version,
            reason: "benchmark winner".into(),
            evidence: None,
            actor: "alice".into(),
        }
    }

    fn rollback(expected_version: i64) -> RollbackBinding {
        RollbackBinding {
            effect_revision_id: "er1".into(),
            stage: "render".into(),
            expected_version,
            reason: "regression".into(),
            actor: "bob".into(),
        }
    }

    fn fold(events: &[EventPayload]) -> ScopeStream {
        let mut scope = ScopeStream::default();
        for (i, payload) in events.iter().enumerate() {
            let event = RecordedEvent {
                position: i as i64 + 1,
                event_id: uuid::Uuid::now_v7(),
                event_type: payload.event_type().into(),
                schema_version: 1,
                stream: payload.stream(),
                stream_version: i as i64 + 1,
                idempotency_key: None,
                correlation_id: None,
                causation_id: None,
                producer: None,
                occurred_at: "2026-01-01T00:00:00Z".into(),
                recorded_at: "2026-01-01T00:00:00Z".into(),
                payload: payload.to_value(),
            };
            scope.apply(&event).unwrap();
        }
        scope
    }

    fn applied(variant: &str, previous: Option<&str>, version: u64) -> EventPayload {
        EventPayload::BindingApplied(BindingApplied {
            effect_revision_id: "er1".into(),
            stage: "render".into(),
            variant_id: variant.into(),
            previous_variant_id: previous.map(Into::into),
            binding_version: version,
            reason: "r".into(),
            actor: "a".into(),
            evidence: None,
        })
    }

    fn rolled_back(from: &str, to: &str, version: u64) -> EventPayload {
        EventPayload::BindingRolledBack(BindingRolledBack {
            effect_revision_id: "er1".into(),
            stage: "render".into(),
            from_variant_id: from.into(),
            to_variant_id: to.into(),
            binding_version: version,
            reason: "r".into(),
            actor: "a".into(),
        })
    }

    #[test]
    fn the_binding_history_folds_into_a_stack_that_rollbacks_pop() {
        let scope = fold(&[
            applied(A, None, 1),
            applied(B, Some(A), 2),
            applied(C, Some(B), 3),
            rolled_back(C, B, 4),
        ]);
        assert_eq!(scope.version, 4);
        assert_eq!(scope.stack, [A, B]);
        assert_eq!(scope.active().map(String::as_str), Some(B));
        assert_eq!(scope.rollback_target().map(String::as_str), Some(A));
        let scope = fold(&[
            applied(A, None, 1),
            applied(B, Some(A), 2),
            rolled_back(B, A, 3),
        ]);
        assert_eq!(scope.stack, [A]);
        assert_eq!(scope.rollback_target(), None);
    }

    #[tokio::test]
    async fn routing_service_apply_apply_rollback_leaves_version_three_on_the_first_variant() {
        let (url, _dir) = eventlog::testkit::sqlite_url();
        let routing = service(&url).await;
        let first = routing.apply(apply(A, 0)).await.unwrap();
        assert_eq!(
            (first.version, first.previous_variant_id.as_deref()),
            (1, None)
        );
        let second = routing.apply(apply(B, 1)).await.unwrap();
        assert_eq!(
            (second.version, second.previous_variant_id.as_deref()),
            (2, Some(A))
        );
        assert_eq!(second.rollback_target.as_deref(), Some(A));
        let back = routing.rollback(rollback(2)).await.unwrap();
        assert_eq!(back.version, 3);
        assert_eq!(back.variant_id, A);
        assert_eq!(back.previous_variant_id.as_deref(), Some(B));
        assert_eq!(back.rollback_target, None);
        match routing.rollback(rollback(3)).await.unwrap_err() {
            RoutingError::NoPreviousBinding {
                version,
                current_variant_id,
                ..
            } => {
                assert_eq!((version, current_variant_id.as_deref()), (3, Some(A)))
            }
            other => panic!("expected NoPreviousBinding, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn stale_expected_version_is_a_conflict_that_names_the_current_version() {
        let (url, _dir) = eventlog::testkit::sqlite_url();
        let routing = service(&url).await;
        routing.apply(apply(A, 0)).await.unwrap();
        routing.apply(apply(B, 1)).await.unwrap();
        match routing.rollback(rollback(1)).await.unwrap_err() {
            RoutingError::StaleVersion {
                expected,
                current,
                current_variant_id,
                ..
            } => {
                assert_eq!((expected, current), (1, 2));
                assert_eq!(current_variant_id.as_deref(), Some(B));
            }
            other => panic!("expected StaleVersion, got {other:?}"),
        }
        assert!(matches!(
            routing.apply(apply(C, 5)).await.unwrap_err(),
            RoutingError::StaleVersion { current: 2, .. }
        ));
        assert_eq!(
            routing.log.head().await.unwrap(),
            5,
            "3 registrations + 2 applies"
        );
    }

    #[tokio::test]
    async fn applying_the_active_variant_again_is_refused() {
        let (url, _dir) = eventlog::testkit::sqlite_url();
        let routing = service(&url).await;
        routing.apply(apply(A, 0)).await.unwrap();
        assert!(matches!(
            routing.apply(apply(A, 1)).await.unwrap_err(),
            RoutingError::AlreadyActive { version: 1, .. }
        ));
    }

    #[tokio::test]
    async fn a_variant_of_another_stage_or_revision_or_unregistered_or_retired_is_refused() {
        let (url, _dir) = eventlog::testkit::sqlite_url();
        let routing = service(&url).await;
        let other_stage = "er:er1:wf:wf1:env:prod:stage:upscale:provider:sim:exp:a";
        match routing.apply(apply(other_stage, 0)).await.unwrap_err() {
            RoutingError::OutOfScope { field, .. } => assert_eq!(field, "stage"),
            other => panic!("expected OutOfScope, got {other:?}"),
        }
        let other_revision = "er:er2:wf:wf1:env:prod:stage:render:provider:sim:exp:a";
        match routing.apply(apply(other_revision, 0)).await.unwrap_err() {
            RoutingError::OutOfScope { field, .. } => assert_eq!(field, "effect_revision_id"),
            other => panic!("expected OutOfScope, got {other:?}"),
        }
        let unknown = "er:er1:wf:wf1:env:prod:stage:render:provider:sim:exp:zz";
        assert!(matches!(
            routing.apply(apply(unknown, 0)).await.unwrap_err(),
            RoutingError::VariantNotRegistered { .. }
        ));
        VariantRegistryService::new(routing.log.clone())
            .retire(C, "superseded", "tests")
            .await
            .unwrap();
        assert!(matches!(
            routing.apply(apply(C, 0)).await.unwrap_err(),
            RoutingError::VariantRetired { .. }
        ));
    }

    #[tokio::test]
    async fn a_rollback_to_a_variant_retired_since_is_refused() {
        let (url, _dir) = eventlog::testkit::sqlite_url();
        let routing = service(&url).await;
        routing.apply(apply(A, 0)).await.unwrap();
        routing.apply(apply(B, 1)).await.unwrap();
        VariantRegistryService::new(routing.log.clone())
            .retire(A, "broken", "tests")
            .await
            .unwrap();
        assert!(matches!(
            routing.rollback(rollback(2)).await.unwrap_err(),
            RoutingError::RollbackTargetRetired { .. }
        ));
    }

    #[tokio::test]
    async fn evidence_must_name_a_benchmark_run_the_log_holds() {
        let (url, _dir) = eventlog::testkit::sqlite_url();
        let routing = service(&url).await;
        let mut request = apply(A, 0);
        request.evidence = Some(Evidence {
            benchmark_run_id: eventlog::ids::new_benchmark_run_id(),
        });
        assert!(matches!(
            routing.apply(request.clone()).await.unwrap_err(),
            RoutingError::EvidenceNotFound { .. }
        ));
        request.evidence = Some(Evidence {
            benchmark_run_id: "bm_42".into(),
        });
        assert!(matches!(
            routing.apply(request).await.unwrap_err(),
            RoutingError::Invalid(_)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routing_service_racing_applies_on_one_version_cannot_both_win_on_sqlite() {
        let (url, _dir) = eventlog::testkit::sqlite_url();
        race(&service(&url).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routing_service_racing_applies_on_one_version_cannot_both_win_on_postgres() {
        let url = eventlog::testkit::postgres_database().await;
        race(&service(&url).await).await;
    }

    /// Many rounds, each two applies on the same expected version, so the two really overlap in
    /// some of them: exactly one wins each round, the other is told the version that won.
    async fn race(routing: &RoutingService) {
        let mut version = 0;
        for round in 0..15 {
            let (first, second) = if round % 2 == 0 { (B, C) } else { (C, B) };
            // Start each round from A so both candidates differ from the active variant.
            if version > 0 {
                routing.apply(apply(A, version)).await.unwrap();
                version += 1;
            }
            let (x, y) = tokio::join!(
                tokio::spawn({
                    let routing = routing.clone();
                    async move { routing.apply(apply(first, version)).await }
                }),
                tokio::spawn({
                    let routing = routing.clone();
                    async move { routing.apply(apply(second, version)).await }
                }),
            );
            let results = [x.unwrap(), y.unwrap()];
            let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(won.len(), 1, "round {round}: {results:?}");
            assert!(
                results.iter().any(|r| matches!(
                    r,
                    Err(RoutingError::StaleVersion { current, .. }) if *current == version + 1
                )),
                "round {round}: {results:?}"
            );
            version += 1;
            let scope = routing.read_scope("er1", "render").await.unwrap();
            assert_eq!(scope.version, version, "round {round}");
            assert_eq!(scope.active(), Some(&won[0].variant_id));
        }
    }
}
