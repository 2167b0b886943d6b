//! Property tests of the decoder: arbitrary and mutated input never panics, every
//! rejection has a reason, and fields of other types or of no type never change an event.

use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::Value;

use super::tests::{ENVELOPE, all_fields, event_of, now, own_fields, type_cases, units};
use super::*;

/// Checks the invariants of either outcome of decoding `bytes`, in both modes for
/// pre-2025 province codes: remapping accepts what rejecting accepts, unchanged, and
/// a remapped event re-encodes to the codes it came with.
fn decode_checked(bytes: &[u8]) -> Result<Event, ValidationError> {
    let remap = DecodeOptions { legacy_province_codes: LegacyProvinceCodes::Remap };
    let remapped = decode_event_with(bytes, units(), &remap, now());
    if let Ok(event) = &remapped {
        let again = decode_event_with(event.to_json().to_string().as_bytes(), units(), &remap, now());
        assert_eq!(again.as_ref(), Ok(event), "a remapped event re-encodes to itself");
    }
    let decoded = decode_event(bytes, units(), now());
    if let Ok(event) = &decoded {
        assert_eq!(remapped.as_ref(), Ok(event), "remapping changes only events with pre-2025 codes");
    }
    match &decoded {
        Ok(event) => {
            let again = decode_event(event.to_json().to_string().as_bytes(), units(), now());
            assert_eq!(again.as_ref(), Ok(event), "an accepted event re-encodes to itself");
        }
        Err(e) => {
            assert!(!e.message.is_empty(), "{e:?}");
            assert_ne!(e.kind, RejectKind::TooLarge);
            if let Some(field) = e.field {
                assert!(e.to_string().starts_with(&format!("field `{field}`: ")), "{e}");
            }
        }
    }
    decoded
}

/// JSON text of any type, with the shapes a generic generator rarely makes: numbers
/// beyond f64 and i64, escapes, lone surrogates, nesting.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        select(vec!["1e400", "-1e-400", "123456789012345678901234567890", "-0", "0.0E+0", "1.5"])
            .prop_map(str::to_string),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        select(vec![r#""\ud800""#, r#""\u00e9\n\"""#, r#""""#, r#""online""#, r#""2026-11-23T00:00:00Z""#])
            .prop_map(str::to_string),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((any::<String>(), inner), 0..4).prop_map(|members| {
                let members: Vec<String> =
                    members.iter().map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap())).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// A valid event of a random type: its type, JSON value and decoded event.
fn valid_event() -> impl Strategy<Value = (&'static str, Value, Event)> {
    (0..type_cases().len()).prop_map(|i| {
        let (ty, fields) = type_cases().swap_remove(i);
        let value = event_of(ty, &fields);
        let event = decode_event(value.to_string().as_bytes(), units(), now()).expect("a valid case");
        (ty, value, event)
    })
}

/// The object's members as `"key":value` texts, in order.
fn members(value: &Value) -> Vec<String> {
    value.as_object().unwrap().iter().map(|(k, v)| format!("{}:{v}", Value::from(k.as_str()))).collect()
}

/// The fields of the other types: every type's field (required or optional) that `ty`
/// does not have.
fn other_fields(ty: &str) -> Vec<String> {
    let own = own_fields(ty);
    all_fields().into_iter().filter(|k| !own.contains(k)).collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let snippet = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..8),
        json_text().prop_map(String::into_bytes),
        select(vec![",", ":", "{", "}", "[", "]", "\"", "\\", ",\"online\":", ",\"type\":"])
            .prop_map(|s| s.as_bytes().to_vec()),
    ];
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), snippet).prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Remove(a, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, x) => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Mutation::Insert(i, s) => {
            let i = i.index(bytes.len() + 1);
            bytes.splice(i..i, s.iter().copied());
        }
        Mutation::Remove(a, b) => {
            let (a, b) = (a.index(bytes.len()), b.index(bytes.len()));
            bytes.drain(a.min(b)..a.max(b));
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_accepted_or_rejected_with_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_checked(&bytes);
    }

    #[test]
    fn arbitrary_json_is_accepted_or_rejected_with_a_reason(text in json_text()) {
        let _ = decode_checked(text.as_bytes());
    }

    #[test]
    fn mutated_valid_events_are_accepted_or_rejected_with_a_reason(
        (_, value, _) in valid_event(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = value.to_string().into_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let _ = decode_checked(&bytes);
    }

    /// Fields of other types, unknown fields, and repeats of either, whatever their JSON
    /// type and wherever they are in the object (before or after `type`), leave the event
    /// as it is.
    #[test]
    fn other_types_and_unknown_fields_of_any_json_type_never_change_the_event(
        (ty, value, event) in valid_event(),
        extras in prop::collection::vec((any::<Index>(), "[a-z_]{1,20}", json_text(), any::<Index>()), 1..8),
    ) {
        let others = other_fields(ty);
        let own = value.as_object().unwrap();
        let mut members = members(&value);
        for (pick, unknown, text, at) in &extras {
            // Two in three are another type's fields, the rest unknown names.
            let key = if pick.index(3) < 2 {
                pick.get(&others).clone()
            } else if own.contains_key(unknown.as_str())
                || own_fields(ty).contains(unknown)
                || ENVELOPE.contains(&unknown.as_str())
            {
                continue;
            } else {
                unknown.clone()
            };
            let at = at.index(members.len() + 1);
            members.insert(at, format!("{}:{text}", Value::from(key)));
        }
        let text = format!("{{{}}}", members.join(","));
        prop_assert_eq!(decode_checked(text.as_bytes()), Ok(event), "{}", text);
    }

    /// An own field with a random value is accepted, or rejected naming that field.
    #[test]
    fn own_fields_with_random_values_are_accepted_or_rejected_naming_the_field(
        (_, value, _) in valid_event(),
        pick in any::<Index>(),
        text in json_text(),
    ) {
        let own: Vec<String> =
            value.as_object().unwrap().keys().filter(|k| !ENVELOPE.contains(&k.as_str())).cloned().collect();
        let key = pick.get(&own);
        let mut object = value.as_object().unwrap().clone();
        object.remove(key);
        let text = format!("{{{}:{text},{}", Value::from(key.as_str()), &Value::Object(object).to_string()[1..]);
        if let Err(e) = decode_checked(text.as_bytes()) {
            prop_assert_eq!(e.field, Some(key.as_str()), "{}: {}", text, e);
            prop_assert!(matches!(e.kind, RejectKind::Invalid | RejectKind::Missing), "{}", e);
        }
    }
}
