use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::*;
use crate::admin::AdminUnits;

pub(super) fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00+07:00").unwrap().to_utc()
}

pub(super) fn units() -> &'static AdminUnits {
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
    // 2-digit but abolished in the 2025 merger (e.g. 02 Hà Giang): see the tests of
    // pre-2025 codes below. Never in use: an unknown code.
    let e = err(&with(without(received(), "commune_code"), "province_code", json!("02")));
    assert_eq!(e.kind, RejectKind::LegacyCode);
    let e = err(&with(without(received(), "commune_code"), "province_code", json!("03")));
    assert_eq!(e.kind, RejectKind::Reference);
    assert!(e.to_string().contains("nor one of the 63 in use before"), "{e}");
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

fn remap(v: &Value) -> Result<Event, ValidationError> {
    let options = DecodeOptions { legacy_province_codes: LegacyProvinceCodes::Remap };
    decode_event_with(v.to_string().as_bytes(), units(), &options, now())
}

/// The 29 province codes in use before 2025-07-01 and no longer in effect.
fn abolished() -> Vec<&'static crate::admin::LegacyProvince> {
    units().legacy_provinces().iter().filter(|l| units().province(&l.old_province_code).is_none()).collect()
}

#[test]
fn a_pre_2025_province_code_is_rejected_by_default_saying_so_and_how_to_remap() {
    assert_eq!(abolished().len(), 29);
    for old in abolished() {
        let code = &old.old_province_code;
        let e = err(&with(without(received(), "commune_code"), "province_code", json!(code)));
        assert_eq!((e.kind, e.field), (RejectKind::LegacyCode, Some("province_code")), "{e}");
        assert_eq!(e.kind.as_str(), "legacy_province_code");
        let text = e.to_string();
        for needle in [
            format!("`{code}` is a province code from before 2025-07-01"),
            format!("since then `{}` {}", old.province_code, old.province_name),
            "--legacy-province-codes remap".to_string(),
            "IOC_LEGACY_PROVINCE_CODES".into(),
        ] {
            assert!(text.contains(&needle), "{needle} not in {text}");
        }
    }
    let e = err(&with(without(received(), "commune_code"), "province_code", json!("02")));
    assert!(e.to_string().contains("(Tỉnh Hà Giang, since then `08` Tỉnh Tuyên Quang)"), "{e}");
}

#[test]
fn with_remap_a_pre_2025_code_is_stored_under_its_province_since_and_kept_as_the_original() {
    for old in units().legacy_provinces() {
        let v = with(without(received(), "commune_code"), "province_code", json!(old.old_province_code));
        let e = remap(&v).unwrap_or_else(|e| panic!("{}: {e}", old.old_province_code));
        assert_eq!(e.province_code.as_deref(), Some(old.province_code.as_str()));
        // A code still in effect is its province since 2025-07-01, never remapped.
        let remapped = units().province(&old.old_province_code).is_none();
        assert_eq!(e.province_code_original.is_some(), remapped, "{}", old.old_province_code);
        assert_eq!(remap(&e.to_json()).as_ref(), Ok(&e), "round trip through the codes it came with");
        assert_eq!(e.to_json()["province_code"], json!(old.old_province_code));
    }
    let ha_giang = with(received(), "province_code", json!("02"));
    // A commune of before 2025 (00001 was Phúc Xá, Hà Nội): kept aside, not stored as one.
    let e = remap(&with(ha_giang.clone(), "commune_code", json!("00001"))).unwrap();
    assert_eq!((e.province_code.as_deref(), e.province_code_original.as_deref()), (Some("08"), Some("02")));
    assert_eq!((e.commune_code.as_deref(), e.commune_code_original.as_deref()), (None, Some("00001")));
    assert_eq!(e.level, Level::Commune, "the level is the event's own");
    assert_eq!(remap(&e.to_json()).as_ref(), Ok(&e));
    // A commune in effect since 2025 in the new province is kept as it is.
    let e = remap(&with(ha_giang.clone(), "commune_code", json!("00700"))).unwrap();
    assert_eq!((e.commune_code.as_deref(), e.commune_code_original.as_deref()), (Some("00700"), None));
    // One of another province is a contradiction, and not 5 digits is malformed.
    let e = remap(&ha_giang).unwrap_err();
    assert_eq!((e.kind, e.field), (RejectKind::Reference, Some("commune_code")));
    assert!(e.to_string().contains("belongs to province `01`, not `08` (remapped from `02`)"), "{e}");
    assert_eq!(remap(&with(ha_giang.clone(), "commune_code", json!("123"))).unwrap_err().kind, RejectKind::Invalid);
    // Events with codes in effect are untouched, their unknown communes still rejected.
    let e = remap(&received()).unwrap();
    assert_eq!(e, decode(&received()).unwrap());
    assert_eq!((e.province_code_original, e.commune_code_original), (None, None));
    assert_eq!(remap(&with(received(), "commune_code", json!("00001"))).unwrap_err().kind, RejectKind::Reference);
    assert_eq!(remap(&with(received(), "province_code", json!("03"))).unwrap_err().kind, RejectKind::Reference);
    // A central agency may name a province too.
    let central =
        with(with(without(received(), "commune_code"), "level", json!("central")), "province_code", json!("27"));
    assert_eq!(remap(&central).unwrap().province_code.as_deref(), Some("24"));
    // The default options reject, like decode_event.
    let options = DecodeOptions::default();
    assert_eq!(options.legacy_province_codes, LegacyProvinceCodes::Reject);
    let text = central.to_string();
    assert_eq!(decode_event_with(text.as_bytes(), units(), &options, now()).unwrap_err().kind, RejectKind::LegacyCode);
    assert_eq!(LegacyProvinceCodes::parse("remap"), Some(LegacyProvinceCodes::Remap));
    assert_eq!(LegacyProvinceCodes::parse("Remap"), None);
}

/// A valid event of each type: the envelope (central level is not used, so that
/// `province_code` is there) plus the type's own fields, as the contract lists them.
pub(super) fn type_cases() -> Vec<(&'static str, Value)> {
    vec![
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
        ("feedback.received", json!({"feedback_id": "F", "channel": "phone", "due_at": "2026-12-01T00:00:00Z"})),
        ("feedback.resolved", json!({"feedback_id": "F", "due_at": "2026-12-01T00:00:00Z"})),
    ]
}

/// Each type's optional fields (CONTRACT.md §7.5), with a valid value: absent or
/// `null` they are `None`, and like the required ones they are type-checked.
pub(super) fn optional_fields(ty: &str) -> Vec<(&'static str, Value)> {
    match ty {
        "dossier.received" => vec![("synced_dvcqg", json!(true))],
        "feedback.resolved" => vec![("satisfied", json!(false))],
        _ => vec![],
    }
}

/// Every field a type reads: its required and its optional fields.
pub(super) fn own_fields(ty: &str) -> Vec<String> {
    let cases = type_cases();
    let required = &cases.iter().find(|(t, _)| *t == ty).expect("a contract type").1;
    let mut own: Vec<String> = required.as_object().unwrap().keys().cloned().collect();
    own.extend(optional_fields(ty).into_iter().map(|(k, _)| k.to_string()));
    own
}

/// Every type's fields, required and optional, each once.
pub(super) fn all_fields() -> Vec<String> {
    let mut all: Vec<String> = type_cases().iter().flat_map(|(ty, _)| own_fields(ty)).collect();
    all.sort();
    all.dedup();
    all
}

/// The envelope fields.
pub(super) const ENVELOPE: [&str; 8] =
    ["event_id", "type", "occurred_at", "source", "agency_code", "level", "province_code", "commune_code"];

/// A valid event of type `ty` with `fields`, on the envelope of [`received`].
pub(super) fn event_of(ty: &str, fields: &Value) -> Value {
    let mut full: serde_json::Map<String, Value> = received()
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| ENVELOPE.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    full.insert("type".into(), json!(ty));
    full.extend(fields.as_object().unwrap().clone());
    Value::Object(full)
}

/// The JSON text of `event` with `"key": value_text` in place of any `key` it has, as its
/// first member, so before `type` in the order the decoder reads.
fn with_raw(event: &Value, key: &str, value_text: &str) -> String {
    prepend(&without(event.clone(), key), key, value_text)
}

/// The JSON text of `event` with `"key": value_text` before its members, even if it has
/// `key` already.
fn prepend(event: &Value, key: &str, value_text: &str) -> String {
    let text = event.to_string();
    format!("{{{}:{value_text},{}", json!(key), &text[1..])
}

/// Values of every JSON type, as text: numbers of every shape (one beyond f64), strings
/// with escapes (one a lone surrogate, which no string field accepts), nested arrays and
/// objects.
const ANY_JSON: &[&str] = &[
    "5",
    "-1.5e3",
    "1e400",
    "123456789012345678901234567890",
    "\"x\"",
    "\"\\u00e9\\n\"",
    "\"\\ud800\"",
    "\"\"",
    "true",
    "false",
    "null",
    "[]",
    "[1, \"a\", [true, {\"b\": null}]]",
    "{}",
    "{\"a\": {\"b\": [1, 2, {\"c\": \"d\"}]}}",
];

#[test]
fn every_type_requires_its_fields() {
    for (ty, fields) in type_cases() {
        let full = event_of(ty, &fields);
        let full = without(full, "commune_code");
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
fn fields_of_other_types_are_ignored_whatever_their_json_type() {
    let cases = type_cases();
    let all_fields = all_fields();
    for (ty, fields) in &cases {
        let full = event_of(ty, fields);
        let expected = decode(&full).unwrap_or_else(|e| panic!("{ty}: {e}"));
        let own = own_fields(ty);
        let others: Vec<&String> = all_fields.iter().filter(|f| !own.contains(f)).collect();
        assert!(others.len() >= 15, "{ty}: {others:?}");
        for key in &others {
            for value in ANY_JSON {
                let text = with_raw(&full, key, value);
                let got = decode_event(text.as_bytes(), units(), now());
                assert_eq!(got.as_ref(), Ok(&expected), "{ty} with {key}: {value}");
            }
        }
        // All of them at once, and after the type's own fields too.
        let mut text = full.to_string();
        for (i, key) in others.iter().enumerate() {
            text.insert_str(text.len() - 1, &format!(",{}:{}", json!(key), ANY_JSON[i % ANY_JSON.len()]));
        }
        assert_eq!(decode_event(text.as_bytes(), units(), now()), Ok(expected), "{ty}: {text}");
    }
}

#[test]
fn own_fields_are_type_checked_against_every_other_json_type() {
    // The JSON type a field takes, by the kind of its valid value in `type_cases`.
    fn json_type(text: &str) -> &'static str {
        match text.as_bytes()[0] {
            b'"' => "string",
            b't' | b'f' => "bool",
            b'n' => "null",
            b'[' => "array",
            b'{' => "object",
            _ if text.contains(['.', 'e', 'E']) => "float",
            _ => "integer",
        }
    }
    for (ty, fields) in type_cases() {
        let full = event_of(ty, &fields);
        for (key, valid) in fields.as_object().unwrap() {
            let wanted = json_type(&valid.to_string());
            for value in ANY_JSON {
                let got = json_type(value);
                if got == wanted || got == "null" {
                    continue;
                }
                let e = decode_event(with_raw(&full, key, value).as_bytes(), units(), now())
                    .expect_err(&format!("{ty}: {key} = {value}"));
                assert_eq!(
                    (e.kind, e.field.map(str::to_string)),
                    (RejectKind::Invalid, Some(key.clone())),
                    "{ty}: {key} = {value}: {e}"
                );
                assert!(e.to_string().starts_with(&format!("field `{key}`: ")), "{e}");
            }
            let e = decode_event(with_raw(&full, key, "null").as_bytes(), units(), now()).unwrap_err();
            assert_eq!((e.kind, e.field.map(str::to_string)), (RejectKind::Missing, Some(key.clone())), "{ty}");
            if wanted == "string" {
                // The right JSON type, but not valid Unicode.
                let e = decode_event(with_raw(&full, key, r#""D\ud800""#).as_bytes(), units(), now()).unwrap_err();
                assert_eq!(e.field.map(str::to_string), Some(key.clone()), "{ty}: {e}");
            }
        }
    }
    // An integer, but beyond i64.
    let paid = event_of("dossier.paid", &json!({"dossier_id": "D", "amount_vnd": 0, "online": true}));
    let e = decode_event(with_raw(&paid, "amount_vnd", "123456789012345678901234567890").as_bytes(), units(), now())
        .unwrap_err();
    assert_eq!((e.kind, e.field), (RejectKind::Invalid, Some("amount_vnd")), "{e}");
}

#[test]
fn envelope_fields_are_type_checked_for_every_type() {
    for (ty, fields) in type_cases() {
        let full = event_of(ty, &fields);
        for key in ENVELOPE {
            for value in ["5", "true", "[\"01\"]", "{\"a\": 1}"] {
                let e = decode_event(with_raw(&full, key, value).as_bytes(), units(), now())
                    .expect_err(&format!("{ty}: {key} = {value}"));
                assert_eq!((e.kind, e.field), (RejectKind::Invalid, Some(key)), "{ty}: {key} = {value}: {e}");
            }
        }
    }
}

#[test]
fn a_repeated_own_or_envelope_field_is_rejected_and_a_repeated_other_field_is_ignored() {
    let report = event_of("report.submitted", &json!({"report_id": "B", "via_system": false}));
    let expected = decode(&report).unwrap();
    for key in ["report_id", "via_system", "event_id", "type", "level"] {
        let value = report[key].to_string();
        let e = decode_event(prepend(&report, key, &value).as_bytes(), units(), now())
            .expect_err(&format!("repeated {key}"));
        assert_eq!((e.kind, e.field), (RejectKind::Invalid, Some(key)), "{e}");
        assert!(e.to_string().contains("more than once"), "{e}");
    }
    // `commune_code` is optional: a repeat is still ambiguous.
    let e = decode_event(prepend(&report, "commune_code", "null").as_bytes(), units(), now()).unwrap_err();
    assert_eq!((e.kind, e.field), (RejectKind::Invalid, Some("commune_code")), "{e}");
    // Fields of other types, and unknown ones, are ignored, repeats included.
    for key in ["channel", "dossier_id", "amount_vnd", "not_in_the_contract"] {
        let twice = format!("{{{k}:1,{k}:\"x\",{}", &report.to_string()[1..], k = json!(key));
        assert_eq!(decode_event(twice.as_bytes(), units(), now()), Ok(expected.clone()), "{twice}");
    }
}

#[test]
fn optional_fields_may_be_absent_or_null_and_are_type_checked_when_present() {
    for (ty, fields) in type_cases() {
        let absent = event_of(ty, &fields);
        let without_it = decode(&absent).unwrap_or_else(|e| panic!("{ty}: {e}"));
        for (key, valid) in optional_fields(ty) {
            assert!(without_it.to_json().get(key).is_none(), "{ty}: an absent {key} stays absent");
            assert_eq!(decode(&with(absent.clone(), key, Value::Null)).as_ref(), Ok(&without_it), "{ty}: {key} null");
            let present = decode(&with(absent.clone(), key, valid.clone())).unwrap_or_else(|e| panic!("{ty}: {e}"));
            assert_ne!(present, without_it, "{ty}: {key} is read");
            assert_eq!(present.to_json()[key], valid, "{ty}: {key} round-trips");
            assert_eq!(decode(&present.to_json()).as_ref(), Ok(&present));
            for value in ANY_JSON.iter().filter(|v| !["true", "false", "null"].contains(v)) {
                let e = decode_event(with_raw(&absent, key, value).as_bytes(), units(), now())
                    .expect_err(&format!("{ty}: {key} = {value}"));
                assert_eq!((e.kind, e.field), (RejectKind::Invalid, Some(key)), "{ty}: {key} = {value}: {e}");
            }
        }
    }
    let received = decode(&with(received(), "synced_dvcqg", json!(false))).unwrap();
    assert!(matches!(received.body, Body::DossierReceived { synced_dvcqg: Some(false), .. }), "{received:?}");
    let resolved = event_of("feedback.resolved", &json!({"feedback_id": "F", "due_at": "2026-12-01T00:00:00Z"}));
    let e = decode(&resolved).unwrap();
    assert!(matches!(e.body, Body::FeedbackResolved { satisfied: None, .. }), "{e:?}");
    let e = decode(&with(resolved, "satisfied", json!(true))).unwrap();
    assert!(matches!(e.body, Body::FeedbackResolved { satisfied: Some(true), .. }), "{e:?}");
}

#[test]
fn feedback_channels_include_phone_and_dossier_channels_do_not() {
    let fields = json!({"feedback_id": "F", "channel": "x", "due_at": "2026-12-01T00:00:00Z"});
    for channel in ["online", "in_person", "phone", "post"] {
        let e = decode(&with(event_of("feedback.received", &fields), "channel", json!(channel))).unwrap();
        assert_eq!(e.to_json()["channel"], channel);
        assert_eq!((e.family(), e.entity_id()), (Family::Feedback, "F"));
    }
    let e = err(&with(event_of("feedback.received", &fields), "channel", json!("fax")));
    assert_eq!(e.field, Some("channel"));
    assert!(e.to_string().contains("online, in_person, phone, post"), "{e}");
    assert_eq!(err(&with(received(), "channel", json!("phone"))).field, Some("channel"));
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
