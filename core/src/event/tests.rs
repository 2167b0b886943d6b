use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::*;
use crate::admin::AdminUnits;

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
