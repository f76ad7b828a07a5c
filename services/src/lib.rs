//! The event producers and the command side of the admin API.
//!
//! - [`variants`]: the variant registry service (register, retire) and its routes.
//! - [`executor`]: the load-test stage rate planner and the metrics aggregator behind the stop
//!   condition.
//! - [`providers`]: the provider trait and its `simulated` and `http` adapters, built from the
//!   `[providers.*]` entries.

pub mod executor;
pub mod providers;
pub mod variants;
