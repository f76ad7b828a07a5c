//! The HTTP application: every role's router merged, served until the shutdown signal, then the
//! event log drained so no acknowledged append is left behind.

use crate::config::Config;
use anyhow::{Context, Result};
use eventlog::EventLog;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Roles `studio serve --roles` knows.
pub const ROLES: &[&str] = &["ingest"];

/// Builds the application router for the given store and settings.
pub fn router(log: Arc<dyn EventLog>, config: &Config) -> Result<axum::Router> {
    let (admin, executor) = config.tokens()?;
    let state = ingest::AppState::new(
        log,
        ingest::IngestConfig {
            admin_token: admin.expose().to_string(),
            executor_secret: executor.expose().to_string(),
            max_body_bytes: config.max_body_bytes,
        },
    )
    .context("ingest configuration")?;
    Ok(ingest::with_fallbacks(ingest::router(state)))
}

/// Serves on `listener` until `shutdown` resolves; in-flight requests finish, then the log's
/// writer commits what it queued. Tests pass a port-0 listener and their own signal.
pub async fn run(
    listener: TcpListener,
    log: Arc<dyn EventLog>,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = router(log.clone(), config)?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backend = log.backend(), "serving");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed");
    log.close().await;
    tracing::info!("stopped; every acknowledged append is committed");
    served
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
