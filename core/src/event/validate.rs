//! The contract's rules for the envelope and each type's fields.

use std::borrow::Cow;

use chrono::{DateTime, Duration, Utc};

use super::error::{RejectKind, ValidationError};
use super::model::{Body, Event};
use super::raw::Raw;
use super::types::{Channel, CloseReason, EventType, Level, ServiceLevel};
use crate::admin::{AdminUnits, is_digits};

/// How far in the future `occurred_at` may be.
pub const MAX_FUTURE: Duration = Duration::minutes(5);

/// Upper bound for free-form identifiers the contract gives no length for
/// (`dossier_id`, `procedure_code`, ...): generous, but it bounds memory.
pub const MAX_ID_CHARS: usize = 256;

fn required<'a>(v: Option<Cow<'a, str>>, field: &'static str) -> Result<Cow<'a, str>, ValidationError> {
    v.ok_or_else(|| ValidationError::missing(field))
}

fn required_bool(v: Option<bool>, field: &'static str) -> Result<bool, ValidationError> {
    v.ok_or_else(|| ValidationError::missing(field))
}

fn id(v: Option<Cow<'_, str>>, field: &'static str) -> Result<String, ValidationError> {
    let s = required(v, field)?;
    let n = s.chars().count();
    if n == 0 {
        return Err(ValidationError::invalid(field, "must not be empty"));
    }
    if n > MAX_ID_CHARS {
        return Err(ValidationError::invalid(field, format!("must be at most {MAX_ID_CHARS} characters")));
    }
    Ok(s.into_owned())
}

fn timestamp(v: Option<Cow<'_, str>>, field: &'static str) -> Result<DateTime<Utc>, ValidationError> {
    let s = required(v, field)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ValidationError::invalid(field, format!("`{s}` is not an RFC 3339 timestamp with offset")))
}

fn one_of<T: Copy>(v: Option<Cow<'_, str>>, field: &'static str, options: &[(&str, T)]) -> Result<T, ValidationError> {
    let s = required(v, field)?;
    options.iter().find(|(name, _)| *name == s).map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        ValidationError::invalid(field, format!("`{s}` is not one of {}", names.join(", ")))
    })
}

pub(super) fn validate(raw: Raw<'_>, units: &AdminUnits, now: DateTime<Utc>) -> Result<Event, ValidationError> {
    // Envelope.
    let event_id = required(raw.event_id, "event_id")?;
    let n = event_id.chars().count();
    if !(1..=128).contains(&n) {
        return Err(ValidationError::invalid("event_id", format!("must be 1 to 128 characters, got {n}")));
    }
    let type_name = required(raw.event_type, "type")?;
    let event_type = EventType::parse(&type_name).ok_or_else(|| {
        ValidationError::new(RejectKind::UnknownType, Some("type"), format!("`{type_name}` is not a known event type"))
    })?;
    let occurred_at = timestamp(raw.occurred_at, "occurred_at")?;
    if occurred_at > now + MAX_FUTURE {
        return Err(ValidationError::new(
            RejectKind::Future,
            Some("occurred_at"),
            format!("{} is more than 5 minutes in the future", occurred_at.to_rfc3339()),
        ));
    }
    let source = required(raw.source, "source")?;
    let n = source.chars().count();
    if !(1..=64).contains(&n) {
        return Err(ValidationError::invalid("source", format!("must be 1 to 64 characters, got {n}")));
    }
    let agency_code = required(raw.agency_code, "agency_code")?;
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
        raw.level,
        "level",
        &[("central", Level::Central), ("province", Level::Province), ("commune", Level::Commune)],
    )?;
    let province_code = match raw.province_code {
        None if level == Level::Central => None,
        None => {
            return Err(ValidationError::new(
                RejectKind::Missing,
                Some("province_code"),
                format!("is required when level is `{}`", level.as_str()),
            ));
        }
        Some(p) => {
            if !is_digits(&p, 2) {
                return Err(ValidationError::invalid("province_code", format!("`{p}` is not 2 digits")));
            }
            if units.province(&p).is_none() {
                return Err(ValidationError::new(
                    RejectKind::Reference,
                    Some("province_code"),
                    format!("`{p}` is not one of the 34 province codes in effect since 2025-07-01"),
                ));
            }
            Some(p.into_owned())
        }
    };
    let commune_code = match raw.commune_code {
        None => None,
        Some(c) => {
            if !is_digits(&c, 5) {
                return Err(ValidationError::invalid("commune_code", format!("`{c}` is not 5 digits")));
            }
            let Some(commune) = units.commune(&c) else {
                return Err(ValidationError::new(
                    RejectKind::Reference,
                    Some("commune_code"),
                    format!("`{c}` is not a commune code in effect since 2025-07-01"),
                ));
            };
            match &province_code {
                Some(p) if *p == commune.province_code => {}
                Some(p) => {
                    return Err(ValidationError::new(
                        RejectKind::Reference,
                        Some("commune_code"),
                        format!("`{c}` belongs to province `{}`, not `{p}`", commune.province_code),
                    ));
                }
                None => {
                    return Err(ValidationError::new(
                        RejectKind::Missing,
                        Some("province_code"),
                        "is required when commune_code is present",
                    ));
                }
            }
            Some(c.into_owned())
        }
    };

    // Type-specific fields.
    let body = match event_type {
        EventType::DossierReceived => Body::DossierReceived {
            dossier_id: id(raw.dossier_id, "dossier_id")?,
            procedure_code: id(raw.procedure_code, "procedure_code")?,
            channel: one_of(
                raw.channel,
                "channel",
                &[("online", Channel::Online), ("in_person", Channel::InPerson), ("post", Channel::Post)],
            )?,
            service_level: one_of(
                raw.service_level,
                "service_level",
                &[("full", ServiceLevel::Full), ("partial", ServiceLevel::Partial), ("none", ServiceLevel::None)],
            )?,
            due_at: timestamp(raw.due_at, "due_at")?,
            digitized: required_bool(raw.digitized, "digitized")?,
            reused_data: required_bool(raw.reused_data, "reused_data")?,
            authenticated: required_bool(raw.authenticated, "authenticated")?,
        },
        EventType::DossierResolved => Body::DossierResolved {
            dossier_id: id(raw.dossier_id, "dossier_id")?,
            procedure_code: id(raw.procedure_code, "procedure_code")?,
            due_at: timestamp(raw.due_at, "due_at")?,
            result_electronic: required_bool(raw.result_electronic, "result_electronic")?,
        },
        EventType::DossierClosed => Body::DossierClosed {
            dossier_id: id(raw.dossier_id, "dossier_id")?,
            reason: one_of(
                raw.reason,
                "reason",
                &[
                    ("refused", CloseReason::Refused),
                    ("withdrawn", CloseReason::Withdrawn),
                    ("stopped", CloseReason::Stopped),
                ],
            )?,
        },
        EventType::DossierPaid => {
            let dossier_id = id(raw.dossier_id, "dossier_id")?;
            let amount_vnd = raw.amount_vnd.ok_or_else(|| ValidationError::missing("amount_vnd"))?;
            if amount_vnd < 0 {
                return Err(ValidationError::invalid("amount_vnd", format!("{amount_vnd} is negative")));
            }
            Body::DossierPaid { dossier_id, amount_vnd, online: required_bool(raw.online, "online")? }
        }
        EventType::DossierRated => Body::DossierRated {
            dossier_id: id(raw.dossier_id, "dossier_id")?,
            satisfied: required_bool(raw.satisfied, "satisfied")?,
        },
        EventType::DocumentSent => Body::DocumentSent {
            document_id: id(raw.document_id, "document_id")?,
            receiver_agency_code: id(raw.receiver_agency_code, "receiver_agency_code")?,
            electronic: required_bool(raw.electronic, "electronic")?,
            signed: required_bool(raw.signed, "signed")?,
            secret: required_bool(raw.secret, "secret")?,
        },
        EventType::WorkRecordClosed => Body::WorkRecordClosed {
            record_id: id(raw.record_id, "record_id")?,
            online: required_bool(raw.online, "online")?,
            secret: required_bool(raw.secret, "secret")?,
        },
        EventType::InspectionCompleted => Body::InspectionCompleted {
            inspection_id: id(raw.inspection_id, "inspection_id")?,
            digital: required_bool(raw.digital, "digital")?,
        },
        EventType::ReportSubmitted => Body::ReportSubmitted {
            report_id: id(raw.report_id, "report_id")?,
            via_system: required_bool(raw.via_system, "via_system")?,
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
        body,
    })
}
