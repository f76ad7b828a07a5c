//! `pricing`: the price per successful output of each effect revision in `prices`, with the
//! position of the event that set it (the Money HUD names it).

use crate::db::SqlValue;
use crate::docs::{Doc, Docs, TableDef};
use crate::projection::Projection;
use eventlog::{EventPayload, FoldEvent};
use serde::{Deserialize, Serialize};

pub const PRICES: TableDef = TableDef {
    name: "prices",
    key: "effect_revision_id",
    columns: &[("price_usd", "DOUBLE PRECISION"), ("position", "BIGINT")],
    indexes: &[],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceEntry {
    pub effect_revision_id: String,
    pub price_usd: f64,
    pub position: i64,
    pub set_at: String,
}

impl Doc for PriceEntry {
    const TABLE: &'static TableDef = &PRICES;
    fn key(&self) -> String {
        self.effect_revision_id.clone()
    }
    fn columns(&self) -> Vec<SqlValue> {
        vec![self.price_usd.into(), self.position.into()]
    }
}

pub struct PricingProjection;

impl Projection for PricingProjection {
    fn name(&self) -> &'static str {
        "pricing"
    }
    fn version(&self) -> u32 {
        1
    }
    fn tables(&self) -> &'static [&'static TableDef] {
        &[&PRICES]
    }
    fn want(&self, _event: &FoldEvent, _payload: &EventPayload, _docs: &mut Docs) {}

    fn apply(
        &self,
        event: &FoldEvent,
        payload: &EventPayload,
        docs: &mut Docs,
    ) -> Result<(), String> {
        if let EventPayload::PriceSet(p) = payload {
            docs.put(PriceEntry {
                effect_revision_id: p.effect_revision_id.clone(),
                price_usd: p.price_usd,
                position: event.position,
                set_at: event.occurred_at.clone(),
            });
        }
        Ok(())
    }
}
