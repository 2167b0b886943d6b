//! The invariants the fuzz targets check, shared by both.
//!
//! The splitter is `ioc-api/src/events/split.rs` itself, compiled here on its own (it
//! depends only on std, serde_json and ioc-core), so fuzzing it does not build the API
//! crate and its dependencies (DataFusion, rdkafka) with coverage instrumentation.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use ioc_core::event::{Event, RejectKind, ValidationError};
use ioc_core::{AdminUnits, decode_event};
use serde::de::IgnoredAny;

#[path = "../../ioc-api/src/events/split.rs"]
pub mod split;

pub fn units() -> &'static AdminUnits {
    static UNITS: OnceLock<AdminUnits> = OnceLock::new();
    UNITS.get_or_init(AdminUnits::builtin)
}

/// A fixed clock, the one the seed corpus's events are valid at.
pub fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00+07:00").unwrap().to_utc()
}

/// Every rejection has a reason: a non-empty message, and a field name that the
/// message starts with when there is one. The decoder never says `TooLarge` (sources do).
pub fn check_rejection(e: &ValidationError) {
    assert!(!e.message.is_empty(), "empty message: {e:?}");
    assert!(!matches!(e.kind, RejectKind::TooLarge), "{e:?}");
    assert!(!e.kind.as_str().is_empty());
    let shown = e.to_string();
    match e.field {
        Some(field) => assert!(shown.starts_with(&format!("field `{field}`: ")), "{shown}"),
        None => assert_eq!(shown, e.message),
    }
}

/// Decodes one record and checks the invariants of either outcome.
pub fn decode_and_check(record: &[u8]) -> Result<Event, ValidationError> {
    let decoded = decode_event(record, units(), now());
    let json = serde_json::from_slice::<IgnoredAny>(record);
    match &decoded {
        Ok(event) => {
            // Only JSON is accepted, and what is accepted re-encodes to an equal event.
            assert!(json.is_ok(), "accepted but not JSON: {:?}", String::from_utf8_lossy(record));
            let again = decode_event(event.to_json().to_string().as_bytes(), units(), now());
            assert_eq!(again.as_ref(), Ok(event), "round trip of {:?}", String::from_utf8_lossy(record));
        }
        Err(e) => {
            check_rejection(e);
            if json.is_err() {
                assert_eq!(e.kind, RejectKind::Malformed, "not JSON, but {e:?}");
            }
        }
    }
    decoded
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Where `part` starts in `whole`, which it must be a slice of.
fn offset(whole: &[u8], part: &[u8]) -> usize {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    assert!(start + part.len() <= whole.len(), "a record outside the body");
    start
}

/// Checks that the splitter's records cover the body, then decodes each record.
pub fn split_and_check(content_type: Option<&str>, body: &[u8]) {
    use split::Split;
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let as_array =
        first == Some(b'[') || (first.is_some() && content_type.is_some_and(|c| c.starts_with("application/json")));
    match split::split(content_type, body) {
        Split::Array(records) => {
            assert!(as_array, "an array split of a body that is not one");
            assert!(std::str::from_utf8(body).is_ok(), "an array that is not UTF-8");
            // The records are the elements, in order, and between them there is only
            // the array's own syntax: `[`, `,`, `]` and JSON whitespace.
            let count = serde_json::from_slice::<Vec<IgnoredAny>>(body).expect("split as an array, so one").len();
            assert_eq!(records.len(), count);
            let mut at = 0;
            let mut separators = Vec::new();
            for record in &records {
                let start = offset(body, record);
                assert!(start >= at, "records overlap or are out of order");
                separators.push(&body[at..start]);
                at = start + record.len();
                assert!(serde_json::from_slice::<IgnoredAny>(record).is_ok(), "an element that is not one value");
            }
            separators.push(&body[at..]);
            let n = separators.len();
            for (i, gap) in separators.iter().enumerate() {
                let syntax: Vec<u8> = gap.iter().copied().filter(|b| !is_json_whitespace(*b)).collect();
                let expected: &[u8] = match (i, n) {
                    (0, 1) => b"[]",
                    (0, _) => b"[",
                    (i, n) if i == n - 1 => b"]",
                    _ => b",",
                };
                assert_eq!(syntax, expected, "between elements {i} and {}", i + 1);
            }
            for record in records {
                let _ = decode_and_check(record);
            }
        }
        Split::Broken(e) => {
            assert!(as_array, "a broken array that was not meant as one");
            // JSON text is UTF-8 (RFC 8259 §8.1): bytes that are not make the array
            // broken, even where a lenient scan (IgnoredAny skips strings unchecked) passes.
            let valid = std::str::from_utf8(body).is_ok() && serde_json::from_slice::<Vec<IgnoredAny>>(body).is_ok();
            assert!(!valid, "a valid array called broken");
            assert_eq!(e.kind, RejectKind::Malformed);
            check_rejection(&e);
        }
        Split::Lines(records) => {
            assert!(!as_array, "a line split of an array body");
            // One record per line that is not blank, in order: the line itself, less one `\r`
            // before its end.
            let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
            let mut records = records.into_iter();
            for line in lines {
                let content = line.strip_suffix(b"\r").unwrap_or(line);
                if content.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let record = records.next().expect("a non-blank line without its record");
                assert_eq!(offset(body, record), offset(body, line), "a record that does not start its line");
                assert_eq!(record, content);
                let _ = decode_and_check(record);
            }
            assert!(records.next().is_none(), "more records than non-blank lines");
        }
    }
}

/// The content type and body a `split_body` input stands for: the first byte picks a
/// content type (an arbitrary one, of the next bytes, when it is 0x80 or more), the rest is
/// the body.
pub fn content_type_and_body(data: &[u8]) -> (Option<String>, &[u8]) {
    const TYPES: [Option<&str>; 6] = [
        None,
        Some("application/json"),
        Some("application/x-ndjson"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        Some(""),
    ];
    let Some((&first, rest)) = data.split_first() else {
        return (None, data);
    };
    if first < 0x80 {
        return (TYPES[first as usize % TYPES.len()].map(str::to_string), rest);
    }
    let n = ((first & 0x7f) as usize).min(rest.len());
    (Some(String::from_utf8_lossy(&rest[..n]).into_owned()), &rest[n..])
}
