//! Splitting a request body into records, before any record is decoded.
//!
//! Pure and self-contained (std, `serde_json` and `ioc_core` only): `fuzz/` compiles
//! this file on its own, so that fuzzing it does not build the whole API crate.

use ioc_core::ValidationError;
use serde_json::value::RawValue;

/// The records of a request body, borrowed from it, in order.
#[derive(Debug, PartialEq)]
pub enum Split<'a> {
    /// A JSON array: one record per element, as its exact bytes.
    Array(Vec<&'a [u8]>),
    /// NDJSON: one record per line that is not blank, without its `\n` or `\r\n`.
    Lines(Vec<&'a [u8]>),
    /// A body meant as a JSON array that is not one: it is one rejected record, so
    /// that it still reaches the dead letters.
    Broken(ValidationError),
}

/// A body whose first non-blank byte is `[`, or any non-blank body sent as
/// `application/json`, is a JSON array; any other body is NDJSON.
pub fn split<'a>(content_type: Option<&str>, body: &'a [u8]) -> Split<'a> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let is_json = content_type.is_some_and(|c| c.starts_with("application/json"));
    if first == Some(b'[') || (is_json && first.is_some()) {
        return match serde_json::from_slice::<Vec<&RawValue>>(body) {
            Ok(items) => Split::Array(items.into_iter().map(|raw| raw.get().as_bytes()).collect()),
            Err(e) => Split::Broken(ValidationError::malformed(format!("the body is not a valid JSON array: {e}"))),
        };
    }
    Split::Lines(
        body.split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use chrono::{DateTime, Utc};
    use ioc_core::event::{Event, RejectKind};
    use ioc_core::{AdminUnits, decode_event};
    use proptest::prelude::*;
    use proptest::sample::select;
    use serde::de::IgnoredAny;

    use super::*;

    fn units() -> &'static AdminUnits {
        static UNITS: OnceLock<AdminUnits> = OnceLock::new();
        UNITS.get_or_init(AdminUnits::builtin)
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00+07:00").unwrap().to_utc()
    }

    /// A valid event of each type of the contract, as one line of JSON.
    const EVENTS: [&str; 9] = [
        r#""type":"dossier.received","dossier_id":"D1","procedure_code":"1.001612","channel":"online","service_level":"full","due_at":"2026-11-30T17:00:00+07:00","digitized":true,"reused_data":false,"authenticated":true"#,
        r#""type":"dossier.resolved","dossier_id":"D1","procedure_code":"1.001612","due_at":"2026-11-30T17:00:00+07:00","result_electronic":true"#,
        r#""type":"dossier.closed","dossier_id":"D1","reason":"withdrawn""#,
        r#""type":"dossier.paid","dossier_id":"D1","amount_vnd":150000,"online":true"#,
        r#""type":"dossier.rated","dossier_id":"D1","satisfied":false"#,
        r#""type":"document.sent","document_id":"V1","receiver_agency_code":"000.00.00.G01","electronic":true,"signed":true,"secret":false"#,
        r#""type":"work_record.closed","record_id":"R1","online":true,"secret":false"#,
        r#""type":"inspection.completed","inspection_id":"I1","digital":true"#,
        r#""type":"report.submitted","report_id":"B1","via_system":false"#,
    ];

    fn event_text(i: usize, n: usize) -> String {
        format!(
            r#"{{"event_id":"e-{n}","occurred_at":"2026-11-23T09:15:00+07:00","source":"motcua","agency_code":"000.00.00.H26","level":"commune","province_code":"01","commune_code":"00004",{}}}"#,
            EVENTS[i % EVENTS.len()]
        )
    }

    fn content_type() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            select(vec!["application/json", "application/x-ndjson", "application/json; charset=utf-8", "text/plain"])
                .prop_map(|c| Some(c.to_string())),
            any::<String>().prop_map(Some),
        ]
    }

    /// Bodies of JSON-ish bytes, so that arrays, objects and lines are common.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            4 => select(b"[]{},:\"\\\n\r\t 01aetnul".to_vec()),
            1 => any::<u8>(),
        ];
        prop_oneof![prop::collection::vec(byte, 0..120), prop::collection::vec(any::<u8>(), 0..120)]
    }

    fn is_json_whitespace(b: &u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\n' | b'\r')
    }

    fn offset(body: &[u8], record: &[u8]) -> usize {
        let at = record.as_ptr() as usize - body.as_ptr() as usize;
        assert!(at + record.len() <= body.len(), "a record outside the body");
        at
    }

    /// The records cover the body: each array element, or each non-blank line, once, in
    /// order; a broken array is one rejected record. Then every record decodes, or is
    /// rejected with a reason.
    fn check(content_type: Option<&str>, body: &[u8]) {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        let as_array = first == Some(&b'[')
            || (first.is_some() && content_type.is_some_and(|c| c.starts_with("application/json")));
        let records = match split(content_type, body) {
            Split::Array(records) => {
                assert!(as_array);
                let elements = serde_json::from_slice::<Vec<IgnoredAny>>(body).expect("an array");
                assert_eq!(records.len(), elements.len());
                // Between the elements there is only the array's own syntax.
                let mut at = 0;
                let mut syntax = Vec::new();
                for record in &records {
                    let start = offset(body, record);
                    assert!(start >= at, "records overlap or are out of order");
                    syntax.extend(body[at..start].iter().filter(|b| !is_json_whitespace(b)));
                    syntax.push(b'_');
                    at = start + record.len();
                }
                syntax.extend(body[at..].iter().filter(|b| !is_json_whitespace(b)));
                let expected = match records.len() {
                    0 => "[]".to_string(),
                    n => format!("[{}]", vec!["_"; n].join(",")),
                };
                assert_eq!(String::from_utf8_lossy(&syntax), expected);
                records
            }
            Split::Lines(records) => {
                assert!(!as_array);
                let lines: Vec<&[u8]> = body
                    .split(|b| *b == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
                    .collect();
                assert_eq!(records, lines);
                for (record, line) in records.iter().zip(&lines) {
                    assert_eq!(offset(body, record), offset(body, line));
                }
                records
            }
            Split::Broken(e) => {
                assert!(as_array);
                // JSON text is UTF-8: an array with other bytes is broken, though
                // IgnoredAny (which skips strings unchecked) may pass it.
                let valid =
                    std::str::from_utf8(body).is_ok() && serde_json::from_slice::<Vec<IgnoredAny>>(body).is_ok();
                assert!(!valid, "a valid array called broken");
                assert_eq!(e.kind, RejectKind::Malformed);
                assert!(!e.message.is_empty());
                Vec::new()
            }
        };
        for record in records {
            if let Err(e) = decode_event(record, units(), now()) {
                assert!(!e.message.is_empty(), "{e:?}");
            }
        }
    }

    /// Decodes each record of a body of valid events.
    fn decoded(content_type: Option<&str>, body: &[u8]) -> Vec<Event> {
        let (Split::Array(records) | Split::Lines(records)) = split(content_type, body) else {
            panic!("a body of valid events split as broken: {}", String::from_utf8_lossy(body));
        };
        records.into_iter().map(|r| decode_event(r, units(), now()).expect("a valid event")).collect()
    }

    /// Found by fuzzing (`split_body`): the oracle took this for a valid array.
    #[test]
    fn an_array_with_bytes_that_are_not_utf8_is_broken_as_a_whole() {
        let body = b"[{\"a\": 1}, {\"event_i\xfe\xff\xff\xfdd\": \"e-2\"}]";
        let Split::Broken(e) = split(Some("application/json"), body) else { panic!("split as records") };
        assert_eq!(e.kind, RejectKind::Malformed);
        assert!(e.message.starts_with("the body is not a valid JSON array: "), "{e}");
        check(Some("application/json"), body);
        // As NDJSON, only its own line is rejected.
        let lines = b"{\"a\": 1}\n{\"event_i\xfe\": 2}\n";
        assert_eq!(split(None, lines), Split::Lines(vec![&lines[..8], &lines[9..lines.len() - 1]]));
        check(None, lines);
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_split_into_records_that_cover_them(ct in content_type(), body in body()) {
            check(ct.as_deref(), &body);
        }

        #[test]
        fn valid_events_as_ndjson_give_one_record_per_line(
            events in prop::collection::vec((0..EVENTS.len(), select(vec!["\n", "\r\n", "\n\n", "\n  \t\n", "\r\n \r\n"])), 0..12),
            ct in select(vec![None, Some("application/x-ndjson"), Some("text/plain")]),
        ) {
            let texts: Vec<String> = events.iter().enumerate().map(|(n, (i, _))| event_text(*i, n)).collect();
            let body: String = texts.iter().zip(&events).map(|(t, (_, sep))| format!("{t}{sep}")).collect();
            check(ct, body.as_bytes());
            let expected: Vec<Event> =
                texts.iter().map(|t| decode_event(t.as_bytes(), units(), now()).unwrap()).collect();
            prop_assert_eq!(decoded(ct, body.as_bytes()), expected);
        }

        #[test]
        fn valid_events_as_a_json_array_give_one_record_per_element(
            events in prop::collection::vec((0..EVENTS.len(), select(vec!["", " ", "\n", "\r\n\t"])), 0..12),
            ct in select(vec![None, Some("application/json"), Some("application/x-ndjson")]),
        ) {
            let texts: Vec<String> = events.iter().enumerate().map(|(n, (i, _))| event_text(*i, n)).collect();
            let items: Vec<String> = texts.iter().zip(&events).map(|(t, (_, ws))| format!("{ws}{t}{ws}")).collect();
            let body = format!(" [{}]\n", items.join(","));
            check(ct, body.as_bytes());
            let expected: Vec<Event> =
                texts.iter().map(|t| decode_event(t.as_bytes(), units(), now()).unwrap()).collect();
            prop_assert_eq!(decoded(ct, body.as_bytes()), expected);
        }
    }
}
