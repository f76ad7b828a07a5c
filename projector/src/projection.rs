//! The `Projection` trait: a replayable fold of the log into its own tables.
//!
//! A projection only writes its own tables, inside the transaction that advances its
//! checkpoint, and is safe to replay from position 0: it never talks to the outside world
//! (that is what sinks are for).

use crate::docs::{Docs, TableDef};
use eventlog::{EventPayload, FoldEvent};

pub trait Projection: Send + Sync + 'static {
    /// Stable name: checkpoints, dead letters, `studio rebuild --projection NAME`.
    fn name(&self) -> &'static str;

    /// Bump when the fold changes meaning: a stored checkpoint with another version triggers a
    /// rebuild on start-up.
    fn version(&self) -> u32;

    /// The tables this projection owns.
    fn tables(&self) -> &'static [&'static TableDef];

    /// Names the documents applying `event` will read, so a batch loads them in one go.
    fn want(&self, event: &FoldEvent, payload: &EventPayload, docs: &mut Docs);

    /// Folds one event into the documents. An error marks the event as poison for this
    /// projection: retried, then dead-lettered and skipped.
    fn apply(
        &self,
        event: &FoldEvent,
        payload: &EventPayload,
        docs: &mut Docs,
    ) -> Result<(), String>;

    /// What the stored checkpoint must match for the tables to be trusted as they are.
    fn fingerprint(&self) -> String {
        let tables: Vec<String> = self.tables().iter().map(|t| t.fingerprint()).collect();
        format!("{}@v{}:{}", self.name(), self.version(), tables.join("|"))
    }
}
