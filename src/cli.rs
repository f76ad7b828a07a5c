//! Subcommands. Each one loads the configuration, does its job and exits non-zero with a clear
//! message when it cannot.

use crate::config::{Config, ProcessEnv};
use crate::{app, bench, demo};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "studio",
    version,
    about = "studio-ledger: the event-sourced backend of the AI effects studio"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (needs STUDIO_ADMIN_TOKEN and STUDIO_EXECUTOR_SECRET).
    Serve {
        /// Comma-separated roles to run in this process (ingest, projector, query); all by default.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Execute one started load-test run in this process (runner mode: what
    /// STUDIO_LOAD_TEST_RUNNER_COMMAND launches). Publishes through the same log, stops on a
    /// cancel or a critical alarm, and exits when the run has ended.
    RunLoadTest {
        #[arg(long)]
        run_id: String,
        /// How long to wait for the run's start to name this process.
        #[arg(long, default_value_t = 30)]
        wait_s: u64,
    },
    /// Replay the log from position 0 into fresh read-model tables and swap them in; works with
    /// the server stopped or serving, and never re-fires side effects.
    Rebuild {
        /// Only this projection (repeatable); all of them by default.
        #[arg(long = "projection")]
        projections: Vec<String>,
    },
    /// Events a projection or a sink could not handle.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Action logs: what went wrong and what to do about it.
    #[command(subcommand)]
    ActionLogs(ActionLogsCommand),
    /// The CloudWatch dashboard generated from the sinks' mapping.
    #[command(subcommand)]
    Dashboards(DashboardsCommand),
    /// Run the main job on the embedded default: a throw-away server on SQLite, events
    /// published and read back over HTTP, and what an operator would look at.
    Demo(demo::DemoArgs),
    /// Benchmarks whose results go into BENCHMARKS.md.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum DeadLettersCommand {
    /// List dead letters of projections and sinks (JSON lines; sink letters carry `sink`).
    List {
        #[arg(long, conflicts_with = "sink")]
        projection: Option<String>,
        #[arg(long)]
        sink: Option<String>,
        /// Include letters already replayed.
        #[arg(long)]
        all: bool,
    },
    /// Handle dead-lettered events again: one position, or every open letter of a projection
    /// or a sink.
    Replay {
        #[arg(long, required_unless_present = "sink", conflicts_with = "sink")]
        projection: Option<String>,
        #[arg(long)]
        sink: Option<String>,
        #[arg(long)]
        position: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
enum ActionLogsCommand {
    /// List action logs (JSON lines), newest first, or oldest first after --since-position.
    List {
        #[arg(long, value_parser = ["info", "warn", "critical"])]
        severity: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        subject: Option<String>,
        /// Only those nobody acknowledged yet.
        #[arg(long)]
        unacknowledged: bool,
        #[arg(long)]
        since_position: Option<i64>,
        #[arg(long, default_value_t = sinks::action_logs::DEFAULT_LIMIT)]
        limit: usize,
    },
    /// Acknowledge one (appends `action_log.acknowledged`).
    Ack {
        action_log_id: String,
        #[arg(long, default_value = "operator")]
        actor: String,
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DashboardsCommand {
    /// Print the `studio-pipeline` dashboard JSON.
    Show,
    /// Put it to CloudWatch (needs `[cloudwatch]` or STUDIO_CLOUDWATCH_ENDPOINT).
    Push,
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match dispatch(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Serve { roles } => serve(roles).await,
        Command::Migrate => migrate().await,
        Command::RunLoadTest { run_id, wait_s } => run_load_test(&run_id, wait_s).await,
        Command::Rebuild { projections } => rebuild(projections).await,
        Command::DeadLetters(command) => dead_letters(command).await,
        Command::ActionLogs(command) => action_logs(command).await,
        Command::Dashboards(command) => dashboards(command).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

async fn serve(roles: Vec<String>) -> Result<()> {
    let roles = app::Roles::parse(&roles)?;
    let config = Config::load(&ProcessEnv)?;
    config.tokens()?;
    let log = eventlog::open(&config.database_url, true)
        .await
        .with_context(|| {
            format!(
                "cannot open the event log at {}",
                redact(&config.database_url)
            )
        })?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (STUDIO_LISTEN)", config.listen))?;
    app::run(listener, log, &config, &roles, app::shutdown_signal()).await
}

async fn run_load_test(run_id: &str, wait_s: u64) -> Result<()> {
    let config = Config::load(&ProcessEnv)?;
    let log = eventlog::open(&config.database_url, true)
        .await
        .with_context(|| {
            format!(
                "cannot open the event log at {}",
                redact(&config.database_url)
            )
        })?;
    let service = app::load_test_service(&config, log.clone(), None)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let alarms = tokio::spawn(service.clone().watch_alarms(stop_rx));
    let ended = service
        .execute_as_runner(run_id, std::time::Duration::from_secs(wait_s))
        .await;
    let _ = stop_tx.send(true);
    let _ = alarms.await;
    log.close().await;
    let ended = ended.with_context(|| format!("load-test run {run_id}"))?;
    tracing::info!(%run_id, ?ended, "runner finished");
    Ok(())
}

async fn open_read_side() -> Result<(
    Config,
    std::sync::Arc<dyn eventlog::EventLog>,
    projector::ReadDb,
)> {
    let config = Config::load(&ProcessEnv)?;
    let log = eventlog::open(&config.database_url, true)
        .await
        .with_context(|| {
            format!(
                "cannot open the event log at {}",
                redact(&config.database_url)
            )
        })?;
    let db = projector::ReadDb::connect(&config.database_url)
        .await
        .context("open the read models")?;
    Ok((config, log, db))
}

async fn rebuild(names: Vec<String>) -> Result<()> {
    let projections = projector::projections::select(&names).map_err(anyhow::Error::msg)?;
    let (_config, log, db) = open_read_side().await?;
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let list: Vec<&dyn projector::Projection> = projections.iter().map(|p| p.as_ref()).collect();
    let names: Vec<&str> = list.iter().map(|p| p.name()).collect();
    let show = |p: projector::rebuild::Progress| {
        if interactive {
            eprint!(
                "\rrebuilding: position {}/{} · {:.0} events/s · ETA {:.0} s   ",
                p.position,
                p.head,
                p.events_per_s(),
                p.eta_s()
            );
        }
    };
    let report = projector::rebuild::rebuild_all(&db, log.as_ref(), &list, &show)
        .await
        .context("rebuild failed; the live tables are untouched")?;
    if interactive {
        eprintln!();
    }
    println!(
        "rebuilt {}: {} events to position {} in {:.2} s ({:.0} events/s), {} dead letter(s)",
        names.join(", "),
        report.events,
        report.position,
        report.elapsed_s,
        report.events as f64 / report.elapsed_s.max(1e-9),
        report.dead_letters
    );
    log.close().await;
    Ok(())
}

async fn dead_letters(command: DeadLettersCommand) -> Result<()> {
    let (config, log, db) = open_read_side().await?;
    match command {
        DeadLettersCommand::List {
            projection,
            sink,
            all,
        } => {
            if sink.is_none() {
                for letter in
                    projector::checkpoint::dead_letters(&db, projection.as_deref(), all).await?
                {
                    println!("{}", serde_json::to_string(&letter)?);
                }
            }
            if projection.is_none() {
                for letter in
                    sinks::checkpoint::list_dead_letters(&db, sink.as_deref(), all).await?
                {
                    println!("{}", serde_json::to_string(&letter)?);
                }
            }
        }
        DeadLettersCommand::Replay {
            sink: Some(sink),
            position,
            ..
        } => {
            let sink_list = app::build_sinks(&config, &db, &log).await?;
            let outcomes = match position {
                Some(p) => vec![(
                    p,
                    sinks::runner::replay_dead_letter(&db, log.as_ref(), &sink_list, &sink, p)
                        .await?,
                )],
                None => {
                    sinks::runner::replay_all_dead_letters(&db, log.as_ref(), &sink_list, &sink)
                        .await?
                }
            };
            let mut failing = 0;
            for (position, outcome) in outcomes {
                match outcome {
                    sinks::runner::ReplayOutcome::Delivered => {
                        println!("{sink} {position}: delivered")
                    }
                    sinks::runner::ReplayOutcome::StillFailing(error) => {
                        failing += 1;
                        println!("{sink} {position}: still failing: {error}");
                    }
                }
            }
            if failing > 0 {
                bail!("{failing} dead letter(s) still fail; they stay listed");
            }
        }
        DeadLettersCommand::Replay {
            projection,
            position,
            ..
        } => {
            let projection = projection.context("name --projection or --sink")?;
            let positions: Vec<i64> = match position {
                Some(p) => vec![p],
                None => projector::checkpoint::dead_letters(&db, Some(&projection), false)
                    .await?
                    .into_iter()
                    .map(|l| l.position)
                    .collect(),
            };
            let mut failing = 0;
            for position in positions {
                match projector::replay::replay(&db, log.as_ref(), &projection, position).await? {
                    projector::replay::ReplayOutcome::Applied => {
                        println!("{projection} {position}: applied")
                    }
                    projector::replay::ReplayOutcome::StillFailing(error) => {
                        failing += 1;
                        println!("{projection} {position}: still failing: {error}");
                    }
                }
            }
            if failing > 0 {
                bail!("{failing} dead letter(s) still fail; they stay listed");
            }
        }
    }
    log.close().await;
    Ok(())
}

async fn action_logs(command: ActionLogsCommand) -> Result<()> {
    let (_config, log, db) = open_read_side().await?;
    match command {
        ActionLogsCommand::List {
            severity,
            kind,
            subject,
            unacknowledged,
            since_position,
            limit,
        } => {
            let severity = severity
                .map(|s| serde_json::from_value(serde_json::Value::String(s)))
                .transpose()?;
            let filter = sinks::action_logs::ActionLogFilter {
                severity,
                kind,
                subject,
                unacknowledged,
                since_position,
                limit: limit.clamp(1, sinks::action_logs::MAX_LIMIT),
            };
            let page = sinks::action_logs::list_action_logs(&db, &filter).await?;
            for entry in &page.action_logs {
                println!("{}", serde_json::to_string(entry)?);
            }
            eprintln!(
                "{} action log(s) as of position {}",
                page.action_logs.len(),
                page.as_of_position
            );
        }
        ActionLogsCommand::Ack {
            action_log_id,
            actor,
            note,
        } => {
            let acked =
                sinks::action_logs::acknowledge(&db, log.as_ref(), &action_log_id, &actor, note)
                    .await?;
            println!("{}", serde_json::to_string(&acked)?);
        }
    }
    log.close().await;
    Ok(())
}

async fn dashboards(command: DashboardsCommand) -> Result<()> {
    let config = Config::load(&ProcessEnv)?;
    let settings = config.cloudwatch.clone().unwrap_or_default();
    let clients = sinks::cloudwatch::CloudWatchClients::connect(&settings).await;
    match command {
        DashboardsCommand::Show => {
            let region = sinks::cloudwatch::dashboard::client_region(&clients);
            println!("{}", sinks::cloudwatch::dashboard_json(&settings, &region));
        }
        DashboardsCommand::Push => {
            if config.cloudwatch.is_none() {
                bail!("CloudWatch is not configured: set STUDIO_CLOUDWATCH_ENDPOINT or add a [cloudwatch] section to studio.toml");
            }
            let body = sinks::cloudwatch::push_dashboard(&clients, &settings)
                .await
                .map_err(|e| anyhow::anyhow!("put dashboard {}: {e}", settings.dashboard_name))?;
            println!("{body}");
            eprintln!("pushed dashboard {}", settings.dashboard_name);
        }
    }
    Ok(())
}

async fn migrate() -> Result<()> {
    let config = Config::load(&ProcessEnv)?;
    let log = eventlog::open(&config.database_url, true)
        .await
        .with_context(|| format!("cannot migrate {}", redact(&config.database_url)))?;
    log.ready().await?;
    log.close().await;
    println!(
        "migrated {} ({})",
        redact(&config.database_url),
        log.backend()
    );
    Ok(())
}

/// A database URL without its password, fit for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/studio"),
            "postgres://app:***@db:5432/studio"
        );
        assert_eq!(redact("sqlite://studio.db"), "sqlite://studio.db");
        assert_eq!(
            redact("postgres://app@db/studio"),
            "postgres://app@db/studio"
        );
    }
}
