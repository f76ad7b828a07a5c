//! `routing`: the active binding per (effect revision, stage) in `routing_bindings`, with its
//! version and full history.

use crate::db::SqlValue;
use crate::docs::{Doc, Docs, TableDef};
use crate::projection::Projection;
use eventlog::{EventPayload, FoldEvent};
use serde::{Deserialize, Serialize};

pub const ROUTING_BINDINGS: TableDef = TableDef {
    name: "routing_bindings",
    key: "scope",
    columns: &[
        ("effect_revision_id", "TEXT"),
        ("stage", "TEXT"),
        ("variant_id", "TEXT"),
        ("version", "BIGINT"),
    ],
    indexes: &["effect_revision_id"],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingChange {
    pub version: u64,
    pub action: String,
    pub variant_id: String,
    pub previous_variant_id: Option<String>,
    pub reason: String,
    pub actor: String,
    pub benchmark_run_id: Option<String>,
    pub at: String,
    pub position: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub effect_revision_id: String,
    pub stage: String,
    pub variant_id: String,
    pub version: u64,
    pub applied_at: String,
    pub history: Vec<BindingChange>,
}

pub fn scope_key(effect_revision_id: &str, stage: &str) -> String {
    format!("{effect_revision_id}:{stage}")
}

impl Doc for Binding {
    const TABLE: &'static TableDef = &ROUTING_BINDINGS;
    fn key(&self) -> String {
        scope_key(&self.effect_revision_id, &self.stage)
    }
    fn columns(&self) -> Vec<SqlValue> {
        vec![
            self.effect_revision_id.clone().into(),
            self.stage.clone().into(),
            self.variant_id.clone().into(),
            self.version.into(),
        ]
    }
}

pub struct RoutingProjection;

impl Projection for RoutingProjection {
    fn name(&self) -> &'static str {
        "routing"
    }
    fn version(&self) -> u32 {
        1
    }
    fn tables(&self) -> &'static [&'static TableDef] {
        &[&ROUTING_BINDINGS]
    }

    fn want(&self, _event: &FoldEvent, payload: &EventPayload, docs: &mut Docs) {
        match payload {
            EventPayload::BindingApplied(p) => {
                docs.want::<Binding>(scope_key(&p.effect_revision_id, &p.stage))
            }
            EventPayload::BindingRolledBack(p) => {
                docs.want::<Binding>(scope_key(&p.effect_revision_id, &p.stage))
            }
            _ => {}
        }
    }

    fn apply(
        &self,
        event: &FoldEvent,
        payload: &EventPayload,
        docs: &mut Docs,
    ) -> Result<(), String> {
        let (er, stage, version, change) = match payload {
            EventPayload::BindingApplied(p) => (
                &p.effect_revision_id,
                &p.stage,
                p.binding_version,
                BindingChange {
                    version: p.binding_version,
                    action: "applied".into(),
                    variant_id: p.variant_id.clone(),
                    previous_variant_id: p.previous_variant_id.clone(),
                    reason: p.reason.clone(),
                    actor: p.actor.clone(),
                    benchmark_run_id: p.evidence.as_ref().map(|e| e.benchmark_run_id.clone()),
                    at: event.occurred_at.clone(),
                    position: event.position,
                },
            ),
            EventPayload::BindingRolledBack(p) => (
                &p.effect_revision_id,
                &p.stage,
                p.binding_version,
                BindingChange {
                    version: p.binding_version,
                    action: "rolled_back".into(),
                    variant_id: p.to_variant_id.clone(),
                    previous_variant_id: Some(p.from_variant_id.clone()),
                    reason: p.reason.clone(),
                    actor: p.actor.clone(),
                    benchmark_run_id: None,
                    at: event.occurred_at.clone(),
                    position: event.position,
                },
            ),
            _ => return Ok(()),
        };
        let key = scope_key(er, stage);
        let current = docs.get::<Binding>(&key).map_or(0, |b| b.version);
        if version != current + 1 {
            return Err(format!(
                "binding version {version} for {key} does not follow version {current}"
            ));
        }
        let mut binding = docs.get::<Binding>(&key).cloned().unwrap_or(Binding {
            effect_revision_id: er.clone(),
            stage: stage.clone(),
            variant_id: String::new(),
            version: 0,
            applied_at: String::new(),
            history: Vec::new(),
        });
        binding.variant_id = change.variant_id.clone();
        binding.version = version;
        binding.applied_at = change.at.clone();
        binding.history.push(change);
        docs.put(binding);
        Ok(())
    }
}
