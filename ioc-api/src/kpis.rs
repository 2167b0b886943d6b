//! `GET /api/v1/kpis` and `GET /api/v1/kpis/{id}`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ioc_core::catalog::parse_level;
use ioc_core::counters::{Dim, DimFilter};
use ioc_core::time::{Bucket, fmt_vn, parse_period_bound, start_of_month, vn_year};
use ioc_query::{KpiValue, Period, SeriesQuery, SeriesRow};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};

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
            Some(s) => {
                parse_period_bound(s).map_err(|e| ApiError::bad_request("invalid_period", format!("`{key}`: {e}")))
            }
        }
    };
    let month = start_of_month(now);
    let from = bound("from", month.to_utc())?;
    let to = bound("to", Bucket::Month.next(month).to_utc())?;
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_period",
            format!("`from` ({}) must be before `to` ({})", fmt_vn(from), fmt_vn(to)),
        ));
    }
    Ok(Period { from, to })
}

/// The province a request is limited to: the token's scope, which a query parameter
/// may narrow to the same province but never widen.
pub(crate) fn scoped_province(
    who: &Principal,
    asked: Option<&String>,
    state: &AppState,
) -> Result<Option<String>, ApiError> {
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
        "target_source": v.target_source,
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
) -> Result<Response, ApiError> {
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
    // A series filtered by `level=` is held to that level's target, if one is set.
    let level = q.filter.0.iter().find(|(d, _)| *d == Dim::Level).and_then(|(_, v)| parse_level(v));
    let target = def.target(province.as_deref(), vn_year(period.from), level);
    let body = SeriesBody {
        kpi: &def.id,
        target: target.value,
        target_source: target.source,
        from: fmt_vn(period.from),
        to: fmt_vn(period.to),
        rows: SeriesRows { rows: &rows, group_by: &group_by, gauge: def.kind_name() == "gauge" },
    };
    let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// The answer of `GET /api/v1/kpis/{id}`.
#[derive(Serialize)]
struct SeriesBody<'a> {
    kpi: &'a str,
    target: f64,
    target_source: Option<&'a str>,
    from: String,
    to: String,
    rows: SeriesRows<'a>,
}

/// Series rows, serialised straight from the engine's rows (a year by province and
/// day is ~12,400 of them): no intermediate JSON values, and each bucket's timestamp
/// formatted once, not once per group.
struct SeriesRows<'a> {
    rows: &'a [SeriesRow],
    group_by: &'a [Dim],
    gauge: bool,
}

impl Serialize for SeriesRows<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.rows.len()))?;
        let mut last: Option<(DateTime<Utc>, String)> = None;
        for r in self.rows {
            let bucket = r.bucket.map(|b| match &last {
                Some((t, text)) if *t == b => text.clone(),
                _ => {
                    let text = fmt_vn(b);
                    last = Some((b, text.clone()));
                    text
                }
            });
            seq.serialize_element(&Row {
                row: r,
                bucket: bucket.as_deref(),
                group_by: self.group_by,
                gauge: self.gauge,
            })?;
        }
        seq.end()
    }
}

/// One series row: `bucket` (if bucketed), the group-by dimensions, numerator,
/// denominator (null for gauges) and value.
struct Row<'a> {
    row: &'a SeriesRow,
    bucket: Option<&'a str>,
    group_by: &'a [Dim],
    gauge: bool,
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        if let Some(b) = self.bucket {
            m.serialize_entry("bucket", b)?;
        }
        for (d, v) in self.group_by.iter().zip(&self.row.dims) {
            m.serialize_entry(d.as_str(), &v.as_deref())?;
        }
        m.serialize_entry("numerator", &self.row.count.numerator)?;
        m.serialize_entry("denominator", &(!self.gauge).then_some(self.row.count.denominator))?;
        m.serialize_entry("value", &self.row.value)?;
        m.end()
    }
}
