//! `POST /api/v1/sql`: read-only SQL, JSON or CSV. The engine audits every statement
//! and applies the caller's row security.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use ioc_query::Caller;

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

/// Largest `POST /api/v1/sql` body: far above any statement a person writes.
pub const BODY_LIMIT: usize = 2 << 20;

pub async fn run(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over the {BODY_LIMIT}-byte limit for a SQL statement"),
        ),
        status => ApiError::new(status, "bad_body", e.body_text()),
    })?;
    let req: SqlRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("expected {{\"sql\": \"...\"}}: {e}")))?;
    let out = state.sql.run(&caller(&who, "http"), &req.sql).await?;
    let wants_csv = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        let body = json::csv(&out.schema, &out.batches)
            .map_err(|e| ApiError::internal(format!("could not write CSV: {e}")))?;
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    Ok(axum::Json(json!({
        "columns": json::columns(&out.schema),
        "rows": json::rows(&out.batches),
        "truncated": out.truncated,
    }))
    .into_response())
}

/// The SQL engine's view of an authenticated principal.
pub fn caller<'a>(who: &'a Principal, via: &'a str) -> Caller<'a> {
    Caller { token: &who.name, via, province: who.province.as_deref(), admin: who.role == Role::Admin, hook: None }
}
