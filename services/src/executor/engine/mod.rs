//! The load-test executor engine: runs one load-test run's open-model schedule against a
//! provider and records it in the event log.
//!
//! - [`config`]: what a run is given ([`RunSpec`], [`EngineOptions`]) and how it ends
//!   ([`RunEnded`], [`EngineError`]).
//! - [`batcher`]: buffers the run's events and appends them in batches from a writer task.
//! - [`run`]: [`execute`], the scheduling loop.

mod batcher;
mod config;
mod run;

pub use config::{EngineError, EngineOptions, RunEnded, RunSpec};
pub use run::execute;
