//! Routing bindings, command side (DESIGN §4 `routing.*`, §5 `/routing/apply`,
//! `/routing/rollback`): which variant serves an (effect revision, stage) scope, changed only by
//! compare-and-set on the scope's stream `routing-{effect_revision_id}:{stage}`, with a
//! deterministic undo. Reading bindings is the read side's job (`projector::http`,
//! `GET /admin/studio/routing/bindings`).
//!
//! - [`service`]: [`RoutingService`], which decides apply and rollback from the scope's stream
//!   and the variant's stream, and the rollback semantics.
//! - [`http`]: the command routes under `/admin/studio/routing`.

pub mod http;
pub mod service;

pub use http::router;
pub use service::{
    ApplyBinding, BindingChange, RollbackBinding, RoutingError, RoutingService, PRODUCER,
};
