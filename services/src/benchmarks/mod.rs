//! Benchmark matrix runs, command side (DESIGN §4 `benchmark.*`, §5 `/benchmark-matrix-runs`):
//! compare variants on a dataset, inputs × repetitions dispatches per variant through the
//! provider adapters, each variant's dispatches and outputs kept as an artifact whose sha256 is
//! in the log. Reading runs is the read side's job (`projector::http`).
//!
//! - [`service`]: [`BenchmarkMatrixService`] — create (validated against the variant registry
//!   and the configured providers), wait, and resume of runs a previous process left unfinished.
//! - [`runner`]: executes the rest of a run from its folded stream (bounded concurrency per
//!   provider, idempotent events, artifacts, completions).
//! - [`stream`]: a run's stream folded, and the deterministic item and dispatch ids it plans.
//! - [`artifact`]: the `benchmark_variant_dispatches` document, its sha256 and atomic write.
//! - [`writer`]: the run's batched event writer.
//! - [`http`]: the command route `POST /admin/studio/benchmark-matrix-runs`.

pub mod artifact;
pub mod http;
pub mod runner;
pub mod service;
pub mod stream;
mod writer;

pub use artifact::{DispatchesArtifact, ARTIFACT_TYPE};
pub use http::router;
pub use runner::{EndedItem, RunOutcome};
pub use service::{
    BenchmarkError, BenchmarkMatrixService, BenchmarkOptions, CreateBenchmarkRun,
    CreatedBenchmarkRun, ResumedRun, RunHandle, DEFAULT_MAX_IN_FLIGHT_PER_PROVIDER,
};
