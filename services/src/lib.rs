//! The event producers and the command side of the admin API.
//!
//! - [`variants`]: the variant registry service (register, retire) and its routes.
//! - [`load_tests`]: the load-test run commands (create with the cost guard, start inline with a
//!   runner fallback, cancel) and their routes.
//! - [`executor`]: the load-test stage rate planner, the metrics aggregator behind the stop
//!   condition, and the engine that runs a load test against a provider (open model, missed
//!   arrivals counted, batched appends, cancel, stop condition).
//! - [`providers`]: the provider trait and its `simulated` and `http` adapters, built from the
//!   `[providers.*]` entries.
//! - [`benchmarks`]: benchmark matrix runs (create, background execution with bounded
//!   concurrency per provider, per-variant dispatch artifacts with their sha256, resume of
//!   half-done runs at start-up) and their route.
//! - [`routing`]: routing bindings by compare-and-set on the scope's stream (apply, rollback as
//!   a stack of applied variants) and their routes.
//! - [`quality`]: the `[quality]` evaluators (Gemini judge with retries, fallback and safety
//!   blocks; deterministic heuristic) and the command that judges a benchmark run's outputs.
//! - [`pricing`]: the price per successful output of an effect revision and its route.

pub mod benchmarks;
mod body;
pub mod executor;
pub mod load_tests;
pub mod pricing;
pub mod providers;
pub mod quality;
pub mod routing;
pub mod variants;
