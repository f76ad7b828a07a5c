//! Load-test runs, command side (DESIGN §5 `/load-test-runs`, §9 runner variables): create a
//! run (validated against the catalogue and the variant registry, with the cost guard), start
//! it (inline, with a `load_test.runner_fallback`), cancel it. Reading runs is the read side's
//! job (`projector::http`).
//!
//! - [`service`]: [`LoadTestService`], which decides every command from the log streams and
//!   runs started runs through the executor engine.
//! - [`runner`]: runner mode (`STUDIO_LOAD_TEST_RUNNER_COMMAND`) and the executor identity
//!   that lets a restarted instance end runs whose process died.
//! - [`http`]: the command routes under `/admin/studio/load-test-runs`.

pub mod http;
pub mod runner;
pub mod service;

pub use http::router;
pub use runner::RunnerCommand;
pub use service::{
    estimate_cost, Cancelled, CreateRun, Created, LoadTestError, LoadTestService, Started,
    DEFAULT_APPROVAL_THRESHOLD_USD, INLINE_FALLBACK_REASON, MAX_DECISION_ATTEMPTS, RECOVERY_ACTOR,
};
