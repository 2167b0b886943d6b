//! Bytes to a validated event: one JSON pass into the wire shape, then validation.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::error::ValidationError;
use super::model::Event;
use super::raw::Raw;
use super::validate::validate;
use crate::admin::AdminUnits;

/// Decodes and validates one event from its raw bytes.
pub fn decode_event(bytes: &[u8], units: &AdminUnits, now: DateTime<Utc>) -> Result<Event, ValidationError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ValidationError::malformed(format!("not valid UTF-8: {e}")))?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(ValidationError::malformed("empty message"));
    }
    if !trimmed.starts_with('{') {
        return Err(ValidationError::malformed("an event must be a JSON object"));
    }
    // The pass types nothing (raw.rs), so its only errors are JSON syntax errors.
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = Raw::deserialize(&mut de).map_err(|e| ValidationError::malformed(format!("invalid JSON: {e}")))?;
    de.end().map_err(|e| ValidationError::malformed(format!("invalid JSON: {e}")))?;
    validate(&raw, units, now)
}
