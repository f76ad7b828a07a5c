//! Prices, command side (DESIGN §4 `pricing.price_set`, §5 `/economics/prices`): set the price
//! per successful output of an effect revision; the Money HUD reads the latest one and names
//! the position of the event it used (`price_position`). Reading prices is the read side's job
//! (`projector::http`, `GET /admin/studio/economics/prices`).
//!
//! - [`service`]: [`PricingService`], which checks and appends `pricing.price_set`.
//! - [`http`]: the command route `POST /admin/studio/economics/prices`.

pub mod http;
pub mod service;

pub use http::router;
pub use service::{PriceRecorded, PricingError, PricingService, PRODUCER};
