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
        /// Comma-separated roles to run in this process.
        #[arg(long, value_delimiter = ',', default_value = "ingest")]
        roles: Vec<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Run the main job on the embedded default: a throw-away server on SQLite, events
    /// published and read back over HTTP, and what an operator would look at.
    Demo(demo::DemoArgs),
    /// Benchmarks whose results go into BENCHMARKS.md.
    Bench(bench::BenchArgs),
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
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

async fn serve(roles: Vec<String>) -> Result<()> {
    for role in &roles {
        if !app::ROLES.contains(&role.as_str()) {
            bail!(
                "--roles: unknown role {role:?}; known roles: {}",
                app::ROLES.join(", ")
            );
        }
    }
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
    app::run(listener, log, &config, app::shutdown_signal()).await
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
