//! `GET /api/v1/kpis` and `GET /api/v1/kpis/{id}`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use chrono::{DateTime, Utc};
use ioc_core::counters::{Dim, DimFilter};
use ioc_core::time::{Bucket, fmt_vn, parse_period_bound, start_of_month, vn_year};
use ioc_query::{KpiValue, Period, SeriesQuery};
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// `from`/`to` with the contract's default, month to date in Vietnam time: the current
/// month, which holds no event after now + 5 minutes. Bounds that fall on whole hours
/// are answered from counters alone.
pub fn period(params: &HashMap<String, String>, now: DateTime<Utc>) -> Result<Period, ApiError> {
    let bound = |key: &str, default: DateTime<Utc>| -> Result<DateTime<Utc>, ApiError> {
        match params.get(key) {
            None => Ok(default),
            Some(s) => parse_period_bound(s)
                .map(|t| t.to_utc())
                .map_err(|e| ApiError::bad_request("invalid_period", format!("`{key}`: {e}"))),
        }
    };
    let month = start_of_month(now);
    let from = bound("from", month.to_utc())?;
    let to = bound("to", Bucket::Month.next(month).to_utc())?;
    if from >= to {
        return Err(ApiError::bad_request("invalid_period", "`from` must be before `to`"));
    }
    Ok(Period { from, to })
}

/// The province a request is limited to: the token's scope, which a query parameter
/// may narrow to the same province but never widen.
fn scoped_province(who: &Principal, asked: Option<&String>, state: &AppState) -> Result<Option<String>, ApiError> {
    if let Some(p) = asked
        && state.units.province(p).is_none()
    {
        return Err(ApiError::bad_request("invalid_province", format!("`{p}` is not one of the 34 province codes")));
    }
    match (&who.province, asked) {
        (Some(scope), Some(p)) if scope != p => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token may only see province {scope}"),
        )),
        (Some(scope), _) => Ok(Some(scope.clone())),
        (None, p) => Ok(p.cloned()),
    }
}

pub fn kpi_json(v: &KpiValue, period: Period) -> Value {
    let gauge = v.def.kind_name() == "gauge";
    json!({
        "id": v.def.id,
        "name_vi": v.def.name_vi,
        "name_en": v.def.name_en,
        "kind": v.def.kind_name(),
        "target": v.target,
        "direction": v.def.direction,
        "value": v.value,
        "numerator": v.count.numerator,
        "denominator": if gauge { Value::Null } else { json!(v.count.denominator) },
        "status": v.status(),
        "from": fmt_vn(period.from),
        "to": fmt_vn(period.to),
    })
}

pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    for key in params.keys() {
        if !matches!(key.as_str(), "from" | "to" | "province_code" | "token") {
            return Err(ApiError::bad_request("unknown_parameter", format!("unknown query parameter `{key}`")));
        }
    }
    let now = Utc::now();
    let period = period(&params, now)?;
    let province = scoped_province(&who, params.get("province_code"), &state)?;
    let values = state.kpis.list(period, province.as_deref(), now).await?;
    Ok(Json(Value::Array(values.iter().map(|v| kpi_json(v, period)).collect())))
}

pub async fn series(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let period = period(&params, now)?;
    let bucket = match params.get("bucket") {
        None => None,
        Some(b) => Some(Bucket::parse(b).ok_or_else(|| {
            ApiError::bad_request("invalid_bucket", format!("bucket `{b}` is not one of hour, day, month"))
        })?),
    };
    let mut group_by = Vec::new();
    if let Some(g) = params.get("group_by") {
        for name in g.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let d = Dim::parse(name).ok_or_else(|| {
                ApiError::bad_request("invalid_dimension", format!("unknown dimension `{name}` in group_by"))
            })?;
            if !group_by.contains(&d) {
                group_by.push(d);
            }
        }
    }
    let mut filter = DimFilter::default();
    for (key, value) in &params {
        if matches!(key.as_str(), "from" | "to" | "bucket" | "group_by" | "token") {
            continue;
        }
        let d = Dim::parse(key).ok_or_else(|| {
            ApiError::bad_request("invalid_dimension", format!("unknown dimension or parameter `{key}`"))
        })?;
        if d != Dim::ProvinceCode {
            filter.0.push((d, value.clone()));
        }
    }
    let province = scoped_province(&who, params.get("province_code"), &state)?;
    if let Some(p) = &province {
        filter.0.push((Dim::ProvinceCode, p.clone()));
    }
    filter.0.sort();
    let q = SeriesQuery { period, bucket, group_by: group_by.clone(), filter };
    let (def, rows) = state.kpis.series(&id, &q, now).await?;
    let gauge = def.kind_name() == "gauge";
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut m = Map::new();
            if let Some(b) = r.bucket {
                m.insert("bucket".into(), json!(fmt_vn(b)));
            }
            for (d, v) in group_by.iter().zip(&r.dims) {
                m.insert(d.as_str().into(), v.as_deref().map_or(Value::Null, |s| json!(s)));
            }
            m.insert("numerator".into(), json!(r.count.numerator));
            m.insert("denominator".into(), if gauge { Value::Null } else { json!(r.count.denominator) });
            m.insert("value".into(), json!(r.value));
            Value::Object(m)
        })
        .collect();
    Ok(Json(json!({
        "kpi": def.id,
        "target": def.target_for(province.as_deref(), vn_year(period.from)),
        "from": fmt_vn(period.from),
        "to": fmt_vn(period.to),
        "rows": rows,
    })))
}
