//! The scenario executor's building blocks.

pub mod aggregator;
pub mod engine;
pub mod planner;

pub use engine::{execute, EngineError, EngineOptions, RunEnded, RunSpec};
