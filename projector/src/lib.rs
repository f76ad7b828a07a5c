//! Replayable read models of the event log, the runner that keeps them current, rebuilds, dead
//! letters, and the read side of the admin API.
//!
//! - [`projection`]: the `Projection` trait (replay-safe, writes only its own tables).
//! - [`projections`]: the read models, registered in [`projections::all_projections`].
//! - [`docs`]: typed row documents and the per-batch working set.
//! - [`runner`]: catch-up and live tail, checkpoints in the same transaction, poison retries.
//! - [`rebuild`]: replay into shadow tables and swap; [`replay`]: re-apply a dead letter.
//! - [`metrics`]: projection health in Prometheus.
//! - [`checkpoint`]: checkpoints, table creation, dead letters.
//! - [`ownership`]: one owner per projection on PostgreSQL (advisory locks).
//! - [`query`] and [`http`]: answers with `as_of_position`, `min_position` waits.
//! - [`money_hud`]: the economics decision, a pure function of the read models.
//! - [`db`], [`hist`], [`status`]: the database enum, latency histograms, projection health.

pub mod checkpoint;
pub mod db;
pub mod dead_letters;
pub mod docs;
pub mod hist;
pub mod http;
pub mod metrics;
pub mod money_hud;
pub mod ownership;
pub mod projection;
pub mod projections;
pub mod query;
pub mod rebuild;
pub mod replay;
pub mod runner;
pub mod status;

pub use db::ReadDb;
pub use projection::Projection;
pub use projections::all_projections;
pub use runner::Runner;
pub use status::StatusBoard;
