//! `POST /api/v1/events`: NDJSON or a JSON array, answered after the batch is durable.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use ioc_core::ValidationError;
use ioc_ingest::{Origin, Record};
use serde_json::{Value, json, value::RawValue};

use crate::app::AppState;
use crate::error::ApiError;

/// Splits a request body into records. A JSON array gives one record per element; any
/// other body is NDJSON, one record per non-blank line. A body that says it is a JSON
/// array but is not valid JSON becomes a single rejected record, so it still reaches
/// the dead letters.
pub fn split_body(content_type: Option<&str>, body: &[u8], request: &str) -> Vec<Record> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let is_json = content_type.is_some_and(|c| c.starts_with("application/json"));
    if first == Some(b'[') || (is_json && first.is_some()) {
        let origin = |index| Origin::Http { request: request.to_string(), index };
        return match serde_json::from_slice::<Vec<&RawValue>>(body) {
            Ok(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, raw)| Record::new(raw.get().as_bytes().to_vec(), origin(i)))
                .collect(),
            Err(e) => vec![Record {
                raw: body.to_vec(),
                origin: origin(0),
                pre_rejected: Some(ValidationError::malformed(format!("the body is not a valid JSON array: {e}"))),
            }],
        };
    }
    body.split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .enumerate()
        .map(|(i, line)| Record::new(line.to_vec(), Origin::Http { request: request.to_string(), index: i }))
        .collect()
}

pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over the {}-byte limit; send smaller batches", state.body_limit_bytes),
            )
        } else {
            ApiError::bad_request("bad_body", e.body_text())
        }
    })?;
    let request = state.next_request_id();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let records = split_body(content_type, &body, &request);
    let outcome = state.ingestor.submit(records, BTreeMap::new()).await.map_err(|e| {
        ApiError::unavailable(format!("the events could not be stored, nothing was accepted; retry: {e}"))
    })?;
    let rejected: Vec<Value> = outcome.rejected.iter().map(|(i, e)| json!({"index": i, "error": e})).collect();
    Ok(Json(json!({
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "rejected": rejected,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_skips_blank_lines_and_numbers_records_from_zero() {
        let recs = split_body(Some("application/x-ndjson"), b"{\"a\":1}\n\n  \r\n{\"b\":2}\r\n", "r");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].raw, b"{\"b\":2}");
        assert_eq!(recs[1].origin, Origin::Http { request: "r".into(), index: 1 });
    }

    #[test]
    fn a_json_array_gives_one_record_per_element_with_its_raw_bytes() {
        let recs = split_body(Some("application/json"), br#" [ {"a": 1}, 42, "x" ] "#, "r");
        let raws: Vec<&[u8]> = recs.iter().map(|r| r.raw.as_slice()).collect();
        assert_eq!(raws, [&br#"{"a": 1}"#[..], b"42", b"\"x\""]);
        assert!(recs.iter().all(|r| r.pre_rejected.is_none()));
    }

    #[test]
    fn a_broken_json_array_is_one_rejected_record_with_the_whole_body() {
        let recs = split_body(None, b"[{\"a\":1},", "r");
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].raw, b"[{\"a\":1},");
        assert!(recs[0].pre_rejected.is_some());
    }
}
