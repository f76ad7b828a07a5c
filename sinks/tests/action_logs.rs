//! Action logs and the sink runner against real stores (a SQLite file, a fresh PostgreSQL
//! database from the eventlog testkit) and the real HTTP router on port 0: events become action
//! logs with instructions, grouping and hysteresis, exactly-once delivery across resets,
//! retries and dead letters, acknowledgement, health findings, and take-over on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use eventlog::catalogue::*;
use eventlog::{EventLog, EventPayload, RecordedEvent, ValidatedEvent};
use projector::ReadDb;
use serde_json::{json, Value};
use sinks::action_logs::{ActionLogFilter, ACTION_LOG_SINK};
use sinks::runner::{ReplayOutcome, RetryPolicy, SinkRunner, Stepped};
use sinks::{ActionLogConfig, ActionLogSink, MappingEntry, Sink, SinkError, SinkStatusBoard};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADMIN: &str = "admin-token-for-tests";
const RUN: &str = "lt_0193a1b2c3d4e5f60718293a4b5c6d7e";
const VARIANT_A: &str = "er:fx:wf:w:env:e:stage:render:provider:sim:exp:x";
const VARIANT_B: &str = "er:fx:wf:w:env:e:stage:render:provider:fal:exp:x";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Sqlite,
    Postgres,
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Store::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Store::Postgres).await } )*
        }
    };
}

on_both_stores!(
    loud_events_become_action_logs_with_instructions_over_http,
    a_reset_checkpoint_redelivers_without_duplicating,
    the_same_kind_on_the_same_subject_groups_and_a_flapping_alarm_pages_once,
    acknowledging_over_http_appends_the_event_and_the_sink_applies_it,
    a_projection_rebuild_does_not_refire_action_logs,
    a_retryable_failure_then_success_delivers_exactly_once,
    a_sink_that_keeps_failing_ends_in_dead_letters_and_replay_delivers_them,
    a_permanent_failure_dead_letters_only_the_event_at_fault,
    a_sink_never_passes_the_checkpoint_of_the_sink_it_runs_after,
    dead_letters_and_stalled_projections_become_action_logs,
    the_observability_endpoint_reports_each_sink,
    the_live_runner_tails_the_log_and_stops_on_shutdown,
);

struct TestDb {
    log: Arc<dyn EventLog>,
    db: ReadDb,
    url: String,
    status: Arc<SinkStatusBoard>,
    _dir: Option<tempfile::TempDir>,
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

fn event(payload: EventPayload, seconds: i64) -> ValidatedEvent {
    payload
        .check()
        .unwrap_or_else(|e| panic!("test built an invalid {}: {e}", payload.event_type()));
    ValidatedEvent::from_payload(&payload, "sinks-tests", at(seconds))
}

fn run_created() -> EventPayload {
    EventPayload::RunCreated(RunCreated {
        run_id: RUN.into(),
        name: "soak".into(),
        effect_revision_id: "fx".into(),
        environment_id: "e".into(),
        variant_id: VARIANT_A.into(),
        input_fixture: "f".into(),
        stages: vec![Stage {
            name: "s".into(),
            duration_s: 60,
            target_rps: 1.0,
        }],
        stop_conditions: StopConditions::default(),
        estimated_cost_usd: None,
        approval_ref: None,
    })
}

fn fallback() -> EventPayload {
    EventPayload::RunnerFallback(RunnerFallback {
        run_id: RUN.into(),
        reason: "runner not configured".into(),
    })
}

fn started() -> EventPayload {
    EventPayload::StageStarted(StageStarted {
        run_id: RUN.into(),
        stage_index: 0,
        target_rps: 1.0,
    })
}

fn applied(version: u64, variant: &str, previous: Option<&str>) -> EventPayload {
    EventPayload::BindingApplied(BindingApplied {
        effect_revision_id: "fx".into(),
        stage: "render".into(),
        variant_id: variant.into(),
        previous_variant_id: previous.map(String::from),
        binding_version: version,
        reason: "winner".into(),
        actor: "ops".into(),
        evidence: None,
    })
}

fn alarm(name: &str, old: AlarmState, new: AlarmState) -> EventPayload {
    EventPayload::AlarmStateChanged(AlarmStateChanged {
        alarm_name: name.into(),
        old_state: old,
        new_state: new,
        reason: "threshold crossed".into(),
    })
}

impl TestDb {
    async fn open(store: Store) -> Self {
        let (url, dir) = match store {
            Store::Sqlite => {
                let (url, dir) = eventlog::testkit::sqlite_url();
                (url, Some(dir))
            }
            Store::Postgres => (eventlog::testkit::postgres_database().await, None),
        };
        let log = eventlog::open(&url, true).await.expect("open the log");
        let db = ReadDb::connect(&url).await.expect("connect");
        Self {
            log,
            db,
            url,
            status: Arc::new(SinkStatusBoard::default()),
            _dir: dir,
        }
    }

    async fn append(&self, events: Vec<ValidatedEvent>) -> Vec<i64> {
        let answers = self.log.append(events).await.expect("append");
        answers.iter().map(|a| a.event().position).collect()
    }

    async fn head(&self) -> i64 {
        self.log.head().await.unwrap()
    }

    fn action_log_sink(&self) -> Arc<ActionLogSink> {
        self.action_log_sink_with(ActionLogConfig::default())
    }

    fn action_log_sink_with(&self, config: ActionLogConfig) -> Arc<ActionLogSink> {
        let templates = Arc::new(sinks::check_templates().expect("templates"));
        Arc::new(ActionLogSink::new(
            self.db.clone(),
            self.log.clone(),
            templates,
            config,
        ))
    }

    fn runner(&self, sinks: Vec<Arc<dyn Sink>>) -> SinkRunner {
        SinkRunner::new(
            self.db.clone(),
            self.log.clone(),
            sinks,
            self.status.clone(),
        )
        .with_retry(RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(10),
        })
        .with_batch_events(4)
    }

    async fn action_logs(&self) -> Vec<sinks::action_logs::ActionLog> {
        let mut all = sinks::action_logs::list_action_logs(
            &self.db,
            &ActionLogFilter {
                since_position: Some(-1),
                limit: 1_000,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .action_logs;
        all.sort_by(|a, b| a.action_log_id.cmp(&b.action_log_id));
        all
    }

    async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        projector::on_db!(&self.db, pool => sqlx::query_scalar::<_, i64>(&sql).fetch_one(pool).await)
            .unwrap()
    }

    /// The router on port 0; returns its base URL.
    async fn serve(&self, sinks: Vec<Arc<dyn Sink>>) -> String {
        let state = sinks::http::SinksState {
            db: self.db.clone(),
            log: self.log.clone(),
            status: self.status.clone(),
            sinks,
            max_wait: Duration::from_secs(5),
        };
        let tokens = ingest::Tokens::new(ADMIN, "executor-secret-for-tests").unwrap();
        let app = sinks::http::router(state, tokens);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn loud_events_become_action_logs_with_instructions_over_http(store: Store) {
    let t = TestDb::open(store).await;
    let positions = t
        .append(vec![
            event(run_created(), 0),
            event(fallback(), 1),
            event(started(), 2),
            event(applied(1, VARIANT_A, None), 3),
            event(applied(2, VARIANT_B, Some(VARIANT_A)), 4000),
        ])
        .await;
    let sink = t.action_log_sink();
    let mut runner = t.runner(vec![sink.clone()]);
    runner.catch_up().await;
    let base = t.serve(vec![sink]).await;

    let (status, body) = get(&format!(
        "{base}/admin/studio/action-logs?min_position={}",
        positions[4]
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["as_of_position"], positions[4]);
    let logs = body["action_logs"].as_array().unwrap();
    assert_eq!(logs.len(), 3, "{body:#}");
    assert_eq!(logs[0]["last_position"], positions[4], "newest first");

    let fallback_log = logs
        .iter()
        .find(|l| l["kind"] == "runner_fallback")
        .unwrap();
    let fallback_id = format!("al_{}", fallback_log["event_id"].as_str().unwrap());
    assert_eq!(fallback_log["action_log_id"], fallback_id.as_str());
    assert_eq!(fallback_log["severity"], "warn");
    assert_eq!(fallback_log["position"], positions[1]);
    assert_eq!(fallback_log["occurrences"], 1);
    assert_eq!(fallback_log["acknowledged"], false);
    assert_eq!(fallback_log["subject"], format!("load_test_run-{RUN}"));
    let instructions = fallback_log["instructions"].as_str().unwrap();
    assert!(
        instructions.contains(&format!(
            "$STUDIO_URL/admin/studio/load-test-runs/{RUN}/cancel -d '{{\"reason\":"
        )),
        "{instructions}"
    );
    assert!(
        instructions.contains("\"soak\""),
        "the run's name from its stream: {instructions}"
    );

    // The second binding is beyond the window from the first: its own entry, and its rollback
    // restores the previous variant at the version it set.
    let second = logs.iter().find(|l| l["position"] == positions[4]).unwrap();
    assert_eq!(second["kind"], "routing_binding_applied");
    let text = second["instructions"].as_str().unwrap();
    assert!(
        text.contains("\"stage\":\"render\",\"expected_version\":2,"),
        "{text}"
    );
    let first = logs.iter().find(|l| l["position"] == positions[3]).unwrap();
    assert!(
        first["instructions"]
            .as_str()
            .unwrap()
            .contains("nothing to roll back to"),
        "{first}"
    );

    let (_, warn) = get(&format!(
        "{base}/admin/studio/action-logs?severity=critical"
    ))
    .await;
    assert_eq!(warn["action_logs"].as_array().unwrap().len(), 0);
    let (_, by_kind) = get(&format!(
        "{base}/admin/studio/action-logs?kind=runner_fallback&subject=load_test_run-{RUN}"
    ))
    .await;
    assert_eq!(by_kind["action_logs"].as_array().unwrap().len(), 1);
    let (_, since) = get(&format!(
        "{base}/admin/studio/action-logs?since_position={}&limit=1",
        positions[1]
    ))
    .await;
    let since = since["action_logs"].as_array().unwrap();
    assert_eq!(since.len(), 1);
    assert_eq!(
        since[0]["position"], positions[3],
        "oldest first after the position"
    );

    let (status, err) = get(&format!("{base}/admin/studio/action-logs?severity=loud")).await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["code"], "validation_failed");
    let anonymous = reqwest::get(format!("{base}/admin/studio/action-logs"))
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}

async fn a_reset_checkpoint_redelivers_without_duplicating(store: Store) {
    let t = TestDb::open(store).await;
    t.append(vec![
        event(run_created(), 0),
        event(fallback(), 1),
        event(applied(1, VARIANT_A, None), 2),
        event(alarm("studio-lag", AlarmState::Ok, AlarmState::Alarm), 3),
        event(fallback(), 4),
    ])
    .await;
    let mut runner = t.runner(vec![t.action_log_sink()]);
    runner.catch_up().await;
    let before = t.action_logs().await;
    assert_eq!(before.len(), 3);
    assert_eq!(
        before
            .iter()
            .find(|l| l.kind == "runner_fallback")
            .unwrap()
            .occurrences,
        2
    );

    // An operator resets the checkpoint (or a crash lost it): a new owner delivers
    // everything again.
    runner.stop().await;
    sinks::checkpoint::reset(&t.db, ACTION_LOG_SINK, 0)
        .await
        .unwrap();
    let mut fresh = t.runner(vec![t.action_log_sink()]);
    fresh.catch_up().await;
    assert_eq!(
        t.status.snapshot()[ACTION_LOG_SINK].delivered,
        8,
        "the four loud events were delivered twice"
    );
    assert_eq!(
        t.action_logs().await,
        before,
        "nothing duplicated or re-counted"
    );
    assert_eq!(t.count("action_log_events").await, 4);
    assert_eq!(
        sinks::checkpoint::position(&t.db, ACTION_LOG_SINK)
            .await
            .unwrap(),
        t.head().await
    );
}

async fn the_same_kind_on_the_same_subject_groups_and_a_flapping_alarm_pages_once(store: Store) {
    let t = TestDb::open(store).await;
    let name = format!("studio-load-test-failure-rate-{RUN}");
    let p = t
        .append(vec![
            event(alarm(&name, AlarmState::Ok, AlarmState::Alarm), 0),
            event(alarm(&name, AlarmState::Alarm, AlarmState::Ok), 60),
            event(alarm(&name, AlarmState::Ok, AlarmState::Alarm), 180),
            event(alarm(&name, AlarmState::Alarm, AlarmState::Ok), 240),
            event(alarm(&name, AlarmState::Ok, AlarmState::Alarm), 700),
            // Another alarm: another subject, another entry.
            event(
                alarm("studio-projection-lag", AlarmState::Ok, AlarmState::Alarm),
                701,
            ),
            // Well past the window after the last flip: a new entry.
            event(alarm(&name, AlarmState::Alarm, AlarmState::Ok), 800),
            event(alarm(&name, AlarmState::Ok, AlarmState::Alarm), 1_400),
        ])
        .await;
    let mut runner = t.runner(vec![t.action_log_sink()]);
    runner.catch_up().await;
    let logs = t.action_logs().await;
    let flapping: Vec<_> = logs
        .iter()
        .filter(|l| l.subject == format!("ops-{name}"))
        .collect();
    assert_eq!(flapping.len(), 2, "{logs:#?}");
    let first = flapping.iter().find(|l| l.position == p[0]).unwrap();
    assert_eq!(
        first.occurrences, 3,
        "ALARM→OK→ALARM within the window counts, not pages"
    );
    assert_eq!(first.last_position, p[4], "the latest ALARM folded in");
    assert_eq!(first.severity, "critical");
    assert!(first
        .instructions
        .contains(&format!("load-test-runs/{RUN}/cancel")));
    let second = flapping.iter().find(|l| l.position == p[7]).unwrap();
    assert_eq!(second.occurrences, 1);
    assert_eq!(
        logs.iter()
            .filter(|l| l.subject == "ops-studio-projection-lag")
            .count(),
        1
    );
}

async fn acknowledging_over_http_appends_the_event_and_the_sink_applies_it(store: Store) {
    let t = TestDb::open(store).await;
    t.append(vec![event(run_created(), 0), event(fallback(), 1)])
        .await;
    let sink = t.action_log_sink();
    let mut runner = t.runner(vec![sink.clone()]);
    runner.catch_up().await;
    let base = t.serve(vec![sink]).await;
    let id = t.action_logs().await[0].action_log_id.clone();

    let (status, acked) = post(
        &format!("{base}/admin/studio/action-logs/{id}/acknowledge"),
        json!({"actor": "ana", "note": "runner configured"}),
    )
    .await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["action_log_id"], id.as_str());
    assert_eq!(acked["actor"], "ana");
    let position = acked["position"].as_i64().unwrap();
    let stored = t.log.read_all(position - 1, 1).await.unwrap();
    assert_eq!(stored[0].event_type, "action_log.acknowledged");
    assert_eq!(
        stored[0].event_id.to_string(),
        acked["event_id"].as_str().unwrap()
    );

    // A second acknowledgement conflicts, before and after the sink applied the first.
    let (status, err) = post(
        &format!("{base}/admin/studio/action-logs/{id}/acknowledge"),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "already_acknowledged");
    runner.catch_up().await;
    let (_, body) = get(&format!(
        "{base}/admin/studio/action-logs?min_position={position}"
    ))
    .await;
    let log = &body["action_logs"][0];
    assert_eq!(log["acknowledged"], true, "{body}");
    assert_eq!(log["acknowledged_by"], "ana");
    assert_eq!(log["ack_note"], "runner configured");
    assert_eq!(log["acknowledged_position"], position);
    let (status, _) = post(
        &format!("{base}/admin/studio/action-logs/{id}/acknowledge"),
        json!({"actor": "bob"}),
    )
    .await;
    assert_eq!(status, 409);
    let (_, open) = get(&format!(
        "{base}/admin/studio/action-logs?unacknowledged=true"
    ))
    .await;
    assert_eq!(open["action_logs"].as_array().unwrap().len(), 0);

    let (status, err) = post(
        &format!("{base}/admin/studio/action-logs/al_nope/acknowledge"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");

    // The same problem again, even within the window, opens a new entry once acknowledged.
    t.append(vec![event(fallback(), 2)]).await;
    runner.catch_up().await;
    let (_, open) = get(&format!(
        "{base}/admin/studio/action-logs?unacknowledged=true"
    ))
    .await;
    assert_eq!(open["action_logs"].as_array().unwrap().len(), 1);
}

async fn a_projection_rebuild_does_not_refire_action_logs(store: Store) {
    let t = TestDb::open(store).await;
    t.append(vec![
        event(run_created(), 0),
        event(fallback(), 1),
        event(applied(1, VARIANT_A, None), 2),
    ])
    .await;
    let mut projections = projector::Runner::new(
        t.db.clone(),
        t.log.clone(),
        projector::all_projections(),
        Arc::new(projector::StatusBoard::default()),
    );
    projections.catch_up().await.unwrap();
    let mut runner = t.runner(vec![t.action_log_sink()]);
    runner.catch_up().await;
    let before = t.action_logs().await;
    let sink_checkpoint = sinks::checkpoint::position(&t.db, ACTION_LOG_SINK)
        .await
        .unwrap();

    let all = projector::all_projections();
    let list: Vec<&dyn projector::Projection> = all.iter().map(|p| p.as_ref()).collect();
    projector::rebuild::rebuild_all(&t.db, t.log.as_ref(), &list, &|_| {})
        .await
        .unwrap();
    projections.catch_up().await.unwrap();
    runner.catch_up().await;

    assert_eq!(t.action_logs().await, before);
    assert_eq!(t.count("action_log_events").await, 2);
    assert_eq!(
        sinks::checkpoint::position(&t.db, ACTION_LOG_SINK)
            .await
            .unwrap(),
        sink_checkpoint,
        "a rebuild never moves a sink's checkpoint"
    );
}

/// Fails the first `failures` deliveries with a retryable error, then delivers through `inner`.
struct Flaky {
    inner: Arc<dyn Sink>,
    failures: AtomicU32,
    calls: AtomicU32,
}

#[async_trait]
impl Sink for Flaky {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn wants(&self, event: &RecordedEvent) -> bool {
        self.inner.wants(event)
    }
    async fn deliver(&self, events: &[RecordedEvent]) -> Result<(), SinkError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError::Retryable("503 from the destination".into()));
        }
        self.inner.deliver(events).await
    }
    fn mapping(&self) -> Vec<MappingEntry> {
        self.inner.mapping()
    }
}

async fn a_retryable_failure_then_success_delivers_exactly_once(store: Store) {
    let t = TestDb::open(store).await;
    t.append(vec![event(run_created(), 0), event(fallback(), 1)])
        .await;
    let flaky = Arc::new(Flaky {
        inner: t.action_log_sink(),
        failures: AtomicU32::new(2),
        calls: AtomicU32::new(0),
    });
    let mut runner = t.runner(vec![flaky.clone()]);
    let mut backoffs = 0;
    loop {
        match runner.step().await {
            Stepped::Applied => {}
            Stepped::Backoff(pause) => {
                backoffs += 1;
                tokio::time::sleep(pause).await;
            }
            Stepped::Idle => break,
            Stepped::NotOwner => panic!("the only runner owns its sinks"),
        }
    }
    assert_eq!(backoffs, 2, "each retryable failure backs off");
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    let logs = t.action_logs().await;
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].occurrences, 1);
    assert_eq!(t.count("sink_dead_letters").await, 0);
    let status = &t.status.snapshot()[ACTION_LOG_SINK];
    assert_eq!(status.delivered, 1);
    assert_eq!(status.failed, 2);
    assert_eq!(status.last_error, None, "cleared by the delivery");
}

/// Records what it delivered; fails while `broken`, or permanently for one position.
struct Recorder {
    name: &'static str,
    after: Option<&'static str>,
    broken: AtomicBool,
    poison: Option<i64>,
    delivered: Mutex<Vec<i64>>,
}

impl Recorder {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            after: None,
            broken: AtomicBool::new(false),
            poison: None,
            delivered: Mutex::new(Vec::new()),
        }
    }
    fn delivered(&self) -> Vec<i64> {
        self.delivered.lock().unwrap().clone()
    }
}

#[async_trait]
impl Sink for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }
    fn after(&self) -> Option<&'static str> {
        self.after
    }
    fn wants(&self, event: &RecordedEvent) -> bool {
        event.event_type != "load_test.stage_started"
    }
    async fn deliver(&self, events: &[RecordedEvent]) -> Result<(), SinkError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(SinkError::Retryable("connection refused".into()));
        }
        if let Some(bad) = events.iter().find(|e| Some(e.position) == self.poison) {
            return Err(SinkError::Permanent(format!(
                "position {} is too large for the destination",
                bad.position
            )));
        }
        let mut delivered = self.delivered.lock().unwrap();
        for e in events {
            if !delivered.contains(&e.position) {
                delivered.push(e.position);
            }
        }
        Ok(())
    }
    fn mapping(&self) -> Vec<MappingEntry> {
        vec![MappingEntry {
            event: "*".into(),
            destination: "log".into(),
            target: "test".into(),
        }]
    }
}

async fn a_sink_that_keeps_failing_ends_in_dead_letters_and_replay_delivers_them(store: Store) {
    let t = TestDb::open(store).await;
    let p = t
        .append(vec![
            event(run_created(), 0),
            event(started(), 1),
            event(fallback(), 2),
        ])
        .await;
    let webhook = Arc::new(Recorder::new("webhook"));
    webhook.broken.store(true, Ordering::SeqCst);
    let sinks: Vec<Arc<dyn Sink>> = vec![webhook.clone()];
    let mut runner = t.runner(sinks.clone());
    runner.catch_up().await;

    let letters = sinks::checkpoint::list_dead_letters(&t.db, Some("webhook"), false)
        .await
        .unwrap();
    let positions: Vec<i64> = letters.iter().map(|l| l.position).collect();
    assert_eq!(positions, vec![p[0], p[2]], "one letter per wanted event");
    assert!(letters
        .iter()
        .all(|l| l.attempts == 3 && l.error.contains("connection refused")));
    assert_eq!(
        sinks::checkpoint::position(&t.db, "webhook").await.unwrap(),
        p[2],
        "the runner moved on"
    );

    // The action-log sink turns the dead letters into one entry with the replay command.
    let action_logs = t.action_log_sink();
    assert_eq!(action_logs.check_health().await.unwrap(), 2);
    assert_eq!(action_logs.check_health().await.unwrap(), 0, "seen once");
    let logs = t.action_logs().await;
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].kind, "sink_dead_letter");
    assert_eq!(logs[0].occurrences, 2);
    assert!(logs[0].instructions.contains(&format!(
        "studio dead-letters replay --sink webhook --position {}",
        p[2]
    )));

    // Still broken: the replay says so and the letter stays open with one more attempt.
    let outcome = sinks::runner::replay_dead_letter(&t.db, t.log.as_ref(), &sinks, "webhook", p[0])
        .await
        .unwrap();
    assert!(
        matches!(outcome, ReplayOutcome::StillFailing(_)),
        "{outcome:?}"
    );
    webhook.broken.store(false, Ordering::SeqCst);
    let outcome = sinks::runner::replay_dead_letter(&t.db, t.log.as_ref(), &sinks, "webhook", p[0])
        .await
        .unwrap();
    assert_eq!(outcome, ReplayOutcome::Delivered);
    let all = sinks::runner::replay_all_dead_letters(&t.db, t.log.as_ref(), &sinks, "webhook")
        .await
        .unwrap();
    assert_eq!(all, vec![(p[2], ReplayOutcome::Delivered)]);
    assert_eq!(webhook.delivered(), vec![p[0], p[2]]);
    assert!(
        sinks::checkpoint::list_dead_letters(&t.db, Some("webhook"), false)
            .await
            .unwrap()
            .is_empty()
    );
    let replayed = sinks::checkpoint::list_dead_letters(&t.db, Some("webhook"), true)
        .await
        .unwrap();
    assert!(replayed.iter().all(|l| l.status == "replayed"));
    assert_eq!(replayed[0].attempts, 4);
    assert!(matches!(
        sinks::runner::replay_dead_letter(&t.db, t.log.as_ref(), &sinks, "nope", p[0]).await,
        Err(sinks::runner::ReplayError::UnknownSink { .. })
    ));
}

async fn a_permanent_failure_dead_letters_only_the_event_at_fault(store: Store) {
    let t = TestDb::open(store).await;
    let p = t
        .append(vec![
            event(run_created(), 0),
            event(fallback(), 1),
            event(applied(1, VARIANT_A, None), 2),
            event(fallback(), 3),
        ])
        .await;
    let mut recorder = Recorder::new("webhook");
    recorder.poison = Some(p[2]);
    let recorder = Arc::new(recorder);
    let mut runner = t.runner(vec![recorder.clone()]);
    runner.catch_up().await;
    assert_eq!(recorder.delivered(), vec![p[0], p[1], p[3]]);
    let letters = sinks::checkpoint::list_dead_letters(&t.db, None, false)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].position, p[2]);
    assert_eq!(letters[0].event_type, "routing.binding_applied");
    assert_eq!(letters[0].attempts, 1, "permanent: no retries");
}

async fn a_sink_never_passes_the_checkpoint_of_the_sink_it_runs_after(store: Store) {
    let t = TestDb::open(store).await;
    let p = t
        .append(vec![
            event(run_created(), 0),
            event(fallback(), 1),
            event(fallback(), 2),
            event(fallback(), 3),
        ])
        .await;
    let mut follower = Recorder::new("follower");
    follower.after = Some(ACTION_LOG_SINK);
    let follower = Arc::new(follower);
    sinks::checkpoint::reset(&t.db, ACTION_LOG_SINK, p[1])
        .await
        .unwrap();
    let mut runner = t.runner(vec![follower.clone()]);
    runner.catch_up().await;
    assert_eq!(follower.delivered(), vec![p[0], p[1]]);
    assert_eq!(
        sinks::checkpoint::position(&t.db, "follower")
            .await
            .unwrap(),
        p[1]
    );

    // With the action-log sink in the same runner, the follower keeps up behind it.
    runner.stop().await;
    let mut both = t.runner(vec![follower.clone(), t.action_log_sink()]);
    both.catch_up().await;
    assert_eq!(follower.delivered(), p);
}

async fn dead_letters_and_stalled_projections_become_action_logs(store: Store) {
    let t = TestDb::open(store).await;
    t.append(vec![event(run_created(), 0), event(started(), 1)])
        .await;
    let mut tx = t.db.begin_write().await.unwrap();
    for (position, event_id) in [(1, "e1"), (2, "e2")] {
        tx.execute(
            "INSERT INTO projection_dead_letters (projection, position, event_id, event_type, error, attempts, status, recorded_at) \
             VALUES ('load_tests', $1, $2, 'load_test.run_started', 'no such run', 3, 'dead', '2026-11-24T10:00:00Z')",
            &[i64::from(position).into(), event_id.into()],
        )
        .await
        .unwrap();
    }
    tx.execute(
        "INSERT INTO projection_checkpoints (projection, position, fingerprint, generation, updated_at) \
         VALUES ('quality', 1, 'x', 0, '2026-11-24T10:00:00Z')",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sinks::checkpoint::reset(&t.db, ACTION_LOG_SINK, 2)
        .await
        .unwrap();

    let sink = t.action_log_sink_with(ActionLogConfig {
        stall_after: Duration::ZERO,
        ..ActionLogConfig::default()
    });
    assert_eq!(sink.check_health().await.unwrap(), 3);
    assert_eq!(
        sink.check_health().await.unwrap(),
        0,
        "the same findings fold once"
    );
    let logs = t.action_logs().await;
    let dead = logs
        .iter()
        .find(|l| l.kind == "projection_dead_letter")
        .unwrap();
    assert_eq!(dead.action_log_id, "al_pdl.load_tests.1");
    assert_eq!(dead.subject, "projection-load_tests");
    assert_eq!(dead.occurrences, 2);
    assert_eq!(dead.severity, "critical");
    assert_eq!(
        dead.last_position, 3,
        "just past the sink checkpoint, for readers behind it"
    );
    assert!(dead
        .instructions
        .contains("studio dead-letters replay --projection load_tests --position 2"));
    let stalled = logs
        .iter()
        .find(|l| l.kind == "projection_stalled")
        .unwrap();
    assert_eq!(stalled.subject, "projection-quality");
    assert!(
        stalled.instructions.contains("stuck at position 1"),
        "{}",
        stalled.instructions
    );
}

async fn the_observability_endpoint_reports_each_sink(store: Store) {
    let t = TestDb::open(store).await;
    t.append(vec![event(run_created(), 0), event(fallback(), 1)])
        .await;
    let broken = Arc::new(Recorder::new("webhook"));
    broken.broken.store(true, Ordering::SeqCst);
    let sinks: Vec<Arc<dyn Sink>> = vec![t.action_log_sink(), broken];
    let mut runner = t.runner(sinks.clone());
    runner.catch_up().await;
    t.append(vec![event(started(), 2)]).await;
    let base = t.serve(sinks).await;
    let (status, body) = get(&format!("{base}/admin/studio/observability/sinks")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["head_position"], 3);
    let list = body["sinks"].as_array().unwrap();
    let action = list.iter().find(|s| s["name"] == ACTION_LOG_SINK).unwrap();
    assert_eq!(action["checkpoint"], 2);
    assert_eq!(action["lag"], 1);
    assert_eq!(action["delivered"], 1);
    assert_eq!(action["dead_letters"], 0);
    assert_eq!(action["owned_by_this_instance"], true);
    assert!(action["mapping"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["target"] == "runner_fallback" && m["destination"] == "action_log"));
    let webhook = list.iter().find(|s| s["name"] == "webhook").unwrap();
    assert_eq!(webhook["dead_letters"], 2);
    assert_eq!(webhook["failed"], 3);
    assert!(webhook["last_error"]
        .as_str()
        .unwrap()
        .contains("connection refused"));
}

async fn the_live_runner_tails_the_log_and_stops_on_shutdown(store: Store) {
    let t = TestDb::open(store).await;
    let runner = t.runner(vec![t.action_log_sink()]);
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(shutdown_rx));
    let p = t
        .append(vec![event(run_created(), 0), event(fallback(), 1)])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sinks::checkpoint::position(&t.db, ACTION_LOG_SINK)
        .await
        .unwrap()
        < p[1]
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live runner did not deliver"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(t.action_logs().await.len(), 1);
    shutdown_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the runner stops on shutdown")
        .unwrap();
    assert!(!t.status.snapshot()[ACTION_LOG_SINK].owned_here);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_takes_a_sink_over_when_its_owner_dies_on_postgres() {
    let t = TestDb::open(Store::Postgres).await;
    t.append(vec![event(run_created(), 0), event(fallback(), 1)])
        .await;
    let second_db = ReadDb::connect(&t.url).await.unwrap();
    let mut first = t.runner(vec![t.action_log_sink()]);
    let mut second = SinkRunner::new(
        second_db,
        t.log.clone(),
        vec![t.action_log_sink()],
        Arc::new(SinkStatusBoard::default()),
    );
    assert_eq!(first.step().await, Stepped::Applied);
    assert_eq!(
        second.step().await,
        Stepped::NotOwner,
        "one owner at a time"
    );
    first.catch_up().await;

    // The owner dies without letting go: its session ends, and with it the advisory lock.
    drop(first);
    let p = t
        .append(vec![
            event(fallback(), 2),
            event(applied(1, VARIANT_A, None), 3),
        ])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match second.step().await {
            Stepped::Applied | Stepped::Idle => break,
            Stepped::NotOwner | Stepped::Backoff(_) => {
                assert!(tokio::time::Instant::now() < deadline, "no take-over");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    second.catch_up().await;
    assert_eq!(second.owned(), vec![ACTION_LOG_SINK]);
    let logs = t.action_logs().await;
    assert_eq!(logs.len(), 2);
    let fallback_log = logs.iter().find(|l| l.kind == "runner_fallback").unwrap();
    assert_eq!(fallback_log.occurrences, 2);
    assert_eq!(
        sinks::checkpoint::position(&t.db, ACTION_LOG_SINK)
            .await
            .unwrap(),
        p[1]
    );

    // A projection runner on the same database owns its projections beside the sink: the
    // lock keys do not collide.
    let mut projections = projector::Runner::new(
        t.db.clone(),
        t.log.clone(),
        projector::all_projections(),
        Arc::new(projector::StatusBoard::default()),
    );
    assert_eq!(
        projections.step().await,
        projector::runner::Stepped::Applied
    );
}
