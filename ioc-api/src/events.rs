//! `POST /api/v1/events`: NDJSON or a JSON array, answered after the batch is durable.

mod split;

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use ioc_ingest::{IngestError, Origin, Record};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::ApiError;

pub use split::{Split, split};

/// Splits a request body into records ([`split`]). A JSON array gives one record per
/// element; any other body is NDJSON, one record per non-blank line. A body that says it
/// is a JSON array but is not valid JSON becomes a single rejected record, so it still
/// reaches the dead letters.
pub fn split_body(content_type: Option<&str>, body: &[u8], request: &str) -> Vec<Record> {
    let origin = |index| Origin::Http { request: request.to_string(), index };
    match split(content_type, body) {
        Split::Array(records) | Split::Lines(records) => {
            records.into_iter().enumerate().map(|(i, raw)| Record::new(raw.to_vec(), origin(i))).collect()
        }
        Split::Broken(e) => vec![Record { raw: body.to_vec(), origin: origin(0), pre_rejected: Some(e) }],
    }
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
    let outcome = state.ingestor.submit(records, BTreeMap::new()).await.map_err(|e| match e {
        // Written, but not known to be durable: saying "nothing was accepted" would be
        // wrong, and so would "accepted". A re-send after the restart is safe.
        IngestError::OutcomeUnknown { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome_unknown",
            format!(
                "{e}; the server stops to recover: send the events again once it is back (duplicates are recognised)"
            ),
        ),
        IngestError::Stopped => {
            ApiError::unavailable(format!("{e}; nothing was accepted, retry once the server is back"))
        }
        e => ApiError::unavailable(format!("the events could not be stored, nothing was accepted; retry: {e}")),
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
