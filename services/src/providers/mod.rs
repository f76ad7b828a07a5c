//! Provider adapters: the one trait the executor and the benchmark runner dispatch through, and
//! its two implementations (DESIGN §9).
//!
//! - [`provider`]: the [`Provider`] trait, the [`DispatchRequest`] it is given (also the JSON
//!   body of the `http` protocol) and the [`DispatchResult`] it answers with.
//! - [`simulated`]: an in-process provider whose outcome, latency and cost depend only on its
//!   seed and the dispatch id.
//! - [`http`]: a real provider behind `POST url`; timeouts, non-2xx answers and malformed bodies
//!   become failed or timed-out dispatches with the reason recorded.
//! - [`config`]: the serde-tagged [`ProviderSpec`] and [`build_providers`], the single place
//!   provider entries become providers.

pub mod config;
pub mod http;
pub mod provider;
pub mod simulated;

pub use config::{build_providers, ProviderSpec};
pub use http::{HttpProvider, HttpProviderError};
pub use provider::{DispatchFuture, DispatchInput, DispatchRequest, DispatchResult, Provider};
pub use simulated::{SimulatedProvider, SimulatedSettings};
