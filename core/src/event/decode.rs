//! Bytes to a validated event: one JSON pass into the wire shape, then validation,
//! with the deployment's [`DecodeOptions`].

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::error::ValidationError;
use super::model::Event;
use super::raw::Raw;
use super::types::LegacyProvinceCodes;
use super::validate::validate;
use crate::admin::AdminUnits;

/// How to decode: the choices a deployment makes, passed in as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeOptions {
    /// Province codes from before 2025-07-01: rejected (the default) or remapped.
    pub legacy_province_codes: LegacyProvinceCodes,
}

/// Decodes and validates one event from its raw bytes, with the default options
/// (pre-2025 province codes are rejected).
pub fn decode_event(bytes: &[u8], units: &AdminUnits, now: DateTime<Utc>) -> Result<Event, ValidationError> {
    decode_event_with(bytes, units, &DecodeOptions::default(), now)
}

/// Decodes and validates one event from its raw bytes, with `options`.
pub fn decode_event_with(
    bytes: &[u8],
    units: &AdminUnits,
    options: &DecodeOptions,
    now: DateTime<Utc>,
) -> Result<Event, ValidationError> {
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
    validate(&raw, units, options, now)
}
