//! `POST /api/v1/sql`: read-only SQL, JSON or CSV, every statement audit-logged.

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::audit::AuditEntry;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

pub async fn run(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: SqlRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("expected {{\"sql\": \"...\"}}: {e}")))?;
    if who.province.is_some() {
        // Row security on the query plan comes with the SQL hardening work; until then a
        // province-scoped token must not see other provinces' rows through SQL.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "province-scoped tokens cannot run ad-hoc SQL in this version",
        ));
    }
    let result = state.sql.run(&req.sql).await;
    state.audit.record(&AuditEntry::new(&who.name, "http", &req.sql, &result));
    let out = result?;
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
