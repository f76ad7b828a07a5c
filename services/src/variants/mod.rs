//! The variant registry (DESIGN §4 `variant.*`, §5 `/variant-registry`): register and retire
//! variants by appending to their `variant-{id}` stream. Listing and reading variants is the
//! read side's job (`projector::http`).
//!
//! - [`service`]: [`VariantRegistryService`], which decides every command from the log stream.
//! - [`http`]: the command routes under `/admin/studio/variant-registry`.

pub mod http;
pub mod service;

pub use http::router;
pub use service::{
    Registration, RegistryError, Retirement, VariantRegistryService, MAX_DECISION_ATTEMPTS,
};
