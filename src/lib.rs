//! The `studio` binary's library: the composition root. It reads configuration, opens the store
//! and merges each crate's router; no domain logic lives here.
//!
//! - [`cli`]: subcommands (`serve`, `migrate`, `demo`, `bench`).
//! - [`config`]: environment → `STUDIO_CONFIG` TOML → defaults.
//! - [`app`]: the HTTP application and its graceful shutdown.
//! - [`demo`]: the main job on the embedded default, end to end over HTTP.
//! - [`bench`]: reproducible benchmarks for `BENCHMARKS.md`.

pub mod app;
pub mod bench;
pub mod bench_executor;
pub mod bench_read;
pub mod bench_sinks;
pub mod cli;
pub mod config;
pub mod demo;
