//! `GET /api/v1/index`: the QĐ 766 service index (CONTRACT.md §7.6), nationally or
//! by province with ranks, and its rows as the websocket pushes them.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Query, State};
use chrono::Utc;
use ioc_core::index::{IndexDef, IndexScore};
use ioc_core::time::fmt_vn;
use ioc_query::index::{IndexCounts, IndexRow};
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::kpis::{period, scoped_province};

pub async fn get(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    for key in params.keys() {
        if !matches!(key.as_str(), "from" | "to" | "group_by" | "province_code" | "token") {
            return Err(ApiError::bad_request("unknown_parameter", format!("unknown query parameter `{key}`")));
        }
    }
    let def = state
        .kpis
        .catalog()
        .index()
        .ok_or_else(|| ApiError::not_found("the KPI catalog defines no service index ([index])"))?;
    let now = Utc::now();
    let period = period(&params, now)?;
    let by_province = match params.get("group_by").map(String::as_str) {
        None | Some("") => false,
        Some("province_code") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_dimension",
                format!("the index is grouped by province_code only, not `{other}`"),
            ));
        }
    };
    let only = scoped_province(&who, params.get("province_code"), &state)?;
    let counts = IndexCounts::sum(&state.kpis, def, period, only.as_deref(), by_province, now).await?;
    let rows: Vec<Value> = counts.rows(def, only.as_deref(), by_province).iter().map(|r| row_json(def, r)).collect();
    Ok(Json(json!({"index": def.id, "from": fmt_vn(period.from), "to": fmt_vn(period.to), "rows": rows})))
}

/// One row as the API and the websocket show it: `province_code` and `rank` when it
/// is a province's, then its score, the points measured, and its groups.
pub fn row_json(def: &IndexDef, row: &IndexRow) -> Value {
    let mut m = Map::new();
    if let Some(p) = &row.province {
        m.insert("province_code".into(), json!(p));
    }
    if let Some(r) = row.rank {
        m.insert("rank".into(), json!(r));
    }
    score_json(def, &row.score, &mut m);
    Value::Object(m)
}

fn score_json(def: &IndexDef, s: &IndexScore, m: &mut Map<String, Value>) {
    m.insert("score".into(), json!(s.score));
    m.insert("measured_max".into(), json!(s.measured_max));
    let groups: Vec<Value> = def
        .groups
        .iter()
        .zip(&s.groups)
        .map(|(g, gs)| {
            let indicators: Vec<Value> = g
                .indicators
                .iter()
                .zip(&gs.indicators)
                .map(|(i, is)| {
                    json!({"id": i.id, "name_vi": i.name_vi, "kpi": i.kpi, "max": i.max, "threshold": i.threshold,
                           "value": is.value, "score": is.score})
                })
                .collect();
            json!({"id": g.id, "name_vi": g.name_vi, "max": g.max, "score": gs.score, "indicators": indicators})
        })
        .collect();
    m.insert("groups".into(), Value::Array(groups));
}
