//! [`PricingService`]: sets the price per successful output of an effect revision.

use chrono::Utc;
use eventlog::catalogue::{EventPayload, PriceSet};
use eventlog::{EventLog, StoreError, ValidatedEvent, ValidationError};
use std::sync::Arc;

/// Recorded as the producer of the events this service appends.
pub const PRODUCER: &str = "services.pricing";

/// A price as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceRecorded {
    pub price: PriceSet,
    /// Position of the `pricing.price_set` event: the `price_position` the Money HUD names once
    /// it uses this price.
    pub position: i64,
    pub stream_version: i64,
    pub event_id: String,
    pub occurred_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    /// The catalogue's checks refused the price (each violation names its field).
    #[error("{0}")]
    Invalid(ValidationError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Appends `pricing.price_set` to `pricing-{effect_revision_id}`.
///
/// A price is a plain fact with the last one winning (the read model keeps the latest by
/// position), so there is nothing to decide from the stream and no `expected_version`: two
/// operators setting a price at once both get their event, and the later position is the
/// price. Each answer names its position so a caller can tell which price a Money HUD used.
#[derive(Clone)]
pub struct PricingService {
    log: Arc<dyn EventLog>,
}

impl PricingService {
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self { log }
    }

    /// Checks the price (an effect revision id of the id grammar; a finite price ≥ 0) and
    /// appends it.
    #[tracing::instrument(skip_all, fields(effect_revision_id = %effect_revision_id), err(level = "debug"))]
    pub async fn set_price(
        &self,
        effect_revision_id: &str,
        price_usd: f64,
    ) -> Result<PriceRecorded, PricingError> {
        let price = PriceSet {
            effect_revision_id: effect_revision_id.to_string(),
            price_usd,
        };
        let payload = EventPayload::PriceSet(price.clone());
        payload.check().map_err(PricingError::Invalid)?;
        let event = ValidatedEvent::from_payload(&payload, PRODUCER, Utc::now());
        let mut appended = self.log.append(vec![event]).await?;
        let event = appended.remove(0).into_event();
        tracing::info!(position = event.position, price_usd, "price set");
        Ok(PriceRecorded {
            price,
            position: event.position,
            stream_version: event.stream_version,
            event_id: event.event_id.to_string(),
            occurred_at: event.occurred_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn service() -> (PricingService, tempfile::TempDir) {
        let (url, dir) = eventlog::testkit::sqlite_url();
        let log = eventlog::open(&url, true)
            .await
            .expect("open the event log");
        (PricingService::new(log), dir)
    }

    #[tokio::test]
    async fn pricing_service_appends_each_price_with_its_position() {
        let (pricing, _dir) = service().await;
        let first = pricing.set_price("er1", 0.05).await.unwrap();
        assert_eq!((first.position, first.stream_version), (1, 1));
        let second = pricing.set_price("er1", 0.0).await.unwrap();
        assert_eq!((second.position, second.stream_version), (2, 2));
        assert_eq!(second.price.price_usd, 0.0);
    }

    #[tokio::test]
    async fn a_negative_or_non_finite_price_or_a_bad_revision_id_stores_nothing() {
        let (pricing, _dir) = service().await;
        for (er, price, path) in [
            ("er1", -0.01, "price_usd"),
            ("er1", f64::INFINITY, "price_usd"),
            ("er1", f64::NAN, "price_usd"),
            ("er 1", 0.05, "effect_revision_id"),
            ("", 0.05, "effect_revision_id"),
        ] {
            match pricing.set_price(er, price).await.unwrap_err() {
                PricingError::Invalid(err) => assert_eq!(err.violations[0].path, path),
                other => panic!("expected Invalid, got {other:?}"),
            }
        }
        assert_eq!(pricing.log.head().await.unwrap(), 0);
    }
}
