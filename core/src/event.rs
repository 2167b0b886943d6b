//! The event model of CONTRACT.md §1: decoding from JSON bytes and validation against
//! the reference data. Pure: the caller passes `now` for the future-time rule.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use thiserror::Error;

use crate::admin::{AdminUnits, is_digits};

/// How far in the future `occurred_at` may be.
pub const MAX_FUTURE: Duration = Duration::minutes(5);

/// The event types of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    DossierReceived,
    DossierResolved,
    DossierClosed,
    DossierPaid,
    DossierRated,
    DocumentSent,
    WorkRecordClosed,
    InspectionCompleted,
    ReportSubmitted,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        EventType::DossierReceived,
        EventType::DossierResolved,
        EventType::DossierClosed,
        EventType::DossierPaid,
        EventType::DossierRated,
        EventType::DocumentSent,
        EventType::WorkRecordClosed,
        EventType::InspectionCompleted,
        EventType::ReportSubmitted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::DossierReceived => "dossier.received",
            EventType::DossierResolved => "dossier.resolved",
            EventType::DossierClosed => "dossier.closed",
            EventType::DossierPaid => "dossier.paid",
            EventType::DossierRated => "dossier.rated",
            EventType::DocumentSent => "document.sent",
            EventType::WorkRecordClosed => "work_record.closed",
            EventType::InspectionCompleted => "inspection.completed",
            EventType::ReportSubmitted => "report.submitted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The storage family (SQL table) this type belongs to.
    pub fn family(self) -> Family {
        match self {
            EventType::DossierReceived
            | EventType::DossierResolved
            | EventType::DossierClosed
            | EventType::DossierPaid
            | EventType::DossierRated => Family::Dossier,
            EventType::DocumentSent => Family::Document,
            EventType::WorkRecordClosed => Family::WorkRecord,
            EventType::InspectionCompleted | EventType::ReportSubmitted => Family::Other,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group of event types stored in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Dossier,
    Document,
    WorkRecord,
    Other,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Dossier, Family::Document, Family::WorkRecord, Family::Other];

    /// The SQL table name of the family.
    pub fn table(self) -> &'static str {
        match self {
            Family::Dossier => "dossier_events",
            Family::Document => "document_events",
            Family::WorkRecord => "work_record_events",
            Family::Other => "other_events",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Central,
    Province,
    Commune,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Central => "central",
            Level::Province => "province",
            Level::Commune => "commune",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Online,
    InPerson,
    Post,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Online => "online",
            Channel::InPerson => "in_person",
            Channel::Post => "post",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceLevel {
    Full,
    Partial,
    None,
}

impl ServiceLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceLevel::Full => "full",
            ServiceLevel::Partial => "partial",
            ServiceLevel::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    Refused,
    Withdrawn,
    Stopped,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Refused => "refused",
            CloseReason::Withdrawn => "withdrawn",
            CloseReason::Stopped => "stopped",
        }
    }
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    pub source: String,
    pub agency_code: String,
    pub level: Level,
    pub province_code: Option<String>,
    pub commune_code: Option<String>,
    pub body: Body,
}

/// The type-specific part of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    DossierReceived {
        dossier_id: String,
        procedure_code: String,
        channel: Channel,
        service_level: ServiceLevel,
        due_at: DateTime<Utc>,
        digitized: bool,
        reused_data: bool,
        authenticated: bool,
    },
    DossierResolved {
        dossier_id: String,
        procedure_code: String,
        due_at: DateTime<Utc>,
        result_electronic: bool,
    },
    DossierClosed {
        dossier_id: String,
        reason: CloseReason,
    },
    DossierPaid {
        dossier_id: String,
        amount_vnd: i64,
        online: bool,
    },
    DossierRated {
        dossier_id: String,
        satisfied: bool,
    },
    DocumentSent {
        document_id: String,
        receiver_agency_code: String,
        electronic: bool,
        signed: bool,
        secret: bool,
    },
    WorkRecordClosed {
        record_id: String,
        online: bool,
        secret: bool,
    },
    InspectionCompleted {
        inspection_id: String,
        digital: bool,
    },
    ReportSubmitted {
        report_id: String,
        via_system: bool,
    },
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match &self.body {
            Body::DossierReceived { .. } => EventType::DossierReceived,
            Body::DossierResolved { .. } => EventType::DossierResolved,
            Body::DossierClosed { .. } => EventType::DossierClosed,
            Body::DossierPaid { .. } => EventType::DossierPaid,
            Body::DossierRated { .. } => EventType::DossierRated,
            Body::DocumentSent { .. } => EventType::DocumentSent,
            Body::WorkRecordClosed { .. } => EventType::WorkRecordClosed,
            Body::InspectionCompleted { .. } => EventType::InspectionCompleted,
            Body::ReportSubmitted { .. } => EventType::ReportSubmitted,
        }
    }

    pub fn family(&self) -> Family {
        self.event_type().family()
    }

    /// The id of the entity the event is about: the natural Kafka message key.
    pub fn entity_id(&self) -> &str {
        match &self.body {
            Body::DossierReceived { dossier_id, .. }
            | Body::DossierResolved { dossier_id, .. }
            | Body::DossierClosed { dossier_id, .. }
            | Body::DossierPaid { dossier_id, .. }
            | Body::DossierRated { dossier_id, .. } => dossier_id,
            Body::DocumentSent { document_id, .. } => document_id,
            Body::WorkRecordClosed { record_id, .. } => record_id,
            Body::InspectionCompleted { inspection_id, .. } => inspection_id,
            Body::ReportSubmitted { report_id, .. } => report_id,
        }
    }

    /// The event as contract JSON (the inverse of [`decode_event`]).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let mut v = json!({
            "event_id": self.event_id,
            "type": self.event_type().as_str(),
            "occurred_at": ts(&self.occurred_at),
            "source": self.source,
            "agency_code": self.agency_code,
            "level": self.level.as_str(),
        });
        let m = v.as_object_mut().expect("object");
        if let Some(p) = &self.province_code {
            m.insert("province_code".into(), json!(p));
        }
        if let Some(c) = &self.commune_code {
            m.insert("commune_code".into(), json!(c));
        }
        let body = match &self.body {
            Body::DossierReceived {
                dossier_id,
                procedure_code,
                channel,
                service_level,
                due_at,
                digitized,
                reused_data,
                authenticated,
            } => json!({"dossier_id": dossier_id, "procedure_code": procedure_code,
                "channel": channel.as_str(), "service_level": service_level.as_str(),
                "due_at": ts(due_at), "digitized": digitized, "reused_data": reused_data,
                "authenticated": authenticated}),
            Body::DossierResolved { dossier_id, procedure_code, due_at, result_electronic } => {
                json!({"dossier_id": dossier_id, "procedure_code": procedure_code,
                "due_at": ts(due_at), "result_electronic": result_electronic})
            }
            Body::DossierClosed { dossier_id, reason } => {
                json!({"dossier_id": dossier_id, "reason": reason.as_str()})
            }
            Body::DossierPaid { dossier_id, amount_vnd, online } => {
                json!({"dossier_id": dossier_id, "amount_vnd": amount_vnd, "online": online})
            }
            Body::DossierRated { dossier_id, satisfied } => {
                json!({"dossier_id": dossier_id, "satisfied": satisfied})
            }
            Body::DocumentSent { document_id, receiver_agency_code, electronic, signed, secret } => {
                json!({"document_id": document_id, "receiver_agency_code": receiver_agency_code,
                "electronic": electronic, "signed": signed, "secret": secret})
            }
            Body::WorkRecordClosed { record_id, online, secret } => {
                json!({"record_id": record_id, "online": online, "secret": secret})
            }
            Body::InspectionCompleted { inspection_id, digital } => {
                json!({"inspection_id": inspection_id, "digital": digital})
            }
            Body::ReportSubmitted { report_id, via_system } => {
                json!({"report_id": report_id, "via_system": via_system})
            }
        };
        if let serde_json::Value::Object(b) = body {
            m.extend(b);
        }
        v
    }
}

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
            RejectKind::TooLarge => "too_large",
        }
    }
}

impl ValidationError {
    fn new(kind: RejectKind, field: Option<&'static str>, message: impl Into<String>) -> Self {
        Self { kind, field, message: message.into() }
    }
    fn missing(field: &'static str) -> Self {
        Self::new(RejectKind::Missing, Some(field), "is required")
    }
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::new(RejectKind::Invalid, Some(field), message)
    }
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(RejectKind::Malformed, None, message)
    }
    pub fn too_large(size: usize, limit: usize) -> Self {
        Self::new(RejectKind::TooLarge, None, format!("message is {size} bytes, over the {limit}-byte limit"))
    }
}

/// The wire shape: every field optional, so that we can name what is missing.
/// Strings borrow from the input where JSON escapes allow it.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    occurred_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    agency_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    level: Option<Cow<'a, str>>,
    #[serde(borrow)]
    province_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    commune_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dossier_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    procedure_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    service_level: Option<Cow<'a, str>>,
    #[serde(borrow)]
    due_at: Option<Cow<'a, str>>,
    digitized: Option<bool>,
    reused_data: Option<bool>,
    authenticated: Option<bool>,
    result_electronic: Option<bool>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    amount_vnd: Option<i64>,
    online: Option<bool>,
    satisfied: Option<bool>,
    #[serde(borrow)]
    document_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    receiver_agency_code: Option<Cow<'a, str>>,
    electronic: Option<bool>,
    signed: Option<bool>,
    secret: Option<bool>,
    #[serde(borrow)]
    record_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    inspection_id: Option<Cow<'a, str>>,
    digital: Option<bool>,
    #[serde(borrow)]
    report_id: Option<Cow<'a, str>>,
    via_system: Option<bool>,
}

/// Upper bound for free-form identifiers the contract gives no length for
/// (`dossier_id`, `procedure_code`, ...): generous, but it bounds memory.
pub const MAX_ID_CHARS: usize = 256;

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

fn validate(raw: Raw<'_>, units: &AdminUnits, now: DateTime<Utc>) -> Result<Event, ValidationError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00+07:00").unwrap().to_utc()
    }

    fn units() -> &'static AdminUnits {
        use std::sync::OnceLock;
        static U: OnceLock<AdminUnits> = OnceLock::new();
        U.get_or_init(AdminUnits::builtin)
    }

    fn received() -> Value {
        json!({
            "event_id": "e-1", "type": "dossier.received",
            "occurred_at": "2026-11-23T09:15:00+07:00", "source": "motcua-hanoi",
            "agency_code": "000.00.00.H26", "level": "commune",
            "province_code": "01", "commune_code": "00004",
            "dossier_id": "D1", "procedure_code": "1.001612", "channel": "online",
            "service_level": "full", "due_at": "2026-11-30T17:00:00+07:00",
            "digitized": true, "reused_data": false, "authenticated": true,
            "some_extra_field": {"ignored": true}
        })
    }

    fn decode(v: &Value) -> Result<Event, ValidationError> {
        decode_event(v.to_string().as_bytes(), units(), now())
    }

    fn with(mut v: Value, key: &str, value: Value) -> Value {
        v[key] = value;
        v
    }

    fn without(mut v: Value, key: &str) -> Value {
        v.as_object_mut().unwrap().remove(key);
        v
    }

    fn err(v: &Value) -> ValidationError {
        decode(v).expect_err("should be rejected")
    }

    #[test]
    fn a_valid_received_event_decodes_with_utc_time_and_ignores_unknown_fields() {
        let e = decode(&received()).unwrap();
        assert_eq!(e.event_id, "e-1");
        assert_eq!(e.event_type(), EventType::DossierReceived);
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-23T02:15:00+00:00");
        assert_eq!(e.province_code.as_deref(), Some("01"));
        assert_eq!(e.entity_id(), "D1");
        // Round trip through the contract JSON.
        assert_eq!(decode(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn event_id_must_be_1_to_128_chars() {
        assert_eq!(err(&without(received(), "event_id")).field, Some("event_id"));
        assert_eq!(err(&with(received(), "event_id", json!(""))).field, Some("event_id"));
        assert!(decode(&with(received(), "event_id", json!("x".repeat(128)))).is_ok());
        // 128 multi-byte characters are fine: the limit is in characters.
        assert!(decode(&with(received(), "event_id", json!("đ".repeat(128)))).is_ok());
        assert_eq!(err(&with(received(), "event_id", json!("x".repeat(129)))).field, Some("event_id"));
        assert_eq!(err(&with(received(), "event_id", json!(42))).kind, RejectKind::Invalid);
    }

    #[test]
    fn type_must_be_known() {
        let e = err(&with(received(), "type", json!("dossier.deleted")));
        assert_eq!(e.kind, RejectKind::UnknownType);
        assert!(e.to_string().contains("dossier.deleted"), "{e}");
        assert_eq!(err(&without(received(), "type")).kind, RejectKind::Missing);
    }

    #[test]
    fn occurred_at_needs_an_offset_and_at_most_5_minutes_of_future() {
        assert_eq!(err(&with(received(), "occurred_at", json!("2026-11-23T09:15:00"))).field, Some("occurred_at"));
        assert_eq!(err(&with(received(), "occurred_at", json!("yesterday"))).field, Some("occurred_at"));
        let ok = with(received(), "occurred_at", json!("2026-11-23T12:05:00+07:00"));
        assert!(decode(&ok).is_ok(), "exactly 5 minutes ahead is allowed");
        let e = err(&with(received(), "occurred_at", json!("2026-11-23T12:05:01+07:00")));
        assert_eq!(e.kind, RejectKind::Future);
        // Old events are fine: KPIs bucket by event time.
        assert!(decode(&with(received(), "occurred_at", json!("2020-01-01T00:00:00Z"))).is_ok());
    }

    #[test]
    fn source_must_be_1_to_64_chars() {
        assert_eq!(err(&with(received(), "source", json!(""))).field, Some("source"));
        assert!(decode(&with(received(), "source", json!("s".repeat(64)))).is_ok());
        assert_eq!(err(&with(received(), "source", json!("s".repeat(65)))).field, Some("source"));
    }

    #[test]
    fn agency_code_must_match_the_allowed_characters() {
        assert!(decode(&with(received(), "agency_code", json!("A-b_c.9"))).is_ok());
        for bad in ["", "has space", "đ", "x/y", &"a".repeat(33)] {
            assert_eq!(err(&with(received(), "agency_code", json!(bad))).field, Some("agency_code"), "{bad}");
        }
    }

    #[test]
    fn level_must_be_central_province_or_commune() {
        assert_eq!(err(&with(received(), "level", json!("district"))).field, Some("level"));
        assert_eq!(err(&without(received(), "level")).kind, RejectKind::Missing);
    }

    #[test]
    fn province_code_is_required_unless_central_and_must_be_current() {
        let e = err(&without(without(received(), "province_code"), "commune_code"));
        assert_eq!((e.kind, e.field), (RejectKind::Missing, Some("province_code")));
        let central = with(without(without(received(), "province_code"), "commune_code"), "level", json!("central"));
        assert!(decode(&central).is_ok());
        // 2-digit but abolished in the 2025 merger (e.g. 02 Hà Giang).
        let e = err(&with(without(received(), "commune_code"), "province_code", json!("02")));
        assert_eq!(e.kind, RejectKind::Reference);
        assert_eq!(err(&with(received(), "province_code", json!("1"))).kind, RejectKind::Invalid);
        assert_eq!(err(&with(received(), "province_code", json!(1))).kind, RejectKind::Invalid);
    }

    #[test]
    fn commune_code_must_exist_and_belong_to_the_province() {
        assert!(decode(&without(received(), "commune_code")).is_ok());
        assert!(decode(&with(received(), "commune_code", Value::Null)).is_ok(), "null means absent");
        assert_eq!(err(&with(received(), "commune_code", json!("0004"))).kind, RejectKind::Invalid);
        assert_eq!(err(&with(received(), "commune_code", json!("99999"))).kind, RejectKind::Reference);
        // 00004 is Ba Đình, Hà Nội (01); it does not belong to 79 (Hồ Chí Minh).
        let e = err(&with(received(), "province_code", json!("79")));
        assert_eq!(e.kind, RejectKind::Reference);
        assert!(e.to_string().contains("belongs to province `01`"), "{e}");
    }

    #[test]
    fn every_type_requires_its_fields() {
        let envelope = without(without(received(), "commune_code"), "dossier_id");
        let base: serde_json::Map<String, Value> = envelope
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| {
                ["event_id", "occurred_at", "source", "agency_code", "level", "province_code"].contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let cases: Vec<(&str, Value)> = vec![
            (
                "dossier.received",
                json!({"dossier_id": "D", "procedure_code": "1.1", "channel": "post",
                "service_level": "none", "due_at": "2026-12-01T00:00:00Z", "digitized": false,
                "reused_data": false, "authenticated": false}),
            ),
            (
                "dossier.resolved",
                json!({"dossier_id": "D", "procedure_code": "1.1",
                "due_at": "2026-12-01T00:00:00Z", "result_electronic": true}),
            ),
            ("dossier.closed", json!({"dossier_id": "D", "reason": "withdrawn"})),
            ("dossier.paid", json!({"dossier_id": "D", "amount_vnd": 0, "online": true})),
            ("dossier.rated", json!({"dossier_id": "D", "satisfied": false})),
            (
                "document.sent",
                json!({"document_id": "V", "receiver_agency_code": "000.00.00.G01",
                "electronic": true, "signed": true, "secret": false}),
            ),
            ("work_record.closed", json!({"record_id": "R", "online": true, "secret": false})),
            ("inspection.completed", json!({"inspection_id": "I", "digital": true})),
            ("report.submitted", json!({"report_id": "B", "via_system": false})),
        ];
        for (ty, fields) in cases {
            let mut full = base.clone();
            full.insert("type".into(), json!(ty));
            full.extend(fields.as_object().unwrap().clone());
            let full = Value::Object(full);
            let e = decode(&full).unwrap_or_else(|e| panic!("{ty}: {e}"));
            assert_eq!(e.event_type().as_str(), ty);
            for key in fields.as_object().unwrap().keys() {
                let missing = err(&without(full.clone(), key));
                assert_eq!(
                    (missing.kind, missing.field.map(str::to_string)),
                    (RejectKind::Missing, Some(key.clone())),
                    "{ty} without {key}"
                );
                let wrong = err(&with(full.clone(), key, json!([1])));
                assert_eq!(
                    (wrong.kind, wrong.field.map(str::to_string)),
                    (RejectKind::Invalid, Some(key.clone())),
                    "{ty} with a wrong {key}"
                );
            }
        }
    }

    #[test]
    fn enumerations_and_amounts_are_checked() {
        assert_eq!(err(&with(received(), "channel", json!("fax"))).field, Some("channel"));
        assert_eq!(err(&with(received(), "service_level", json!("most"))).field, Some("service_level"));
        assert_eq!(err(&with(received(), "due_at", json!("soon"))).field, Some("due_at"));
        let paid = json!({"event_id": "p", "type": "dossier.paid", "occurred_at": "2026-11-23T00:00:00Z",
            "source": "s", "agency_code": "a", "level": "central", "dossier_id": "D",
            "amount_vnd": -1, "online": true});
        assert_eq!(err(&paid).field, Some("amount_vnd"));
        assert_eq!(err(&with(paid.clone(), "amount_vnd", json!(1.5))).kind, RejectKind::Invalid);
        let closed = json!({"event_id": "c", "type": "dossier.closed", "occurred_at": "2026-11-23T00:00:00Z",
            "source": "s", "agency_code": "a", "level": "central", "dossier_id": "D", "reason": "lost"});
        assert_eq!(err(&closed).field, Some("reason"));
    }

    #[test]
    fn non_objects_and_bad_bytes_are_malformed() {
        for raw in [&b""[..], b"   ", b"[1,2]", b"42", b"\"x\"", b"null", b"{\"event_id\":", b"\xff\xfe{}"] {
            let e = decode_event(raw, units(), now()).unwrap_err();
            assert_eq!(e.kind, RejectKind::Malformed, "{:?}: {e}", String::from_utf8_lossy(raw));
        }
        // A repeated key is ambiguous: rejected rather than guessed.
        let dup = br#"{"event_id":"a","event_id":"b"}"#;
        assert!(decode_event(dup, units(), now()).is_err());
    }
}
