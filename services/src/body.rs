//! Request bodies of the command routes, parsed the one way every route shares.

use axum::body::Bytes;
use ingest::ApiError;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses a JSON body: not JSON at all is 400 `malformed_json`; JSON of the wrong shape
/// (unknown or missing fields, wrong types) is 422 naming the field where serde can tell.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::malformed_json(&e))?;
    if !value.is_object() {
        return Err(ApiError::invalid_field(
            ".",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        let reason = e.to_string();
        let field = field_named(&reason).unwrap_or(".").to_string();
        ApiError::invalid_field(&field, reason)
    })
}

/// The field a serde message names, for "unknown field `x`" and "missing field `x`".
fn field_named(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    rest.split_once('`').map(|(field, _)| field)
}
