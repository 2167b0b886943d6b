//! Bytes to a validated event: the JSON pass, then validation.

use chrono::{DateTime, Utc};

use super::error::{RejectKind, ValidationError};
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
    let mut de = serde_json::Deserializer::from_str(text);
    let raw: Raw<'_> = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|e| ValidationError::malformed(format!("invalid JSON: {e}")))?;
    validate(raw, units, now)
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ValidationError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if !inner.is_data() {
        return ValidationError::malformed(format!("invalid JSON: {inner}"));
    }
    // Name the field as the other rules do, when it is one of ours.
    let field = FIELD_NAMES.iter().copied().find(|f| *f == path);
    let message = match field {
        Some(_) => inner.to_string(),
        None => format!("invalid JSON at `{path}`: {inner}"),
    };
    ValidationError::new(RejectKind::Invalid, field, message)
}

/// Every field the decoder reads, for naming the field in type errors.
const FIELD_NAMES: &[&str] = &[
    "event_id",
    "type",
    "occurred_at",
    "source",
    "agency_code",
    "level",
    "province_code",
    "commune_code",
    "dossier_id",
    "procedure_code",
    "channel",
    "service_level",
    "due_at",
    "digitized",
    "reused_data",
    "authenticated",
    "result_electronic",
    "reason",
    "amount_vnd",
    "online",
    "satisfied",
    "document_id",
    "receiver_agency_code",
    "electronic",
    "signed",
    "secret",
    "record_id",
    "inspection_id",
    "digital",
    "report_id",
    "via_system",
];
