//! Projection and sink health as action logs. These findings are not events: the action-log
//! sink's `tick` reads the dead-letter tables and the projection checkpoints against the log
//! head, and raises `projection_dead_letter`, `sink_dead_letter` and `projection_stalled`.
//! Each finding carries a deterministic key (`pdl.<projection>.<position>`, …) that stands in
//! for an event id, so a finding seen on every tick is folded once.

use super::rules::{Finding, Kind};
use eventlog::Severity;
use projector::db::ReadDb;
use projector::dead_letters;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A health finding and where it goes in the action-log table.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthFinding {
    /// Stands in for the event id in `action_log_events`; the action log id is `al_<key>`.
    pub key: String,
    /// The log position the finding is about (the dead-lettered event, the stalled checkpoint).
    pub position: i64,
    /// When it was observed (wall clock: health is operational, not replayed).
    pub observed_at: String,
    pub finding: Finding,
}

/// A dead letter as the health check reads it from either table.
pub use projector::dead_letters::DeadLetterRow;

pub fn projection_dead_letter(row: &DeadLetterRow) -> HealthFinding {
    HealthFinding {
        key: format!("pdl.{}.{}", row.owner, row.position),
        position: row.position,
        observed_at: row.recorded_at.clone(),
        finding: Finding {
            kind: Kind::ProjectionDeadLetter,
            severity: Severity::Critical,
            subject: format!("projection-{}", row.owner),
            title: format!(
                "Projection {} could not apply the event at position {}",
                row.owner, row.position
            ),
            context: json!({
                "projection": row.owner,
                "position": row.position,
                "event_id": row.event_id,
                "event_type": row.event_type,
                "error": row.error,
                "attempts": row.attempts,
            }),
        },
    }
}

pub fn sink_dead_letter(row: &DeadLetterRow) -> HealthFinding {
    HealthFinding {
        key: format!("sdl.{}.{}", row.owner, row.position),
        position: row.position,
        observed_at: row.recorded_at.clone(),
        finding: Finding {
            kind: Kind::SinkDeadLetter,
            severity: Severity::Warn,
            subject: format!("sink-{}", row.owner),
            title: format!(
                "Sink {} could not deliver the event at position {}",
                row.owner, row.position
            ),
            context: json!({
                "sink": row.owner,
                "position": row.position,
                "event_id": row.event_id,
                "event_type": row.event_type,
                "error": row.error,
                "attempts": row.attempts,
            }),
        },
    }
}

pub fn projection_stalled(
    projection: &str,
    checkpoint: i64,
    head: i64,
    stalled_for: Duration,
    observed_at: String,
) -> HealthFinding {
    HealthFinding {
        key: format!("stall.{projection}.{checkpoint}"),
        position: checkpoint,
        observed_at,
        finding: Finding {
            kind: Kind::ProjectionStalled,
            severity: Severity::Critical,
            subject: format!("projection-{projection}"),
            title: format!(
                "Projection {projection} is stuck at position {checkpoint}, {} behind the log",
                head - checkpoint
            ),
            context: json!({
                "projection": projection,
                "checkpoint": checkpoint,
                "head": head,
                "lag": head - checkpoint,
                "stalled_for_s": stalled_for.as_secs(),
            }),
        },
    }
}

/// Remembers since when each projection's checkpoint has not moved while the log was ahead.
#[derive(Debug, Default)]
pub struct StallWatch {
    since: HashMap<String, (i64, Instant)>,
}

impl StallWatch {
    /// Records the latest checkpoints; returns the projections stuck behind `head` for at
    /// least `stall_after`, with how long.
    pub fn observe(
        &mut self,
        positions: &HashMap<String, i64>,
        head: i64,
        stall_after: Duration,
        now: Instant,
    ) -> Vec<(String, i64, Duration)> {
        let mut stalled = Vec::new();
        self.since.retain(|name, _| positions.contains_key(name));
        for (name, &checkpoint) in positions {
            if checkpoint >= head {
                self.since.remove(name);
                continue;
            }
            let entry = self.since.entry(name.clone()).or_insert((checkpoint, now));
            if entry.0 != checkpoint {
                *entry = (checkpoint, now);
            }
            let stuck_for = now.saturating_duration_since(entry.1);
            if stuck_for >= stall_after {
                stalled.push((name.clone(), checkpoint, stuck_for));
            }
        }
        stalled.sort();
        stalled
    }
}

/// Open dead letters of every projection and sink.
pub async fn open_dead_letters(
    db: &ReadDb,
) -> Result<(Vec<DeadLetterRow>, Vec<DeadLetterRow>), sqlx::Error> {
    let projections = dead_letters::PROJECTIONS.list(db, None, false).await?;
    let sinks = dead_letters::SINKS.list(db, None, false).await?;
    Ok((projections, sinks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(list: &[(&str, i64)]) -> HashMap<String, i64> {
        list.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    }

    #[test]
    fn a_projection_behind_the_head_without_progress_for_long_enough_is_stalled() {
        let mut watch = StallWatch::default();
        let t0 = Instant::now();
        let after = Duration::from_secs(60);
        assert!(watch
            .observe(&positions(&[("quality", 10)]), 20, after, t0)
            .is_empty());
        let stalled = watch.observe(
            &positions(&[("quality", 10)]),
            25,
            after,
            t0 + Duration::from_secs(61),
        );
        assert_eq!(
            stalled,
            vec![("quality".to_string(), 10, Duration::from_secs(61))]
        );
    }

    #[test]
    fn progress_or_catching_up_resets_the_stall_clock() {
        let mut watch = StallWatch::default();
        let t0 = Instant::now();
        let after = Duration::from_secs(60);
        watch.observe(&positions(&[("routing", 10)]), 20, after, t0);
        let moved = watch.observe(
            &positions(&[("routing", 11)]),
            20,
            after,
            t0 + Duration::from_secs(90),
        );
        assert!(moved.is_empty(), "a moving projection is not stalled");
        let caught_up = watch.observe(
            &positions(&[("routing", 20)]),
            20,
            after,
            t0 + Duration::from_secs(200),
        );
        assert!(
            caught_up.is_empty(),
            "a projection at the head is not stalled"
        );
    }

    #[test]
    fn health_keys_are_deterministic_and_valid_action_log_ids() {
        let row = DeadLetterRow {
            owner: "load_tests".into(),
            position: 42,
            event_id: "e".into(),
            event_type: "load_test.run_created".into(),
            error: "boom".into(),
            attempts: 3,
            status: "dead".into(),
            recorded_at: "2026-11-24T10:00:00Z".into(),
        };
        let f = projection_dead_letter(&row);
        assert_eq!(f.key, "pdl.load_tests.42");
        assert_eq!(projection_dead_letter(&row), f);
        eventlog::ids::check_segment(&format!("al_{}", f.key)).unwrap();
        assert_eq!(sink_dead_letter(&row).finding.subject, "sink-load_tests");
    }
}
