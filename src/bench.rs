//! `studio bench`: the measured numbers behind `BENCHMARKS.md`.
//!
//! Every figure is taken against the real server, started in this process on a port-0 listener
//! over a fresh database, and set beside a raw baseline measured in the same run on the same
//! machine. Absolute numbers depend on the disk; the ratios are what the goals are about. Each
//! kind runs `--runs` times and the report gives medians with min–max; nothing here asserts on
//! time.
//!
//! - `studio bench ingest`: `POST /v1/events` on SQLite and PostgreSQL —
//!   (a) batches of 100 and 1,000 events from 4 clients against a raw batched `INSERT` of the
//!   same rows; (b) sequential single-event appends from 1 client against a raw fsync'd file
//!   append; (c) single-event appends from 64 clients against one row per transaction.
//!
//! Later kinds (projection rebuild, executor) become further variants of [`BenchKind`].

use crate::config::Config;
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use eventlog::envelope::{format_timestamp, StoredRow};
use eventlog::{EventLog, ValidatedEvent};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, SqliteConnection};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Barrier};
use tokio::task::JoinHandle;

/// Tokens of the throw-away server; it only ever listens on 127.0.0.1.
const ADMIN_TOKEN: &str = "bench-admin-token";
const EXECUTOR_SECRET: &str = "bench-executor-secret";
/// Environment variable naming a PostgreSQL server for `--backend postgres`.
pub const PG_URL_VAR: &str = "STUDIO_BENCH_PG_URL";

/// (a): concurrent publishers and the batch sizes they send.
const BATCH_CLIENTS: usize = 4;
const BATCH_SIZES: [usize; 2] = [100, 1_000];
/// (a): a load-test run's dispatches share a stream; this many per run keeps the store's
/// stream-version look-ups realistic (a batch of 1,000 touches 10 streams).
const EVENTS_PER_STREAM: usize = 100;
/// Latencies are recorded in microseconds, up to a minute, at 3 significant digits.
const HISTOGRAM_MAX_US: u64 = 60_000_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const COLUMNS: &str = "position, event_id, event_type, schema_version, stream, stream_version, \
                       idempotency_key, correlation_id, causation_id, producer, occurred_at, \
                       recorded_at, payload";

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub kind: BenchKind,
}

#[derive(Debug, Subcommand)]
pub enum BenchKind {
    /// HTTP ingest throughput and latency against raw store baselines (SQLite and PostgreSQL).
    Ingest(IngestArgs),
    /// Rebuild of every projection against the in-memory fold of the same events.
    Rebuild(crate::bench_read::RebuildArgs),
    /// Money HUD query latency on a benchmark run with many dispatches.
    MoneyHudQuery(crate::bench_read::HudQueryArgs),
    /// Money HUD decision quality on seeded simulated matrices.
    MoneyHud(crate::bench_read::HudQualityArgs),
    /// Load-test executor rate accuracy against the simulated provider.
    Executor(crate::bench_executor::ExecutorArgs),
    /// Action-log visibility latency at a publish rate, and CloudWatch delivery throughput.
    Sinks(crate::bench_sinks::SinksArgs),
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Which store to measure.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    pub backend: BackendChoice,
    /// PostgreSQL server to create throw-away databases on (a user allowed to CREATE DATABASE,
    /// e.g. postgres://postgres@127.0.0.1:5432/postgres). Without it a throw-away cluster is
    /// started, as the tests do.
    #[arg(long, env = PG_URL_VAR, hide_env_values = true)]
    pub pg_url: Option<String>,
    /// Repetitions of every measurement, each on fresh databases [default: 5, or 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: Option<u32>,
    /// Small counts, for a smoke test of the benchmark itself; the numbers mean little.
    #[arg(long)]
    pub quick: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

pub async fn run(args: BenchArgs) -> Result<()> {
    match args.kind {
        BenchKind::Ingest(args) => ingest(args).await,
        BenchKind::Rebuild(args) => crate::bench_read::rebuild(args).await,
        BenchKind::MoneyHudQuery(args) => crate::bench_read::hud_query(args).await,
        BenchKind::MoneyHud(args) => crate::bench_read::hud_quality(args),
        BenchKind::Executor(args) => crate::bench_executor::run(args).await,
        BenchKind::Sinks(args) => crate::bench_sinks::run(args).await,
    }
}

/// Event counts of one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// (a): events per batch size, split evenly over [`BATCH_CLIENTS`].
    batched_events: usize,
    /// (b): sequential single-event appends, and as many fsync'd file appends.
    single_appends: usize,
    /// (c): concurrent clients and the appends each sends.
    concurrent_clients: usize,
    appends_per_client: usize,
    /// (c): rows of the one-row-per-transaction baseline.
    raw_single_rows: usize,
}

/// About 4 minutes for `--backend both` on a 2-core machine: 2,000 latency samples for (b), so
/// p99 rests on 20 of them, and about a second of work for each throughput figure (with 100
/// appends per client, (c) lasted a quarter of a second and its ratio swung by ±20% from run to
/// run).
const FULL: Sizes = Sizes {
    batched_events: 100_000,
    single_appends: 2_000,
    concurrent_clients: 64,
    appends_per_client: 400,
    raw_single_rows: 5_000,
};

const QUICK: Sizes = Sizes {
    batched_events: 4_000,
    single_appends: 100,
    concurrent_clients: 64,
    appends_per_client: 5,
    raw_single_rows: 200,
};

async fn ingest(args: IngestArgs) -> Result<()> {
    let sizes = if args.quick { QUICK } else { FULL };
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 5 }) as usize;
    for batch in BATCH_SIZES {
        ensure!(
            sizes.batched_events % (BATCH_CLIENTS * batch) == 0,
            "batched_events must split evenly into {BATCH_CLIENTS} clients × batches of {batch}"
        );
    }
    let started = Instant::now();
    let load_at_start = load_average();
    let mut backends = Vec::new();
    if args.backend != BackendChoice::Postgres {
        backends.push(Target::Sqlite);
    }
    if args.backend != BackendChoice::Sqlite {
        backends.push(Target::Postgres(PgServer {
            admin_url: args.pg_url.clone(),
        }));
    }

    // Runs alternate between the backends, so a noisy neighbour on a shared machine spreads
    // over both instead of spoiling one.
    let mut samples: Vec<Vec<RunSample>> = backends.iter().map(|_| Vec::new()).collect();
    for run in 1..=runs {
        for (target, samples) in backends.iter().zip(&mut samples) {
            let sample = run_once(target, sizes)
                .await
                .with_context(|| format!("{} run {run}/{runs}", target.name()))?;
            eprintln!("{} run {run}/{runs}: {}", target.name(), sample.summary());
            samples.push(sample);
        }
    }
    let mut sections = Vec::new();
    for (target, samples) in backends.iter().zip(&samples) {
        let about = target
            .describe()
            .await
            .unwrap_or_else(|e| format!("({e:#})"));
        sections.push((target.title(), about, table(samples)));
    }

    println!("{}", report_header(&args, sizes, runs));
    for (title, about, table) in sections {
        println!("### {title}\n\n{about}\n\n{table}");
    }
    println!(
        "Total time: {:.0} s. Load average (1 min) at start {load_at_start}, at end {}.",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One run: every measurement once, each on its own fresh database.

/// One run's figures; throughputs in events/s, latencies in µs.
#[derive(Debug, Clone)]
struct RunSample {
    /// (a) per batch size.
    batched: Vec<BatchedSample>,
    /// (b)
    single_p50: f64,
    single_p99: f64,
    /// (b)'s floor: a `GET /healthz` round trip on the same kind of connection.
    floor_p50: f64,
    floor_p99: f64,
    fsync_p50: f64,
    fsync_p99: f64,
    /// (c)
    concurrent_eps: f64,
    concurrent_p99: f64,
    concurrent_per_commit: f64,
    one_row_eps: f64,
    one_row_p99: f64,
    /// (c) without HTTP: the same appends through the `EventLog` API, in process.
    store_concurrent_eps: f64,
}

#[derive(Debug, Clone)]
struct BatchedSample {
    batch: usize,
    studio_eps: f64,
    raw_eps: f64,
    /// Events per group-commit transaction the store made of the requests.
    per_commit: f64,
}

impl RunSample {
    fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .batched
            .iter()
            .map(|b| {
                format!(
                    "(a) {}/batch {} vs raw {} ev/s, {:.1} events/commit",
                    b.batch,
                    thousands(b.studio_eps),
                    thousands(b.raw_eps),
                    b.per_commit
                )
            })
            .collect();
        parts.push(format!(
            "(b) p99 {} µs vs fsync {} µs",
            thousands(self.single_p99),
            thousands(self.fsync_p99)
        ));
        parts.push(format!(
            "(c) {} vs 1-row/txn {} ev/s, {:.1} events/commit",
            thousands(self.concurrent_eps),
            thousands(self.one_row_eps),
            self.concurrent_per_commit
        ));
        parts.join("; ")
    }
}

async fn run_once(target: &Target, sizes: Sizes) -> Result<RunSample> {
    let mut batched = Vec::new();
    for batch in BATCH_SIZES {
        let workload = BatchedWorkload::new(sizes.batched_events, batch)?;
        let studio = with_scratch(target, async |s| batched_http(s, &workload).await).await?;
        let raw = with_scratch(target, async |s| batched_raw(target, s, &workload).await).await?;
        batched.push(BatchedSample {
            batch,
            studio_eps: studio.events_per_s,
            raw_eps: raw,
            per_commit: studio.events_per_commit,
        });
    }
    let (floor, single, fsync) = with_scratch(target, async |s| {
        single_appends(s, sizes.single_appends).await
    })
    .await?;
    let concurrent = with_scratch(target, async |s| concurrent_appends(s, sizes).await).await?;
    let store_concurrent_eps =
        with_scratch(target, async |s| concurrent_store_appends(s, sizes).await).await?;
    let (one_row_eps, one_row) = with_scratch(target, async |s| {
        one_row_per_transaction(target, s, sizes).await
    })
    .await?;
    Ok(RunSample {
        batched,
        floor_p50: floor.value_at_quantile(0.50) as f64,
        floor_p99: floor.value_at_quantile(0.99) as f64,
        single_p50: single.value_at_quantile(0.50) as f64,
        single_p99: single.value_at_quantile(0.99) as f64,
        fsync_p50: fsync.value_at_quantile(0.50) as f64,
        fsync_p99: fsync.value_at_quantile(0.99) as f64,
        concurrent_eps: concurrent.events_per_s,
        concurrent_p99: concurrent.latency.value_at_quantile(0.99) as f64,
        concurrent_per_commit: concurrent.events_per_commit,
        one_row_eps,
        one_row_p99: one_row.value_at_quantile(0.99) as f64,
        store_concurrent_eps,
    })
}

/// What one measurement of the service saw.
struct Served {
    events_per_s: f64,
    latency: Histogram<u64>,
    events_per_commit: f64,
}

/// Starts the server on `scratch`'s database, lets every client send its bodies, checks that
/// `events` events were stored, and stops it.
async fn serve(scratch: &Scratch, per_client: Vec<Vec<String>>, events: usize) -> Result<Served> {
    let server = Server::start(&scratch.database_url).await?;
    let driven = drive(&server.base_url, per_client).await;
    server.stop(events).await?;
    let (elapsed, latency) = driven?;
    Ok(Served {
        events_per_s: events as f64 / elapsed.as_secs_f64(),
        latency,
        events_per_commit: events_per_commit(&scratch.database_url).await?,
    })
}

/// (a), the service: each client posts its batches in order, all clients at once.
async fn batched_http(scratch: &Scratch, workload: &BatchedWorkload) -> Result<Served> {
    serve(scratch, workload.bodies.clone(), workload.rows.len()).await
}

/// (a), the baseline: the same rows on one direct connection, one transaction per batch.
async fn batched_raw(
    target: &Target,
    scratch: &Scratch,
    workload: &BatchedWorkload,
) -> Result<f64> {
    let mut conn = RawConn::open(target, &scratch.database_url).await?;
    let start = Instant::now();
    for chunk in workload.rows.chunks(workload.batch) {
        conn.insert_batch(chunk).await?;
    }
    let elapsed = start.elapsed();
    conn.finish(workload.rows.len()).await?;
    Ok(workload.rows.len() as f64 / elapsed.as_secs_f64())
}

/// (b): sequential single-event appends over HTTP, then as many fsync'd appends of the same
/// bytes to a plain file in the same directory.
/// Also returns the HTTP floor: as many `GET /healthz` round trips, which touch no store, so
/// the report can tell the HTTP stack's share of an append's latency from the store's.
async fn single_appends(
    scratch: &Scratch,
    count: usize,
) -> Result<(Histogram<u64>, Histogram<u64>, Histogram<u64>)> {
    let bodies: Vec<String> = (1..=count)
        .map(|seq| dispatch_completed("lt_single", seq as u64).to_string())
        .collect();
    let floor = http_floor(scratch, count).await?;
    let http = serve(scratch, vec![bodies.clone()], count).await?;
    let fsync = fsync_appends(&scratch.dir, bodies).await?;
    Ok((floor, http.latency, fsync))
}

async fn http_floor(scratch: &Scratch, count: usize) -> Result<Histogram<u64>> {
    let server = Server::start(&scratch.database_url).await?;
    let measured = async {
        let mut conn = HttpConn::open(&server.base_url).await?;
        let mut latency = new_histogram();
        for i in 0..=count {
            let t = Instant::now();
            let (status, _) = conn.send(Method::GET, "/healthz", None).await?;
            ensure!(status.is_success(), "GET /healthz answered {status}");
            // The first request opens the connection; it is not part of the floor.
            if i > 0 {
                latency.saturating_record(micros(t.elapsed()));
            }
        }
        Ok(latency)
    }
    .await;
    server.stop(0).await?;
    measured
}

/// (c), the service: every client appends single events to its own run's stream.
async fn concurrent_appends(scratch: &Scratch, sizes: Sizes) -> Result<Served> {
    let per_client: Vec<Vec<String>> = (0..sizes.concurrent_clients)
        .map(|client| {
            let run_id = format!("lt_c{client}");
            (1..=sizes.appends_per_client)
                .map(|seq| dispatch_completed(&run_id, seq as u64).to_string())
                .collect()
        })
        .collect();
    let total = sizes.concurrent_clients * sizes.appends_per_client;
    serve(scratch, per_client, total).await
}

/// (c) without HTTP, to tell the store's share from the HTTP stack's: the same single-event
/// appends from as many tasks, each calling `EventLog::append` on a store opened in process.
async fn concurrent_store_appends(scratch: &Scratch, sizes: Sizes) -> Result<f64> {
    let log = eventlog::open(&scratch.database_url, true).await?;
    let per_task: Vec<Vec<ValidatedEvent>> = (0..sizes.concurrent_clients)
        .map(|task| {
            let run_id = format!("lt_c{task}");
            (1..=sizes.appends_per_client)
                .map(|seq| ValidatedEvent::parse(&dispatch_completed(&run_id, seq as u64)))
                .collect::<Result<_, _>>()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("a generated event is invalid: {e:?}"))?;
    let start_line = Arc::new(Barrier::new(per_task.len() + 1));
    let tasks: Vec<_> = per_task
        .into_iter()
        .map(|events| {
            let (log, start_line) = (log.clone(), start_line.clone());
            tokio::spawn(async move {
                start_line.wait().await;
                for event in events {
                    log.append(vec![event]).await?;
                }
                Ok::<_, eventlog::StoreError>(())
            })
        })
        .collect();
    start_line.wait().await;
    let start = Instant::now();
    for task in futures::future::join_all(tasks).await {
        task.context("an appender panicked")??;
    }
    let elapsed = start.elapsed();
    let total = sizes.concurrent_clients * sizes.appends_per_client;
    ensure!(
        log.head().await? == total as i64,
        "the store holds {} events, not {total}",
        log.head().await?
    );
    log.close().await;
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// (c), the baseline: sequential single-row `INSERT`s, each its own committed transaction.
/// The rows spread over as many streams as (c) has clients.
async fn one_row_per_transaction(
    target: &Target,
    scratch: &Scratch,
    sizes: Sizes,
) -> Result<(f64, Histogram<u64>)> {
    let count = sizes.raw_single_rows;
    let streams = sizes.concurrent_clients;
    let envelopes: Vec<Value> = (0..count)
        .map(|i| dispatch_completed(&format!("lt_c{}", i % streams), (i / streams + 1) as u64))
        .collect();
    let rows = to_rows(&envelopes)?;
    let mut conn = RawConn::open(target, &scratch.database_url).await?;
    let mut latency = new_histogram();
    let start = Instant::now();
    for row in &rows {
        let t = Instant::now();
        conn.insert_one(row).await?;
        latency.saturating_record(micros(t.elapsed()));
    }
    let elapsed = start.elapsed();
    conn.finish(count).await?;
    Ok((count as f64 / elapsed.as_secs_f64(), latency))
}

async fn fsync_appends(dir: &Path, records: Vec<String>) -> Result<Histogram<u64>> {
    let path = dir.join("raw-appends.log");
    tokio::task::spawn_blocking(move || -> Result<Histogram<u64>> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut latency = new_histogram();
        for record in records {
            let line = format!("{record}\n");
            let t = Instant::now();
            file.write_all(line.as_bytes())?;
            file.sync_data()?;
            latency.saturating_record(micros(t.elapsed()));
        }
        Ok(latency)
    })
    .await
    .context("the fsync task panicked")?
}

// ---------------------------------------------------------------------------------------------
// Workloads: realistic `load_test.dispatch_completed` envelopes, as bodies and as rows.

/// (a)'s events, as HTTP bodies per client and as the rows the store would write.
struct BatchedWorkload {
    batch: usize,
    /// Per client, its request bodies in order.
    bodies: Vec<Vec<String>>,
    rows: Vec<StoredRow>,
}

impl BatchedWorkload {
    fn new(total: usize, batch: usize) -> Result<Self> {
        let per_client = total / BATCH_CLIENTS;
        let mut bodies = Vec::with_capacity(BATCH_CLIENTS);
        let mut envelopes = Vec::with_capacity(total);
        for client in 0..BATCH_CLIENTS {
            let events: Vec<Value> = (0..per_client)
                .map(|i| {
                    let run_id = format!("lt_b{client}-{}", i / EVENTS_PER_STREAM);
                    dispatch_completed(&run_id, (i % EVENTS_PER_STREAM + 1) as u64)
                })
                .collect();
            bodies.push(
                events
                    .chunks(batch)
                    .map(|chunk| Value::Array(chunk.to_vec()).to_string())
                    .collect(),
            );
            envelopes.extend(events);
        }
        Ok(Self {
            batch,
            bodies,
            rows: to_rows(&envelopes)?,
        })
    }
}

/// A v2 `load_test.dispatch_completed` envelope as the executor publishes it (~350 bytes).
fn dispatch_completed(run_id: &str, seq: u64) -> Value {
    let dispatch_id = eventlog::ids::DispatchId::new(run_id, seq).to_string();
    json!({
        "type": "load_test.dispatch_completed",
        "schema_version": 2,
        "occurred_at": format_timestamp(chrono::Utc::now()),
        "producer": "bench",
        "payload": {
            "run_id": run_id,
            "dispatch_id": dispatch_id,
            "outcome": "succeeded",
            "latency_ms": 900.0 + (seq % 250) as f64,
            "service_time_ms": 850.0 + (seq % 250) as f64,
            "cost_usd": 0.004,
            "stage_index": 0,
        },
    })
}

/// The rows the store would write for these envelopes, appended in this order to an empty log:
/// validated exactly as the publish endpoint validates them, positions from 1, stream versions
/// counted per stream.
fn to_rows(envelopes: &[Value]) -> Result<Vec<StoredRow>> {
    let mut versions: HashMap<String, i64> = HashMap::new();
    let recorded_at = format_timestamp(chrono::Utc::now());
    envelopes
        .iter()
        .enumerate()
        .map(|(i, envelope)| {
            let event = ValidatedEvent::parse(envelope)
                .map_err(|e| anyhow!("the bench built an invalid event: {e}"))?;
            let version = versions.entry(event.stream.clone()).or_insert(0);
            *version += 1;
            Ok(StoredRow {
                position: i as i64 + 1,
                event_id: event.event_id.to_string(),
                event_type: event.event_type.to_string(),
                schema_version: i64::from(event.schema_version),
                stream: event.stream,
                stream_version: *version,
                idempotency_key: event.idempotency_key,
                correlation_id: event.correlation_id,
                causation_id: event.causation_id,
                producer: event.producer,
                occurred_at: event.occurred_at,
                recorded_at: recorded_at.clone(),
                payload: event.payload.to_string(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The service: the real application on a port-0 listener, and its HTTP clients.

struct Server {
    base_url: String,
    /// Kept to check, before shutdown, that every acknowledged event is in the log.
    log: Arc<dyn EventLog>,
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<Result<()>>,
}

impl Server {
    async fn start(database_url: &str) -> Result<Self> {
        let env: BTreeMap<&str, &str> = [
            ("STUDIO_DATABASE_URL", database_url),
            ("STUDIO_ADMIN_TOKEN", ADMIN_TOKEN),
            ("STUDIO_EXECUTOR_SECRET", EXECUTOR_SECRET),
        ]
        .into_iter()
        .collect();
        let config = Config::load(&env)?;
        let log = eventlog::open(&config.database_url, true)
            .await
            .with_context(|| {
                format!(
                    "cannot open the event log at {}",
                    crate::cli::redact(database_url)
                )
            })?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let log = log.clone();
            async move {
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                // Only the publish path: the projector would compete for the same cores and lock.
                let roles = crate::app::Roles::parse(&["ingest".to_string()])?;
                crate::app::run(listener, log, &config, &roles, shutdown).await
            }
        });
        Ok(Self {
            base_url,
            log,
            stop_tx,
            task,
        })
    }

    /// Checks the log holds exactly `expected` events, then shuts the server down.
    async fn stop(self, expected: usize) -> Result<()> {
        let head = self.log.head().await;
        let _ = self.stop_tx.send(());
        self.task.await.context("the server task panicked")??;
        let head = head?;
        ensure!(
            head == expected as i64,
            "the log holds {head} events after the benchmark acknowledged {expected}"
        );
        Ok(())
    }
}

/// Sends every client's bodies in order, all clients at once, each on its own keep-alive
/// connection. Returns the wall time from the common start to the last answer, and every
/// request's latency.
async fn drive(base_url: &str, per_client: Vec<Vec<String>>) -> Result<(Duration, Histogram<u64>)> {
    let start_line = Arc::new(Barrier::new(per_client.len() + 1));
    let mut tasks = Vec::with_capacity(per_client.len());
    for bodies in per_client {
        // Opens the connection before the clock starts; any answer will do.
        let mut conn = HttpConn::open(base_url).await?;
        conn.send(Method::GET, "/healthz", None)
            .await
            .context("the server does not answer")?;
        let start_line = start_line.clone();
        tasks.push(tokio::spawn(async move {
            start_line.wait().await;
            let mut latency = new_histogram();
            for body in bodies {
                let t = Instant::now();
                publish(&mut conn, body).await?;
                latency.saturating_record(micros(t.elapsed()));
            }
            Ok::<_, anyhow::Error>(latency)
        }));
    }
    start_line.wait().await;
    let start = Instant::now();
    let finished = futures::future::join_all(tasks).await;
    let elapsed = start.elapsed();
    let mut latency = new_histogram();
    for result in finished {
        let client_latency = result.context("a client task panicked")??;
        latency
            .add(&client_latency)
            .map_err(|e| anyhow!("cannot merge histograms: {e}"))?;
    }
    Ok((elapsed, latency))
}

/// The store stamps every event of one group-commit transaction with the same `recorded_at`,
/// so distinct stamps count the transactions it made.
async fn events_per_commit(database_url: &str) -> Result<f64> {
    let sql = "SELECT COUNT(*), COUNT(DISTINCT recorded_at) FROM events";
    let (events, commits): (i64, i64) = if database_url.starts_with("sqlite:") {
        let options = eventlog::store::sqlite::connect_options(database_url)?;
        let mut conn = SqliteConnection::connect_with(&options).await?;
        let counts = sqlx::query_as(sql).fetch_one(&mut conn).await?;
        conn.close().await?;
        counts
    } else {
        let mut conn = PgConnection::connect(database_url).await?;
        let counts = sqlx::query_as(sql).fetch_one(&mut conn).await?;
        conn.close().await?;
        counts
    };
    Ok(events as f64 / commits.max(1) as f64)
}

/// One keep-alive HTTP/1.1 connection through hyper's connection API, without a client pool:
/// the load generator shares the two cores with the server, so the less it spends per request
/// the more of them the server gets. Every HTTP figure of the bench, the floor included, goes
/// through it. Through `reqwest`, which parses the URL and checks a connection out of its pool
/// on every request, (c) measured 25–30% lower (SQLite 22,791 against 30,434 events/s).
struct HttpConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl HttpConn {
    async fn open(base_url: &str) -> Result<Self> {
        let authority = base_url
            .strip_prefix("http://")
            .with_context(|| format!("not an http:// URL: {base_url}"))?
            .trim_end_matches('/')
            .to_string();
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| format!("cannot connect to {authority}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        // Drives the connection; it ends when `sender` is dropped.
        tokio::spawn(connection);
        Ok(Self { sender, authority })
    }

    /// Sends one request and reads the whole answer.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        json_body: Option<String>,
    ) -> Result<(StatusCode, Bytes)> {
        let exchange = async {
            self.sender.ready().await?;
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, &self.authority);
            let body = match json_body {
                Some(body) => {
                    request = request
                        .header(header::AUTHORIZATION, format!("Bearer {EXECUTOR_SECRET}"))
                        .header(header::CONTENT_TYPE, "application/json");
                    Full::new(Bytes::from(body))
                }
                None => Full::new(Bytes::new()),
            };
            let response = self.sender.send_request(request.body(body)?).await?;
            let status = response.status();
            let answer = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, answer))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("no answer within {REQUEST_TIMEOUT:?}"))?
    }
}

async fn publish(conn: &mut HttpConn, body: String) -> Result<()> {
    let (status, answer) = conn
        .send(Method::POST, "/v1/events", Some(body))
        .await
        .context("POST /v1/events failed")?;
    if status != StatusCode::CREATED {
        let text = String::from_utf8_lossy(&answer);
        bail!(
            "POST /v1/events answered {status}: {}",
            text.chars().take(500).collect::<String>()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The baselines: a direct connection to a fresh database with the store's schema and settings.

enum RawConn {
    /// The store's own writer client and settings (`eventlog::store::sqlite::open_writer`).
    Sqlite(rusqlite::Connection),
    Postgres(PgConnection),
}

impl RawConn {
    /// Connects with the store's own options (SQLite: WAL, synchronous=FULL) and applies the
    /// store's migrations, so the table and its indexes are the same.
    async fn open(target: &Target, url: &str) -> Result<Self> {
        Ok(match target {
            Target::Sqlite => {
                let options = eventlog::store::sqlite::connect_options(url)?;
                let mut conn = SqliteConnection::connect_with(&options).await?;
                eventlog::store::sqlite::MIGRATOR.run(&mut conn).await?;
                conn.close().await?;
                let conn = eventlog::store::sqlite::open_writer(options.get_filename())?;
                // The store leaves checkpoints to a thread of its own and keeps SQLite's
                // automatic checkpoint only as a far-off backstop. A raw writer has no such
                // thread: SQLite's default (every 1,000 WAL pages) keeps its WAL small and
                // rewritten in place, and measured faster here than the backstop (a growing WAL
                // makes each fsync update the file's size too), so the baseline gets it.
                conn.pragma_update(None, "wal_autocheckpoint", 1_000)?;
                RawConn::Sqlite(conn)
            }
            Target::Postgres(_) => {
                let mut conn = PgConnection::connect(url).await?;
                eventlog::store::postgres::MIGRATOR.run(&mut conn).await?;
                RawConn::Postgres(conn)
            }
        })
    }

    /// One transaction: a multi-row `INSERT` (SQLite) or `INSERT … SELECT FROM UNNEST`
    /// (PostgreSQL), the statements the store itself uses.
    async fn insert_batch(&mut self, rows: &[StoredRow]) -> Result<()> {
        match self {
            RawConn::Sqlite(conn) => tokio::task::block_in_place(|| {
                conn.execute_batch("BEGIN IMMEDIATE")?;
                eventlog::store::sqlite::insert_rows(conn, rows)?;
                conn.execute_batch("COMMIT")
            })?,
            RawConn::Postgres(conn) => {
                sqlx::query("BEGIN").execute(&mut *conn).await?;
                eventlog::store::postgres::insert_rows(conn, rows).await?;
                sqlx::query("COMMIT").execute(&mut *conn).await?;
            }
        }
        Ok(())
    }

    /// One row in its own (autocommit) transaction.
    async fn insert_one(&mut self, r: &StoredRow) -> Result<()> {
        let recorded_at = format_timestamp(chrono::Utc::now());
        let sql = match self {
            RawConn::Sqlite(_) => format!("INSERT INTO events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            RawConn::Postgres(_) => format!(
                "INSERT INTO events ({COLUMNS}) VALUES ($1, $2::text::uuid, $3, $4::bigint::int, $5, $6, $7, $8, \
                 $9, $10, $11, $12, $13::text::json)"
            ),
        };
        match self {
            RawConn::Sqlite(conn) => tokio::task::block_in_place(|| {
                conn.prepare_cached(&sql)?.execute(rusqlite::params![
                    r.position,
                    r.event_id,
                    r.event_type,
                    r.schema_version,
                    r.stream,
                    r.stream_version,
                    r.idempotency_key,
                    r.correlation_id,
                    r.causation_id,
                    r.producer,
                    r.occurred_at,
                    recorded_at,
                    r.payload,
                ])
            })
            .map(|_| ())?,
            RawConn::Postgres(conn) => {
                sqlx::query(&sql)
                    .bind(r.position)
                    .bind(&r.event_id)
                    .bind(&r.event_type)
                    .bind(r.schema_version)
                    .bind(&r.stream)
                    .bind(r.stream_version)
                    .bind(&r.idempotency_key)
                    .bind(&r.correlation_id)
                    .bind(&r.causation_id)
                    .bind(&r.producer)
                    .bind(&r.occurred_at)
                    .bind(&recorded_at)
                    .bind(&r.payload)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Checks every row arrived, then closes the connection.
    async fn finish(self, expected: usize) -> Result<()> {
        let count: i64 = match self {
            RawConn::Sqlite(conn) => {
                conn.query_row("SELECT COUNT(*) FROM events", (), |row| row.get(0))?
            }
            RawConn::Postgres(mut conn) => {
                let n = sqlx::query_scalar("SELECT COUNT(*) FROM events")
                    .fetch_one(&mut conn)
                    .await?;
                conn.close().await?;
                n
            }
        };
        ensure!(
            count == expected as i64,
            "the raw baseline stored {count} rows, not {expected}"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Where each measurement runs: a fresh directory, and a fresh database in it or on the server.

enum Target {
    Sqlite,
    Postgres(PgServer),
}

struct PgServer {
    /// `--pg-url`; `None` starts (once) a throw-away cluster through the test kit.
    admin_url: Option<String>,
}

/// A fresh directory (removed on drop) and a fresh, empty database.
struct Scratch {
    dir: PathBuf,
    database_url: String,
    /// PostgreSQL: the admin URL to drop the database from, and its name.
    pg_database: Option<(String, String)>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `measure` on a fresh scratch space and removes it afterwards, whatever the outcome.
async fn with_scratch<T>(
    target: &Target,
    measure: impl AsyncFnOnce(&Scratch) -> Result<T>,
) -> Result<T> {
    let scratch = target.fresh().await?;
    let result = measure(&scratch).await;
    scratch.remove().await;
    result
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Sqlite => "sqlite",
            Target::Postgres(_) => "postgres",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Target::Sqlite => "SQLite",
            Target::Postgres(_) => "PostgreSQL",
        }
    }

    async fn fresh(&self) -> Result<Scratch> {
        let dir =
            std::env::temp_dir().join(format!("studio-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        match self {
            Target::Sqlite => Ok(Scratch {
                database_url: format!("sqlite://{}", dir.join("studio.db").display()),
                dir,
                pg_database: None,
            }),
            Target::Postgres(server) => {
                let mut scratch = Scratch {
                    dir,
                    database_url: String::new(),
                    pg_database: None,
                };
                let (url, admin, name) = server.create_database().await?;
                scratch.database_url = url;
                scratch.pg_database = Some((admin, name));
                Ok(scratch)
            }
        }
    }

    /// Versions and settings the numbers depend on.
    async fn describe(&self) -> Result<String> {
        let scratch = self.fresh().await?;
        let about = match self {
            Target::Sqlite => {
                let options = eventlog::store::sqlite::connect_options(&scratch.database_url)?;
                let mut conn = SqliteConnection::connect_with(&options).await?;
                let version: String = sqlx::query_scalar("SELECT sqlite_version()")
                    .fetch_one(&mut conn)
                    .await?;
                let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                    .fetch_one(&mut conn)
                    .await?;
                let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&mut conn)
                    .await?;
                conn.close().await?;
                let sync = match sync {
                    0 => "OFF",
                    1 => "NORMAL",
                    2 => "FULL",
                    3 => "EXTRA",
                    _ => "?",
                };
                format!("SQLite {version} (bundled), journal_mode={mode}, synchronous={sync}.")
            }
            Target::Postgres(server) => {
                let mut conn = PgConnection::connect(&scratch.database_url).await?;
                let mut settings = Vec::new();
                for name in [
                    "server_version",
                    "fsync",
                    "synchronous_commit",
                    "wal_sync_method",
                    "shared_buffers",
                ] {
                    let value: String = sqlx::query_scalar(&format!("SHOW {name}"))
                        .fetch_one(&mut conn)
                        .await?;
                    settings.push(format!("{name}={value}"));
                }
                conn.close().await?;
                let origin = match &server.admin_url {
                    Some(url) => format!("server {}", crate::cli::redact(url)),
                    None => "a throw-away local cluster (eventlog::testkit)".to_string(),
                };
                format!("PostgreSQL on {origin}: {}.", settings.join(", "))
            }
        };
        scratch.remove().await;
        Ok(about)
    }
}

impl Scratch {
    /// Drops the PostgreSQL database (the directory goes on drop).
    async fn remove(mut self) {
        if let Some((admin, name)) = self.pg_database.take() {
            if let Err(err) = drop_database(&admin, &name).await {
                eprintln!("warning: cannot drop the benchmark database {name}: {err:#}");
            }
        }
    }
}

impl PgServer {
    /// A fresh, empty database: (its URL, an admin URL to drop it from, its name).
    async fn create_database(&self) -> Result<(String, String, String)> {
        match &self.admin_url {
            Some(admin) => {
                let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
                let mut conn = PgConnection::connect(admin)
                    .await
                    .with_context(|| format!("cannot connect to {}", crate::cli::redact(admin)))?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .with_context(|| {
                        format!("cannot create a database on {}", crate::cli::redact(admin))
                    })?;
                conn.close().await?;
                Ok((with_database(admin, &name)?, admin.clone(), name))
            }
            None => {
                // The test kit panics with instructions when no cluster can be had; a task turns
                // that into an error.
                let url = tokio::spawn(eventlog::testkit::postgres_database())
                    .await
                    .map_err(|_| {
                        anyhow!("no PostgreSQL: pass --pg-url or set {PG_URL_VAR} (see the message above)")
                    })?;
                let name = database_name(&url)?;
                let admin = match std::env::var(eventlog::testkit::PG_URL_VAR) {
                    Ok(admin) if !admin.is_empty() => admin,
                    _ => with_database(&url, "postgres")?,
                };
                Ok((url, admin, name))
            }
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let mut conn = PgConnection::connect(admin_url).await?;
    // FORCE: the store's pools may still be closing their connections.
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// `url` with its database (the path) replaced by `name`; user, host and query stay.
fn with_database(url: &str, name: &str) -> Result<String> {
    let (main, query) = match url.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (url, None),
    };
    let authority_start = main
        .find("://")
        .context("a PostgreSQL URL looks like postgres://user@host:port/db")?
        + 3;
    let authority_end = main[authority_start..]
        .find('/')
        .map_or(main.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &main[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

fn database_name(url: &str) -> Result<String> {
    let main = url.split('?').next().unwrap_or(url);
    let authority_start = main.find("://").map_or(0, |i| i + 3);
    match main[authority_start..].split_once('/') {
        Some((_, name)) if !name.is_empty() => Ok(name.to_string()),
        _ => bail!("{} names no database", crate::cli::redact(url)),
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Median, min and max of one figure over the runs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(values: &[f64]) -> Spread {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Spread {
        median,
        min: sorted.first().copied().unwrap_or(f64::NAN),
        max: sorted.last().copied().unwrap_or(f64::NAN),
    }
}

#[derive(Debug, Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
    None,
}

impl Goal {
    fn describe(self) -> String {
        match self {
            Goal::AtLeast(g) => format!("≥ {g:.2}"),
            Goal::AtMost(g) => format!("≤ {g:.2}"),
            Goal::None => "—".to_string(),
        }
    }

    fn verdict(self, ratio: f64) -> &'static str {
        match self {
            Goal::AtLeast(g) if ratio >= g => "yes",
            Goal::AtMost(g) if ratio <= g => "yes",
            Goal::None => "—",
            _ => "**no**",
        }
    }
}

/// One line of the table; the ratio is studio / raw, taken per run, then summarised.
struct Line {
    measure: String,
    baseline: String,
    studio: Vec<f64>,
    raw: Vec<f64>,
    goal: Goal,
}

fn lines(samples: &[RunSample]) -> Vec<Line> {
    let col = |f: &dyn Fn(&RunSample) -> f64| samples.iter().map(f).collect::<Vec<_>>();
    let mut out = Vec::new();
    for (index, batch) in BATCH_SIZES.iter().enumerate() {
        out.push(Line {
            measure: format!(
                "(a) batches of {}, {BATCH_CLIENTS} clients — events/s",
                thousands(*batch as f64)
            ),
            baseline: format!("batched INSERT, {} rows/txn", thousands(*batch as f64)),
            studio: col(&|s| s.batched[index].studio_eps),
            raw: col(&|s| s.batched[index].raw_eps),
            goal: Goal::AtLeast(0.5),
        });
    }
    out.push(Line {
        measure: "(b) single appends, 1 client — p50 µs".into(),
        baseline: "fsync'd file append p50".into(),
        studio: col(&|s| s.single_p50),
        raw: col(&|s| s.fsync_p50),
        goal: Goal::None,
    });
    out.push(Line {
        measure: "(b) single appends, 1 client — p99 µs".into(),
        baseline: "fsync'd file append p99".into(),
        studio: col(&|s| s.single_p99),
        raw: col(&|s| s.fsync_p99),
        goal: Goal::AtMost(2.0),
    });
    out.push(Line {
        measure: "(b) for reference: the same p99 against the store's own durable append".into(),
        baseline: "1 row per txn, commit p99".into(),
        studio: col(&|s| s.single_p99),
        raw: col(&|s| s.one_row_p99),
        goal: Goal::None,
    });
    out.push(Line {
        measure: "(c) single appends, 64 clients — events/s".into(),
        baseline: "1 row per txn, sequential".into(),
        studio: col(&|s| s.concurrent_eps),
        raw: col(&|s| s.one_row_eps),
        goal: Goal::AtLeast(5.0),
    });
    out.push(Line {
        measure:
            "(c) for reference: the same appends from 64 tasks on the store API, no HTTP — events/s"
                .into(),
        baseline: "1 row per txn, sequential".into(),
        studio: col(&|s| s.store_concurrent_eps),
        raw: col(&|s| s.one_row_eps),
        goal: Goal::None,
    });
    out.push(Line {
        measure: "(c) single appends, 64 clients — p99 µs".into(),
        baseline: "1 row per txn, commit p99".into(),
        studio: col(&|s| s.concurrent_p99),
        raw: col(&|s| s.one_row_p99),
        goal: Goal::None,
    });
    out
}

fn table(samples: &[RunSample]) -> String {
    let mut out = String::from(
        "| measure | studio: median (min–max) | raw baseline | raw: median (min–max) | ratio studio/raw: median (min–max) | goal | met |\n\
         | --- | ---: | --- | ---: | ---: | :---: | :---: |\n",
    );
    for line in lines(samples) {
        let ratios: Vec<f64> = line
            .studio
            .iter()
            .zip(&line.raw)
            .map(|(s, r)| s / r)
            .collect();
        let ratio = spread(&ratios);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            line.measure,
            cell(spread(&line.studio), thousands),
            line.baseline,
            cell(spread(&line.raw), thousands),
            cell(ratio, |v| format!("{v:.2}")),
            line.goal.describe(),
            line.goal.verdict(ratio.median),
        ));
    }
    let per_commit = |f: &dyn Fn(&RunSample) -> f64| {
        let values: Vec<f64> = samples.iter().map(f).collect();
        cell(spread(&values), |v| format!("{v:.1}"))
    };
    let mut groups: Vec<String> = BATCH_SIZES
        .iter()
        .enumerate()
        .map(|(index, batch)| {
            format!(
                "(a) batches of {}: {}",
                thousands(*batch as f64),
                per_commit(&|s| s.batched[index].per_commit)
            )
        })
        .collect();
    groups.push(format!(
        "(c) 64 clients: {}",
        per_commit(&|s| s.concurrent_per_commit)
    ));
    let floor = |f: &dyn Fn(&RunSample) -> f64| {
        let values: Vec<f64> = samples.iter().map(f).collect();
        cell(spread(&values), thousands)
    };
    out.push_str(&format!(
        "\nHTTP floor for (b), `GET /healthz` on the same kind of connection (no store): p50 {} µs, p99 {} µs.\n",
        floor(&|s| s.floor_p50),
        floor(&|s| s.floor_p99),
    ));
    out.push_str(&format!(
        "\nGroup commit, events per transaction (median, min–max): {}.\n",
        groups.join("; ")
    ));
    out
}

fn cell(s: Spread, fmt: impl Fn(f64) -> String) -> String {
    if s.min == s.max {
        fmt(s.median)
    } else {
        format!("{} ({}–{})", fmt(s.median), fmt(s.min), fmt(s.max))
    }
}

/// `12345.6` → `"12,346"`.
fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < -0.5 {
        out.insert(0, '-');
    }
    out
}

fn report_header(args: &IngestArgs, sizes: Sizes, runs: usize) -> String {
    let command: Vec<String> = std::env::args()
        .map(|a| {
            if a.contains("://") {
                crate::cli::redact(&a)
            } else {
                a
            }
        })
        .collect();
    let pg_from_env = args.pg_url.is_some() && !command.iter().any(|a| a.starts_with("--pg-url"));
    let build = if cfg!(debug_assertions) {
        "debug build — not representative, use --release"
    } else {
        "release build"
    };
    let mut out = format!(
        "## studio bench ingest\n\n\
         Command: `{}`{}\n\n\
         Machine: {}\n\n\
         Build: {build}. Runs: {runs}, every measurement on a fresh database; medians with min–max \
         over the runs. The ratio is taken within each run, then summarised.\n\n\
         Sizes per run: (a) {} events per batch size from {BATCH_CLIENTS} clients; (b) {} sequential \
         appends and as many fsync'd file appends; (c) {} clients × {} appends, against {} \
         one-row transactions.\n",
        command.join(" "),
        if pg_from_env { format!(" (PostgreSQL from {PG_URL_VAR})") } else { String::new() },
        machine(),
        thousands(sizes.batched_events as f64),
        thousands(sizes.single_appends as f64),
        sizes.concurrent_clients,
        sizes.appends_per_client,
        thousands(sizes.raw_single_rows as f64),
    );
    if args.quick {
        out.push_str("\n**--quick: smoke-test counts; these numbers are not the benchmark.**\n");
    }
    out
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = command_output("uname", &["-r"]).unwrap_or_else(|| "?".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kb: f64 = info
                .lines()
                .find(|l| l.starts_with("MemTotal"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB RAM", kb / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "? RAM".into());
    let tmp = std::env::temp_dir();
    let fs = command_output("stat", &["-f", "-c", "%T", &tmp.to_string_lossy()])
        .unwrap_or_else(|| "?".into());
    format!(
        "nproc {cpus} ({model}), {memory}, Linux `{kernel}`; temporary files in {} on {fs}.",
        tmp.display()
    )
}

/// The 1-minute load average: other work on the machine skews every figure.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(
            spread(&[3.0, 1.0, 2.0]),
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(12_345.6), "12,346");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    #[test]
    fn a_database_url_keeps_user_host_and_query() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "bench_1").unwrap(),
            "postgres://u:p@h:5432/bench_1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h", "b").unwrap(),
            "postgres://h/b"
        );
        assert_eq!(
            database_name("postgres://postgres@127.0.0.1:1/t_abc").unwrap(),
            "t_abc"
        );
        assert!(database_name("postgres://h").is_err());
    }

    #[test]
    fn goals_read_the_median_ratio() {
        assert_eq!(Goal::AtLeast(0.5).verdict(0.49), "**no**");
        assert_eq!(Goal::AtLeast(0.5).verdict(0.5), "yes");
        assert_eq!(Goal::AtMost(2.0).verdict(2.1), "**no**");
        assert_eq!(Goal::None.verdict(9.0), "—");
    }

    #[test]
    fn the_bench_events_pass_validation_and_count_stream_versions() {
        let envelopes = vec![
            dispatch_completed("lt_x", 1),
            dispatch_completed("lt_x", 2),
            dispatch_completed("lt_y", 1),
        ];
        let rows = to_rows(&envelopes).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.stream_version).collect::<Vec<_>>(),
            vec![1, 2, 1]
        );
        assert_eq!(rows[2].stream, "load_test_run-lt_y");
        assert_eq!(
            rows.iter().map(|r| r.position).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn batched_workloads_split_evenly() {
        let w = BatchedWorkload::new(800, 100).unwrap();
        assert_eq!(w.bodies.len(), BATCH_CLIENTS);
        assert!(w.bodies.iter().all(|b| b.len() == 2));
        assert_eq!(w.rows.len(), 800);
    }
}
