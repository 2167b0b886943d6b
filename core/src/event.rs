//! The event model of CONTRACT.md §1: decoding from JSON bytes and validation against
//! the reference data. Pure: the caller passes `now` for the future-time rule.
//!
//! - `types`: the event types, their storage families, and the enumerations of field values;
//! - `model`: the validated [`Event`] and its type-specific [`Body`], and their contract JSON;
//! - `error`: [`ValidationError`] and its [`RejectKind`];
//! - `raw`: the wire shape, as one pass of the JSON decoder leaves it;
//! - `decode`: [`decode_event`], bytes to a validated event, and [`decode_event_with`]
//!   for [`DecodeOptions`] (what to do with pre-2025 province codes);
//! - `validate`: the contract's rules for the envelope and each type's fields.

mod decode;
mod error;
mod model;
mod raw;
mod types;
mod validate;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;

pub use decode::{DecodeOptions, decode_event, decode_event_with};
pub use error::{RejectKind, ValidationError};
pub use model::{Body, Event};
pub use types::{Channel, CloseReason, EventType, Family, FeedbackChannel, LegacyProvinceCodes, Level, ServiceLevel};
pub use validate::{MAX_FUTURE, MAX_ID_CHARS};
