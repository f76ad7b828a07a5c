//! The event log: the contract every studio-ledger component writes to or reads from.
//!
//! - [`envelope`]: what producers publish ([`ValidatedEvent`]) and readers get ([`RecordedEvent`]).
//! - [`catalogue`]: the v1 event types as typed payloads, with streams, severities and checks.
//! - [`ids`]: the variant, dispatch and benchmark-run id grammars.
//! - [`upcast`]: schema versions; older payloads are brought up to date on read.
//! - [`validation`]: refusals that name the field at fault.
//! - [`testkit`]: real stores for tests (throw-away PostgreSQL cluster, temporary SQLite).
//! - [`store`]: the [`EventLog`] trait, group commit, and the SQLite and PostgreSQL stores
//!   (see [`store::postgres`] for how positions stay trustworthy under concurrent writers).

pub mod catalogue;
pub mod envelope;
pub mod ids;
pub mod store;
pub mod testkit;
pub mod upcast;
pub mod validation;

pub use catalogue::{EventPayload, Severity};
pub use envelope::{FoldEvent, RecordedEvent, ValidatedEvent};
pub use store::{open, wait_for_position, Appended, EventLog, StoreError};
pub use validation::{ValidationError, Violation};
