//! `studio bench sinks`: the sinks' figures behind `BENCHMARKS.md` (issue 7).
//!
//! 1. **Event appended → action log visible** at an open-model publish rate (default 1,000
//!    events/s for 15 s). The real application (`app::run`, roles `ingest`, `projector`,
//!    `query`, `sinks`) serves a fresh SQLite file on a port-0 listener; warn and critical
//!    events (`load_test.runner_fallback`, `load_test.stop_condition_breached`) are posted one
//!    per request on their scheduled instant, whether or not earlier requests were answered.
//!    80% open a new action log (a run of their own), 20% repeat a kind on a run already seen
//!    and group into its row. An event is *visible* when its row in `action_log_events` is
//!    committed: that row is written in the same transaction as the `action_logs` row it
//!    created or grouped into, so from then on `GET /admin/studio/action-logs` returns it. A
//!    watcher on its own read connection polls that table every [`VISIBLE_POLL`] (by rowid, an
//!    index walk), so a latency is overstated by at most one poll. The baseline of the same run:
//!    the same rows written by direct transactions, one event per commit, on a fresh database
//!    with the same schema and settings: the commit an event needs at the least to be visible.
//! 2. **CloudWatch delivery throughput** against the emulator (LocalStack through the sinks'
//!    testkit, or `--endpoint`): a [`SinkRunner`] with only the sink measured, from its
//!    checkpoint to the log head, on a pre-filled log — the log sink over N action logs
//!    (written beforehand by the action-log sink, timed on its own), the metric sink over N
//!    `load_test.dispatch_completed` events. Baselines of the same run: raw `PutLogEvents` calls
//!    of the same messages in maximal batches, straight over HTTP (the AWS JSON protocol, no
//!    SDK, no signing: this crate does not depend on the SDK); and, for metrics, the same events
//!    read from the log and aggregated in memory without any call.
//!
//! Every measurement runs `--runs` times (default 3); the tables give medians with min–max.
//! Nothing here asserts on time.

use crate::config::Config;
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Args;
use eventlog::catalogue::{
    LoadDispatchCompleted, Outcome, RunCreated, Stage, StopConditionBreached, StopConditions,
};
use eventlog::envelope::format_timestamp;
use eventlog::{EventLog, EventPayload, RecordedEvent, ValidatedEvent};
use hdrhistogram::Histogram;
use projector::ReadDb;
use serde_json::{json, Map, Value};
use sinks::cloudwatch::log_batch::{plan_log_batches, LogRecord};
use sinks::cloudwatch::log_sink::{action_log_record, LOG_SINK_NAME};
use sinks::cloudwatch::metric_batch::{plan_metric_batches, MetricAggregator, MetricDatumSpec};
use sinks::cloudwatch::metric_sink::fold_event;
use sinks::cloudwatch::testkit::{self, LocalStack};
use sinks::cloudwatch::{
    ensure_log_destination, CloudWatchLogSink, CloudWatchMetricSink, CloudWatchSettings,
};
use sinks::{MappingEntry, Sink, SinkError, SinkRunner, SinkStatusBoard};
use sqlx::{Column, Connection, Row, SqliteConnection};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

/// Tokens of the throw-away server; it only ever listens on 127.0.0.1.
const ADMIN_TOKEN: &str = "bench-admin-token";
const EXECUTOR_SECRET: &str = "bench-executor-secret";
const VARIANT: &str = "er:fx-bench:wf:wf-1:env:bench:stage:render:provider:sim:exp:e";
/// How often the watcher looks for newly committed action-log events: the most a measured
/// latency overstates the real one.
const VISIBLE_POLL: Duration = Duration::from_millis(2);
/// How often the watcher samples the action-log sink's backlog (log head − its checkpoint).
const BACKLOG_SAMPLE: Duration = Duration::from_millis(100);
/// Every fifth event repeats the kind of the event four before it, on the same run: it groups.
const GROUP_EVERY: usize = 5;
/// Setup appends go to the log in batches of this many events.
const APPEND_BATCH: usize = 10_000;
/// Runs the metric workload's dispatches spread over.
const METRIC_RUNS: usize = 10;
const HISTOGRAM_MAX_US: u64 = 600_000_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the sinks and projections to settle before or after a measurement.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Args)]
pub struct SinksArgs {
    /// Publish rate of the latency measurement, events/s [default: 1000, or 200 with --quick].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of publishing at that rate [default: 15, or 3 with --quick].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Action logs the CloudWatch log sink delivers [default: 20000, or 1000 with --quick].
    #[arg(long)]
    pub log_events: Option<usize>,
    /// `load_test.dispatch_completed` events the metric sink delivers [default: 100000, or
    /// 5000 with --quick].
    #[arg(long)]
    pub metric_events: Option<usize>,
    /// Repetitions of every measurement [default: 3, or 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: Option<u32>,
    /// Small counts, for a smoke test of the benchmark itself; the numbers mean little.
    #[arg(long)]
    pub quick: bool,
    /// A running CloudWatch emulator; without it a private LocalStack is started (and stopped)
    /// through the sinks' testkit.
    #[arg(long, env = testkit::TEST_ENDPOINT_ENV)]
    pub endpoint: Option<String>,
    /// Only the latency measurement (no emulator needed).
    #[arg(long)]
    pub skip_cloudwatch: bool,
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    rate: f64,
    seconds: f64,
    log_events: usize,
    metric_events: usize,
    runs: usize,
}

impl Sizes {
    fn of(args: &SinksArgs) -> Self {
        let q = args.quick;
        Self {
            rate: args.rate.unwrap_or(if q { 200.0 } else { 1_000.0 }),
            seconds: args.seconds.unwrap_or(if q { 3.0 } else { 15.0 }),
            log_events: args.log_events.unwrap_or(if q { 1_000 } else { 20_000 }),
            metric_events: args
                .metric_events
                .unwrap_or(if q { 5_000 } else { 100_000 }),
            runs: args.runs.unwrap_or(if q { 1 } else { 3 }) as usize,
        }
    }

    fn events(&self) -> usize {
        (self.rate * self.seconds).round() as usize
    }
}

pub async fn run(args: SinksArgs) -> Result<()> {
    let sizes = Sizes::of(&args);
    ensure!(
        sizes.rate > 0.0 && sizes.seconds > 0.0,
        "--rate and --seconds must be positive"
    );
    let started = Instant::now();
    let load_at_start = load_average();

    let mut latency = Vec::new();
    for run in 1..=sizes.runs {
        let sample = latency_run(sizes)
            .await
            .with_context(|| format!("latency run {run}/{}", sizes.runs))?;
        eprintln!("latency run {run}/{}: {}", sizes.runs, sample.summary());
        latency.push(sample);
    }

    let mut delivery = Vec::new();
    let mut emulator_about = String::new();
    if !args.skip_cloudwatch {
        let (endpoint, emulator) = match args.endpoint.clone().filter(|e| !e.trim().is_empty()) {
            Some(endpoint) => (endpoint, None),
            None => {
                let emulator = tokio::task::spawn_blocking(LocalStack::start)
                    .await
                    .context("the LocalStack start-up task panicked")?
                    .map_err(|e| anyhow!("no CloudWatch emulator: {e}"))?;
                (emulator.url(), Some(emulator))
            }
        };
        emulator_about = match &emulator {
            Some(_) => format!("a private LocalStack started by the sinks' testkit ({endpoint})"),
            None => format!("the emulator at {endpoint}"),
        };
        let emulator_log = emulator.as_ref().map(LocalStack::log_path);
        for run in 1..=sizes.runs {
            let sample = delivery_run(&endpoint, emulator_log.as_deref(), sizes)
                .await
                .with_context(|| format!("delivery run {run}/{}", sizes.runs))?;
            eprintln!("delivery run {run}/{}: {}", sizes.runs, sample.summary());
            delivery.push(sample);
        }
        if let Some(emulator) = emulator {
            tokio::task::spawn_blocking(move || drop(emulator)).await?;
        }
    }

    println!("{}", report(&sizes, &latency, &delivery, &emulator_about));
    println!(
        "Total time: {:.0} s. Load average (1 min) at start {load_at_start}, at end {}.",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Event appended → action log visible.

/// One latency run's figures; latencies in µs.
#[derive(Debug, Clone)]
struct LatencySample {
    events: usize,
    action_logs: usize,
    visible: Histogram<u64>,
    /// `POST /v1/events` round trips: the append's own commit, seen from the client.
    ack: Histogram<u64>,
    /// How late the generator sent, against each event's scheduled instant.
    send_lag: Histogram<u64>,
    achieved_rate: f64,
    max_backlog: i64,
    /// Mean backlog over the first and the last third of the publishing window.
    backlog_first_third: f64,
    backlog_last_third: f64,
    /// From the last acknowledgement until every event was visible.
    drain_ms: f64,
    /// Baseline: one direct transaction per event writing the same rows.
    raw_commit: Histogram<u64>,
}

impl LatencySample {
    fn summary(&self) -> String {
        format!(
            "{} events ({} action logs) at {:.0}/s; ack→visible p50 {:.1} ms p99 {:.1} ms max {:.1} ms; \
             raw commit p99 {:.2} ms; max backlog {} events",
            self.events,
            self.action_logs,
            self.achieved_rate,
            ms(&self.visible, 0.50),
            ms(&self.visible, 0.99),
            self.visible.max() as f64 / 1000.0,
            ms(&self.raw_commit, 0.99),
            self.max_backlog
        )
    }
}

/// What the latency workload publishes, in order.
#[derive(Debug, Clone, PartialEq)]
struct Planned {
    run: usize,
    critical: bool,
}

/// `events` events: each [`GROUP_EVERY`]th repeats the event [`GROUP_EVERY`] − 1 before it
/// (same run, same kind) and groups into its action log; every other one is on a run of its
/// own and opens a new one. Returns the plan and how many runs it uses.
fn latency_plan(events: usize) -> (Vec<Planned>, usize) {
    let mut plan: Vec<Planned> = Vec::with_capacity(events);
    let mut runs = 0;
    for i in 0..events {
        if i % GROUP_EVERY == GROUP_EVERY - 1 {
            let earlier = plan[i - (GROUP_EVERY - 1)].clone();
            plan.push(earlier);
        } else {
            plan.push(Planned {
                run: runs,
                critical: runs % 2 == 1,
            });
            runs += 1;
        }
    }
    (plan, runs)
}

fn run_id(prefix: &str, run: usize) -> String {
    format!("lt_{prefix}{run:07}")
}

fn run_created(run_id: String) -> EventPayload {
    EventPayload::RunCreated(RunCreated {
        run_id,
        name: "sinks bench".into(),
        effect_revision_id: "fx-bench".into(),
        environment_id: "bench".into(),
        variant_id: VARIANT.into(),
        input_fixture: "fixture".into(),
        stages: vec![Stage {
            name: "steady".into(),
            duration_s: 60,
            target_rps: 100.0,
        }],
        stop_conditions: StopConditions::default(),
        estimated_cost_usd: None,
        approval_ref: None,
    })
}

/// The warn (`runner_fallback`) or critical (`stop_condition_breached`) event of a planned item.
fn warning(p: &Planned, prefix: &str) -> EventPayload {
    let run_id = run_id(prefix, p.run);
    if p.critical {
        EventPayload::StopConditionBreached(StopConditionBreached {
            run_id,
            failure_rate: 0.35,
            window_s: 600,
            alarm_name: None,
            cost_overrun: None,
        })
    } else {
        EventPayload::parse(
            "load_test.runner_fallback",
            &json!({"run_id": run_id, "reason": "runner command exited with status 127"}),
        )
        .expect("a valid runner_fallback payload")
    }
}

/// The envelope a producer posts for `payload`, occurring now.
fn envelope(payload: &EventPayload) -> Value {
    json!({
        "type": payload.event_type(),
        "schema_version": eventlog::upcast::current_version(payload.event_type()),
        "occurred_at": format_timestamp(chrono::Utc::now()),
        "producer": "bench",
        "payload": payload.to_value(),
    })
}

async fn append_all(log: &dyn EventLog, events: Vec<ValidatedEvent>) -> Result<()> {
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let batch: Vec<ValidatedEvent> = events.by_ref().take(APPEND_BATCH).collect();
        log.append(batch).await?;
    }
    Ok(())
}

/// The real application on a port-0 listener.
struct Server {
    base_url: String,
    stop_tx: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Server {
    async fn start(database_url: &str, log: Arc<dyn EventLog>, roles: &[&str]) -> Result<Self> {
        let env: BTreeMap<&str, &str> = [
            ("STUDIO_DATABASE_URL", database_url),
            ("STUDIO_ADMIN_TOKEN", ADMIN_TOKEN),
            ("STUDIO_EXECUTOR_SECRET", EXECUTOR_SECRET),
        ]
        .into_iter()
        .collect();
        let config = Config::load(&env)?;
        let roles =
            crate::app::Roles::parse(&roles.iter().map(|r| r.to_string()).collect::<Vec<_>>())?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stop_rx.await;
            };
            crate::app::run(listener, log, &config, &roles, shutdown).await
        });
        Ok(Self {
            base_url,
            stop_tx,
            task,
        })
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop_tx.send(());
        self.task.await.context("the server task panicked")?
    }
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")
}

fn sqlite_pool(db: &ReadDb) -> Result<&sqlx::SqlitePool> {
    match db {
        ReadDb::Sqlite(pool) => Ok(pool),
        ReadDb::Postgres(_) => bail!("the sinks bench runs on SQLite"),
    }
}

/// Waits until every projection and the action-log sink stand at `head`.
async fn settle(db: &ReadDb, head: i64) -> Result<()> {
    let names: Vec<&str> = projector::all_projections()
        .iter()
        .map(|p| p.name())
        .collect();
    projector::query::wait_for(db, &names, Some(head), SETTLE_TIMEOUT)
        .await
        .map_err(|e| anyhow!("the projections did not catch up: {e}"))?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while sinks::checkpoint::position(db, sinks::action_logs::ACTION_LOG_SINK).await? < head {
        ensure!(
            Instant::now() < deadline,
            "the action-log sink did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What the watcher saw: when each position became visible, and the backlog over time.
struct Watched {
    visible_at: HashMap<i64, Instant>,
    backlog: Vec<(Instant, i64)>,
}

/// Polls `action_log_events` (by rowid: SQLite hands rowids out in commit order, as there is
/// one writer at a time) until `stop_rx` says so and `expected` positions were seen.
async fn watch_visible(
    database_url: String,
    expected: usize,
    mut stop_rx: watch::Receiver<bool>,
) -> Result<Watched> {
    let options = eventlog::store::sqlite::connect_options(&database_url)?;
    let mut conn = SqliteConnection::connect_with(&options).await?;
    let mut last_rowid: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM action_log_events")
            .fetch_one(&mut conn)
            .await?;
    let mut visible_at = HashMap::with_capacity(expected);
    let mut backlog = Vec::new();
    let mut next_sample = Instant::now();
    let mut ticker = tokio::time::interval(VISIBLE_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT rowid, position FROM action_log_events WHERE rowid > ?1 ORDER BY rowid",
        )
        .bind(last_rowid)
        .fetch_all(&mut conn)
        .await?;
        let now = Instant::now();
        for (rowid, position) in rows {
            last_rowid = rowid;
            visible_at.entry(position).or_insert(now);
        }
        if now >= next_sample {
            next_sample = now + BACKLOG_SAMPLE;
            let behind: i64 = sqlx::query_scalar(
                "SELECT (SELECT COALESCE(MAX(position), 0) FROM events) - \
                 COALESCE((SELECT position FROM sink_checkpoints WHERE sink = 'action_logs'), 0)",
            )
            .fetch_one(&mut conn)
            .await?;
            backlog.push((now, behind));
        }
        if *stop_rx.borrow_and_update() && visible_at.len() >= expected {
            break;
        }
        if stop_rx.has_changed().is_err() {
            break;
        }
    }
    conn.close().await?;
    Ok(Watched {
        visible_at,
        backlog,
    })
}

/// One acknowledged publish.
struct Acked {
    position: i64,
    acked: Instant,
    round_trip: Duration,
}

async fn post_event(client: &reqwest::Client, url: &str, body: String) -> Result<i64> {
    let response = client
        .post(url)
        .bearer_auth(EXECUTOR_SECRET)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .context("POST /v1/events failed")?;
    let status = response.status();
    let answer: Value = response.json().await?;
    ensure!(
        status == reqwest::StatusCode::CREATED,
        "POST /v1/events answered {status}: {answer}"
    );
    answer["position"]
        .as_i64()
        .ok_or_else(|| anyhow!("POST /v1/events answered no position: {answer}"))
}

async fn latency_run(sizes: Sizes) -> Result<LatencySample> {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let log = eventlog::open(&url, true).await?;
    let prefix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let (plan, runs) = latency_plan(sizes.events());
    // The runs exist, as they would: the action-log writer reads each run's creation for the
    // instructions.
    let now = chrono::Utc::now();
    append_all(
        log.as_ref(),
        (0..runs)
            .map(|r| ValidatedEvent::from_payload(&run_created(run_id(prefix, r)), "bench", now))
            .collect(),
    )
    .await?;
    let server = Server::start(
        &url,
        log.clone(),
        &["ingest", "projector", "query", "sinks"],
    )
    .await?;
    let db = ReadDb::connect(&url).await?;
    let measured = async {
        settle(&db, log.head().await?).await?;
        let client = http_client()?;
        // Opens a few connections before the clock starts.
        let warm: Vec<_> = (0..16)
            .map(|_| client.get(format!("{}/healthz", server.base_url)).send())
            .collect();
        for r in futures::future::join_all(warm).await {
            r?.bytes().await?;
        }

        let (stop_tx, stop_rx) = watch::channel(false);
        let watcher = tokio::spawn(watch_visible(url.clone(), plan.len(), stop_rx));
        let (acked_tx, mut acked_rx) = mpsc::unbounded_channel::<Result<Acked>>();
        let publish_url = format!("{}/v1/events", server.base_url);
        let mut send_lag = new_histogram();
        let interval = Duration::from_secs_f64(1.0 / sizes.rate);
        let start = Instant::now() + Duration::from_millis(50);
        for (i, p) in plan.iter().enumerate() {
            let at = start + interval.mul_f64(i as f64);
            tokio::time::sleep_until(at.into()).await;
            let body = envelope(&warning(p, prefix)).to_string();
            let sent = Instant::now();
            send_lag.saturating_record(micros(sent.saturating_duration_since(at)));
            let (client, url, tx) = (client.clone(), publish_url.clone(), acked_tx.clone());
            tokio::spawn(async move {
                let result = post_event(&client, &url, body).await.map(|position| {
                    let acked = Instant::now();
                    Acked {
                        position,
                        acked,
                        round_trip: acked - sent,
                    }
                });
                let _ = tx.send(result);
            });
        }
        drop(acked_tx);
        let mut acks = Vec::with_capacity(plan.len());
        while let Some(a) = acked_rx.recv().await {
            acks.push(a?);
        }
        let last_ack = acks
            .iter()
            .map(|a| a.acked)
            .max()
            .context("no event acknowledged")?;
        let _ = stop_tx.send(true);
        let watched = tokio::time::timeout(SETTLE_TIMEOUT, watcher)
            .await
            .context("not every acknowledged event became visible")?
            .context("the watcher panicked")??;

        let mut visible = new_histogram();
        let mut ack = new_histogram();
        let mut last_visible = last_ack;
        for a in &acks {
            let at = *watched
                .visible_at
                .get(&a.position)
                .with_context(|| format!("position {} never became visible", a.position))?;
            // The sink may commit before the answer reaches the client: that counts as 0.
            visible.saturating_record(micros(at.saturating_duration_since(a.acked)));
            ack.saturating_record(micros(a.round_trip));
            last_visible = last_visible.max(at);
        }
        let window = last_ack.saturating_duration_since(start);
        let third = window / 3;
        let mean_in = |from: Instant, to: Instant| {
            let v: Vec<f64> = watched
                .backlog
                .iter()
                .filter(|(t, _)| *t >= from && *t < to)
                .map(|(_, b)| *b as f64)
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let action_logs = check_through_api(&client, &server.base_url, acks.len()).await?;
        anyhow::Ok(LatencySample {
            events: acks.len(),
            action_logs,
            visible,
            ack,
            send_lag,
            achieved_rate: acks.len() as f64 / window.as_secs_f64(),
            max_backlog: watched
                .backlog
                .iter()
                .filter(|(t, _)| *t >= start && *t <= last_ack)
                .map(|(_, b)| *b)
                .max()
                .unwrap_or(0),
            backlog_first_third: mean_in(start, start + third),
            backlog_last_third: mean_in(last_ack - third, last_ack),
            drain_ms: last_visible
                .saturating_duration_since(last_ack)
                .as_secs_f64()
                * 1000.0,
            raw_commit: new_histogram(),
        })
    }
    .await;
    // The server closes the log on its way out.
    server.stop().await?;
    let mut sample = measured?;
    sample.raw_commit = raw_action_log_commits(&db).await?;
    Ok(sample)
}

/// Reads every action log back through `GET /admin/studio/action-logs?since_position=N` and
/// checks the API shows every acknowledged event folded once. Returns the rows.
async fn check_through_api(
    client: &reqwest::Client,
    base_url: &str,
    events: usize,
) -> Result<usize> {
    let (mut since, mut rows, mut occurrences) = (0i64, 0usize, 0i64);
    loop {
        let page: Value = client
            .get(format!(
                "{base_url}/admin/studio/action-logs?since_position={since}&limit=1000"
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let logs = page["action_logs"]
            .as_array()
            .context("GET /admin/studio/action-logs answered no action_logs")?;
        if logs.is_empty() {
            break;
        }
        for row in logs {
            rows += 1;
            occurrences += row["occurrences"].as_i64().unwrap_or(0);
            since = since.max(row["last_position"].as_i64().unwrap_or(since));
        }
    }
    ensure!(
        occurrences == events as i64,
        "the API shows {occurrences} occurrences in {rows} action logs for {events} events"
    );
    Ok(rows)
}

/// The baseline: the rows the run wrote, written again on a fresh database with the same
/// schema and settings, one transaction per event (the action log inserted or its occurrences
/// raised, and its `action_log_events` row), sequentially. Returns each commit's latency.
async fn raw_action_log_commits(studio: &ReadDb) -> Result<Histogram<u64>> {
    let pool = sqlite_pool(studio)?;
    let folded: Vec<(String, String, i64, bool)> = sqlx::query_as(
        "SELECT e.event_id, e.action_log_id, e.position, e.event_id = a.event_id \
         FROM action_log_events e JOIN action_logs a USING (action_log_id) ORDER BY e.position",
    )
    .fetch_all(pool)
    .await?;
    let rows: Vec<sqlx::sqlite::SqliteRow> = sqlx::query("SELECT * FROM action_logs")
        .fetch_all(pool)
        .await?;
    let columns: Vec<String> = rows
        .first()
        .map(|r| r.columns().iter().map(|c| c.name().to_string()).collect())
        .unwrap_or_default();
    let by_id: HashMap<String, &sqlx::sqlite::SqliteRow> = rows
        .iter()
        .map(|r| (r.get::<String, _>("action_log_id"), r))
        .collect();

    let (url, _dir) = eventlog::testkit::sqlite_url();
    eventlog::open(&url, true).await?.close().await;
    let options = eventlog::store::sqlite::connect_options(&url)?;
    let mut conn = SqliteConnection::connect_with(&options).await?;
    let insert = format!(
        "INSERT INTO action_logs ({}) VALUES ({})",
        columns.join(", "),
        (1..=columns.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut latency = new_histogram();
    for (event_id, action_log_id, position, opens) in &folded {
        let t = Instant::now();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
        if *opens {
            let row = by_id
                .get(action_log_id)
                .with_context(|| format!("no action log {action_log_id}"))?;
            let mut q = sqlx::query(&insert);
            for c in &columns {
                q = if let Ok(v) = row.try_get::<Option<i64>, _>(c.as_str()) {
                    q.bind(v)
                } else {
                    q.bind(row.try_get::<Option<String>, _>(c.as_str())?)
                };
            }
            q.execute(&mut conn).await?;
        } else {
            sqlx::query(
                "UPDATE action_logs SET occurrences = occurrences + 1, last_event_id = ?1, \
                 last_position = ?2 WHERE action_log_id = ?3",
            )
            .bind(event_id)
            .bind(position)
            .bind(action_log_id)
            .execute(&mut conn)
            .await?;
        }
        sqlx::query(
            "INSERT INTO action_log_events (event_id, action_log_id, position) VALUES (?1, ?2, ?3)",
        )
        .bind(event_id)
        .bind(action_log_id)
        .bind(position)
        .execute(&mut conn)
        .await?;
        sqlx::query("COMMIT").execute(&mut conn).await?;
        latency.saturating_record(micros(t.elapsed()));
    }
    conn.close().await?;
    Ok(latency)
}

// ---------------------------------------------------------------------------------------------
// 2. CloudWatch delivery throughput.

/// One delivery run's figures.
#[derive(Debug, Clone, Default)]
struct DeliverySample {
    /// The action-log writer alone, writing the log sink's input: action logs/s.
    writer_per_s: f64,
    log_sink_per_s: f64,
    log_delivers: usize,
    /// Action logs per `deliver` call (the runner hands over at most its batch of events).
    log_rows_per_deliver: f64,
    /// `PutLogEvents` calls the emulator logged for the sink, when it is ours.
    log_put_calls: Option<usize>,
    log_events_in_stream: usize,
    raw_logs_per_s: f64,
    raw_log_calls: usize,
    metric_sink_per_s: f64,
    metric_delivers: usize,
    metric_put_calls: usize,
    metric_datums: usize,
    fold_per_s: f64,
    raw_metric_per_s: f64,
    /// Share of the sink's wall time spent inside its `deliver` (the rest: the runner's log
    /// reads and checkpoint commits).
    log_deliver_share: f64,
    metric_deliver_share: f64,
    dead_letters: usize,
}

impl DeliverySample {
    fn summary(&self) -> String {
        format!(
            "action-log writer {:.0}/s; log sink {:.0}/s vs raw PutLogEvents {:.0}/s; \
             metric sink {:.0}/s vs raw calls {:.0}/s, read+fold {:.0}/s; {} PutMetricData calls; \
             time in deliver {:.0}% / {:.0}%; {} dead letters",
            self.writer_per_s,
            self.log_sink_per_s,
            self.raw_logs_per_s,
            self.metric_sink_per_s,
            self.raw_metric_per_s,
            self.fold_per_s,
            self.metric_put_calls,
            100.0 * self.log_deliver_share,
            100.0 * self.metric_deliver_share,
            self.dead_letters
        )
    }
}

/// A sink as the runner sees it, recording the position range and size of every successful
/// `deliver` (the sinks keep their call counts to themselves).
struct Counted {
    inner: Arc<dyn Sink>,
    delivers: Mutex<Vec<Delivered>>,
}

/// One successful `deliver`: its position range, events, and how long it took.
#[derive(Debug, Clone, Copy)]
struct Delivered {
    first: i64,
    last: i64,
    took: Duration,
}

impl Counted {
    fn new(inner: Arc<dyn Sink>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            delivers: Mutex::new(Vec::new()),
        })
    }

    fn delivers(&self) -> Vec<Delivered> {
        self.delivers.lock().expect("delivers lock").clone()
    }
}

type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

// `Sink` is an `async_trait`; this crate does not depend on the macro, so the two async
// methods are written as it expands them.
impl Sink for Counted {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn after(&self) -> Option<&'static str> {
        self.inner.after()
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        self.inner.wants(event)
    }

    fn deliver<'a, 'b, 'async_trait>(
        &'a self,
        events: &'b [RecordedEvent],
    ) -> SinkFuture<'async_trait>
    where
        'a: 'async_trait,
        'b: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let t = Instant::now();
            let result = self.inner.deliver(events).await;
            if let (Ok(()), Some(first), Some(last)) = (&result, events.first(), events.last()) {
                self.delivers
                    .lock()
                    .expect("delivers lock")
                    .push(Delivered {
                        first: first.position,
                        last: last.position,
                        took: t.elapsed(),
                    });
            }
            result
        })
    }

    fn tick<'a, 'async_trait>(&'a self) -> SinkFuture<'async_trait>
    where
        'a: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.tick()
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.inner.tick_interval()
    }

    fn mapping(&self) -> Vec<MappingEntry> {
        self.inner.mapping()
    }
}

/// Runs `sinks` from their checkpoints until none has anything left; returns the wall time.
async fn catch_up(db: &ReadDb, log: &Arc<dyn EventLog>, sinks: Vec<Arc<dyn Sink>>) -> Duration {
    let mut runner = SinkRunner::new(
        db.clone(),
        log.clone(),
        sinks,
        Arc::new(SinkStatusBoard::default()),
    );
    let t = Instant::now();
    runner.catch_up().await;
    let elapsed = t.elapsed();
    runner.stop().await;
    elapsed
}

/// Settings for one run: the testkit's (region, own log stream and alarm prefix) with the
/// production SDK retry and timeout settings.
fn bench_settings(endpoint: &str) -> CloudWatchSettings {
    let defaults = CloudWatchSettings::default();
    CloudWatchSettings {
        operation_timeout_s: defaults.operation_timeout_s,
        sdk_max_attempts: defaults.sdk_max_attempts,
        ..testkit::settings(endpoint)
    }
}

/// Lines of the emulator's log naming `operation` (LocalStack logs every request it serves).
fn logged_calls(emulator_log: Option<&std::path::Path>, operation: &str) -> Option<usize> {
    let text = std::fs::read_to_string(emulator_log?).ok()?;
    Some(text.lines().filter(|l| l.contains(operation)).count())
}

async fn delivery_run(
    endpoint: &str,
    emulator_log: Option<&std::path::Path>,
    sizes: Sizes,
) -> Result<DeliverySample> {
    let mut sample = DeliverySample::default();
    log_delivery(endpoint, emulator_log, sizes.log_events, &mut sample).await?;
    metric_delivery(endpoint, sizes.metric_events, &mut sample).await?;
    Ok(sample)
}

/// The log sink over `n` action logs, then raw `PutLogEvents` of the same messages.
async fn log_delivery(
    endpoint: &str,
    emulator_log: Option<&std::path::Path>,
    n: usize,
    sample: &mut DeliverySample,
) -> Result<()> {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let log = eventlog::open(&url, true).await?;
    let db = ReadDb::connect(&url).await?;
    let prefix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let now = chrono::Utc::now();
    append_all(
        log.as_ref(),
        (0..n)
            .map(|r| ValidatedEvent::from_payload(&run_created(run_id(prefix, r)), "bench", now))
            .collect(),
    )
    .await?;
    let runs_head = log.head().await?;
    // One action log per run, warn and critical alternating, recent event times.
    append_all(
        log.as_ref(),
        (0..n)
            .map(|r| {
                let p = Planned {
                    run: r,
                    critical: r % 2 == 1,
                };
                let at = now - chrono::Duration::milliseconds((n - r) as i64);
                ValidatedEvent::from_payload(&warning(&p, prefix), "bench", at)
            })
            .collect(),
    )
    .await?;
    let head = log.head().await?;

    let templates = Arc::new(sinks::check_templates().context("templates")?);
    let writer: Arc<dyn Sink> = Arc::new(sinks::ActionLogSink::new(
        db.clone(),
        log.clone(),
        templates,
        sinks::ActionLogConfig::default(),
    ));
    let elapsed = catch_up(&db, &log, vec![writer]).await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM action_logs")
        .fetch_one(sqlite_pool(&db)?)
        .await?;
    ensure!(
        rows == n as i64,
        "the action-log sink wrote {rows} action logs, not {n}"
    );
    sample.writer_per_s = n as f64 / elapsed.as_secs_f64();

    let settings = bench_settings(endpoint);
    let clients = testkit::clients(&settings).await;
    // The run_created events hold no action log: the sink starts where the action logs do.
    sinks::checkpoint::reset(&db, LOG_SINK_NAME, runs_head).await?;
    let calls_before = logged_calls(emulator_log, "logs.PutLogEvents");
    let sink = Counted::new(Arc::new(CloudWatchLogSink::new(
        clients.clone(),
        settings.clone(),
        db.clone(),
    )));
    let elapsed = catch_up(&db, &log, vec![sink.clone() as Arc<dyn Sink>]).await;
    let at = sinks::checkpoint::position(&db, LOG_SINK_NAME).await?;
    ensure!(
        at == head,
        "the log sink stopped at {at}, the head is {head}"
    );
    sample.dead_letters += sinks::checkpoint::list_dead_letters(&db, None, false)
        .await?
        .len();
    sample.log_sink_per_s = n as f64 / elapsed.as_secs_f64();
    let delivers = sink.delivers();
    sample.log_delivers = delivers.len();
    sample.log_rows_per_deliver = n as f64 / delivers.len().max(1) as f64;
    sample.log_deliver_share = delivers
        .iter()
        .map(|d| d.took)
        .sum::<Duration>()
        .as_secs_f64()
        / elapsed.as_secs_f64();
    sample.log_put_calls = calls_before
        .zip(logged_calls(emulator_log, "logs.PutLogEvents"))
        .map(|(before, after)| after - before);
    let raw = RawLogs::new(endpoint, &settings.log_group)?;
    sample.log_events_in_stream = raw.count_events(&settings.log_stream).await?;
    ensure!(
        sample.log_events_in_stream == n,
        "the log stream holds {} events, not {n}",
        sample.log_events_in_stream
    );

    // Baseline: the same messages, as the sink builds them, in maximal batches.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let records: Vec<LogRecord> = action_log_rows(&db)
        .await?
        .into_iter()
        .map(|row| {
            let at = row
                .get("last_occurred_at")
                .and_then(Value::as_str)
                .map(str::to_string);
            action_log_record(row, at.as_deref(), now_ms)
        })
        .collect();
    let batches = plan_log_batches(records);
    let raw_stream = format!("{}-raw", settings.log_stream);
    ensure_log_destination(&clients.logs, &settings.log_group, &raw_stream)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    sample.raw_log_calls = batches.len();
    let t = Instant::now();
    for batch in &batches {
        raw.put(&raw_stream, batch).await?;
    }
    sample.raw_logs_per_s = n as f64 / t.elapsed().as_secs_f64();
    let stored = raw.count_events(&raw_stream).await?;
    ensure!(stored == n, "the raw stream holds {stored} events, not {n}");
    log.close().await;
    Ok(())
}

/// Every action log as a JSON object of its columns, as the log sink reads them.
async fn action_log_rows(db: &ReadDb) -> Result<Vec<Map<String, Value>>> {
    let rows = sqlx::query("SELECT * FROM action_logs ORDER BY last_position, action_log_id")
        .fetch_all(sqlite_pool(db)?)
        .await?;
    rows.iter()
        .map(|row| -> Result<Map<String, Value>> {
            let mut obj = Map::new();
            for column in row.columns() {
                let name = column.name();
                let value = if let Ok(v) = row.try_get::<Option<i64>, _>(name) {
                    v.map(Value::from).unwrap_or(Value::Null)
                } else {
                    row.try_get::<Option<String>, _>(name)?
                        .map(Value::from)
                        .unwrap_or(Value::Null)
                };
                obj.insert(name.to_string(), value);
            }
            Ok(obj)
        })
        .collect()
}

/// CloudWatch Logs over plain HTTP (the AWS JSON 1.1 protocol): the raw baseline, and a
/// count of what a stream holds. The emulator does not check signatures; the header only names
/// the same account and region as the sink's test credentials.
struct RawLogs {
    client: reqwest::Client,
    endpoint: String,
    group: String,
}

impl RawLogs {
    fn new(endpoint: &str, group: &str) -> Result<Self> {
        Ok(Self {
            client: http_client()?,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            group: group.to_string(),
        })
    }

    async fn call(&self, operation: &str, body: &Value) -> Result<Value> {
        let response = self
            .client
            .post(format!("{}/", self.endpoint))
            .header("X-Amz-Target", format!("Logs_20140328.{operation}"))
            .header(reqwest::header::CONTENT_TYPE, "application/x-amz-json-1.1")
            .header(
                reqwest::header::AUTHORIZATION,
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/logs/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-target, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("{operation} failed"))?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "{operation} answered {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn put(&self, stream: &str, batch: &[LogRecord]) -> Result<()> {
        let events: Vec<Value> = batch
            .iter()
            .map(|r| json!({"timestamp": r.timestamp_ms, "message": r.message}))
            .collect();
        let answer = self
            .call(
                "PutLogEvents",
                &json!({"logGroupName": self.group, "logStreamName": stream, "logEvents": events}),
            )
            .await?;
        ensure!(
            answer.get("rejectedLogEventsInfo").is_none(),
            "PutLogEvents rejected events: {answer}"
        );
        Ok(())
    }

    async fn count_events(&self, stream: &str) -> Result<usize> {
        let (mut count, mut token) = (0usize, None::<String>);
        loop {
            let mut body = json!({"logGroupName": self.group, "logStreamName": stream,
                                  "startFromHead": true, "limit": 10_000});
            if let Some(t) = &token {
                body["nextToken"] = t.clone().into();
            }
            let answer = self.call("GetLogEvents", &body).await?;
            let got = answer["events"].as_array().map_or(0, Vec::len);
            count += got;
            let next = answer["nextForwardToken"].as_str().map(str::to_string);
            if got == 0 || next.is_none() || next == token {
                return Ok(count);
            }
            token = next;
        }
    }
}

/// CloudWatch `PutMetricData` over plain HTTP (the query protocol, form-encoded), to
/// [`RAW_METRIC_NAMESPACE`] so the sink's own figures are not counted twice.
struct RawMetrics {
    client: reqwest::Client,
    endpoint: String,
}

const RAW_METRIC_NAMESPACE: &str = "Studio/PipelineRawBench";

impl RawMetrics {
    fn new(endpoint: &str) -> Result<Self> {
        Ok(Self {
            client: http_client()?,
            endpoint: endpoint.trim_end_matches('/').to_string(),
        })
    }

    async fn put(&self, batch: &[MetricDatumSpec]) -> Result<()> {
        let mut form: Vec<(String, String)> = vec![
            ("Action".into(), "PutMetricData".into()),
            ("Version".into(), "2010-08-01".into()),
            ("Namespace".into(), RAW_METRIC_NAMESPACE.into()),
        ];
        for (i, d) in batch.iter().enumerate() {
            let m = format!("MetricData.member.{}", i + 1);
            form.push((format!("{m}.MetricName"), d.name.clone()));
            form.push((format!("{m}.Unit"), d.unit.to_string()));
            let at = chrono::DateTime::from_timestamp_millis(d.timestamp_ms)
                .context("a datum's timestamp")?;
            form.push((format!("{m}.Timestamp"), format_timestamp(at)));
            for (j, (name, value)) in d.dimensions.iter().enumerate() {
                let dim = format!("{m}.Dimensions.member.{}", j + 1);
                form.push((format!("{dim}.Name"), name.clone()));
                form.push((format!("{dim}.Value"), value.clone()));
            }
            match d.value {
                Some(v) => form.push((format!("{m}.Value"), v.to_string())),
                None => {
                    for (k, (v, c)) in d.values.iter().zip(&d.counts).enumerate() {
                        form.push((format!("{m}.Values.member.{}", k + 1), v.to_string()));
                        form.push((format!("{m}.Counts.member.{}", k + 1), c.to_string()));
                    }
                }
            }
        }
        let response = self
            .client
            .post(format!("{}/", self.endpoint))
            .header(
                reqwest::header::AUTHORIZATION,
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/monitoring/aws4_request, \
                 SignedHeaders=content-type;host, Signature=0",
            )
            .form(&form)
            .send()
            .await
            .context("PutMetricData failed")?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(
            status.is_success(),
            "PutMetricData answered {status}: {text}"
        );
        Ok(())
    }
}

/// The metric sink over `n` dispatches, then the same events read and aggregated in memory.
async fn metric_delivery(endpoint: &str, n: usize, sample: &mut DeliverySample) -> Result<()> {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let log = eventlog::open(&url, true).await?;
    let db = ReadDb::connect(&url).await?;
    let prefix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    // Dispatches as a run at 1,000/s would have logged them, over the last n ms.
    let now = chrono::Utc::now();
    append_all(
        log.as_ref(),
        (0..n)
            .map(|i| {
                let run_id = run_id(prefix, i % METRIC_RUNS);
                let seq = (i / METRIC_RUNS + 1) as u64;
                let latency = 200.0 + (seq * 7919 % 1000) as f64;
                let payload = EventPayload::LoadDispatchCompleted(LoadDispatchCompleted {
                    dispatch_id: eventlog::ids::DispatchId::new(&run_id, seq).to_string(),
                    run_id,
                    outcome: if i % 17 == 0 {
                        Outcome::Failed
                    } else {
                        Outcome::Succeeded
                    },
                    latency_ms: latency,
                    service_time_ms: Some(latency - 2.0),
                    cost_usd: Some(0.004),
                    error: None,
                    stage_index: Some(0),
                });
                let at = now - chrono::Duration::milliseconds((n - i) as i64);
                ValidatedEvent::from_payload(&payload, "bench", at)
            })
            .collect(),
    )
    .await?;
    let head = log.head().await?;

    let settings = bench_settings(endpoint);
    let clients = testkit::clients(&settings).await;
    let inner = Arc::new(CloudWatchMetricSink::new(
        clients,
        settings,
        db.clone(),
        log.clone(),
    ));
    let sink = Counted::new(inner.clone());
    let elapsed = catch_up(&db, &log, vec![sink.clone() as Arc<dyn Sink>]).await;
    let name = inner.name();
    let at = sinks::checkpoint::position(&db, name).await?;
    ensure!(
        at == head,
        "the metric sink stopped at {at}, the head is {head}"
    );
    sample.dead_letters += sinks::checkpoint::list_dead_letters(&db, None, false)
        .await?
        .len();
    sample.metric_sink_per_s = n as f64 / elapsed.as_secs_f64();

    // The calls the sink's deliveries made: each delivered range planned again, as the sink
    // plans it (deterministic but for the wall clock, which only stamps gauges).
    let delivers = sink.delivers();
    sample.metric_delivers = delivers.len();
    sample.metric_deliver_share = delivers
        .iter()
        .map(|d| d.took)
        .sum::<Duration>()
        .as_secs_f64()
        / elapsed.as_secs_f64();
    let mut planned = Vec::new();
    for d in &delivers {
        let events = log
            .read_all(d.first - 1, (d.last - d.first + 1) as usize)
            .await?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut agg = MetricAggregator::new(now_ms);
        for e in events.iter().filter(|e| inner.wants(e)) {
            fold_event(&mut agg, e, now_ms);
        }
        planned.extend(plan_metric_batches(agg.into_data()).map_err(|e| anyhow!(e))?);
    }
    sample.metric_put_calls = planned.len();
    sample.metric_datums = planned.iter().map(Vec::len).sum::<usize>();

    // Baseline (a): the same calls with the same data, back to back over plain HTTP, to a
    // namespace of their own.
    let raw = RawMetrics::new(endpoint)?;
    let t = Instant::now();
    for batch in &planned {
        raw.put(batch).await?;
    }
    sample.raw_metric_per_s = n as f64 / t.elapsed().as_secs_f64();

    // Baseline (b): the same reads in the runner's batch size and the same aggregation and
    // batch planning, without a call or a checkpoint.
    let t = Instant::now();
    let mut after = 0;
    loop {
        let events = log.read_all(after, sinks::runner::BATCH_EVENTS).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        after = last;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut agg = MetricAggregator::new(now_ms);
        for e in events.iter().filter(|e| inner.wants(e)) {
            fold_event(&mut agg, e, now_ms);
        }
        std::hint::black_box(plan_metric_batches(agg.into_data()).map_err(|e| anyhow!(e))?);
    }
    sample.fold_per_s = n as f64 / t.elapsed().as_secs_f64();
    log.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report.

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

/// Median (the mean of the middle two for an even count), min and max.
fn spread(values: &[f64]) -> Spread {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Spread {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

fn cell(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let s = spread(values);
    if values.len() == 1 || s.min == s.max {
        fmt(s.median)
    } else {
        format!("{} ({}–{})", fmt(s.median), fmt(s.min), fmt(s.max))
    }
}

fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

fn one(v: f64) -> String {
    format!("{v:.1}")
}

fn two(v: f64) -> String {
    format!("{v:.2}")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn report(
    sizes: &Sizes,
    latency: &[LatencySample],
    delivery: &[DeliverySample],
    emulator: &str,
) -> String {
    let mut out = String::new();
    let command: Vec<String> = std::env::args().collect();
    out.push_str(&format!(
        "Command: `{}`. Runs: {}. {} events at {} events/s per latency run; {} action logs and {} dispatches per delivery run.\n\n",
        command.join(" "),
        sizes.runs,
        thousands(sizes.events() as f64),
        thousands(sizes.rate),
        thousands(sizes.log_events as f64),
        thousands(sizes.metric_events as f64),
    ));
    if !latency.is_empty() {
        let col = |f: &dyn Fn(&LatencySample) -> f64| latency.iter().map(f).collect::<Vec<_>>();
        let ratio = |q: f64| col(&|s| ms(&s.visible, q) / ms(&s.raw_commit, q));
        let vis = |q: f64| col(&|s| ms(&s.visible, q));
        let raw = |q: f64| col(&|s| ms(&s.raw_commit, q));
        let p99 = spread(&vis(0.99));
        out.push_str("### Event appended → action log visible\n\n");
        out.push_str("| measure | studio: median (min–max) | baseline | baseline: median (min–max) | ratio studio/baseline: median (min–max) | goal | met |\n");
        out.push_str("| --- | ---: | --- | ---: | ---: | :---: | :---: |\n");
        for (label, q) in [("p50", 0.50), ("p95", 0.95), ("p99", 0.99)] {
            let (goal, met) = if q == 0.99 {
                (
                    "< 100 ms",
                    if p99.max < 100.0 {
                        "yes"
                    } else if p99.median < 100.0 {
                        "median only"
                    } else {
                        "**no**"
                    },
                )
            } else {
                ("—", "—")
            };
            out.push_str(&format!(
                "| ack → visible {label} (ms) | {} | one direct transaction per event, commit {label} | {} | {} | {goal} | {met} |\n",
                cell(&vis(q), one),
                cell(&raw(q), two),
                cell(&ratio(q), one),
            ));
        }
        out.push_str(&format!(
            "| ack → visible max (ms) | {} | commit max | {} | — | — | — |\n",
            cell(&col(&|s| s.visible.max() as f64 / 1000.0), one),
            cell(&col(&|s| s.raw_commit.max() as f64 / 1000.0), two),
        ));
        out.push_str(&format!(
            "| `POST /v1/events` round trip p50 / p99 (ms) | {} / {} | — | — | — | — | — |\n",
            cell(&col(&|s| ms(&s.ack, 0.50)), two),
            cell(&col(&|s| ms(&s.ack, 0.99)), two),
        ));
        out.push_str(&format!(
            "| achieved rate (events/s) | {} | target | {} | — | — | — |\n",
            cell(&col(&|s| s.achieved_rate), thousands),
            thousands(sizes.rate),
        ));
        out.push_str(&format!(
            "| generator send lag p99 / max (ms) | {} / {} | — | — | — | — | — |\n",
            cell(&col(&|s| ms(&s.send_lag, 0.99)), two),
            cell(&col(&|s| s.send_lag.max() as f64 / 1000.0), one),
        ));
        out.push_str(&format!(
            "| action-log sink backlog, mean over first / last third (events) | {} / {} | — | — | — | — | — |\n",
            cell(&col(&|s| s.backlog_first_third), one),
            cell(&col(&|s| s.backlog_last_third), one),
        ));
        out.push_str(&format!(
            "| action-log sink backlog, max (events) | {} | — | — | — | — | — |\n",
            cell(&col(&|s| s.max_backlog as f64), thousands),
        ));
        out.push_str(&format!(
            "| last ack → every event visible (ms) | {} | — | — | — | — | — |\n\n",
            cell(&col(&|s| s.drain_ms), one),
        ));
        out.push_str(&format!(
            "Action logs per run: {} ({} events; every {GROUP_EVERY}th groups into an earlier row). \
             Visibility polled every {} ms.\n\n",
            cell(&col(&|s| s.action_logs as f64), thousands),
            cell(&col(&|s| s.events as f64), thousands),
            VISIBLE_POLL.as_millis(),
        ));
    }
    if !delivery.is_empty() {
        let col = |f: &dyn Fn(&DeliverySample) -> f64| delivery.iter().map(f).collect::<Vec<_>>();
        out.push_str(&format!(
            "### CloudWatch delivery throughput ({emulator})\n\n"
        ));
        out.push_str("| measure | sink: median (min–max) | baseline | baseline: median (min–max) | ratio sink/baseline: median (min–max) |\n");
        out.push_str("| --- | ---: | --- | ---: | ---: |\n");
        out.push_str(&format!(
            "| log sink, action logs/s | {} | raw PutLogEvents over HTTP, maximal batches, same messages | {} | {} |\n",
            cell(&col(&|s| s.log_sink_per_s), thousands),
            cell(&col(&|s| s.raw_logs_per_s), thousands),
            cell(&col(&|s| s.log_sink_per_s / s.raw_logs_per_s), two),
        ));
        out.push_str(&format!(
            "| metric sink, dispatch events/s | {} | the same PutMetricData calls and data over HTTP, back to back | {} | {} |\n",
            cell(&col(&|s| s.metric_sink_per_s), thousands),
            cell(&col(&|s| s.raw_metric_per_s), thousands),
            cell(&col(&|s| s.metric_sink_per_s / s.raw_metric_per_s), two),
        ));
        out.push_str(&format!(
            "| metric sink, dispatch events/s | {} | the same log reads, aggregation and batch planning, no calls | {} | {} |\n",
            cell(&col(&|s| s.metric_sink_per_s), thousands),
            cell(&col(&|s| s.fold_per_s), thousands),
            cell(&col(&|s| s.metric_sink_per_s / s.fold_per_s), two),
        ));
        out.push_str(&format!(
            "| action-log writer alone (the log sink's input), action logs/s | {} | — | — | — |\n",
            cell(&col(&|s| s.writer_per_s), thousands),
        ));
        out.push_str(&format!(
            "| share of the sink's time inside `deliver`: log / metric sink | {} / {} | — | — | — |\n\n",
            cell(&col(&|s| s.log_deliver_share), two),
            cell(&col(&|s| s.metric_deliver_share), two),
        ));
        let d = &delivery[0];
        let logged = |v: Option<usize>| {
            v.map_or("not known (external emulator)".to_string(), |c| {
                c.to_string()
            })
        };
        out.push_str(&format!(
            "Calls (run 1): log sink: {} deliveries of {:.0} action logs each, {} PutLogEvents calls logged by the emulator; \
             {} events found in the stream afterwards. Raw baseline: {} PutLogEvents calls of up to {} events. \
             Metric sink: {} deliveries, {} PutMetricData calls for them ({:.1} data per call, {} data in all). \
             Dead letters: {}.\n",
            d.log_delivers,
            d.log_rows_per_deliver,
            logged(d.log_put_calls),
            d.log_events_in_stream,
            d.raw_log_calls,
            thousands((sizes.log_events as f64 / d.raw_log_calls.max(1) as f64).ceil()),
            d.metric_delivers,
            d.metric_put_calls,
            d.metric_datums as f64 / d.metric_put_calls.max(1) as f64,
            d.metric_datums,
            col(&|s| s.dead_letters as f64).iter().sum::<f64>(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fifth_event_repeats_an_earlier_run_and_kind() {
        let (plan, runs) = latency_plan(10);
        assert_eq!(runs, 8);
        assert_eq!(plan[4], plan[0]);
        assert_eq!(plan[9], plan[5]);
        let distinct: std::collections::HashSet<usize> = plan.iter().map(|p| p.run).collect();
        assert_eq!(distinct.len(), runs);
    }
}
