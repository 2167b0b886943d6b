//! `ApiError`: every error response is `{"error": {"code", "message"}}`, user errors
//! get a 4xx, and only our own faults get a 5xx.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ioc_query::{KpiError, SqlError};
use serde_json::json;
use tracing::error;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            error!(code = self.code, message = %self.message, "request failed");
        }
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<KpiError> for ApiError {
    fn from(e: KpiError) -> Self {
        match e {
            KpiError::UnknownKpi(_) => ApiError::not_found(e.to_string()),
            // What the client asked for decides these: a narrower question is answered.
            KpiError::UnknownDim(_)
            | KpiError::DimNotApplicable { .. }
            | KpiError::TooManyRows { .. }
            | KpiError::Timeout(_)
            | KpiError::Memory { .. } => ApiError::bad_request(e.code(), e.to_string()),
            KpiError::Compile { .. }
            | KpiError::Query(_)
            | KpiError::Storage(_)
            | KpiError::Rollup(_)
            | KpiError::BackfillContention => ApiError::internal(e.to_string()),
        }
    }
}

impl From<SqlError> for ApiError {
    fn from(e: SqlError) -> Self {
        let status = match e {
            SqlError::Busy => StatusCode::TOO_MANY_REQUESTS,
            SqlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}
