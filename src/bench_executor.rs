//! `studio bench executor`: rate accuracy of the load-test executor against the simulated
//! provider, with every event durably logged (SQLite, `synchronous=FULL`, group commit).
//!
//! For each target rate: one stage of `--seconds` at that rate; figures come from the log
//! itself: achieved rate (dispatched / stage duration), rate error against the target, schedule
//! lag (latency from the scheduled instant minus the provider's service time: how late the
//! executor sent) at p50/p99, and missed arrivals.

use anyhow::{Context, Result};
use chrono::Utc;
use clap::Args;
use eventlog::catalogue::{RunCreated, Stage, StopConditions};
use eventlog::{EventLog, EventPayload};
use hdrhistogram::Histogram;
use services::executor::{execute, EngineOptions, RunEnded, RunSpec};
use services::providers::{DispatchInput, SimulatedProvider, SimulatedSettings};
use std::sync::Arc;

const VARIANT: &str = "er:fx-bench:wf:wf:env:bench:stage:render:provider:sim:exp:e";

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// Target rates (dispatches/s), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "500,2000,5000")]
    pub rates: Vec<f64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Repetitions per rate; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Simulated provider latency (ms) and jitter (ms).
    #[arg(long, default_value_t = 20.0)]
    pub latency_ms: f64,
    #[arg(long, default_value_t = 5.0)]
    pub jitter_ms: f64,
}

struct Sample {
    achieved: f64,
    error_pct: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    missed: u64,
    planned: u64,
    events: usize,
}

async fn one_run(rate: f64, args: &ExecutorArgs) -> Result<Sample> {
    let (url, _dir) = eventlog::testkit::sqlite_url();
    let log: Arc<dyn EventLog> = eventlog::open(&url, true).await?;
    let run_id = format!("lt_bench_{}", uuid::Uuid::now_v7().simple());
    let run = RunCreated {
        run_id: run_id.clone(),
        name: "rate accuracy".into(),
        effect_revision_id: "fx-bench".into(),
        environment_id: "bench".into(),
        variant_id: VARIANT.into(),
        input_fixture: "fixture".into(),
        stages: vec![Stage {
            name: "steady".into(),
            duration_s: args.seconds,
            target_rps: rate,
        }],
        stop_conditions: StopConditions::default(),
        estimated_cost_usd: None,
        approval_ref: None,
    };
    log.append(vec![eventlog::ValidatedEvent::from_payload(
        &EventPayload::RunCreated(run.clone()),
        "bench",
        Utc::now(),
    )])
    .await?;
    let provider = Arc::new(SimulatedProvider::new(
        "sim",
        SimulatedSettings {
            latency_ms: args.latency_ms,
            jitter_ms: args.jitter_ms,
            failure_rate: 0.0,
            cost_usd: 0.001,
            seed: 1,
        },
    ));
    let options = EngineOptions {
        max_in_flight: 4_096,
        ..EngineOptions::default()
    };
    let (_cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let input = DispatchInput {
        input_id: "fixture".into(),
        uri: "fixture".into(),
    };
    let ended = execute(
        log.clone(),
        RunSpec { run },
        provider,
        input,
        options,
        cancel_rx,
    )
    .await?;
    anyhow::ensure!(matches!(ended, RunEnded::Completed), "run ended {ended:?}");

    let (mut dispatched, mut missed, mut events) = (0u64, 0u64, 0usize);
    let mut lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut after = 0;
    loop {
        let page = log.read_all(after, 10_000).await?;
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        after = last;
        events += page.len();
        for e in page {
            match e.typed().map_err(anyhow::Error::msg)? {
                EventPayload::LoadDispatchSubmitted(_) => dispatched += 1,
                EventPayload::ArrivalsMissed(p) => missed += p.count,
                EventPayload::LoadDispatchCompleted(p) => {
                    let service = p.service_time_ms.context("service time")?;
                    lag.record(
                        ((p.latency_ms - service).max(0.0) * 1000.0)
                            .round()
                            .max(1.0) as u64,
                    )?;
                }
                _ => {}
            }
        }
    }
    log.close().await;
    let planned = (args.seconds as f64 * rate).round() as u64;
    let achieved = dispatched as f64 / args.seconds as f64;
    Ok(Sample {
        achieved,
        error_pct: 100.0 * (achieved - rate).abs() / rate,
        lag_p50_ms: lag.value_at_quantile(0.5) as f64 / 1000.0,
        lag_p99_ms: lag.value_at_quantile(0.99) as f64 / 1000.0,
        missed,
        planned,
        events,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub async fn run(args: ExecutorArgs) -> Result<()> {
    println!("| target (dispatches/s) | achieved (median) | rate error (median) | schedule lag p50 (ms) | schedule lag p99 (ms) | missed (median of {}) | events logged per run |", args.runs);
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for &rate in &args.rates {
        let mut samples = Vec::new();
        for i in 1..=args.runs {
            let s = one_run(rate, &args).await?;
            eprintln!(
                "{rate}/s run {i}: achieved {:.1}/s ({:.2}% off), lag p50 {:.2} ms p99 {:.2} ms, missed {} of {}",
                s.achieved, s.error_pct, s.lag_p50_ms, s.lag_p99_ms, s.missed, s.planned
            );
            samples.push(s);
        }
        println!(
            "| {rate:.0} | {:.1} | {:.2}% | {:.2} | {:.2} | {:.0} of {} | {} |",
            median(samples.iter().map(|s| s.achieved).collect()),
            median(samples.iter().map(|s| s.error_pct).collect()),
            median(samples.iter().map(|s| s.lag_p50_ms).collect()),
            median(samples.iter().map(|s| s.lag_p99_ms).collect()),
            median(samples.iter().map(|s| s.missed as f64).collect()),
            samples[0].planned,
            samples[0].events,
        );
    }
    Ok(())
}
