//! The CloudWatch sinks against a real emulator (LocalStack) over real sockets, with the event
//! log and read models in a SQLite file: action logs become log events, events become metrics
//! in `Studio/Pipeline`, running load tests get failure-rate alarms that go away when the run
//! ends, alarm state changes come back into the log once (each flip between two ticks too),
//! and the dashboard is pushed as generated.

use aws_sdk_cloudwatch::primitives::DateTime as AwsDateTime;
use aws_sdk_cloudwatch::types::{Dimension, DimensionFilter, MetricAlarm, StateValue, Statistic};
use chrono::{DateTime, TimeZone, Utc};
use eventlog::catalogue::{AlarmState, AlarmStateChanged};
use eventlog::Severity;
use eventlog::{EventLog, EventPayload, RecordedEvent, ValidatedEvent};
use projector::{ReadDb, Runner, StatusBoard};
use serde_json::{json, Value};
use sinks::cloudwatch::alarm_sink::run_alarm_name;
use sinks::cloudwatch::testkit::{self, LocalStack};
use sinks::cloudwatch::{
    dashboard_json, push_dashboard, CloudWatchAlarmSink, CloudWatchClients, CloudWatchLogSink,
    CloudWatchMetricSink, CloudWatchSettings,
};
use sinks::Sink;
use std::sync::Arc;

struct Env {
    log: Arc<dyn EventLog>,
    db: ReadDb,
    settings: CloudWatchSettings,
    clients: CloudWatchClients,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn open() -> Self {
        let endpoint = tokio::task::spawn_blocking(LocalStack::endpoint)
            .await
            .expect("start LocalStack");
        let (url, dir) = eventlog::testkit::sqlite_url();
        let log = eventlog::open(&url, true).await.expect("open the log");
        let db = ReadDb::connect(&url).await.expect("read db");
        let settings = testkit::settings(&endpoint);
        let clients = testkit::clients(&settings).await;
        Self {
            log,
            db,
            settings,
            clients,
            _dir: dir,
        }
    }

    async fn append(&self, payloads: &[EventPayload]) -> Vec<RecordedEvent> {
        let head = self.log.head().await.unwrap();
        let events = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.check().expect("a valid test event");
                ValidatedEvent::from_payload(p, "cloudwatch-tests", at(head + i as i64))
            })
            .collect();
        self.log
            .append(events)
            .await
            .expect("append")
            .into_iter()
            .map(|a| a.into_event())
            .collect()
    }

    async fn all_events(&self) -> Vec<RecordedEvent> {
        self.log.read_all(0, 100_000).await.unwrap()
    }

    /// Runs every projection until it has caught up with the log.
    async fn project(&self) {
        let mut runner = Runner::new(
            self.db.clone(),
            self.log.clone(),
            projector::all_projections(),
            Arc::new(StatusBoard::default()),
        );
        runner.catch_up().await.expect("projections catch up");
        runner.stop().await;
    }

    /// Writes an action-log row as the action-log writer would (that writer is another sink).
    async fn write_action_log(
        &self,
        id: &str,
        event: &RecordedEvent,
        first: &RecordedEvent,
        occurrences: i64,
    ) {
        let ReadDb::Sqlite(pool) = &self.db else {
            unreachable!()
        };
        sqlx::query(
            "INSERT INTO action_logs (action_log_id, kind, severity, title, subject, instructions, \
             event_id, position, last_event_id, last_position, first_occurred_at, last_occurred_at, \
             correlation_id, occurrences, acknowledged, context) \
             VALUES ($1, 'run_cancelled', 'warn', $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11, 0, '{}') \
             ON CONFLICT (action_log_id) DO UPDATE SET last_event_id = excluded.last_event_id, \
             last_position = excluded.last_position, last_occurred_at = excluded.last_occurred_at, \
             occurrences = excluded.occurrences",
        )
        .bind(id)
        .bind(format!("Load test {} was cancelled", event.stream))
        .bind(&event.stream)
        .bind(format!("studio load-tests show {}", event.stream))
        .bind(first.event_id.to_string())
        .bind(first.position)
        .bind(event.event_id.to_string())
        .bind(event.position)
        .bind(&first.occurred_at)
        .bind(&event.occurred_at)
        .bind(occurrences)
        .execute(pool)
        .await
        .expect("write an action log row");
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    // Recent, so CloudWatch takes the events' own times.
    let base = Utc::now() - chrono::Duration::hours(1);
    Utc.timestamp_opt(base.timestamp() + seconds, 0).unwrap()
}

/// Payloads are built from JSON, as a producer publishes them, so optional fields the
/// catalogue grows later need no change here.
fn payload(event_type: &str, body: Value) -> EventPayload {
    EventPayload::parse(event_type, &body).expect("a valid test payload")
}

fn run_created(run_id: &str, max_failure_rate: f64) -> EventPayload {
    payload(
        "load_test.run_created",
        json!({
            "run_id": run_id, "name": "smoke", "effect_revision_id": "er_1",
            "environment_id": "env_1",
            "variant_id": "er:er_1:wf:wf_1:env:env_1:stage:prod:provider:sim-cheap:exp:exp_1",
            "input_fixture": "fixtures/a.json",
            "stages": [{"name": "ramp", "duration_s": 60, "target_rps": 1.0}],
            "stop_conditions": {"max_failure_rate": max_failure_rate, "sustained_s": 600}
        }),
    )
}

fn run_started(run_id: &str) -> EventPayload {
    payload(
        "load_test.run_started",
        json!({"run_id": run_id, "mode": "inline"}),
    )
}

fn cancelled(run_id: &str) -> EventPayload {
    payload(
        "load_test.run_cancelled",
        json!({"run_id": run_id, "reason": "operator stop", "actor": "ops@example.com"}),
    )
}

fn completed(run_id: &str) -> EventPayload {
    payload("load_test.run_completed", json!({"run_id": run_id}))
}

fn dispatch(run_id: &str, seq: u64, succeeded: bool, latency_ms: f64) -> EventPayload {
    payload(
        "load_test.dispatch_completed",
        json!({
            "run_id": run_id,
            "dispatch_id": format!("studio_load_test_{run_id}_{seq}_{}", uuid::Uuid::new_v4()),
            "outcome": if succeeded { "succeeded" } else { "failed" },
            "latency_ms": latency_ms,
            "service_time_ms": latency_ms / 2.0,
            "cost_usd": 0.004,
            "error": if succeeded { Value::Null } else { json!("provider said no") },
            "stage_index": 0
        }),
    )
}

fn run_id() -> String {
    format!("lt_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Every message in the test's log stream, parsed. FilterLogEvents ignores filter patterns in
/// LocalStack, so the test filters by stream name itself.
async fn log_messages(env: &Env) -> Vec<Value> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = env
            .clients
            .logs
            .filter_log_events()
            .log_group_name(&env.settings.log_group)
            .log_stream_names(&env.settings.log_stream)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("FilterLogEvents");
        for e in page.events() {
            if e.log_stream_name() == Some(env.settings.log_stream.as_str()) {
                out.push(serde_json::from_str(e.message().unwrap()).expect("JSON message"));
            }
        }
        match page.next_token() {
            Some(t) if Some(t) != token.as_deref() && !page.events().is_empty() => {
                token = Some(t.to_string())
            }
            _ => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_log_rows_become_json_log_events_once_each_and_again_when_grouped() {
    let env = Env::open().await;
    let (run_a, run_b) = (run_id(), run_id());
    let events = env
        .append(&[
            run_created(&run_a, 0.2),
            run_created(&run_b, 0.2),
            cancelled(&run_a),
            cancelled(&run_b),
        ])
        .await;
    env.write_action_log("al_a", &events[2], &events[2], 1)
        .await;
    env.write_action_log("al_b", &events[3], &events[3], 1)
        .await;

    let sink = CloudWatchLogSink::new(env.clients.clone(), env.settings.clone(), env.db.clone());
    assert_eq!(sink.after(), Some("action_logs"));
    let batch = env.all_events().await;
    assert!(batch.iter().all(|e| sink.wants(e)));
    sink.deliver(&batch).await.expect("deliver");

    let messages = log_messages(&env).await;
    let ids: Vec<&str> = messages
        .iter()
        .map(|m| m["action_log_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["al_a", "al_b"], "{messages:#?}");
    let a = &messages[0];
    assert_eq!(a["kind"], "run_cancelled");
    assert_eq!(a["severity"], "warn");
    assert_eq!(a["subject"], format!("load_test_run-{run_a}"));
    assert_eq!(a["event_id"], events[2].event_id.to_string());
    assert_eq!(a["position"], events[2].position);
    assert_eq!(a["last_position"], events[2].position);
    assert_eq!(a["occurrences"], 1);
    assert_eq!(a["acknowledged"], false);
    assert_eq!(a["occurred_at"], events[2].occurred_at);
    assert!(a["instructions"]
        .as_str()
        .unwrap()
        .contains("studio load-tests show"));

    // The runner re-delivers the same batch (a crash before its checkpoint): nothing new.
    sink.deliver(&batch).await.expect("re-deliver");
    assert_eq!(log_messages(&env).await.len(), 2);

    // Run A is cancelled again: the writer groups it into al_a (occurrences 2, a later
    // last_position); only the batch holding that event puts the row again.
    let more = env.append(&[cancelled(&run_a)]).await;
    env.write_action_log("al_a", &more[0], &events[2], 2).await;
    sink.deliver(&more)
        .await
        .expect("deliver the grouped event");
    let messages = log_messages(&env).await;
    assert_eq!(messages.len(), 3, "{messages:#?}");
    let last = &messages[2];
    assert_eq!(last["action_log_id"], "al_a");
    assert_eq!(last["occurrences"], 2);
    assert_eq!(last["last_position"], more[0].position);
    assert_eq!(last["position"], events[2].position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_without_action_logs_puts_nothing_and_creates_the_stream_lazily() {
    let env = Env::open().await;
    let run = run_id();
    env.append(&[run_created(&run, 0.2), run_started(&run), completed(&run)])
        .await;
    let sink = CloudWatchLogSink::new(env.clients.clone(), env.settings.clone(), env.db.clone());
    sink.deliver(&env.all_events().await)
        .await
        .expect("deliver");
    let streams = env
        .clients
        .logs
        .describe_log_streams()
        .log_group_name(&env.settings.log_group)
        .log_stream_name_prefix(&env.settings.log_stream)
        .send()
        .await;
    let found = streams.map(|s| s.log_streams().len()).unwrap_or(0);
    assert_eq!(found, 0, "no action log, no call to CloudWatch Logs");
}

/// Metric names listed in `Studio/Pipeline` with a dimension `name = value`.
async fn listed_metrics(env: &Env, dimension: Option<(&str, &str)>) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = env
            .clients
            .cloudwatch
            .list_metrics()
            .namespace("Studio/Pipeline")
            .set_next_token(token.clone());
        if let Some((name, value)) = dimension {
            req = req.dimensions(DimensionFilter::builder().name(name).value(value).build());
        }
        let page = req.send().await.expect("ListMetrics");
        for m in page.metrics() {
            let dims = m
                .dimensions()
                .iter()
                .map(|d| format!("{}={}", d.name().unwrap_or(""), d.value().unwrap_or("")))
                .collect();
            out.push((m.metric_name().unwrap_or("").to_string(), dims));
        }
        match page.next_token() {
            Some(t) if !t.is_empty() && Some(t) != token.as_deref() => token = Some(t.to_string()),
            _ => break,
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_and_severity_events_and_pipeline_health_are_listed_in_studio_pipeline() {
    let env = Env::open().await;
    let run = run_id();
    let mut payloads = vec![run_created(&run, 0.2), run_started(&run)];
    for seq in 1..=10 {
        payloads.push(dispatch(&run, seq, seq > 3, 100.0 + seq as f64 * 10.0));
    }
    payloads.push(cancelled(&run));
    env.append(&payloads).await;
    let sink = CloudWatchMetricSink::new(
        env.clients.clone(),
        env.settings.clone(),
        env.db.clone(),
        env.log.clone(),
    );
    let wanted: Vec<RecordedEvent> = env
        .all_events()
        .await
        .into_iter()
        .filter(|e| sink.wants(e))
        .collect();
    // Ten dispatches and the (warn) cancel; created/started are info and not wanted.
    assert_eq!(wanted.len(), 11);
    sink.deliver(&wanted).await.expect("deliver metrics");
    sink.tick().await.expect("publish health");

    let per_run = listed_metrics(&env, Some(("RunId", &run))).await;
    let names: Vec<&str> = per_run.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "Dispatches",
        "DispatchFailures",
        "DispatchLatency",
        "RunFailureRate",
    ] {
        assert!(
            names.contains(&name),
            "{name} not listed for the run: {per_run:?}"
        );
    }
    assert!(per_run
        .iter()
        .any(|(n, d)| n == "RunFailureRate" && d == &vec![format!("RunId={run}")]));
    let by_severity = listed_metrics(&env, Some(("Severity", "warn"))).await;
    assert!(
        by_severity.iter().any(|(n, _)| n == "ActionLogs"),
        "{by_severity:?}"
    );
    let lag = listed_metrics(&env, Some(("Projection", "load_tests"))).await;
    assert!(lag.iter().any(|(n, _)| n == "ProjectionLag"), "{lag:?}");
    let dead = listed_metrics(&env, Some(("Kind", "projection"))).await;
    assert!(dead.iter().any(|(n, _)| n == "DeadLetters"), "{dead:?}");

    // The failure rate CloudWatch computes is the run's: 3 of 10 failed.
    let stats = env
        .clients
        .cloudwatch
        .get_metric_statistics()
        .namespace("Studio/Pipeline")
        .metric_name("RunFailureRate")
        .dimensions(Dimension::builder().name("RunId").value(&run).build())
        .start_time(AwsDateTime::from_millis(
            (Utc::now() - chrono::Duration::hours(3)).timestamp_millis(),
        ))
        .end_time(AwsDateTime::from_millis(
            (Utc::now() + chrono::Duration::minutes(5)).timestamp_millis(),
        ))
        .period(3 * 3600)
        .statistics(Statistic::Average)
        .statistics(Statistic::SampleCount)
        .send()
        .await
        .expect("GetMetricStatistics");
    let points = stats.datapoints();
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0].sample_count(), Some(10.0));
    assert!(
        (points[0].average().unwrap() - 0.3).abs() < 1e-9,
        "{points:?}"
    );
}

async fn alarm(env: &Env, name: &str) -> Option<MetricAlarm> {
    env.clients
        .cloudwatch
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .expect("DescribeAlarms")
        .metric_alarms()
        .first()
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_has_a_failure_rate_alarm_at_its_stop_condition_until_it_ends() {
    let env = Env::open().await;
    let (run, other) = (run_id(), run_id());
    env.append(&[
        run_created(&run, 0.2),
        run_started(&run),
        run_created(&other, 0.35),
    ])
    .await;
    env.project().await;
    let sink = CloudWatchAlarmSink::new(
        env.clients.clone(),
        env.settings.clone(),
        env.db.clone(),
        env.log.clone(),
    );
    sink.tick().await.expect("reconcile");

    let name = run_alarm_name(&env.settings, &run);
    let a = alarm(&env, &name)
        .await
        .unwrap_or_else(|| panic!("alarm {name} exists"));
    assert_eq!(a.threshold(), Some(0.2));
    assert_eq!(a.period(), Some(60));
    assert_eq!(a.evaluation_periods(), Some(10));
    assert_eq!(a.metric_name(), Some("RunFailureRate"));
    assert_eq!(a.namespace(), Some("Studio/Pipeline"));
    assert_eq!(a.statistic().map(|s| s.as_str()), Some("Average"));
    assert_eq!(
        a.comparison_operator().map(|c| c.as_str()),
        Some("GreaterThanThreshold")
    );
    let dims: Vec<(&str, &str)> = a
        .dimensions()
        .iter()
        .map(|d| (d.name().unwrap(), d.value().unwrap()))
        .collect();
    assert_eq!(dims, vec![("RunId", run.as_str())]);
    // A created but not started run has no alarm; the pipeline alarms exist.
    assert!(alarm(&env, &run_alarm_name(&env.settings, &other))
        .await
        .is_none());
    let lag = alarm(
        &env,
        &format!("{}projection-lag", env.settings.alarm_prefix),
    )
    .await;
    assert_eq!(
        lag.and_then(|a| a.metric_name().map(str::to_string))
            .as_deref(),
        Some("ProjectionLag")
    );
    let dead = alarm(&env, &format!("{}dead-letters", env.settings.alarm_prefix)).await;
    assert_eq!(dead.and_then(|a| a.threshold()), Some(0.0));

    // A second tick changes nothing.
    sink.tick().await.expect("reconcile again");
    assert!(alarm(&env, &name).await.is_some());

    env.append(&[completed(&run)]).await;
    env.project().await;
    sink.tick().await.expect("reconcile after the run ended");
    assert!(
        alarm(&env, &name).await.is_none(),
        "the ended run's alarm is deleted"
    );
    assert!(alarm(
        &env,
        &format!("{}projection-lag", env.settings.alarm_prefix)
    )
    .await
    .is_some());
}

/// `ops.alarm_state_changed` events in the log for `alarm_name`.
async fn state_changes(env: &Env, alarm_name: &str) -> Vec<(RecordedEvent, AlarmStateChanged)> {
    env.all_events()
        .await
        .into_iter()
        .filter_map(|e| match e.typed() {
            Ok(EventPayload::AlarmStateChanged(p)) if p.alarm_name == alarm_name => Some((e, p)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_going_to_alarm_is_appended_once_as_a_critical_state_change() {
    let env = Env::open().await;
    let run = run_id();
    env.append(&[run_created(&run, 0.2), run_started(&run)])
        .await;
    env.project().await;
    let sink = CloudWatchAlarmSink::new(
        env.clients.clone(),
        env.settings.clone(),
        env.db.clone(),
        env.log.clone(),
    );
    sink.tick().await.expect("create the alarms");
    let name = run_alarm_name(&env.settings, &run);
    sink.tick().await.expect("tick");
    // LocalStack evaluates a new alarm at once (no data, notBreaching: OK); whatever it did is
    // recorded, and nothing of it is ALARM.
    let before = state_changes(&env, &name).await;
    assert!(
        before.iter().all(|(_, p)| p.new_state != AlarmState::Alarm),
        "{before:#?}"
    );

    env.clients
        .cloudwatch
        .set_alarm_state()
        .alarm_name(&name)
        .state_value(StateValue::Alarm)
        .state_reason("Threshold Crossed: 10 datapoints were greater than the threshold (0.2)")
        .send()
        .await
        .expect("SetAlarmState (needs sns in LocalStack's SERVICES)");

    sink.tick().await.expect("read the state back");
    sink.tick().await.expect("and again");
    // A restarted instance (no memory) reads the same state and appends nothing either.
    let restarted = CloudWatchAlarmSink::new(
        env.clients.clone(),
        env.settings.clone(),
        env.db.clone(),
        env.log.clone(),
    );
    restarted.tick().await.expect("tick after a restart");

    let changes = state_changes(&env, &name).await;
    let to_alarm: Vec<_> = changes
        .iter()
        .filter(|(_, p)| p.new_state == AlarmState::Alarm)
        .collect();
    assert_eq!(to_alarm.len(), 1, "{changes:#?}");
    let (event, change) = to_alarm[0];
    // The old state is the last one recorded (INSUFFICIENT_DATA for a new alarm, or OK once
    // the emulator evaluated it).
    let expected_old = before
        .last()
        .map_or(AlarmState::InsufficientData, |(_, p)| p.new_state);
    assert_eq!(change.old_state, expected_old);
    let mut keys: Vec<&str> = changes
        .iter()
        .filter_map(|(e, _)| e.idempotency_key.as_deref())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        changes.len(),
        "one event per state change: {changes:#?}"
    );
    assert!(change.reason.contains("Threshold Crossed"), "{change:?}");
    assert_eq!(event.stream, format!("ops-{name}"));
    assert_eq!(event.typed().unwrap().severity(), Severity::Critical);
    assert!(event
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.starts_with(&format!("cloudwatch-alarm:{name}@"))));
}

/// Sets `name`'s state as an operator (or CloudWatch's evaluation) would.
async fn set_state(env: &Env, name: &str, state: StateValue, reason: &str) {
    env.clients
        .cloudwatch
        .set_alarm_state()
        .alarm_name(name)
        .state_value(state)
        .state_reason(reason)
        .send()
        .await
        .expect("SetAlarmState (needs sns in LocalStack's SERVICES)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flip_between_two_ticks_is_appended_once_in_order() {
    let env = Env::open().await;
    let run = run_id();
    env.append(&[run_created(&run, 0.2), run_started(&run)])
        .await;
    env.project().await;
    let sink = CloudWatchAlarmSink::new(
        env.clients.clone(),
        env.settings.clone(),
        env.db.clone(),
        env.log.clone(),
    );
    sink.tick().await.expect("create the alarms");
    sink.tick().await.expect("record the first evaluation");
    let name = run_alarm_name(&env.settings, &run);
    let before = state_changes(&env, &name).await;
    let last_before = before
        .last()
        .map_or(AlarmState::InsufficientData, |(_, p)| p.new_state);
    assert_ne!(last_before, AlarmState::Alarm, "{before:#?}");

    // Fires, recovers and fires again, all within one tick interval.
    set_state(&env, &name, StateValue::Alarm, "flip 1: Threshold Crossed").await;
    set_state(&env, &name, StateValue::Ok, "flip 2: recovered").await;
    set_state(
        &env,
        &name,
        StateValue::Alarm,
        "flip 3: Threshold Crossed again",
    )
    .await;
    sink.tick().await.expect("read the flips back");

    let changes = state_changes(&env, &name).await;
    let flips: Vec<_> = changes[before.len()..].iter().collect();
    let seen: Vec<(AlarmState, AlarmState)> = flips
        .iter()
        .map(|(_, p)| (p.old_state, p.new_state))
        .collect();
    assert_eq!(
        seen,
        vec![
            (last_before, AlarmState::Alarm),
            (AlarmState::Alarm, AlarmState::Ok),
            (AlarmState::Ok, AlarmState::Alarm),
        ],
        "{changes:#?}"
    );
    for (i, (event, change)) in flips.iter().enumerate() {
        assert!(
            change.reason.starts_with(&format!("flip {}:", i + 1)),
            "{change:?}"
        );
        assert_eq!(event.stream, format!("ops-{name}"));
        assert!(event
            .idempotency_key
            .as_deref()
            .is_some_and(|k| k.starts_with(&format!("cloudwatch-alarm:{name}@"))));
    }
    assert_eq!(flips[0].0.typed().unwrap().severity(), Severity::Critical);
    assert_eq!(flips[2].0.typed().unwrap().severity(), Severity::Critical);
    // In time order: log positions and transition times both increase.
    for pair in flips.windows(2) {
        assert!(pair[0].0.position < pair[1].0.position);
        assert!(
            DateTime::parse_from_rfc3339(&pair[0].0.occurred_at).unwrap()
                < DateTime::parse_from_rfc3339(&pair[1].0.occurred_at).unwrap(),
            "{flips:#?}"
        );
    }

    // Ticking again, and a fresh instance (no memory), add nothing.
    sink.tick().await.expect("tick again");
    let restarted = CloudWatchAlarmSink::new(
        env.clients.clone(),
        env.settings.clone(),
        env.db.clone(),
        env.log.clone(),
    );
    restarted.tick().await.expect("tick after a restart");
    restarted.tick().await.expect("and again");
    let after = state_changes(&env, &name).await;
    assert_eq!(after.len(), changes.len(), "{after:#?}");
    let mut keys: Vec<&str> = after
        .iter()
        .filter_map(|(e, _)| e.idempotency_key.as_deref())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        after.len(),
        "one event per transition: {after:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pushed_dashboard_is_the_generated_one() {
    let env = Env::open().await;
    let settings = CloudWatchSettings {
        dashboard_name: format!("studio-pipeline-{}", &env.settings.log_stream),
        ..env.settings.clone()
    };
    let sent = push_dashboard(&env.clients, &settings)
        .await
        .expect("PutDashboard");
    assert_eq!(sent, dashboard_json(&settings, "us-east-1"));
    let got = env
        .clients
        .cloudwatch
        .get_dashboard()
        .dashboard_name(&settings.dashboard_name)
        .send()
        .await
        .expect("GetDashboard");
    let body: Value = serde_json::from_str(got.dashboard_body().expect("a body")).unwrap();
    let want: Value = serde_json::from_str(&dashboard_json(&settings, "us-east-1")).unwrap();
    assert_eq!(body, want);
    let titles: Vec<&str> = body["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["properties"]["title"].as_str())
        .collect();
    assert!(
        titles.contains(&"Load-test failure rate per run"),
        "{titles:?}"
    );
}
