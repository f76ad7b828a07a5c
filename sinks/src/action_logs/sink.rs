//! [`ActionLogSink`]: the action-log writer as a [`Sink`]. Each delivered batch is one
//! transaction over `action_logs` and `action_log_events`, so an event is folded exactly once
//! however often it is delivered. Its `tick` raises the health findings.

use super::health::{self, HealthFinding, StallWatch};
use super::rules::{self, classify, run_id_of, Finding, Kind};
use super::store::{self, apply_ack, grouping_for, Fold};
use super::templates::Templates;
use crate::checkpoint;
use crate::sink::{MappingEntry, Sink, SinkError};
use async_trait::async_trait;
use eventlog::catalogue::{load_test_stream, ActionLogAcknowledged, RunCreated};
use eventlog::{EventLog, EventPayload, RecordedEvent};
use projector::db::ReadDb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The action-log sink's name: its checkpoint, dead letters, and what `after()` names.
pub const ACTION_LOG_SINK: &str = "action_logs";

#[derive(Debug, Clone, Copy)]
pub struct ActionLogConfig {
    /// Same kind, same subject, within this much event time: one row, more occurrences.
    pub window: Duration,
    /// A projection behind the log head whose checkpoint has not moved for this long is stalled.
    pub stall_after: Duration,
    /// How often the health findings are looked for.
    pub health_interval: Duration,
}

impl Default for ActionLogConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10 * 60),
            stall_after: Duration::from_secs(5 * 60),
            health_interval: Duration::from_secs(30),
        }
    }
}

pub struct ActionLogSink {
    db: ReadDb,
    log: Arc<dyn EventLog>,
    templates: Arc<Templates>,
    config: ActionLogConfig,
    /// Checkpoint history per projection across ticks; ticks run one at a time, the lock only
    /// satisfies `Sync`.
    stalls: Mutex<StallWatch>,
}

enum Item<'a> {
    Fold(&'a RecordedEvent, Finding),
    Ack(&'a RecordedEvent, ActionLogAcknowledged),
}

fn retryable(err: impl std::fmt::Display) -> SinkError {
    SinkError::Retryable(err.to_string())
}

impl ActionLogSink {
    pub fn new(
        db: ReadDb,
        log: Arc<dyn EventLog>,
        templates: Arc<Templates>,
        config: ActionLogConfig,
    ) -> Self {
        Self {
            db,
            log,
            templates,
            config,
            stalls: Mutex::new(StallWatch::default()),
        }
    }

    fn window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.window).unwrap_or(chrono::Duration::minutes(10))
    }

    /// The `load_test.run_created` of a run: the first event of its stream.
    async fn run_created(&self, run_id: &str) -> Result<Option<RunCreated>, SinkError> {
        let first = self
            .log
            .read_stream(&load_test_stream(run_id), 0, 1)
            .await
            .map_err(retryable)?;
        Ok(first.first().and_then(|e| match e.typed() {
            Ok(EventPayload::RunCreated(run)) => Some(run),
            _ => None,
        }))
    }

    async fn items<'a>(&self, events: &'a [RecordedEvent]) -> Result<Vec<Item<'a>>, SinkError> {
        let mut runs: HashMap<String, Option<RunCreated>> = HashMap::new();
        let mut items = Vec::new();
        for event in events {
            let payload = event.typed().map_err(|err| {
                SinkError::Permanent(format!(
                    "event at position {} does not match the catalogue: {err}",
                    event.position
                ))
            })?;
            if let EventPayload::ActionLogAcknowledged(ack) = payload {
                items.push(Item::Ack(event, ack));
                continue;
            }
            let run = match run_id_of(&payload) {
                Some(id) => {
                    if !runs.contains_key(id) {
                        let run = self.run_created(id).await?;
                        runs.insert(id.to_string(), run);
                    }
                    runs[id].clone()
                }
                None => None,
            };
            if let Some(finding) = classify(event, &payload, run.as_ref()) {
                items.push(Item::Fold(event, finding));
            }
        }
        Ok(items)
    }

    /// Looks for dead letters and stalled projections, and folds what it finds. Findings are
    /// placed just past this sink's checkpoint (`last_position` = checkpoint + 1), so a reader
    /// that tails action logs behind this sink (never past its checkpoint) sees them once this
    /// sink moves on, and never skips them.
    pub async fn check_health(&self) -> Result<usize, SinkError> {
        let (projection_letters, sink_letters) = health::open_dead_letters(&self.db)
            .await
            .map_err(retryable)?;
        let positions = projector::checkpoint::positions(&self.db)
            .await
            .map_err(retryable)?;
        let head = self.log.head().await.map_err(retryable)?;
        let stalled = self.stalls.lock().expect("stall lock").observe(
            &positions,
            head,
            self.config.stall_after,
            std::time::Instant::now(),
        );
        let now = checkpoint::now_text();
        let findings: Vec<HealthFinding> = projection_letters
            .iter()
            .map(health::projection_dead_letter)
            .chain(sink_letters.iter().map(health::sink_dead_letter))
            .chain(stalled.into_iter().map(|(name, at, stuck_for)| {
                health::projection_stalled(&name, at, head, stuck_for, now.clone())
            }))
            .collect();
        if findings.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.begin_write().await.map_err(retryable)?;
        let at = checkpoint::read(&mut tx, ACTION_LOG_SINK)
            .await
            .map_err(retryable)?
            .unwrap_or(0)
            + 1;
        let mut raised = 0;
        for h in &findings {
            let folded = store::fold(
                &mut tx,
                &self.templates,
                Fold {
                    key: h.key.clone(),
                    position: h.position,
                    last_position: at,
                    occurred_at: h.observed_at.clone(),
                    correlation_id: None,
                    finding: &h.finding,
                    grouping: grouping_for(h.finding.kind, self.window()),
                },
            )
            .await
            .map_err(|e| SinkError::Permanent(e.to_string()))?;
            raised += usize::from(folded != store::Folded::Duplicate);
        }
        tx.commit().await.map_err(retryable)?;
        Ok(raised)
    }
}

#[async_trait]
impl Sink for ActionLogSink {
    fn name(&self) -> &'static str {
        ACTION_LOG_SINK
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        rules::wants(event)
    }

    async fn deliver(&self, events: &[RecordedEvent]) -> Result<(), SinkError> {
        let items = self.items(events).await?;
        if items.is_empty() {
            return Ok(());
        }
        let window = self.window();
        let mut tx = self.db.begin_write().await.map_err(retryable)?;
        for item in &items {
            match item {
                Item::Fold(event, finding) => {
                    store::fold(
                        &mut tx,
                        &self.templates,
                        Fold {
                            key: event.event_id.to_string(),
                            position: event.position,
                            last_position: event.position,
                            occurred_at: event.occurred_at.clone(),
                            correlation_id: event.correlation_id.clone(),
                            finding,
                            grouping: grouping_for(finding.kind, window),
                        },
                    )
                    .await
                    .map_err(|e| match e {
                        store::FoldError::Database(db) => retryable(db),
                        store::FoldError::Template(t) => SinkError::Permanent(format!(
                            "event at position {}: {t}",
                            event.position
                        )),
                    })?;
                }
                Item::Ack(event, ack) => {
                    apply_ack(&mut tx, event, ack).await.map_err(retryable)?;
                }
            }
        }
        tx.commit().await.map_err(retryable)
    }

    async fn tick(&self) -> Result<(), SinkError> {
        self.check_health().await.map(|_| ())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.config.health_interval)
    }

    fn mapping(&self) -> Vec<MappingEntry> {
        let entry = |event: &str, kind: Kind| MappingEntry {
            event: event.to_string(),
            destination: "action_log".into(),
            target: kind.as_str().into(),
        };
        vec![
            entry("load_test.runner_fallback", Kind::RunnerFallback),
            entry("load_test.arrivals_missed", Kind::ArrivalsMissed),
            entry(
                "load_test.stop_condition_breached",
                Kind::StopConditionBreached,
            ),
            entry("load_test.run_cancelled", Kind::RunCancelled),
            entry(
                "quality.evaluation_completed (fallback)",
                Kind::QualityFallback,
            ),
            entry("quality.evaluation_failed", Kind::QualityEvaluationFailed),
            entry("routing.binding_applied", Kind::RoutingBindingApplied),
            entry(
                "routing.binding_rolled_back",
                Kind::RoutingBindingRolledBack,
            ),
            entry("ops.alarm_state_changed (ALARM)", Kind::Alarm),
            entry("severity:warn (any other type)", Kind::WarnEvent),
            entry("severity:critical (any other type)", Kind::CriticalEvent),
            entry("health:projection_dead_letters", Kind::ProjectionDeadLetter),
            entry("health:sink_dead_letters", Kind::SinkDeadLetter),
            entry("health:projection_checkpoints", Kind::ProjectionStalled),
        ]
    }
}
