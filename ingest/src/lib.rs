//! The ways in: the HTTP publish endpoint of the event log (DESIGN §3, §5), with its auth,
//! limits, and the operational endpoints.
//!
//! - `POST /v1/events` (executor secret): one envelope or an array of up to
//!   [`MAX_EVENTS_PER_REQUEST`], validated whole and appended in one atomic call; a repeated
//!   idempotency key answers with the stored event.
//! - `GET /v1/events?after_position=&limit=&wait_ms=` (admin token): the log in position order.
//! - `GET /healthz`, `GET /readyz`, `GET /metrics` (no auth).
//!
//! Layout:
//! - [`auth`]: the two bearer-token roles, compared in constant time; [`AdminAuth`] and
//!   [`require_admin`] let other crates guard `/admin/studio/*` with the same rule.
//! - [`error`]: [`ApiError`], the one JSON error shape of every endpoint.
//! - `http`: the handlers.
//! - [`metrics`]: Prometheus counters and histograms of the publish path.
//! - [`kafka`]: the Kafka ingest consumer (`STUDIO_KAFKA_BROKERS`): envelopes from a topic,
//!   appended in partition order, offsets committed only after the append is durable, bad
//!   messages to `<topic>.dead-letters`.
//!
//! [`router`] leaves the fallback to the composition root, because axum refuses to merge two
//! routers that both have one: apply [`with_fallbacks`] once, after merging every crate's router.

pub mod auth;
pub mod error;
mod http;
pub mod kafka;
pub mod metrics;

pub use auth::{require_admin, AdminAuth, ExecutorAuth, Role, TokenError, Tokens};
pub use error::{ApiError, ErrorCode};
pub use http::{method_not_allowed, not_found, DEFAULT_READ_LIMIT, MAX_READ_LIMIT, MAX_WAIT_MS};
pub use metrics::IngestMetrics;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use axum::Router;
use eventlog::EventLog;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Most events one `POST /v1/events` may carry.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// Largest request body accepted when the configuration does not say.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What the ingest endpoints need to know. Secrets are never printed.
#[derive(Clone)]
pub struct IngestConfig {
    /// `STUDIO_ADMIN_TOKEN`.
    pub admin_token: String,
    /// `STUDIO_EXECUTOR_SECRET`.
    pub executor_secret: String,
    pub max_body_bytes: usize,
}

impl IngestConfig {
    /// The two tokens, with the default body limit.
    pub fn new(admin_token: impl Into<String>, executor_secret: impl Into<String>) -> Self {
        Self {
            admin_token: admin_token.into(),
            executor_secret: executor_secret.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl std::fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestConfig")
            .field("admin_token", &"<redacted>")
            .field("executor_secret", &"<redacted>")
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("max_body_bytes must be at least 1")]
    ZeroBodyLimit,
}

/// The state every ingest handler shares. Cheap to clone: axum clones it for every request,
/// so it is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

struct Shared {
    log: Arc<dyn EventLog>,
    tokens: Tokens,
    max_body_bytes: usize,
    metrics: IngestMetrics,
    /// Shared with whoever registered metrics before us; read-only once serving, so no lock.
    registry: Arc<Registry>,
}

impl AppState {
    /// A state with its own metrics registry holding the ingest metrics.
    pub fn new(log: Arc<dyn EventLog>, config: IngestConfig) -> Result<Self, ConfigError> {
        Self::with_registry(log, config, Registry::default())
    }

    /// A state whose `/metrics` also serves whatever `registry` already holds.
    pub fn with_registry(
        log: Arc<dyn EventLog>,
        config: IngestConfig,
        mut registry: Registry,
    ) -> Result<Self, ConfigError> {
        let tokens = Tokens::new(&config.admin_token, &config.executor_secret)?;
        if config.max_body_bytes == 0 {
            return Err(ConfigError::ZeroBodyLimit);
        }
        let metrics = IngestMetrics::register(&mut registry);
        Ok(Self {
            shared: Arc::new(Shared {
                log,
                tokens,
                max_body_bytes: config.max_body_bytes,
                metrics,
                registry: Arc::new(registry),
            }),
        })
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.shared.log
    }

    pub fn max_body_bytes(&self) -> usize {
        self.shared.max_body_bytes
    }

    pub fn tokens(&self) -> &Tokens {
        &self.shared.tokens
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.shared.metrics
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }
}

impl FromRef<AppState> for Tokens {
    fn from_ref(state: &AppState) -> Self {
        state.shared.tokens.clone()
    }
}

/// The ingest endpoints. Refusals on `/v1/events` are counted by code in
/// `studio_ingest_refusals_total`.
pub fn router(state: AppState) -> Router {
    let events = Router::new()
        .route(
            "/v1/events",
            post(http::publish)
                .get(http::read_events)
                // The publish handler reads the body itself, with the configured limit.
                .layer(DefaultBodyLimit::disable()),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.shared.metrics.clone(),
            metrics::count_refusals,
        ));
    Router::new()
        .merge(events)
        .merge(ops_router(state.clone()))
        .with_state(state)
}

/// `/healthz`, `/readyz` and `/metrics` alone: for an instance that runs other roles but does
/// not take publishes.
pub fn ops_router<S>(state: AppState) -> Router<S> {
    Router::new()
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .with_state(state)
}

/// Answers unknown paths (404) and wrong methods (405) with [`ApiError`]s. Apply once to the
/// fully merged application router.
pub fn with_fallbacks(router: Router) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}
