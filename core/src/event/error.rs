//! Why an event is rejected: a message that names the field, and a small fixed kind.

use std::fmt;

use thiserror::Error;

/// Why an event was rejected. `field` names the offending field when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ValidationError {
    pub kind: RejectKind,
    pub field: Option<&'static str>,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A small, fixed classification of rejections: a safe metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// Not a JSON object (bad bytes, bad JSON, an array, a number, ...).
    Malformed,
    /// A required field is missing.
    Missing,
    /// A field has the wrong type or an invalid value.
    Invalid,
    /// `type` is not one of the contract's event types.
    UnknownType,
    /// `occurred_at` is more than 5 minutes in the future.
    Future,
    /// Codes that do not exist in the reference data.
    Reference,
    /// A province code from before 2025-07-01, while remapping is off.
    LegacyCode,
    /// The message is larger than the configured limit.
    TooLarge,
}

impl RejectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Malformed => "malformed",
            RejectKind::Missing => "missing_field",
            RejectKind::Invalid => "invalid_field",
            RejectKind::UnknownType => "unknown_type",
            RejectKind::Future => "future",
            RejectKind::Reference => "unknown_code",
            RejectKind::LegacyCode => "legacy_province_code",
            RejectKind::TooLarge => "too_large",
        }
    }
}

impl ValidationError {
    pub(super) fn new(kind: RejectKind, field: Option<&'static str>, message: impl Into<String>) -> Self {
        Self { kind, field, message: message.into() }
    }
    pub(super) fn missing(field: &'static str) -> Self {
        Self::new(RejectKind::Missing, Some(field), "is required")
    }
    pub(super) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::new(RejectKind::Invalid, Some(field), message)
    }
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(RejectKind::Malformed, None, message)
    }
    pub fn too_large(size: usize, limit: usize) -> Self {
        Self::new(RejectKind::TooLarge, None, format!("message is {size} bytes, over the {limit}-byte limit"))
    }
}
