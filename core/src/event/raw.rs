//! The wire shape of an event, as one pass of the JSON decoder leaves it.
//!
//! The type of an event is one of its fields, and may come after the type's own fields,
//! so the pass cannot know which fields the event's type has. It keeps, for every field
//! the contract names (the envelope's and every type's), the field's JSON text: checked
//! to be JSON, borrowed from the input, and not typed. Validation then types only the
//! envelope and the fields of the event's own type ([`Json::str`], [`Json::bool`],
//! [`Json::int`]); the fields of other types, like unknown fields, are never looked at
//! again, whatever their JSON type (CONTRACT.md §1 and §7.1).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::error::{RejectKind, ValidationError};

/// Every field the contract names: the envelope's, then each type's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    EventId,
    Type,
    OccurredAt,
    Source,
    AgencyCode,
    Level,
    ProvinceCode,
    CommuneCode,
    DossierId,
    ProcedureCode,
    Channel,
    ServiceLevel,
    DueAt,
    Digitized,
    ReusedData,
    Authenticated,
    ResultElectronic,
    Reason,
    AmountVnd,
    Online,
    Satisfied,
    DocumentId,
    ReceiverAgencyCode,
    Electronic,
    Signed,
    Secret,
    RecordId,
    InspectionId,
    Digital,
    ReportId,
    ViaSystem,
    SyncedDvcqg,
    FeedbackId,
}

/// How many [`Field`]s there are.
const FIELDS: usize = Field::FeedbackId as usize + 1;

impl Field {
    /// The field's name in the JSON object, as the contract spells it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Field::EventId => "event_id",
            Field::Type => "type",
            Field::OccurredAt => "occurred_at",
            Field::Source => "source",
            Field::AgencyCode => "agency_code",
            Field::Level => "level",
            Field::ProvinceCode => "province_code",
            Field::CommuneCode => "commune_code",
            Field::DossierId => "dossier_id",
            Field::ProcedureCode => "procedure_code",
            Field::Channel => "channel",
            Field::ServiceLevel => "service_level",
            Field::DueAt => "due_at",
            Field::Digitized => "digitized",
            Field::ReusedData => "reused_data",
            Field::Authenticated => "authenticated",
            Field::ResultElectronic => "result_electronic",
            Field::Reason => "reason",
            Field::AmountVnd => "amount_vnd",
            Field::Online => "online",
            Field::Satisfied => "satisfied",
            Field::DocumentId => "document_id",
            Field::ReceiverAgencyCode => "receiver_agency_code",
            Field::Electronic => "electronic",
            Field::Signed => "signed",
            Field::Secret => "secret",
            Field::RecordId => "record_id",
            Field::InspectionId => "inspection_id",
            Field::Digital => "digital",
            Field::ReportId => "report_id",
            Field::ViaSystem => "via_system",
            Field::SyncedDvcqg => "synced_dvcqg",
            Field::FeedbackId => "feedback_id",
        }
    }

    fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "event_id" => Field::EventId,
            "type" => Field::Type,
            "occurred_at" => Field::OccurredAt,
            "source" => Field::Source,
            "agency_code" => Field::AgencyCode,
            "level" => Field::Level,
            "province_code" => Field::ProvinceCode,
            "commune_code" => Field::CommuneCode,
            "dossier_id" => Field::DossierId,
            "procedure_code" => Field::ProcedureCode,
            "channel" => Field::Channel,
            "service_level" => Field::ServiceLevel,
            "due_at" => Field::DueAt,
            "digitized" => Field::Digitized,
            "reused_data" => Field::ReusedData,
            "authenticated" => Field::Authenticated,
            "result_electronic" => Field::ResultElectronic,
            "reason" => Field::Reason,
            "amount_vnd" => Field::AmountVnd,
            "online" => Field::Online,
            "satisfied" => Field::Satisfied,
            "document_id" => Field::DocumentId,
            "receiver_agency_code" => Field::ReceiverAgencyCode,
            "electronic" => Field::Electronic,
            "signed" => Field::Signed,
            "secret" => Field::Secret,
            "record_id" => Field::RecordId,
            "inspection_id" => Field::InspectionId,
            "digital" => Field::Digital,
            "report_id" => Field::ReportId,
            "via_system" => Field::ViaSystem,
            "synced_dvcqg" => Field::SyncedDvcqg,
            "feedback_id" => Field::FeedbackId,
            _ => return None,
        })
    }
}

/// The known fields of one JSON object, each as its JSON text (`null` included).
/// Unknown fields are skipped in the pass and not kept.
pub(super) struct Raw<'a> {
    values: [Option<&'a str>; FIELDS],
    /// One bit per [`Field`] that appears more than once.
    repeated: u64,
}

const _: () = assert!(FIELDS <= u64::BITS as usize);

impl<'a> Raw<'a> {
    /// A field's value, `None` when it is absent or `null`. A field that appears more
    /// than once is ambiguous: an error, but only for the fields that validation asks
    /// for, so repeats of other types' fields are ignored like unknown fields.
    pub(super) fn get(&self, field: Field) -> Result<Option<Json<'a>>, ValidationError> {
        if self.repeated & (1 << field as u64) != 0 {
            return Err(ValidationError::invalid(field.name(), "appears more than once"));
        }
        Ok(self.values[field as usize].filter(|text| *text != "null").map(|text| Json { field, text }))
    }
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let mut raw = Raw { values: [None; FIELDS], repeated: 0 };
        while let Some(Key(field)) = map.next_key()? {
            match field {
                Some(field) => {
                    let value: &'de RawValue = map.next_value()?;
                    let slot = &mut raw.values[field as usize];
                    if slot.is_some() {
                        raw.repeated |= 1 << field as u64;
                    }
                    *slot = Some(value.get());
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}

/// An object key: one of the contract's fields, or `None` for any other.
struct Key(Option<Field>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            // Escaped keys (`"event\u005fid"`) arrive unescaped here too.
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(Key(Field::from_name(name)))
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// One present, non-null field as its JSON text, typed on demand. The text is valid
/// JSON (the pass checked it), so its first byte tells its JSON type.
#[derive(Clone, Copy)]
pub(super) struct Json<'a> {
    field: Field,
    text: &'a str,
}

impl<'a> Json<'a> {
    /// The value as a string; borrowed from the input unless it has escapes.
    pub(super) fn str(self) -> Result<Cow<'a, str>, ValidationError> {
        let Some(inner) = self.text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
            return Err(self.wrong_type("a string"));
        };
        if !inner.contains('\\') {
            return Ok(Cow::Borrowed(inner));
        }
        // The pass checked the escapes' syntax, so only their meaning can fail here.
        serde_json::from_str::<String>(self.text).map(Cow::Owned).map_err(|_| {
            ValidationError::invalid(self.field.name(), "is not valid Unicode: a `\\u` escape is a lone surrogate")
        })
    }

    pub(super) fn bool(self) -> Result<bool, ValidationError> {
        match self.text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(self.wrong_type("a boolean")),
        }
    }

    /// The value as an integer; a number with a fraction or an exponent is not one.
    pub(super) fn int(self) -> Result<i64, ValidationError> {
        let first = self.text.as_bytes()[0];
        if !(first == b'-' || first.is_ascii_digit()) || self.text.contains(['.', 'e', 'E']) {
            return Err(self.wrong_type("an integer"));
        }
        self.text
            .parse()
            .map_err(|_| ValidationError::invalid(self.field.name(), format!("{} is out of range", shown(self.text))))
    }

    fn wrong_type(self, expected: &str) -> ValidationError {
        let got = match self.text.as_bytes()[0] {
            b'"' => format!("string {}", shown(self.text)),
            b't' | b'f' => format!("boolean `{}`", self.text),
            b'[' => "array".to_string(),
            b'{' => "object".to_string(),
            _ => format!("number {}", shown(self.text)),
        };
        ValidationError::new(
            RejectKind::Invalid,
            Some(self.field.name()),
            format!("invalid type: {got}, expected {expected}"),
        )
    }
}

/// A value's text for a message: in backquotes, and cut after 40 characters.
fn shown(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("`{}`...", &text[..end]),
        None => format!("`{text}`"),
    }
}
