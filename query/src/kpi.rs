//! KPI evaluation: one definition, two evaluation paths.
//!
//! Each ratio KPI's `denominator` and `numerator` are SQL boolean expressions from the
//! catalog. They are compiled once with DataFusion into physical expressions over the
//! family's Arrow schema and evaluated on every committed batch to get counter deltas
//! (the live path). The very same text runs as SQL over the stored Parquet (the
//! recompute path, also used for the partial hours at the edges of a period). The two
//! cannot disagree; a property test checks it on random data.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{DateTime, Utc};
use datafusion::common::DFSchema;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use ioc_core::catalog::{Catalog, Gauge, KpiDef, KpiKind};
use ioc_core::counters::{
    Count, CounterDelta, Counters, Dim, DimFilter, DimValue, DimValues, PeriodTotals, ScopeKey, SeriesKey,
};
use ioc_core::event::Family;
use ioc_core::open_dossiers::OpenDossiers;
use ioc_core::time::{Bucket, hour_of, hour_start, start_of_month};
use ioc_ingest::{CommitListener, Committed};
use ioc_storage::{Snapshot, Store, family_schema};
use thiserror::Error;
use tracing::{info, warn};

use crate::context::internal_context;

#[derive(Debug, Error)]
pub enum KpiError {
    #[error("unknown KPI `{0}`")]
    UnknownKpi(String),
    #[error(
        "unknown dimension `{0}`; use one of province_code, commune_code, agency_code, level, source, procedure_code, channel"
    )]
    UnknownDim(String),
    #[error("dimension `{dim}` applies only to dossier KPIs, not to `{kpi}`")]
    DimNotApplicable { dim: String, kpi: String },
    #[error("KPI `{kpi}`: cannot compile `{expr}`: {source}")]
    Compile { kpi: String, expr: String, source: DataFusionError },
    #[error("query failed: {0}")]
    Query(#[from] DataFusionError),
    #[error("storage: {0}")]
    Storage(#[from] ioc_storage::StorageError),
}

struct Compiled {
    family: Family,
    denominator: Arc<dyn PhysicalExpr>,
    numerator: Arc<dyn PhysicalExpr>,
}

#[derive(Default)]
struct Live {
    counters: Counters,
    open: OpenDossiers,
    /// When the newest commit with events folded in was made.
    as_of: Option<DateTime<Utc>>,
    /// Running totals of the current month (Vietnam time) for live pushes; created on
    /// first use and rebuilt from the counters when the month turns.
    month: Option<PeriodTotals>,
}

/// A period `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A KPI's value over a period and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiValue {
    pub def: KpiDef,
    pub target: f64,
    pub count: Count,
    /// `None` when there is no data (ratio with a zero denominator).
    pub value: Option<f64>,
}

impl KpiValue {
    /// `ok`, `below_target` or `no_data`.
    pub fn status(&self) -> &'static str {
        match self.value {
            None => "no_data",
            Some(v) if self.def.direction.meets(v, self.target) => "ok",
            Some(_) => "below_target",
        }
    }
}

/// One row of a KPI series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRow {
    pub bucket: Option<DateTime<Utc>>,
    pub dims: Vec<DimValue>,
    pub count: Count,
    pub value: Option<f64>,
}

/// A series query.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub period: Period,
    pub bucket: Option<Bucket>,
    pub group_by: Vec<Dim>,
    pub filter: DimFilter,
}

/// Live KPI state, kept from committed batches, plus the queries over it.
pub struct KpiEngine {
    catalog: Arc<Catalog>,
    compiled: Vec<Option<Compiled>>,
    live: RwLock<Live>,
    store: Store,
    admin_units: Arc<MemTable>,
}

impl KpiEngine {
    /// Compiles the catalog against the table schemas. A KPI whose expression does not
    /// compile is a configuration error, reported with its id.
    pub fn new(catalog: Arc<Catalog>, store: Store, admin_units: Arc<MemTable>) -> Result<Self, KpiError> {
        let ctx = SessionContext::new();
        let mut compiled = Vec::with_capacity(catalog.len());
        for def in catalog.kpis() {
            compiled.push(match &def.kind {
                KpiKind::Gauge(_) => None,
                KpiKind::Ratio { event_type, denominator, numerator } => {
                    let family = event_type.family();
                    let df_schema = DFSchema::try_from(family_schema(family).as_ref().clone())?;
                    let compile = |text: &str| -> Result<Arc<dyn PhysicalExpr>, KpiError> {
                        let err = |source| KpiError::Compile { kpi: def.id.clone(), expr: text.to_string(), source };
                        let expr = ctx.parse_sql_expr(text, &df_schema).map_err(err)?;
                        ctx.create_physical_expr(expr, &df_schema).map_err(err)
                    };
                    let denominator = compile(&format!("type = '{}' AND ({denominator})", event_type.as_str()))?;
                    let numerator = compile(numerator)?;
                    Some(Compiled { family, denominator, numerator })
                }
            });
        }
        let live = Live { counters: Counters::new(catalog.len()), ..Default::default() };
        Ok(Self { catalog, compiled, live: RwLock::new(live), store, admin_units })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Rebuilds the live state from every file of a snapshot. Exact: the state is a
    /// pure sum over committed batches. Later commits arrive through [`CommitListener`].
    pub fn rebuild(&self, snap: &Snapshot) -> Result<(), KpiError> {
        let started = std::time::Instant::now();
        let mut delta = CounterDelta::default();
        let mut open = OpenDossiers::default();
        let mut rows = 0u64;
        for family in Family::ALL {
            for file in snap.files(family.table()) {
                for batch in self.store.read_file(file, None)? {
                    rows += batch.num_rows() as u64;
                    delta.merge(self.delta_for(family, &batch)?);
                    if family == Family::Dossier {
                        track_open(&mut open, &batch);
                    }
                }
            }
        }
        let mut counters = Counters::new(self.catalog.len());
        counters.apply(&delta);
        // The newest acceptance time: compacted files keep older ones, so not the last.
        let as_of = snap.history.iter().map(|(_, at, _)| *at).max();
        *self.live.write().expect("live lock") = Live { counters, open, as_of, month: None };
        info!(rows, ms = started.elapsed().as_millis() as u64, version = ?snap.version, "KPI counters rebuilt from storage");
        Ok(())
    }

    /// Counter deltas of one batch of a family.
    pub fn delta_for(&self, family: Family, batch: &RecordBatch) -> Result<CounterDelta, DataFusionError> {
        let mut delta = CounterDelta::default();
        if batch.num_rows() == 0 {
            return Ok(delta);
        }
        let times =
            batch.column_by_name("occurred_at").expect("occurred_at").as_primitive::<TimestampMicrosecondType>();
        let hours: Vec<i64> = times.values().iter().map(|t| t.div_euclid(3_600_000_000)).collect();
        for (h, t) in hours.iter().zip(times.values().iter()) {
            delta.observe(*h, *t);
        }
        let dims = row_dims(family, batch);
        for (kpi, c) in self.compiled.iter().enumerate() {
            let Some(c) = c else { continue };
            if c.family != family {
                continue;
            }
            let den = eval_bool(&c.denominator, batch)?;
            let num = eval_bool(&c.numerator, batch)?;
            for i in 0..batch.num_rows() {
                if den.is_valid(i) && den.value(i) {
                    let n = u64::from(num.is_valid(i) && num.value(i));
                    delta.add(kpi, hours[i], dims[i].clone(), Count::new(n, 1));
                }
            }
        }
        Ok(delta)
    }

    /// Folds a committed batch set into the live state.
    pub fn apply(&self, committed: &Committed) {
        let mut delta = CounterDelta::default();
        for (family, batch) in &committed.batches {
            match self.delta_for(*family, batch) {
                Ok(d) => delta.merge(d),
                // Expressions compiled against this very schema; failure is a bug.
                Err(e) => {
                    warn!(error = %e, family = family.table(), "could not evaluate KPI expressions")
                }
            }
        }
        let mut live = self.live.write().expect("live lock");
        live.counters.apply(&delta);
        if let Some(month) = live.month.as_mut() {
            month.apply(&delta);
        }
        for (family, batch) in &committed.batches {
            if *family == Family::Dossier {
                track_open(&mut live.open, batch);
            }
        }
        if !committed.batches.is_empty() {
            live.as_of = live.as_of.max(Some(committed.committed_at));
        }
    }

    /// When the newest commit with events that the live state covers was made.
    pub fn as_of(&self) -> Option<DateTime<Utc>> {
        self.live.read().expect("live lock").as_of
    }

    /// The month (Vietnam time) that contains `now`, and the totals of every ratio KPI
    /// over it, nationally and per province, that changed since the last call (all of
    /// them on the first call and when the month turns). Late events in past hours of
    /// the month change totals too. Exactly what `list` answers for the month, since
    /// both are sums of the same counters.
    pub fn take_month_changes(&self, now: DateTime<Utc>) -> (Period, Vec<(usize, ScopeKey, Count)>) {
        let from = start_of_month(now);
        let to = Bucket::Month.next(from);
        let hours = hour_of(from.to_utc())..hour_of(to.to_utc());
        let mut live = self.live.write().expect("live lock");
        if live.month.as_ref().is_none_or(|m| m.hours() != hours) {
            live.month = Some(PeriodTotals::new(hours, &live.counters));
        }
        let changed = live.month.as_mut().map(PeriodTotals::take_changed).unwrap_or_default();
        (Period { from: from.to_utc(), to: to.to_utc() }, changed)
    }

    /// One ratio KPI's totals for the month (Vietnam time) that contains `now`, by
    /// scope (national: `None`), from the running totals, without a scan. `None` until
    /// [`KpiEngine::take_month_changes`] has set them up for that month.
    pub fn month_totals(&self, kpi: usize, now: DateTime<Utc>) -> Option<HashMap<ScopeKey, Count>> {
        let from = start_of_month(now);
        let hours = hour_of(from.to_utc())..hour_of(Bucket::Month.next(from).to_utc());
        let live = self.live.read().expect("live lock");
        let month = live.month.as_ref().filter(|m| m.hours() == hours)?;
        Some(month.all().filter(|(k, _, _)| *k == kpi).map(|(_, scope, c)| (scope.clone(), c)).collect())
    }

    /// The dossiers overdue at `now`, nationally and per province.
    pub fn overdue_by_scope(&self, now: DateTime<Utc>) -> Vec<(ScopeKey, u64)> {
        let live = self.live.read().expect("live lock");
        let by_province = live.open.overdue(now, &DimFilter::default(), &[Dim::ProvinceCode]);
        let mut out: Vec<(ScopeKey, u64)> = vec![(None, by_province.values().sum())];
        out.extend(by_province.into_iter().filter_map(|(k, n)| Some((Some(k.into_iter().next()??), n))));
        out.sort();
        out
    }

    fn check_dims(&self, def: &KpiDef, dims: impl Iterator<Item = Dim>) -> Result<(), KpiError> {
        for d in dims {
            if d.dossier_only() && def.family() != Family::Dossier {
                return Err(KpiError::DimNotApplicable { dim: d.as_str().into(), kpi: def.id.clone() });
            }
        }
        Ok(())
    }

    /// Every KPI's value over a period, optionally for one province.
    pub async fn list(
        &self,
        period: Period,
        province: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<KpiValue>, KpiError> {
        let filter = DimFilter(province.map(|p| vec![(Dim::ProvinceCode, p.to_string())]).unwrap_or_default());
        let year = ioc_core::time::vn_year(period.from);
        let mut out = Vec::with_capacity(self.catalog.len());
        for (idx, def) in self.catalog.kpis().iter().enumerate() {
            let rows = self.counts(idx, period, None, &[], &filter, now).await?;
            let count = rows.into_values().fold(Count::default(), |mut a, c| {
                a += c;
                a
            });
            let value = match def.kind {
                KpiKind::Ratio { .. } => count.ratio(),
                KpiKind::Gauge(_) => Some(count.numerator as f64),
            };
            out.push(KpiValue { def: def.clone(), target: def.target_for(province, year), count, value });
        }
        Ok(out)
    }

    /// A KPI's series: rows by bucket and dimensions, rows with no events omitted.
    pub async fn series(
        &self,
        id: &str,
        q: &SeriesQuery,
        now: DateTime<Utc>,
    ) -> Result<(KpiDef, Vec<SeriesRow>), KpiError> {
        let (idx, def) = self.catalog.get(id).ok_or_else(|| KpiError::UnknownKpi(id.to_string()))?;
        self.check_dims(def, q.group_by.iter().copied().chain(q.filter.0.iter().map(|(d, _)| *d)))?;
        let rows = self.counts(idx, q.period, q.bucket, &q.group_by, &q.filter, now).await?;
        let gauge = matches!(def.kind, KpiKind::Gauge(_));
        let rows = rows
            .into_iter()
            .filter(|(_, c)| !c.is_zero())
            .map(|((bucket, dims), count)| SeriesRow {
                bucket,
                dims,
                count,
                value: if gauge { Some(count.numerator as f64) } else { count.ratio() },
            })
            .collect();
        Ok((def.clone(), rows))
    }

    /// Counts of one KPI, exact for any `[from, to)`: whole hours from the counters, and
    /// the partial hours at the edges from the counters when every event of that hour
    /// falls on one side of the edge, else from SQL over the stored events.
    async fn counts(
        &self,
        idx: usize,
        period: Period,
        bucket: Option<Bucket>,
        group_by: &[Dim],
        filter: &DimFilter,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<SeriesKey, Count>, KpiError> {
        let def = &self.catalog.kpis()[idx];
        if let KpiKind::Gauge(Gauge::OverdueOpen) = def.kind {
            let live = self.live.read().expect("live lock");
            let bucket_key = bucket.map(|b| b.floor(now).to_utc());
            return Ok(live
                .open
                .overdue(now, filter, group_by)
                .into_iter()
                .map(|(k, n)| ((bucket_key, k), Count::new(n, 0)))
                .collect());
        }
        let Period { from, to } = period;
        let mut out = BTreeMap::new();
        if from >= to {
            return Ok(out);
        }
        let first = hour_of(from);
        let last = hour_of(to - chrono::Duration::microseconds(1));
        // Hours entirely inside the period.
        let full_start = if hour_start(first) == from { first } else { first + 1 };
        let full_end = last + i64::from(hour_start(last + 1) == to); // exclusive
        let mut partial: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        if full_start > first {
            partial.push((first, from, to.min(hour_start(first + 1))));
        }
        if full_end <= last && last != first {
            partial.push((last, hour_start(last), to));
        }
        let mut sql_ranges = Vec::new();
        let mut whole_hours = Vec::new();
        {
            let live = self.live.read().expect("live lock");
            for (hour, a, b) in partial {
                let Some((lo, hi)) = live.counters.span(hour) else {
                    continue;
                };
                let (a_us, b_us) = (a.timestamp_micros(), b.timestamp_micros());
                if lo >= a_us && hi < b_us {
                    whole_hours.push(hour);
                } else if hi >= a_us && lo < b_us {
                    sql_ranges.push((hour, a, b));
                }
            }
            if full_start < full_end {
                out = live.counters.series(idx, full_start..full_end, filter, group_by, bucket);
            }
            for h in whole_hours {
                for (k, c) in live.counters.series(idx, h..h + 1, filter, group_by, bucket) {
                    *out.entry(k).or_default() += c;
                }
            }
        }
        for (hour, a, b) in sql_ranges {
            let b_key = bucket.map(|bk| bk.floor(hour_start(hour)).to_utc());
            for (dims, c) in self.sql_counts(def, Period { from: a, to: b }, group_by, filter).await? {
                *out.entry((b_key, dims)).or_default() += c;
            }
        }
        Ok(out)
    }

    /// Recomputes a KPI with SQL over the stored events (no counters involved).
    pub async fn sql_counts(
        &self,
        def: &KpiDef,
        period: Period,
        group_by: &[Dim],
        filter: &DimFilter,
    ) -> Result<Vec<(Vec<DimValue>, Count)>, KpiError> {
        let Some(sql) = kpi_sql(def, period, group_by, filter) else {
            return Ok(Vec::new());
        };
        let snap = self.store.snapshot();
        let ctx = internal_context(&self.store, &snap, self.admin_units.clone())?;
        let batches: Vec<RecordBatch> = ctx.sql(&sql).await?.execute_stream().await?.try_collect().await?;
        let mut out = Vec::new();
        for b in batches {
            let n = group_by.len();
            let num = b.column(n).as_primitive::<arrow::datatypes::Int64Type>();
            let den = b.column(n + 1).as_primitive::<arrow::datatypes::Int64Type>();
            for i in 0..b.num_rows() {
                let dims = (0..n)
                    .map(|c| {
                        let col = b.column(c).as_string::<i32>();
                        col.is_valid(i).then(|| Arc::<str>::from(col.value(i)))
                    })
                    .collect();
                out.push((dims, Count::new(num.value(i) as u64, den.value(i) as u64)));
            }
        }
        Ok(out)
    }
}

impl CommitListener for KpiEngine {
    fn on_commit(&self, committed: &Committed) {
        self.apply(committed);
    }
}

/// The SQL that computes a ratio KPI's numerator and denominator over `[from, to)`,
/// grouped by `group_by`. `None` for gauges.
pub fn kpi_sql(def: &KpiDef, period: Period, group_by: &[Dim], filter: &DimFilter) -> Option<String> {
    let KpiKind::Ratio { event_type, denominator, numerator } = &def.kind else {
        return None;
    };
    let dims: Vec<&str> = group_by.iter().map(|d| d.as_str()).collect();
    let mut select: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    select.push(format!("CAST(COALESCE(SUM(CASE WHEN ({numerator}) THEN 1 ELSE 0 END), 0) AS BIGINT) AS numerator"));
    select.push("CAST(COUNT(*) AS BIGINT) AS denominator".into());
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut conds = vec![
        format!("type = '{}'", event_type.as_str()),
        format!("({denominator})"),
        format!("occurred_at >= TIMESTAMP '{}'", ts(period.from)),
        format!("occurred_at < TIMESTAMP '{}'", ts(period.to)),
    ];
    for (d, v) in &filter.0 {
        conds.push(format!("{} = '{}'", d.as_str(), v.replace('\'', "''")));
    }
    let mut sql =
        format!("SELECT {} FROM {} WHERE {}", select.join(", "), event_type.family().table(), conds.join(" AND "));
    if !dims.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", dims.join(", ")));
    }
    Some(sql)
}

fn eval_bool(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanArray, DataFusionError> {
    let array = expr.evaluate(batch)?.into_array(batch.num_rows())?;
    array.as_any().downcast_ref::<BooleanArray>().cloned().ok_or_else(|| {
        DataFusionError::Execution(format!("KPI expression returned {}, not a boolean", array.data_type()))
    })
}

/// Dimension values of every row, with values interned per batch.
fn row_dims(family: Family, batch: &RecordBatch) -> Vec<DimValues> {
    let col = |d: Dim| -> Option<&StringArray> {
        if d.dossier_only() && family != Family::Dossier {
            return None;
        }
        batch.column_by_name(d.as_str()).and_then(|c| c.as_any().downcast_ref::<StringArray>())
    };
    let cols: Vec<Option<&StringArray>> = Dim::ALL.iter().map(|d| col(*d)).collect();
    let mut interned: Vec<BTreeMap<&str, Arc<str>>> = vec![BTreeMap::new(); Dim::ALL.len()];
    (0..batch.num_rows())
        .map(|i| {
            let mut v = DimValues::default();
            for (k, c) in cols.iter().enumerate() {
                if let Some(c) = c
                    && c.is_valid(i)
                {
                    let s = c.value(i);
                    v.0[k] = Some(interned[k].entry(s).or_insert_with(|| Arc::from(s)).clone());
                }
            }
            v
        })
        .collect()
}

/// Folds a dossier batch into the open-dossier state.
fn track_open(open: &mut OpenDossiers, batch: &RecordBatch) {
    let ty = batch.column_by_name("type").expect("type").as_string::<i32>();
    let ids = batch.column_by_name("dossier_id").expect("dossier_id").as_string::<i32>();
    let due = batch
        .column_by_name("due_at")
        .expect("due_at")
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .expect("due_at timestamp");
    let dims = row_dims(Family::Dossier, batch);
    for (i, d) in dims.into_iter().enumerate() {
        match ty.value(i) {
            "dossier.received" if due.is_valid(i) => open.receive(ids.value(i), due.value(i), d),
            "dossier.resolved" | "dossier.closed" => open.finish(ids.value(i)),
            _ => {}
        }
    }
}
