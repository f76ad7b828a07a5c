//! The pricing command route (DESIGN §5), admin token only:
//!
//! - `POST /admin/studio/economics/prices` `{effect_revision_id, price_usd}` → 201
//!   `{effect_revision_id, price_usd, position, stream_version, event_id, occurred_at}`; the
//!   `position` is the `price_position` a Money HUD names once it uses this price.
//!
//! `GET /admin/studio/economics/prices` is the read side's (`projector::http`).

use super::service::{PriceRecorded, PricingError, PricingService};
use crate::body::parse_body;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ingest::{ApiError, Tokens};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    effect_revision_id: String,
    /// Kept as JSON so a price that is not a number is refused naming `price_usd`.
    price_usd: Value,
}

/// The price as a number, or a refusal that names the field.
fn price_of(value: &Value) -> Result<f64, ApiError> {
    value.as_f64().ok_or_else(|| {
        ApiError::invalid_field(
            "price_usd",
            format!("is {value}; it must be a number ≥ 0 (USD per successful output)"),
        )
    })
}

/// The command route, guarded by the admin token.
pub fn router(state: PricingService, tokens: Tokens) -> Router {
    Router::new()
        .route("/admin/studio/economics/prices", post(set_price))
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            ingest::require_admin,
        ))
        .with_state(state)
}

impl From<PricingError> for ApiError {
    fn from(err: PricingError) -> Self {
        match err {
            PricingError::Invalid(err) => ApiError::validation(&err),
            PricingError::Store(err) => err.into(),
        }
    }
}

fn recorded_json(r: &PriceRecorded) -> Value {
    json!({
        "effect_revision_id": r.price.effect_revision_id,
        "price_usd": r.price.price_usd,
        "position": r.position,
        "stream_version": r.stream_version,
        "event_id": r.event_id,
        "occurred_at": r.occurred_at,
    })
}

async fn set_price(
    State(service): State<PricingService>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: PriceBody = parse_body(&body)?;
    let recorded = service
        .set_price(&body.effect_revision_id, price_of(&body.price_usd)?)
        .await?;
    Ok((StatusCode::CREATED, Json(recorded_json(&recorded))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_that_is_not_a_number_names_the_field() {
        let body = parse_body::<PriceBody>(&Bytes::from_static(
            br#"{"effect_revision_id": "er1", "price_usd": "cheap"}"#,
        ))
        .unwrap();
        let err = price_of(&body.price_usd).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.details()[0]["path"], "price_usd");
        assert_eq!(price_of(&serde_json::json!(0.05)).unwrap(), 0.05);
        assert_eq!(price_of(&serde_json::json!(2)).unwrap(), 2.0);
    }
}
