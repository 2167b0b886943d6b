//! The QĐ 766 service index over a period, from the same numerators and
//! denominators as the KPIs (CONTRACT.md §7.6): each indicator's KPI is summed from
//! the province cube (or, for a period with partial edge hours, exactly as the KPI API
//! sums it), then scored by [`ioc_core::index`]. The SQL view `service_index` gives
//! the same numbers for the current month.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ioc_core::counters::{Count, Dim, DimFilter};
use ioc_core::index::{IndexDef, IndexScore, rank};

use crate::kpi::{KpiEngine, KpiError, Period, SeriesQuery};

/// One row of the index: the nation (`province` None) or a province with its rank.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub province: Option<String>,
    pub rank: Option<u32>,
    pub score: IndexScore,
}

/// The index's KPI totals over a period: national, and by province.
pub struct IndexCounts {
    national: HashMap<String, Count>,
    provinces: HashMap<String, HashMap<String, Count>>,
}

impl IndexCounts {
    /// Sums every KPI the index reads over `period`: with `by_province`, per province
    /// (every province, for ranks); otherwise nationally, or for `only` one province.
    /// Through the KPI engine, so under its limits.
    pub async fn sum(
        kpis: &KpiEngine,
        def: &IndexDef,
        period: Period,
        only: Option<&str>,
        by_province: bool,
        now: DateTime<Utc>,
    ) -> Result<Self, KpiError> {
        let filter = DimFilter(only.map(|p| vec![(Dim::ProvinceCode, p.to_string())]).unwrap_or_default());
        let mut national = HashMap::new();
        let mut provinces: HashMap<String, HashMap<String, Count>> = HashMap::new();
        for kpi in def.kpis() {
            if !by_province {
                let q = SeriesQuery { period, bucket: None, group_by: vec![], filter: filter.clone() };
                let (_, rows) = kpis.series(kpi, &q, now).await?;
                national.insert(kpi.to_string(), sum(rows.iter().map(|r| r.count)));
            } else {
                let q = SeriesQuery {
                    period,
                    bucket: None,
                    group_by: vec![Dim::ProvinceCode],
                    filter: DimFilter::default(),
                };
                for r in kpis.series(kpi, &q, now).await?.1 {
                    if let Some(Some(p)) = r.dims.first() {
                        *provinces.entry(p.to_string()).or_default().entry(kpi.to_string()).or_default() += r.count;
                    }
                }
            }
        }
        Ok(Self { national, provinces })
    }

    /// The rows: without `by_province`, the one row of the nation (or of `only`);
    /// with it, the provinces that have data, best first, ranked from 1 (only `only`'s
    /// row when given, with its rank among all).
    pub fn rows(&self, def: &IndexDef, only: Option<&str>, by_province: bool) -> Vec<IndexRow> {
        let value = |counts: &HashMap<String, Count>, kpi: &str| counts.get(kpi).and_then(|c| c.ratio());
        if !by_province {
            let score = def.score(|k| value(&self.national, k));
            return vec![IndexRow { province: only.map(str::to_string), rank: None, score }];
        }
        let scored: Vec<(&str, IndexScore)> = self
            .provinces
            .iter()
            .map(|(p, counts)| (p.as_str(), def.score(|k| value(counts, k))))
            .filter(|(_, s)| s.measured_max > 0.0)
            .collect();
        rank(scored)
            .into_iter()
            .filter(|(_, p, _)| only.is_none_or(|o| o == *p))
            .map(|(r, p, score)| IndexRow { province: Some(p.to_string()), rank: Some(r), score })
            .collect()
    }
}

fn sum(counts: impl Iterator<Item = Count>) -> Count {
    counts.fold(Count::default(), |mut a, c| {
        a += c;
        a
    })
}

/// The SQL of the `service_index` view over `[from, to)` (the current month): per
/// province with data and indicator, its KPI's value and score, computed from
/// `kpi_hourly` like the API; with `national`, also the national rows (province_code
/// NULL). The indicators are inlined from the catalog.
pub fn service_index_sql(def: &IndexDef, from: DateTime<Utc>, to: DateTime<Utc>, national: bool) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let rows: Vec<String> = def
        .groups
        .iter()
        .flat_map(|g| g.indicators.iter().map(move |i| (g, i)))
        .map(|(g, i)| {
            let kpi = i.kpi.as_deref().map_or("CAST(NULL AS VARCHAR)".to_string(), quote);
            format!(
                "({}, {}, {kpi}, CAST({} AS DOUBLE), CAST({} AS DOUBLE), 1)",
                quote(&g.id),
                quote(&i.id),
                i.max,
                i.threshold
            )
        })
        .collect();
    let indicators = format!("(VALUES {}) AS i(group_id, indicator_id, kpi, max, threshold, one)", rows.join(", "));
    let value =
        "CASE WHEN SUM(denominator) > 0 THEN CAST(SUM(numerator) AS DOUBLE) / CAST(SUM(denominator) AS DOUBLE) END";
    let period = format!("hour >= TIMESTAMP '{}' AND hour < TIMESTAMP '{}'", ts(from), ts(to));
    let score = "CASE WHEN v.value IS NOT NULL THEN i.max * LEAST(1.0, v.value / i.threshold) END";
    let mut sql = format!(
        "WITH v AS (SELECT province_code, kpi, {value} AS value FROM kpi_hourly WHERE {period} GROUP BY province_code, kpi), \
         p AS (SELECT DISTINCT province_code, 1 AS one FROM v WHERE province_code IS NOT NULL) \
         SELECT p.province_code, i.group_id, i.indicator_id, i.kpi, i.max, i.threshold, v.value, {score} AS score \
         FROM p JOIN {indicators} ON p.one = i.one \
         LEFT JOIN v ON v.province_code = p.province_code AND v.kpi = i.kpi"
    );
    if national {
        sql.push_str(&format!(
            " UNION ALL SELECT CAST(NULL AS VARCHAR) AS province_code, i.group_id, i.indicator_id, i.kpi, i.max, i.threshold, v.value, {score} AS score \
             FROM {indicators} LEFT JOIN (SELECT kpi, {value} AS value FROM kpi_hourly WHERE {period} GROUP BY kpi) v ON v.kpi = i.kpi"
        ));
    }
    sql
}
