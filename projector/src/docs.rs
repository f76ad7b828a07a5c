//! Read-model rows as typed documents.
//!
//! Every read-model table has a key column, a few plain columns that operators can query with
//! SQL (named as the seed plan names them), and `doc`: the whole row as JSON. Projections fold
//! events into typed documents held in a [`Docs`] working set; the runner loads what a batch
//! touches in one query per table and writes back only what changed, in the transaction that
//! advances the checkpoint.

use crate::db::{ReadTx, SqlValue};
use serde::{de::DeserializeOwned, Serialize};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Keys per `IN (…)` look-up.
const KEYS_PER_LOAD: usize = 500;
/// Clean documents kept between batches before the cache is emptied.
const MAX_CACHED_DOCS: usize = 200_000;

/// A read-model table.
#[derive(Debug)]
pub struct TableDef {
    pub name: &'static str,
    pub key: &'static str,
    /// Plain columns besides the key and `doc`: `(name, SQL type)`.
    pub columns: &'static [(&'static str, &'static str)],
    /// Columns to index, one index each.
    pub indexes: &'static [&'static str],
}

impl TableDef {
    pub fn create_sql(&self, physical: &str, index_suffix: &str) -> Vec<String> {
        let mut cols = vec![format!("{} TEXT PRIMARY KEY", self.key)];
        cols.extend(self.columns.iter().map(|(name, ty)| format!("{name} {ty}")));
        cols.push("doc TEXT NOT NULL".into());
        let mut sql = vec![format!("CREATE TABLE {physical} ({})", cols.join(", "))];
        for column in self.indexes {
            sql.push(format!(
                "CREATE INDEX {physical}_{column}_{index_suffix} ON {physical} ({column})"
            ));
        }
        sql
    }

    fn upsert_sql(&self, physical: &str) -> String {
        let names: Vec<&str> = std::iter::once(self.key)
            .chain(self.columns.iter().map(|(n, _)| *n))
            .chain(["doc"])
            .collect();
        let params: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let updates: Vec<String> = names[1..]
            .iter()
            .map(|n| format!("{n} = excluded.{n}"))
            .collect();
        format!(
            "INSERT INTO {physical} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
            names.join(", "),
            params.join(", "),
            self.key,
            updates.join(", ")
        )
    }

    /// Fingerprint of the schema, stored with the checkpoint: when it changes, the projection
    /// is rebuilt.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}({}:{};{})",
            self.name,
            self.key,
            self.columns
                .iter()
                .map(|(n, t)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(","),
            self.indexes.join(",")
        )
    }
}

/// A typed read-model row.
pub trait Doc: Serialize + DeserializeOwned + Send + Sync + 'static {
    const TABLE: &'static TableDef;
    fn key(&self) -> String;
    /// Values of [`TableDef::columns`], in order.
    fn columns(&self) -> Vec<SqlValue>;
}

type Encode = fn(&dyn Any) -> Result<Vec<SqlValue>, serde_json::Error>;
type Decode = fn(&str) -> Result<Box<dyn Any + Send + Sync>, serde_json::Error>;
/// Keys to load from one table, with the functions that decode and encode its documents.
type Wanted = (BTreeSet<String>, Decode, Encode);

fn encode<T: Doc>(doc: &dyn Any) -> Result<Vec<SqlValue>, serde_json::Error> {
    let doc = doc.downcast_ref::<T>().expect("slot holds its own type");
    let mut values = vec![SqlValue::from(doc.key())];
    values.extend(doc.columns());
    values.push(SqlValue::from(serde_json::to_string(doc)?));
    Ok(values)
}

struct Slot {
    doc: Option<Box<dyn Any + Send + Sync>>,
    dirty: bool,
    encode: Encode,
}

/// The documents a batch reads and writes, cached between batches while this runner owns the
/// projection.
#[derive(Default)]
pub struct Docs {
    slots: HashMap<(&'static str, String), Slot>,
    wanted: BTreeMap<&'static str, Wanted>,
}

fn decode<T: Doc>(json: &str) -> Result<Box<dyn Any + Send + Sync>, serde_json::Error> {
    Ok(Box::new(serde_json::from_str::<T>(json)?))
}

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored document is not readable: {0}")]
    Decode(#[from] serde_json::Error),
}

impl Docs {
    /// Asks for a document to be loaded before the batch is applied.
    pub fn want<T: Doc>(&mut self, key: impl Into<String>) {
        let key = key.into();
        if self.slots.contains_key(&(T::TABLE.name, key.clone())) {
            return;
        }
        self.wanted
            .entry(T::TABLE.name)
            .or_insert_with(|| (BTreeSet::new(), decode::<T>, encode::<T>))
            .0
            .insert(key);
    }

    /// Loads every wanted document not yet cached. `physical` maps a table to the name it has in
    /// this run (live, or the rebuild's shadow).
    pub async fn load(
        &mut self,
        tx: &mut ReadTx,
        physical: &(dyn Fn(&str) -> String + Sync),
        defs: &[&'static TableDef],
    ) -> Result<(), DocsError> {
        for (table, (keys, decode, encode)) in std::mem::take(&mut self.wanted) {
            let def = defs
                .iter()
                .find(|d| d.name == table)
                .expect("projection lists its tables");
            let keys: Vec<String> = keys.into_iter().collect();
            for chunk in keys.chunks(KEYS_PER_LOAD) {
                let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "SELECT {key}, doc FROM {t} WHERE {key} IN ({})",
                    params.join(", "),
                    key = def.key,
                    t = physical(table)
                );
                let values: Vec<SqlValue> =
                    chunk.iter().map(|k| SqlValue::from(k.clone())).collect();
                let mut found: HashMap<String, String> =
                    tx.text_pairs(&sql, &values).await?.into_iter().collect();
                for key in chunk {
                    let doc = match found.remove(key) {
                        Some(json) => Some(decode(&json)?),
                        None => None,
                    };
                    self.slots.insert(
                        (table, key.clone()),
                        Slot {
                            doc,
                            dirty: false,
                            encode,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Treats every wanted document not yet cached as absent, without asking a database: the
    /// in-memory fold that benchmarks compare a rebuild with.
    pub fn assume_absent(&mut self) {
        for (table, (keys, _, encode)) in std::mem::take(&mut self.wanted) {
            for key in keys {
                self.slots.entry((table, key)).or_insert(Slot {
                    doc: None,
                    dirty: false,
                    encode,
                });
            }
        }
    }

    /// Number of documents held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn get<T: Doc>(&self, key: &str) -> Option<&T> {
        self.slots
            .get(&(T::TABLE.name, key.to_string()))
            .and_then(|s| s.doc.as_ref())
            .and_then(|d| d.downcast_ref::<T>())
    }

    /// The document for `key`, marked changed. `None` when it does not exist.
    pub fn get_mut<T: Doc>(&mut self, key: &str) -> Option<&mut T> {
        let slot = self.slots.get_mut(&(T::TABLE.name, key.to_string()))?;
        let doc = slot.doc.as_mut()?.downcast_mut::<T>()?;
        slot.dirty = true;
        Some(doc)
    }

    /// Stores a new or replaced document.
    pub fn put<T: Doc>(&mut self, doc: T) {
        let key = (T::TABLE.name, doc.key());
        self.slots.insert(
            key,
            Slot {
                doc: Some(Box::new(doc)),
                dirty: true,
                encode: encode::<T>,
            },
        );
    }

    /// Writes every changed document, then forgets clean ones if the cache grew large.
    pub async fn flush(
        &mut self,
        tx: &mut ReadTx,
        physical: &(dyn Fn(&str) -> String + Sync),
        defs: &[&'static TableDef],
    ) -> Result<(), DocsError> {
        let mut dirty: Vec<(&(&'static str, String), &mut Slot)> =
            self.slots.iter_mut().filter(|(_, s)| s.dirty).collect();
        // Deterministic write order keeps lock order stable between instances.
        dirty.sort_by(|a, b| a.0.cmp(b.0));
        for ((table, _), slot) in dirty {
            let def = defs
                .iter()
                .find(|d| d.name == *table)
                .expect("projection lists its tables");
            if let Some(doc) = &slot.doc {
                let values = (slot.encode)(doc.as_ref())?;
                tx.execute(&def.upsert_sql(&physical(table)), &values)
                    .await?;
            }
            slot.dirty = false;
        }
        if self.slots.len() > MAX_CACHED_DOCS {
            self.slots.clear();
        }
        Ok(())
    }

    /// Forgets everything: after a failed transaction, or when another writer may have changed
    /// the tables.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.wanted.clear();
    }
}
