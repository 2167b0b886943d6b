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
use crate::config::WsSettings;
use crate::error::ApiError;
use crate::live::Hub;
use crate::ws::WsMetrics;
use crate::{alerts, dashboard, events, kpis, sql, ws};

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
    /// Turns true on graceful shutdown (websockets then send a close frame).
    pub shutdown: watch::Receiver<bool>,
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
        .route("/api/v1/ws", get(ws::handler))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alert-rules", get(alerts::rules))
        .route_layer(middleware::from_fn_with_state((state.clone(), Permission::Read), require));
    let sql = Router::new()
        .route("/api/v1/sql", post(sql::run))
        .route_layer(middleware::from_fn_with_state((state.clone(), Permission::Sql), require));
    let ingest = Router::new()
        .route("/api/v1/events", post(events::post))
        .layer(DefaultBodyLimit::max(state.body_limit_bytes))
        .route_layer(middleware::from_fn_with_state((state.clone(), Permission::Ingest), require));
    Router::new()
        .merge(read)
        .merge(sql)
        .merge(ingest)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard::index))
        .route("/{file}", get(dashboard::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
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
    // Browsers cannot set headers on websockets and page loads: `?token=` is accepted.
    let from_query = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")).map(|t| t.to_string()));
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

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
}
