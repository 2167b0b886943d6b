//! `fn app(state) -> Router`: routes, auth, health and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ioc_core::AdminUnits;
use ioc_ingest::Ingestor;
use ioc_query::{KpiEngine, SqlEngine};
use ioc_storage::Store;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use tokio::sync::watch;

use crate::alerts::AlertEngine;
use crate::auth::{Permission, Principal, Token, authenticate};
use crate::config::{DashboardSettings, WsSettings};
use crate::error::ApiError;
use crate::http_metrics::{self, HttpMetrics};
use crate::live::Hub;
use crate::throughput::ThroughputCounter;
use crate::ws::WsMetrics;
use crate::{alerts, dashboard, events, index, kpis, sql, ws};

/// Everything handlers need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub units: Arc<AdminUnits>,
    pub ingestor: Ingestor,
    pub kpis: Arc<KpiEngine>,
    pub sql: SqlEngine,
    pub registry: Registry,
    pub tokens: Arc<Vec<Token>>,
    pub body_limit_bytes: usize,
    pub requests: Arc<AtomicU64>,
    /// Present when a Kafka source is configured.
    pub kafka: Option<ioc_ingest::kafka::KafkaMetrics>,
    /// Distinguishes request ids across restarts.
    pub boot_id: String,
    pub hub: Arc<Hub>,
    pub alerts: Arc<AlertEngine>,
    pub ws: WsSettings,
    pub ws_metrics: WsMetrics,
    /// Answer times by route (`ioc_http_request_duration_seconds`).
    pub http_metrics: HttpMetrics,
    /// Turns true on graceful shutdown (websockets then send a close frame).
    pub shutdown: watch::Receiver<bool>,
    /// Events per minute by source family (a commit listener).
    pub throughput: Arc<ThroughputCounter>,
    /// What the wall display shows besides data.
    pub dashboard: DashboardSettings,
}

impl AppState {
    pub fn next_request_id(&self) -> String {
        format!("{}-{}", self.boot_id, self.requests.fetch_add(1, Ordering::Relaxed))
    }
}

pub fn app(state: AppState) -> Router {
    let read = Router::new()
        .route("/api/v1/kpis", get(kpis::list))
        .route("/api/v1/kpis/{id}", get(kpis::series))
        .route("/api/v1/index", get(index::get))
        .route("/api/v1/ws", get(ws::handler))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alert-rules", get(alerts::rules))
        .route_layer(middleware::from_fn_with_state((state.clone(), Permission::Read), require));
    let sql = Router::new()
        .route("/api/v1/sql", post(sql::run))
        .layer(DefaultBodyLimit::max(sql::BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state((state.clone(), Permission::Sql), require));
    let ingest = Router::new()
        .route("/api/v1/events", post(events::post))
        .layer(DefaultBodyLimit::max(state.body_limit_bytes))
        .route_layer(middleware::from_fn_with_state((state.clone(), Permission::Ingest), require));
    // Prometheus sends a token like any client: KPI values are on /metrics too.
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state((state.clone(), Permission::Metrics), require));
    Router::new()
        .merge(read)
        .merge(sql)
        .merge(ingest)
        .merge(metrics)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(dashboard::index))
        .route("/{file}", get(dashboard::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(catch_panics))
        .layer(middleware::map_response(json_errors))
        // Outermost, so that it times the answer as sent, a caught panic's 500 included.
        .layer(middleware::from_fn_with_state(state.http_metrics.clone(), http_metrics::observe))
        .with_state(state)
}

/// The `token` query parameter, percent-decoded (browsers cannot set headers on
/// websockets and page loads, and encode the token in the URL). A `+` stays a `+`:
/// tokens never contain spaces, so it is not read as one.
pub fn query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let value = kv.strip_prefix("token=")?;
        percent_encoding::percent_decode_str(value).decode_utf8().ok().map(|t| t.into_owned())
    })
}

/// The principal, when the request carries a valid token (or no tokens are configured).
fn principal(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> Result<Principal, ApiError> {
    if state.tokens.is_empty() {
        return Ok(Principal::local());
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let from_query = query.and_then(query_token);
    let presented = bearer
        .map(str::to_string)
        .or(from_query)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a bearer token is required"))?;
    authenticate(&state.tokens, &presented)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the token is not valid"))
}

async fn require(
    State((state, needed)): State<(AppState, Permission)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let who = principal(&state, req.headers(), req.uri().query())?;
    if !who.role.allows(needed) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role `{}` may not do this", who.role.as_str()),
        ));
    }
    req.extensions_mut().insert(who);
    Ok(next.run(req).await)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let storage = state.store.check_writable();
    let ingest = !state.ingestor.is_closed();
    let kafka = state.kafka.as_ref().map(|k| k.is_connected());
    let ready = storage.is_ok() && ingest && kafka != Some(false);
    let mut sources = json!({"http": "ok"});
    if let Some(connected) = kafka {
        sources["kafka"] = json!(if connected { "connected" } else { "disconnected" });
    }
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "storage_writable": storage.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into()),
            "ingest_pipeline": if ingest { "ok" } else { "stopped" },
            "sources": sources,
        }
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&state.registry.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf).into_response(),
        Err(e) => ApiError::internal(format!("could not encode metrics: {e}")).into_response(),
    }
}

/// Every answer that is not a success is the contract's JSON error body. Axum's own
/// rejections (a query string that does not parse, a websocket request without
/// upgrade, a body over a limit, ...) answer plain text: they are rewritten here with
/// their status, their headers (`allow`, `retry-after`, ...) and their message.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // Rejection texts are one line; anything longer is not ours to echo.
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_string());
    let message = match text {
        Ok(t) if !t.is_empty() => t,
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut out = ApiError::new(status, error_code(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// The error code for a status that no handler chose a code for.
fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

/// A handler that panics is a bug; the client still gets a JSON 500 rather than a
/// dropped connection, and the panic is logged.
async fn catch_panics(req: Request, next: Next) -> Response {
    use futures::FutureExt;
    let path = req.uri().path().to_string();
    match std::panic::AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(path, panic = what, "a request handler panicked");
            ApiError::internal("the server failed while answering this request; the fault is logged").into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
}
