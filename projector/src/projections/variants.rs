//! `variants`: the variant registry, one row per variant in `variants`.

use crate::db::SqlValue;
use crate::docs::{Doc, Docs, TableDef};
use crate::projection::Projection;
use eventlog::{EventPayload, FoldEvent};
use serde::{Deserialize, Serialize};

pub const VARIANTS: TableDef = TableDef {
    name: "variants",
    key: "variant_id",
    columns: &[
        ("effect_revision_id", "TEXT"),
        ("stage", "TEXT"),
        ("provider", "TEXT"),
        ("status", "TEXT"),
    ],
    indexes: &["effect_revision_id"],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub variant_id: String,
    pub effect_revision_id: String,
    pub workflow_id: String,
    pub environment_id: String,
    pub stage: String,
    pub provider: String,
    pub experiment_id: String,
    pub unit_cost_usd: Option<f64>,
    pub status: String,
    pub retired_reason: Option<String>,
    pub registered_at: String,
    pub registered_position: i64,
}

impl Doc for Variant {
    const TABLE: &'static TableDef = &VARIANTS;
    fn key(&self) -> String {
        self.variant_id.clone()
    }
    fn columns(&self) -> Vec<SqlValue> {
        vec![
            self.effect_revision_id.clone().into(),
            self.stage.clone().into(),
            self.provider.clone().into(),
            self.status.clone().into(),
        ]
    }
}

pub struct VariantsProjection;

impl Projection for VariantsProjection {
    fn name(&self) -> &'static str {
        "variants"
    }
    fn version(&self) -> u32 {
        1
    }
    fn tables(&self) -> &'static [&'static TableDef] {
        &[&VARIANTS]
    }

    fn want(&self, _event: &FoldEvent, payload: &EventPayload, docs: &mut Docs) {
        match payload {
            EventPayload::VariantRegistered(p) => docs.want::<Variant>(&p.variant_id),
            EventPayload::VariantRetired(p) => docs.want::<Variant>(&p.variant_id),
            _ => {}
        }
    }

    fn apply(
        &self,
        event: &FoldEvent,
        payload: &EventPayload,
        docs: &mut Docs,
    ) -> Result<(), String> {
        match payload {
            EventPayload::VariantRegistered(p) => {
                let (registered_at, registered_position, status, retired_reason) =
                    match docs.get::<Variant>(&p.variant_id) {
                        // A repeated registration updates the details but keeps history and status.
                        Some(v) => (
                            v.registered_at.clone(),
                            v.registered_position,
                            v.status.clone(),
                            v.retired_reason.clone(),
                        ),
                        None => (
                            event.occurred_at.clone(),
                            event.position,
                            "active".to_string(),
                            None,
                        ),
                    };
                docs.put(Variant {
                    variant_id: p.variant_id.clone(),
                    effect_revision_id: p.effect_revision_id.clone(),
                    workflow_id: p.workflow_id.clone(),
                    environment_id: p.environment_id.clone(),
                    stage: p.stage.clone(),
                    provider: p.provider.clone(),
                    experiment_id: p.experiment_id.clone(),
                    unit_cost_usd: p.unit_cost_usd,
                    status,
                    retired_reason,
                    registered_at,
                    registered_position,
                });
            }
            EventPayload::VariantRetired(p) => {
                let v = docs.get_mut::<Variant>(&p.variant_id).ok_or_else(|| {
                    format!("variant {} was retired but never registered", p.variant_id)
                })?;
                v.status = "retired".into();
                v.retired_reason = Some(p.reason.clone());
            }
            _ => {}
        }
        Ok(())
    }
}
