//! The HTTP application and the background roles: every role's router merged, served until the
//! shutdown signal; then the projector finishes its batch, the log's writer commits what it
//! queued, and the process exits.

use crate::config::{Config, ProviderConfig};
use anyhow::{bail, Context, Result};
use eventlog::EventLog;
use projector::http::ReadState;
use projector::money_hud::Thresholds;
use projector::{ReadDb, Runner, StatusBoard};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Roles `studio serve --roles` knows: `ingest` (publish endpoint), `projector` (keeps the read
/// models current), `query` (the admin read API and projection health), `commands` (the admin
/// command API: variant registry, load-test runs and their inline executor, benchmark matrix,
/// quality, pricing, routing), `sinks` (action logs and the CloudWatch sinks).
pub const ROLES: &[&str] = &["ingest", "projector", "query", "commands", "sinks"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(Vec<String>);

impl Roles {
    pub fn all() -> Self {
        Self(ROLES.iter().map(|r| r.to_string()).collect())
    }

    pub fn parse(names: &[String]) -> Result<Self> {
        for role in names {
            if !ROLES.contains(&role.as_str()) {
                bail!(
                    "--roles: unknown role {role:?}; known roles: {}",
                    ROLES.join(", ")
                );
            }
        }
        if names.is_empty() {
            return Ok(Self::all());
        }
        Ok(Self(names.to_vec()))
    }

    pub fn has(&self, role: &str) -> bool {
        self.0.iter().any(|r| r == role)
    }
}

/// Providers when `studio.toml` configures none (DESIGN §9: built-in simulated providers), so
/// the embedded default can run load tests out of the box.
pub fn default_providers() -> BTreeMap<String, ProviderConfig> {
    let sim = |latency_ms, jitter_ms, failure_rate, cost_usd, seed| ProviderConfig::Simulated {
        latency_ms,
        jitter_ms,
        failure_rate,
        cost_usd,
        seed,
    };
    BTreeMap::from([
        ("sim-cheap".to_string(), sim(900.0, 200.0, 0.03, 0.004, 7)),
        ("sim-fast".to_string(), sim(300.0, 50.0, 0.01, 0.02, 11)),
        ("sim-flaky".to_string(), sim(600.0, 300.0, 0.25, 0.003, 13)),
    ])
}

/// The configured providers, or the built-in simulated ones.
pub fn providers(
    config: &Config,
) -> Result<BTreeMap<String, Arc<dyn services::providers::Provider>>> {
    let specs = if config.file.providers.is_empty() {
        default_providers()
    } else {
        config.file.providers.clone()
    };
    services::providers::build_providers(&specs).map_err(anyhow::Error::msg)
}

/// The Money HUD thresholds from `[economics]` and `[quality]`.
pub fn thresholds(config: &Config) -> Thresholds {
    let mut t = Thresholds::default();
    if let Some(e) = &config.file.economics {
        t.max_failure_rate = e.max_failure_rate.unwrap_or(t.max_failure_rate);
        t.min_successes = e.min_successes.unwrap_or(t.min_successes);
    }
    if let Some(score) = config.file.quality.as_ref().and_then(|q| q.min_score) {
        t.min_score = score;
    }
    t
}

/// Serves on `listener` until `shutdown` resolves. Tests pass a port-0 listener and their own
/// signal.
pub async fn run(
    listener: TcpListener,
    log: Arc<dyn EventLog>,
    config: &Config,
    roles: &Roles,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (admin, executor) = config.tokens()?;
    let tokens = ingest::Tokens::new(admin.expose(), executor.expose()).context("tokens")?;
    let db = ReadDb::connect(&config.database_url)
        .await
        .context("open the read models")?;
    let status = Arc::new(StatusBoard::default());
    let read_state = ReadState {
        db: db.clone(),
        log: log.clone(),
        status: status.clone(),
        thresholds: thresholds(config),
        max_wait: projector::query::MAX_MIN_POSITION_WAIT,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let mut registry = prometheus_client::registry::Registry::default();
    let projector_metrics = projector::metrics::ProjectorMetrics::register(&mut registry);
    let kafka_metrics = ingest::kafka::KafkaMetrics::register(&mut registry);
    let state = ingest::AppState::with_registry(
        log.clone(),
        ingest::IngestConfig {
            admin_token: admin.expose().to_string(),
            executor_secret: executor.expose().to_string(),
            max_body_bytes: config.max_body_bytes,
        },
        registry,
    )
    .context("ingest configuration")?;

    let mut background = Vec::new();
    let mut app = axum::Router::new();
    let mut alarm_watch = None;
    if roles.has("ingest") {
        if let Some(kafka) = &config.kafka {
            // The second way in: envelopes from Kafka, appended like POST /v1/events.
            let consumer = ingest::kafka::run_consumer(
                log.clone(),
                kafka.clone(),
                kafka_metrics,
                stop_rx.clone(),
            );
            background.push(tokio::spawn(async move {
                if let Err(err) = consumer.await {
                    tracing::error!(error = %err, "the Kafka ingest consumer stopped");
                }
            }));
        }
        app = app.merge(ingest::router(state));
    } else {
        app = app.merge(ingest::ops_router(state));
    }
    let sink_list = build_sinks(config, &db, &log).await?;
    let sink_status = Arc::new(sinks::SinkStatusBoard::default());
    if roles.has("query") {
        app = app.merge(projector::http::router(read_state.clone(), tokens.clone()));
        app = app.merge(sinks::http::router(
            sinks::http::SinksState {
                db: db.clone(),
                log: log.clone(),
                status: sink_status.clone(),
                sinks: sink_list.clone(),
                max_wait: projector::query::MAX_MIN_POSITION_WAIT,
            },
            tokens.clone(),
        ));
    }
    if roles.has("commands") {
        let registry = services::variants::VariantRegistryService::new(log.clone());
        app = app.merge(services::variants::router(registry, tokens.clone()));
        let runner = services::load_tests::RunnerCommand::from_env_value(
            config.load_test_runner_command.clone(),
        );
        let quality_config = config.file.quality.clone().unwrap_or_default();
        let evaluator =
            services::quality::build_evaluator(&quality_config, &|name| std::env::var(name).ok())
                .map_err(|e| anyhow::anyhow!("[quality] {e}"))?;
        let quality = services::quality::QualityEvaluationService::new(
            log.clone(),
            evaluator,
            quality_config.concurrency,
        );
        app = app.merge(services::quality::router(quality, tokens.clone()));
        let benchmarks = services::benchmarks::BenchmarkMatrixService::new(
            log.clone(),
            providers(config)?,
            config.artifact_dir.clone(),
            services::benchmarks::BenchmarkOptions::default(),
        )
        .with_context(|| {
            format!(
                "artifact directory {} (STUDIO_ARTIFACT_DIR)",
                config.artifact_dir.display()
            )
        })?;
        // Benchmark runs a dead process left half-done are finished from the log.
        let resuming = benchmarks.clone();
        tokio::spawn(async move {
            match resuming.resume_unfinished().await {
                Ok(resumed) if resumed.is_empty() => {}
                Ok(resumed) => {
                    tracing::warn!(runs = resumed.len(), "resuming half-done benchmark runs")
                }
                Err(err) => tracing::error!(error = %err, "cannot resume half-done benchmark runs"),
            }
        });
        app = app.merge(services::benchmarks::router(benchmarks, tokens.clone()));
        app = app.merge(services::pricing::router(
            services::pricing::PricingService::new(log.clone()),
            tokens.clone(),
        ));
        app = app.merge(services::routing::router(
            services::routing::RoutingService::new(log.clone()),
            tokens.clone(),
        ));
        let load_tests = load_test_service(config, log.clone(), runner)?;
        alarm_watch = Some(load_tests.clone());
        app = app.merge(services::load_tests::router(load_tests, tokens));
    }
    let app = ingest::with_fallbacks(app);

    if roles.has("projector") {
        let runner = Runner::new(
            db.clone(),
            log.clone(),
            projector::all_projections(),
            status.clone(),
        );
        background.push(tokio::spawn(runner.run(stop_rx.clone())));
    }
    background.push(tokio::spawn(
        projector_metrics.run(read_state, stop_rx.clone()),
    ));
    if roles.has("sinks") {
        let runner = sinks::SinkRunner::new(db.clone(), log.clone(), sink_list, sink_status);
        background.push(tokio::spawn(runner.run(stop_rx.clone())));
    }
    if let Some(load_tests) = alarm_watch {
        // A critical alarm in ALARM stops every run this process executes (the seed plan's
        // second stop condition).
        background.push(tokio::spawn(
            load_tests.clone().watch_alarms(stop_rx.clone()),
        ));
        // Runs left `running` by a process that died are ended, not left running forever.
        tokio::spawn(end_orphaned_runs(load_tests, db.clone(), log.clone()));
    }

    let addr = listener.local_addr()?;
    tracing::info!(%addr, backend = log.backend(), roles = ?roles.0, "serving");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed");
    let _ = stop_tx.send(true);
    for task in background {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    log.close().await;
    tracing::info!("stopped; every acknowledged append is committed");
    served
}

/// Every sink this deployment runs: the action-log writer always (its templates are checked
/// here, so a missing or broken template stops start-up), and the CloudWatch log, metric and
/// alarm sinks when `[cloudwatch]` or `STUDIO_CLOUDWATCH_ENDPOINT` configures them.
pub async fn build_sinks(
    config: &Config,
    db: &ReadDb,
    log: &Arc<dyn EventLog>,
) -> Result<Vec<Arc<dyn sinks::Sink>>> {
    let templates = Arc::new(sinks::check_templates().context("operator-instruction templates")?);
    let mut list: Vec<Arc<dyn sinks::Sink>> = vec![Arc::new(sinks::ActionLogSink::new(
        db.clone(),
        log.clone(),
        templates,
        sinks::ActionLogConfig::default(),
    ))];
    if let Some(settings) = &config.cloudwatch {
        use sinks::cloudwatch::*;
        let clients = CloudWatchClients::connect(settings).await;
        list.push(Arc::new(CloudWatchLogSink::new(
            clients.clone(),
            settings.clone(),
            db.clone(),
        )));
        list.push(Arc::new(CloudWatchMetricSink::new(
            clients.clone(),
            settings.clone(),
            db.clone(),
            log.clone(),
        )));
        list.push(Arc::new(CloudWatchAlarmSink::new(
            clients,
            settings.clone(),
            db.clone(),
            log.clone(),
        )));
    }
    Ok(list)
}

/// The load-test command service as configured: providers, cost guard, runner.
pub fn load_test_service(
    config: &Config,
    log: Arc<dyn EventLog>,
    runner: Option<services::load_tests::RunnerCommand>,
) -> Result<services::load_tests::LoadTestService> {
    let approval_threshold_usd = config
        .file
        .economics
        .as_ref()
        .and_then(|e| e.approval_threshold_usd)
        .unwrap_or(services::load_tests::DEFAULT_APPROVAL_THRESHOLD_USD);
    Ok(services::load_tests::LoadTestService::new(
        log,
        providers(config)?,
        approval_threshold_usd,
        services::executor::EngineOptions::default(),
    )
    .with_runner(runner))
}

/// How long start-up recovery waits for the load-test read model to reach the log's head.
const RECOVERY_CATCH_UP: Duration = Duration::from_secs(60);

/// On start-up: once the load-test read model has caught up with the log, every run it shows
/// `running` is checked against its stream, and those whose executing process is gone are
/// ended with the reason (`LoadTestService::end_orphaned_runs`).
async fn end_orphaned_runs(
    load_tests: services::load_tests::LoadTestService,
    db: ReadDb,
    log: Arc<dyn EventLog>,
) {
    let result = async {
        let head = log.head().await?;
        let projection = "load_tests";
        if let Err(err) =
            projector::query::wait_for(&db, &[projection], Some(head), RECOVERY_CATCH_UP).await
        {
            tracing::warn!(error = %err, "start-up recovery reads a load-test model that is behind the log");
        }
        let mut snapshot = projector::query::Snapshot::open(&db, &[projection]).await?;
        let runs = projector::query::load_test_runs(&mut snapshot, Some("running")).await?;
        let candidates: Vec<String> = runs["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["run_id"].as_str().map(str::to_string))
            .collect();
        let ended = load_tests.end_orphaned_runs(&candidates).await?;
        anyhow::Ok((candidates.len(), ended))
    }
    .await;
    match result {
        Ok((checked, ended)) => {
            tracing::info!(checked, ended = ?ended, "start-up recovery of load-test runs done")
        }
        Err(err) => tracing::error!(error = %err, "start-up recovery of load-test runs failed"),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}
