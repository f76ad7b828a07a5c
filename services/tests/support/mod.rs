//! Shared by `tests/benchmarks.rs` and `tests/routing.rs`: the command routes of the benchmark,
//! pricing and routing services merged with the read routes of `projector` on a real socket
//! (port 0), a live projector runner tailing a real log, and tiny HTTP providers speaking the
//! protocol of DESIGN §9.

#![allow(dead_code)]

use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use projector::http::ReadState;
use projector::money_hud::Thresholds;
use projector::{ReadDb, StatusBoard};
use reqwest::StatusCode;
use serde_json::{json, Value};
use services::benchmarks::{self, BenchmarkMatrixService, BenchmarkOptions};
use services::pricing::{self, PricingService};
use services::providers::{HttpProvider, Provider};
use services::routing::{self, RoutingService};
use services::variants::VariantRegistryService;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub const ADMIN: &str = "admin-test-token";
pub const EXECUTOR: &str = "executor-test-secret";

pub struct Api {
    pub base: String,
    pub log: Arc<dyn eventlog::EventLog>,
    pub benchmarks: BenchmarkMatrixService,
    pub registry: VariantRegistryService,
    pub artifact_dir: PathBuf,
    client: reqwest::Client,
    shutdown: watch::Sender<bool>,
    runner: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Api {
    /// A fresh SQLite log.
    pub async fn start(providers: BTreeMap<String, Arc<dyn Provider>>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("studio.db").display());
        Self::start_on(&url, dir, providers).await
    }

    /// A log at `url` (SQLite or PostgreSQL); `dir` holds the artifacts.
    pub async fn start_on(
        url: &str,
        dir: tempfile::TempDir,
        providers: BTreeMap<String, Arc<dyn Provider>>,
    ) -> Self {
        let log = eventlog::open(url, true).await.expect("open the event log");
        let artifact_dir = dir.path().join("artifacts");
        let benchmarks = BenchmarkMatrixService::new(
            log.clone(),
            providers,
            &artifact_dir,
            BenchmarkOptions {
                max_in_flight_per_provider: 2,
                ..BenchmarkOptions::default()
            },
        )
        .expect("the artifact directory");
        let db = ReadDb::connect(url).await.expect("connect the read side");
        let status = Arc::new(StatusBoard::default());
        let read_state = ReadState {
            db: db.clone(),
            log: log.clone(),
            status: status.clone(),
            thresholds: Thresholds::default(),
            max_wait: Duration::from_secs(10),
        };
        let tokens = ingest::Tokens::new(ADMIN, EXECUTOR).unwrap();
        let app = ingest::with_fallbacks(
            benchmarks::router(benchmarks.clone(), tokens.clone())
                .merge(pricing::router(
                    PricingService::new(log.clone()),
                    tokens.clone(),
                ))
                .merge(routing::router(
                    RoutingService::new(log.clone()),
                    tokens.clone(),
                ))
                .merge(projector::http::router(read_state, tokens)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let (shutdown, stop) = watch::channel(false);
        let runner = projector::Runner::new(db, log.clone(), projector::all_projections(), status);
        let runner = tokio::spawn(runner.run(stop));
        Self {
            base: format!("http://{addr}"),
            registry: VariantRegistryService::new(log.clone()),
            log,
            benchmarks,
            artifact_dir,
            client: reqwest::Client::new(),
            shutdown,
            runner,
            server,
            _dir: dir,
        }
    }

    pub async fn register(&self, variant_id: &str, unit_cost_usd: f64) {
        self.registry
            .register(variant_id, Some(unit_cost_usd), "tests")
            .await
            .unwrap();
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered {status} with non-JSON {text:?}: {e}"));
        (status, body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body.to_string()))
            .await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// GETs `path` once the read side has caught up with everything in the log now.
    pub async fn get_current(&self, path: &str) -> Value {
        let head = self.log.head().await.unwrap();
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, body) = self.get(&format!("{path}{sep}min_position={head}")).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    pub async fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.runner.await.unwrap();
        self.server.abort();
    }
}

/// How a provider server answers.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Answers after `delay_ms` with an output and `cost_usd`.
    Reliable { delay_ms: u64, cost_usd: f64 },
    /// Answers 503 for dispatches with an odd `seq`, like `Reliable` otherwise.
    FailsOddSeqs { cost_usd: f64 },
    /// Answers dispatches with `seq ≤ answered` like `Reliable`; never answers the others.
    HangsAfter { answered: u64, cost_usd: f64 },
}

#[derive(Default)]
struct Seen {
    dispatch_ids: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A local HTTP provider speaking DESIGN §9: `POST /dispatch {dispatch_id, variant_id, input}`
/// → 2xx `{output_uri, cost_usd}`.
pub struct ProviderServer {
    pub url: String,
    seen: Arc<Seen>,
    server: tokio::task::JoinHandle<()>,
}

/// The trailing `_<seq>` of a benchmark dispatch id.
pub fn seq_of(dispatch_id: &str) -> u64 {
    dispatch_id
        .rsplit_once('_')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {dispatch_id}"))
}

impl ProviderServer {
    pub async fn start(behaviour: Behaviour) -> Self {
        async fn dispatch(
            State((seen, behaviour)): State<(Arc<Seen>, Behaviour)>,
            Json(body): Json<Value>,
        ) -> Response {
            let id = body["dispatch_id"].as_str().unwrap_or_default().to_owned();
            seen.dispatch_ids.lock().unwrap().push(id.clone());
            let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let ok = |cost: f64| {
                Json(json!({"output_uri": format!("s3://outputs/{id}.png"), "cost_usd": cost}))
                    .into_response()
            };
            let response = match behaviour {
                Behaviour::Reliable { delay_ms, cost_usd } => {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    ok(cost_usd)
                }
                Behaviour::FailsOddSeqs { cost_usd } => {
                    if seq_of(&id) % 2 == 1 {
                        (AxumStatus::SERVICE_UNAVAILABLE, "model overloaded").into_response()
                    } else {
                        ok(cost_usd)
                    }
                }
                Behaviour::HangsAfter { answered, cost_usd } => {
                    if seq_of(&id) > answered {
                        std::future::pending::<()>().await;
                    }
                    ok(cost_usd)
                }
            };
            seen.in_flight.fetch_sub(1, Ordering::SeqCst);
            response
        }
        let seen = Arc::new(Seen::default());
        let router = Router::new()
            .route("/dispatch", post(dispatch))
            .with_state((seen.clone(), behaviour));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/dispatch", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { url, seen, server }
    }

    /// An `http` provider entry named `name` pointing here.
    pub fn provider(&self, name: &str) -> Arc<dyn Provider> {
        Arc::new(HttpProvider::new(name, &self.url, Duration::from_secs(600), None).unwrap())
    }

    /// Dispatch ids received, in arrival order.
    pub fn dispatch_ids(&self) -> Vec<String> {
        self.seen.dispatch_ids.lock().unwrap().clone()
    }

    pub fn max_in_flight(&self) -> usize {
        self.seen.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for ProviderServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
