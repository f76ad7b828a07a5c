//! Read-side benchmarks for `BENCHMARKS.md`:
//!
//! - `studio bench rebuild`: rebuild of every projection from N generated events (default
//!   1,000,000), as events/s and as ratios, in the same run, to the in-memory fold of the same
//!   events (the same scan of the log, the same fold; no read-model writes) and to the fold of
//!   events already read and typed in memory.
//! - `studio bench money-hud-query`: latency of the Money HUD query on a benchmark run with
//!   100,000 dispatches, through the real HTTP API.
//! - `studio bench money-hud`: decision quality of the Money HUD on 1,000 seeded simulated
//!   matrices with a known true best variant.

use anyhow::{Context, Result};
use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use clap::Args;
use eventlog::catalogue::*;
use eventlog::ids::{DispatchId, VariantId};
use eventlog::{EventLog, EventPayload, ValidatedEvent};
use hdrhistogram::Histogram;
use projector::checkpoint::decode_all;
use projector::docs::Docs;
use projector::ReadDb;
use std::sync::Arc;
use std::time::Instant;

const APPEND_BATCH: usize = 10_000;
const VARIANT: &str = "er:fx-bench:wf:wf-1:env:bench:stage:render:provider:sim:exp:e";

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Repetitions of the fold and the rebuild on the same log; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Store to use: sqlite (a temporary file) or postgres (a throw-away database).
    #[arg(long, default_value = "sqlite")]
    pub backend: String,
    /// Repeat only the rebuild, without the baselines (to profile it, e.g. under `perf`); the
    /// goal's ratio needs the full run.
    #[arg(long)]
    pub rebuild_only: bool,
}

#[derive(Debug, Args)]
pub struct HudQueryArgs {
    #[arg(long, default_value_t = 100_000)]
    pub dispatches: usize,
    #[arg(long, default_value_t = 2_000)]
    pub queries: usize,
    #[arg(long, default_value = "sqlite")]
    pub backend: String,
}

#[derive(Debug, Args)]
pub struct HudQualityArgs {
    #[arg(long, default_value_t = 1_000)]
    pub matrices: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

fn at(ms: i64) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap() + ChronoDuration::milliseconds(ms)
}

fn event(payload: EventPayload, ms: i64) -> ValidatedEvent {
    ValidatedEvent::from_payload(&payload, "bench", at(ms))
}

/// A realistic log: load-test runs of 10,000 dispatches each (submitted + completed), with the
/// runs' lifecycle events, until `total` events.
fn load_test_events(total: usize) -> Vec<ValidatedEvent> {
    let mut events = Vec::with_capacity(total + 16);
    let variant = VariantId::parse(VARIANT).expect("valid");
    events.push(event(
        EventPayload::VariantRegistered(variant_registered(&variant, Some(0.004))),
        0,
    ));
    let mut run = 0;
    while events.len() < total {
        run += 1;
        let run_id = format!("lt_bench_{run}");
        let per_run = ((total - events.len()) / 2).clamp(1, 10_000) as u64;
        let stages = vec![Stage {
            name: "steady".into(),
            duration_s: per_run / 100 + 1,
            target_rps: 100.0,
        }];
        events.push(event(
            EventPayload::RunCreated(RunCreated {
                run_id: run_id.clone(),
                name: "bench".into(),
                effect_revision_id: "fx-bench".into(),
                environment_id: "bench".into(),
                variant_id: VARIANT.into(),
                input_fixture: "fixture".into(),
                stages,
                stop_conditions: StopConditions::default(),
                estimated_cost_usd: None,
                approval_ref: None,
            }),
            0,
        ));
        events.push(event(
            EventPayload::RunStarted(RunStarted {
                run_id: run_id.clone(),
                mode: RunMode::Inline,
                executor: None,
            }),
            1,
        ));
        for seq in 1..=per_run {
            let dispatch_id = DispatchId::new(&run_id, seq).to_string();
            let scheduled = (seq * 10) as i64;
            events.push(event(
                EventPayload::LoadDispatchSubmitted(LoadDispatchSubmitted {
                    run_id: run_id.clone(),
                    dispatch_id: dispatch_id.clone(),
                    seq,
                    stage_index: 0,
                    variant_id: VARIANT.into(),
                    scheduled_at: eventlog::envelope::format_timestamp(at(scheduled)),
                }),
                scheduled,
            ));
            let latency = 200.0 + (seq * 7919 % 1000) as f64;
            events.push(event(
                EventPayload::LoadDispatchCompleted(LoadDispatchCompleted {
                    run_id: run_id.clone(),
                    dispatch_id,
                    outcome: if seq % 17 == 0 {
                        Outcome::Failed
                    } else {
                        Outcome::Succeeded
                    },
                    latency_ms: latency,
                    service_time_ms: Some(latency - 2.0),
                    cost_usd: Some(0.004),
                    error: None,
                    stage_index: Some(0),
                }),
                scheduled + latency as i64,
            ));
        }
        events.push(event(
            EventPayload::RunCompleted(RunCompleted { run_id }),
            2_000_000,
        ));
    }
    events
}

/// A benchmark run of `dispatches` dispatches over 3 variants, each success judged.
fn benchmark_events(dispatches: usize) -> (String, Vec<ValidatedEvent>) {
    let bm = eventlog::ids::new_benchmark_run_id();
    let variants: Vec<String> = (0..3)
        .map(|i| format!("er:fx-bench:wf:wf-{i}:env:bench:stage:render:provider:sim-{i}:exp:e"))
        .collect();
    let mut events = Vec::new();
    for v in &variants {
        events.push(event(
            EventPayload::VariantRegistered(variant_registered(
                &VariantId::parse(v).unwrap(),
                Some(0.01),
            )),
            0,
        ));
    }
    events.push(event(
        EventPayload::PriceSet(PriceSet {
            effect_revision_id: "fx-bench".into(),
            price_usd: 0.05,
        }),
        0,
    ));
    events.push(event(
        EventPayload::BenchmarkRunCreated(BenchmarkRunCreated {
            benchmark_run_id: bm.clone(),
            dataset: "iteration1-golden-v1".into(),
            variant_ids: variants.clone(),
            inputs: vec![BenchmarkInput {
                input_id: "in-1".into(),
                uri: "s3://bench/in-1.png".into(),
            }],
            repetitions: (dispatches / 3) as u32,
        }),
        0,
    ));
    for (i, v) in variants.iter().enumerate() {
        events.push(event(
            EventPayload::BenchmarkItemCreated(BenchmarkItemCreated {
                benchmark_run_id: bm.clone(),
                item_id: format!("item-{i}"),
                variant_id: v.clone(),
            }),
            1,
        ));
    }
    for n in 0..dispatches {
        let i = n % 3;
        let dispatch_id = format!("bd-{n}");
        let succeeded = n % (5 + 5 * i) != 0;
        events.push(event(
            EventPayload::BenchmarkDispatchCompleted(BenchmarkDispatchCompleted {
                benchmark_run_id: bm.clone(),
                item_id: format!("item-{i}"),
                input_id: "in-1".into(),
                dispatch_id: dispatch_id.clone(),
                outcome: if succeeded {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                },
                latency_ms: 300.0 + (n % 700) as f64,
                service_time_ms: None,
                cost_usd: Some(0.01 + 0.002 * i as f64),
                error: None,
                output_uri: succeeded.then(|| format!("s3://bench/out/{n}.png")),
            }),
            10 + n as i64,
        ));
        if succeeded {
            events.push(event(
                EventPayload::EvaluationCompleted(EvaluationCompleted {
                    benchmark_run_id: bm.clone(),
                    evaluation_id: format!("ev-{n}"),
                    item_id: format!("item-{i}"),
                    variant_id: variants[i].clone(),
                    dispatch_id,
                    evaluator: Evaluator {
                        provider: "heuristic".into(),
                        model: "v1".into(),
                    },
                    score: 0.7 + (n % 30) as f64 / 100.0,
                    criteria: Default::default(),
                    rationale: "bench".into(),
                    fallback: false,
                    fallback_reason: None,
                }),
                20 + n as i64,
            ));
        }
    }
    (bm, events)
}

struct Store {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn store(backend: &str) -> Result<Store> {
    Ok(match backend {
        "sqlite" => {
            let (url, dir) = eventlog::testkit::sqlite_url();
            Store {
                url,
                _dir: Some(dir),
            }
        }
        "postgres" => Store {
            url: eventlog::testkit::postgres_database().await,
            _dir: None,
        },
        other => anyhow::bail!("--backend {other:?}: use sqlite or postgres"),
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

/// Reads every event and folds it into every projection's documents in memory: the rebuild's
/// reads (the same scan, the same batches), without its read-model writes.
async fn in_memory_fold(log: &dyn EventLog) -> Result<(u64, usize)> {
    let projections = projector::all_projections();
    let mut docs: Vec<Docs> = projections.iter().map(|_| Docs::default()).collect();
    let mut n = 0u64;
    let mut scan = log.scan_typed(0, projector::rebuild::REBUILD_BATCH);
    // Page by page, as the rebuild folds.
    while let Some(page) = scan.next().await {
        let page = page?;
        for (i, p) in projections.iter().enumerate() {
            for (e, payload) in &page {
                if let Ok(payload) = payload {
                    p.want(e, payload, &mut docs[i]);
                }
            }
            docs[i].assume_absent();
            for (e, payload) in &page {
                if let Ok(payload) = payload {
                    p.apply(e, payload, &mut docs[i])
                        .map_err(anyhow::Error::msg)?;
                }
            }
        }
        n += page.len() as u64;
    }
    Ok((n, docs.iter().map(Docs::len).sum()))
}

/// Folds events already read and decoded in memory: the fold alone, with no log reads.
fn pure_fold(decoded: &[projector::checkpoint::Decoded]) -> Result<()> {
    let projections = projector::all_projections();
    for p in &projections {
        let mut docs = Docs::default();
        for chunk in decoded.chunks(projector::rebuild::REBUILD_BATCH) {
            for (e, payload) in chunk {
                if let Ok(payload) = payload {
                    p.want(e, payload, &mut docs);
                }
            }
            docs.assume_absent();
            for (e, payload) in chunk {
                if let Ok(payload) = payload {
                    p.apply(e, payload, &mut docs).map_err(anyhow::Error::msg)?;
                }
            }
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub async fn rebuild(args: RebuildArgs) -> Result<()> {
    let s = store(&args.backend).await?;
    let log = eventlog::open(&s.url, true).await?;
    let started = Instant::now();
    append_all(log.as_ref(), load_test_events(args.events)).await?;
    let head = log.head().await?;
    eprintln!(
        "generated {head} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let db = ReadDb::connect(&s.url).await?;
    let projections = projector::all_projections();
    let list: Vec<&dyn projector::Projection> = projections.iter().map(|p| p.as_ref()).collect();
    let (mut folds, mut rebuilds, mut pures, mut scans, mut reads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if args.rebuild_only {
        let mut rebuilds = Vec::new();
        for run in 1..=args.runs {
            let report = projector::rebuild::rebuild_all(&db, log.as_ref(), &list, &|_| {}).await?;
            rebuilds.push(report.events as f64 / report.elapsed_s);
            eprintln!("run {run}: rebuild {:.0} events/s", rebuilds[run - 1]);
        }
        println!(
            "rebuild, median of {}: {:.0} events/s",
            args.runs,
            median(rebuilds)
        );
        log.close().await;
        return Ok(());
    }
    for run in 1..=args.runs {
        // The events folded by the baseline are read and typed the way the live runner reads
        // them (`read_all`, a `Value`, then the typed payload), as before the scan existed.
        let t = Instant::now();
        let mut decoded = Vec::new();
        let mut position = 0;
        loop {
            let events = log
                .read_all(position, projector::rebuild::REBUILD_BATCH)
                .await?;
            let Some(last) = events.last().map(|e| e.position) else {
                break;
            };
            decoded.extend(decode_all(events));
            position = last;
        }
        reads.push(decoded.len() as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        pure_fold(&decoded)?;
        pures.push(decoded.len() as f64 / t.elapsed().as_secs_f64());
        drop(decoded);
        let t = Instant::now();
        let mut scan = log.scan_typed(0, projector::rebuild::REBUILD_BATCH);
        let mut scanned = 0usize;
        while let Some(page) = scan.next().await {
            scanned += page?.len();
        }
        scans.push(scanned as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (n, docs) = in_memory_fold(log.as_ref()).await?;
        let fold = n as f64 / t.elapsed().as_secs_f64();
        let report = projector::rebuild::rebuild_all(&db, log.as_ref(), &list, &|_| {}).await?;
        let rebuilt = report.events as f64 / report.elapsed_s;
        eprintln!(
            "run {run}: rebuild {rebuilt:.0} events/s; in-memory fold {fold:.0} events/s ({docs} documents); \
             pre-decoded fold {:.0}; scan {:.0}; read_all {:.0}",
            pures[run - 1],
            scans[run - 1],
            reads[run - 1]
        );
        folds.push(fold);
        rebuilds.push(rebuilt);
    }
    let (fold, rebuilt, pure, scan, read) = (
        median(folds),
        median(rebuilds),
        median(pures),
        median(scans),
        median(reads),
    );
    println!(
        "| store | events | rebuild (events/s) | in-memory fold incl. log reads (events/s) | ratio | fold of pre-decoded events (events/s) | ratio | log scan + decode alone (events/s) | read_all + decode (events/s) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {head} | {rebuilt:.0} | {fold:.0} | {:.0}% | {pure:.0} | {:.0}% | {scan:.0} | {read:.0} |",
        args.backend,
        100.0 * rebuilt / fold,
        100.0 * rebuilt / pure
    );
    log.close().await;
    Ok(())
}

pub async fn hud_query(args: HudQueryArgs) -> Result<()> {
    let s = store(&args.backend).await?;
    let log = eventlog::open(&s.url, true).await?;
    let (bm, events) = benchmark_events(args.dispatches);
    append_all(log.as_ref(), events).await?;
    let db = ReadDb::connect(&s.url).await?;
    let status = Arc::new(projector::StatusBoard::default());
    let mut runner = projector::Runner::new(
        db.clone(),
        log.clone(),
        projector::all_projections(),
        status.clone(),
    );
    runner
        .catch_up()
        .await
        .map_err(|pause| anyhow::anyhow!("projector could not catch up (retry in {pause:?})"))?;
    runner.stop().await;

    let state = projector::http::ReadState {
        db,
        log: log.clone(),
        status,
        thresholds: Default::default(),
        max_wait: projector::query::MAX_MIN_POSITION_WAIT,
    };
    let tokens = ingest::Tokens::new("bench-admin", "bench-exec").context("tokens")?;
    let app = projector::http::router(state, tokens);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!(
        "http://{}/admin/studio/economics/money-hud?benchmark_run_id={bm}",
        listener.local_addr()?
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut body_len = 0;
    for _ in 0..args.queries {
        let t = Instant::now();
        let r = client
            .get(&url)
            .bearer_auth("bench-admin")
            .send()
            .await?
            .error_for_status()?;
        body_len = r.bytes().await?.len();
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    server.abort();
    println!("| store | dispatches | queries | p50 (ms) | p99 (ms) | max (ms) | answer bytes |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {body_len} |",
        args.backend,
        args.dispatches,
        args.queries,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
    log.close().await;
    Ok(())
}

pub fn hud_quality(args: HudQualityArgs) -> Result<()> {
    let report = projector::money_hud::simulate(args.seed, args.matrices);
    println!("{}", report.to_markdown());
    Ok(())
}
