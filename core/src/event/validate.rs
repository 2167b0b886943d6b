//! The contract's rules for the envelope and each type's fields.

use std::borrow::Cow;

use chrono::{DateTime, Duration, Utc};

use super::decode::DecodeOptions;
use super::error::{RejectKind, ValidationError};
use super::model::{Body, Event};
use super::raw::{Field, Json, Raw};
use super::types::{Channel, CloseReason, EventType, FeedbackChannel, LegacyProvinceCodes, Level, ServiceLevel};
use crate::admin::{AdminUnits, is_digits};

/// How far in the future `occurred_at` may be.
pub const MAX_FUTURE: Duration = Duration::minutes(5);

/// Upper bound for free-form identifiers the contract gives no length for
/// (`dossier_id`, `procedure_code`, ...): generous, but it bounds memory.
pub const MAX_ID_CHARS: usize = 256;

/// A field that validation reads: present and not null.
fn required<'a>(raw: &Raw<'a>, field: Field) -> Result<Json<'a>, ValidationError> {
    raw.get(field)?.ok_or_else(|| ValidationError::missing(field.name()))
}

fn string<'a>(raw: &Raw<'a>, field: Field) -> Result<Cow<'a, str>, ValidationError> {
    required(raw, field)?.str()
}

fn optional_string<'a>(raw: &Raw<'a>, field: Field) -> Result<Option<Cow<'a, str>>, ValidationError> {
    raw.get(field)?.map(Json::str).transpose()
}

fn boolean(raw: &Raw<'_>, field: Field) -> Result<bool, ValidationError> {
    required(raw, field)?.bool()
}

/// An optional boolean: absent or `null` is `None`, anything else must be a boolean.
fn optional_boolean(raw: &Raw<'_>, field: Field) -> Result<Option<bool>, ValidationError> {
    raw.get(field)?.map(Json::bool).transpose()
}

fn id(raw: &Raw<'_>, field: Field) -> Result<String, ValidationError> {
    let s = string(raw, field)?;
    let n = s.chars().count();
    if n == 0 {
        return Err(ValidationError::invalid(field.name(), "must not be empty"));
    }
    if n > MAX_ID_CHARS {
        return Err(ValidationError::invalid(field.name(), format!("must be at most {MAX_ID_CHARS} characters")));
    }
    Ok(s.into_owned())
}

fn timestamp(raw: &Raw<'_>, field: Field) -> Result<DateTime<Utc>, ValidationError> {
    let s = string(raw, field)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ValidationError::invalid(field.name(), format!("`{s}` is not an RFC 3339 timestamp with offset")))
}

fn one_of<T: Copy>(raw: &Raw<'_>, field: Field, options: &[(&str, T)]) -> Result<T, ValidationError> {
    let s = string(raw, field)?;
    options.iter().find(|(name, _)| *name == s).map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        ValidationError::invalid(field.name(), format!("`{s}` is not one of {}", names.join(", ")))
    })
}

/// A valid `province_code`: in effect since 2025-07-01, or remapped from a code in use
/// before that date.
enum Province {
    Current(String),
    Remapped { code: String, original: String },
}

/// Checks a `province_code` against the 34 codes in effect, and against the 63 in use
/// before 2025-07-01 (CONTRACT.md §7.7): a code still in effect always means its
/// province since that date (`24` is Bắc Ninh, not the Bắc Giang it was before), so
/// only the 29 codes no longer in effect are remapped, or rejected.
fn province(p: &str, units: &AdminUnits, options: &DecodeOptions) -> Result<Province, ValidationError> {
    if !is_digits(p, 2) {
        return Err(ValidationError::invalid("province_code", format!("`{p}` is not 2 digits")));
    }
    if units.province(p).is_some() {
        return Ok(Province::Current(p.to_string()));
    }
    let Some(old) = units.legacy_province(p) else {
        return Err(ValidationError::new(
            RejectKind::Reference,
            Some("province_code"),
            format!(
                "`{p}` is not one of the 34 province codes in effect since 2025-07-01, nor one of the 63 in use before"
            ),
        ));
    };
    match options.legacy_province_codes {
        LegacyProvinceCodes::Remap => {
            Ok(Province::Remapped { code: old.province_code.clone(), original: p.to_string() })
        }
        LegacyProvinceCodes::Reject => Err(ValidationError::new(
            RejectKind::LegacyCode,
            Some("province_code"),
            format!(
                "`{p}` is a province code from before 2025-07-01 ({}, since then `{}` {}); send the code in effect, \
                 or let the server remap such codes with --legacy-province-codes remap \
                 (IOC_LEGACY_PROVINCE_CODES=remap, legacy_province_codes = \"remap\")",
                old.old_province_name, old.province_code, old.province_name
            ),
        )),
    }
}

/// Validates the envelope and the fields of the event's own type: only those are
/// typed. The fields of other types are never read.
pub(super) fn validate(
    raw: &Raw<'_>,
    units: &AdminUnits,
    options: &DecodeOptions,
    now: DateTime<Utc>,
) -> Result<Event, ValidationError> {
    // Envelope.
    let event_id = string(raw, Field::EventId)?;
    let n = event_id.chars().count();
    if !(1..=128).contains(&n) {
        return Err(ValidationError::invalid("event_id", format!("must be 1 to 128 characters, got {n}")));
    }
    let type_name = string(raw, Field::Type)?;
    let event_type = EventType::parse(&type_name).ok_or_else(|| {
        ValidationError::new(RejectKind::UnknownType, Some("type"), format!("`{type_name}` is not a known event type"))
    })?;
    let occurred_at = timestamp(raw, Field::OccurredAt)?;
    if occurred_at > now + MAX_FUTURE {
        return Err(ValidationError::new(
            RejectKind::Future,
            Some("occurred_at"),
            format!("{} is more than 5 minutes in the future", occurred_at.to_rfc3339()),
        ));
    }
    let source = string(raw, Field::Source)?;
    let n = source.chars().count();
    if !(1..=64).contains(&n) {
        return Err(ValidationError::invalid("source", format!("must be 1 to 64 characters, got {n}")));
    }
    let agency_code = string(raw, Field::AgencyCode)?;
    if agency_code.is_empty()
        || agency_code.len() > 32
        || !agency_code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(ValidationError::invalid(
            "agency_code",
            format!("`{agency_code}` must be 1 to 32 characters of [A-Za-z0-9._-]"),
        ));
    }
    let level = one_of(
        raw,
        Field::Level,
        &[("central", Level::Central), ("province", Level::Province), ("commune", Level::Commune)],
    )?;
    let province = match optional_string(raw, Field::ProvinceCode)? {
        None if level == Level::Central => None,
        None => {
            return Err(ValidationError::new(
                RejectKind::Missing,
                Some("province_code"),
                format!("is required when level is `{}`", level.as_str()),
            ));
        }
        Some(p) => Some(province(&p, units, options)?),
    };
    let (province_code, province_code_original) = match province {
        None => (None, None),
        Some(Province::Current(p)) => (Some(p), None),
        Some(Province::Remapped { code, original }) => (Some(code), Some(original)),
    };
    let (commune_code, commune_code_original) = match optional_string(raw, Field::CommuneCode)? {
        None => (None, None),
        Some(c) => {
            if !is_digits(&c, 5) {
                return Err(ValidationError::invalid("commune_code", format!("`{c}` is not 5 digits")));
            }
            match (units.commune(&c), &province_code_original) {
                // A remapped event's commune may be one of before 2025-07-01: kept aside.
                (None, Some(_)) => (None, Some(c.into_owned())),
                (None, None) => {
                    return Err(ValidationError::new(
                        RejectKind::Reference,
                        Some("commune_code"),
                        format!("`{c}` is not a commune code in effect since 2025-07-01"),
                    ));
                }
                (Some(commune), original) => match &province_code {
                    Some(p) if *p == commune.province_code => (Some(c.into_owned()), None),
                    Some(p) => {
                        let remapped = original.as_ref().map(|o| format!(" (remapped from `{o}`)")).unwrap_or_default();
                        return Err(ValidationError::new(
                            RejectKind::Reference,
                            Some("commune_code"),
                            format!("`{c}` belongs to province `{}`, not `{p}`{remapped}", commune.province_code),
                        ));
                    }
                    None => {
                        return Err(ValidationError::new(
                            RejectKind::Missing,
                            Some("province_code"),
                            "is required when commune_code is present",
                        ));
                    }
                },
            }
        }
    };

    // Type-specific fields.
    let body = match event_type {
        EventType::DossierReceived => Body::DossierReceived {
            dossier_id: id(raw, Field::DossierId)?,
            procedure_code: id(raw, Field::ProcedureCode)?,
            channel: one_of(
                raw,
                Field::Channel,
                &[("online", Channel::Online), ("in_person", Channel::InPerson), ("post", Channel::Post)],
            )?,
            service_level: one_of(
                raw,
                Field::ServiceLevel,
                &[("full", ServiceLevel::Full), ("partial", ServiceLevel::Partial), ("none", ServiceLevel::None)],
            )?,
            due_at: timestamp(raw, Field::DueAt)?,
            digitized: boolean(raw, Field::Digitized)?,
            reused_data: boolean(raw, Field::ReusedData)?,
            authenticated: boolean(raw, Field::Authenticated)?,
            synced_dvcqg: optional_boolean(raw, Field::SyncedDvcqg)?,
        },
        EventType::DossierResolved => Body::DossierResolved {
            dossier_id: id(raw, Field::DossierId)?,
            procedure_code: id(raw, Field::ProcedureCode)?,
            due_at: timestamp(raw, Field::DueAt)?,
            result_electronic: boolean(raw, Field::ResultElectronic)?,
        },
        EventType::DossierClosed => Body::DossierClosed {
            dossier_id: id(raw, Field::DossierId)?,
            reason: one_of(
                raw,
                Field::Reason,
                &[
                    ("refused", CloseReason::Refused),
                    ("withdrawn", CloseReason::Withdrawn),
                    ("stopped", CloseReason::Stopped),
                ],
            )?,
        },
        EventType::DossierPaid => {
            let dossier_id = id(raw, Field::DossierId)?;
            let amount_vnd = required(raw, Field::AmountVnd)?.int()?;
            if amount_vnd < 0 {
                return Err(ValidationError::invalid("amount_vnd", format!("{amount_vnd} is negative")));
            }
            Body::DossierPaid { dossier_id, amount_vnd, online: boolean(raw, Field::Online)? }
        }
        EventType::DossierRated => {
            Body::DossierRated { dossier_id: id(raw, Field::DossierId)?, satisfied: boolean(raw, Field::Satisfied)? }
        }
        EventType::DocumentSent => Body::DocumentSent {
            document_id: id(raw, Field::DocumentId)?,
            receiver_agency_code: id(raw, Field::ReceiverAgencyCode)?,
            electronic: boolean(raw, Field::Electronic)?,
            signed: boolean(raw, Field::Signed)?,
            secret: boolean(raw, Field::Secret)?,
        },
        EventType::WorkRecordClosed => Body::WorkRecordClosed {
            record_id: id(raw, Field::RecordId)?,
            online: boolean(raw, Field::Online)?,
            secret: boolean(raw, Field::Secret)?,
        },
        EventType::InspectionCompleted => Body::InspectionCompleted {
            inspection_id: id(raw, Field::InspectionId)?,
            digital: boolean(raw, Field::Digital)?,
        },
        EventType::ReportSubmitted => {
            Body::ReportSubmitted { report_id: id(raw, Field::ReportId)?, via_system: boolean(raw, Field::ViaSystem)? }
        }
        EventType::FeedbackReceived => Body::FeedbackReceived {
            feedback_id: id(raw, Field::FeedbackId)?,
            channel: one_of(
                raw,
                Field::Channel,
                &[
                    ("online", FeedbackChannel::Online),
                    ("in_person", FeedbackChannel::InPerson),
                    ("phone", FeedbackChannel::Phone),
                    ("post", FeedbackChannel::Post),
                ],
            )?,
            due_at: timestamp(raw, Field::DueAt)?,
        },
        EventType::FeedbackResolved => Body::FeedbackResolved {
            feedback_id: id(raw, Field::FeedbackId)?,
            due_at: timestamp(raw, Field::DueAt)?,
            satisfied: optional_boolean(raw, Field::Satisfied)?,
        },
    };

    Ok(Event {
        event_id: event_id.into_owned(),
        occurred_at,
        source: source.into_owned(),
        agency_code: agency_code.into_owned(),
        level,
        province_code,
        commune_code,
        province_code_original,
        commune_code_original,
        body,
    })
}
