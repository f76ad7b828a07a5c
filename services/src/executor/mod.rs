//! The scenario executor's building blocks.

pub mod aggregator;
pub mod planner;
