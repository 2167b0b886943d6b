//! The wall-display page, embedded into the binary: no CDN, works air-gapped.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;

const INDEX: &str = include_str!("../../dashboards/index.html");
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../dashboards/app.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../dashboards/style.css")),
];

/// `GET /`: the page, with the province list filled in.
pub async fn index(State(state): State<AppState>) -> Response {
    let provinces: Vec<_> = state.units.provinces().iter().map(|p| json!({"code": p.code, "name": p.name})).collect();
    // `</` cannot appear in JSON strings of ours, but escape it anyway inside <script>.
    let list = serde_json::to_string(&provinces).expect("serialises").replace("</", "<\\/");
    let html = INDEX.replace("__PROVINCES_JSON__", &list);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], html).into_response()
}

/// `GET /{file}`: static assets.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, body)) => ([(header::CONTENT_TYPE, *mime)], *body).into_response(),
        None => ApiError::not_found(format!("no asset `{file}`")).into_response(),
    }
}
