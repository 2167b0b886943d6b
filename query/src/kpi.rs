//! KPI evaluation: one definition, two evaluation paths.
//!
//! Each ratio KPI's `denominator` and `numerator` are SQL boolean expressions from the
//! catalog. They are compiled once with DataFusion into physical expressions over the
//! family's Arrow schema and evaluated on the events of every commit, before it is
//! staged, to get its rollup rows (`kpi_hourly`, written in the same commit). The very
//! same text runs as SQL over the stored events (the recompute path, also used for the
//! partial hours at the edges of a period). The two cannot disagree; a property test
//! checks it on random data.
//!
//! Answers come from three tiers, all sums of the rollups:
//! - the in-memory [`ProvinceCube`] (per KPI, hour and province), fed with the rollup
//!   rows of every commit and rebuilt from the `kpi_hourly` files at start: every query
//!   that filters and groups by at most the province;
//! - the in-memory [`DimCubes`] (per KPI, Vietnam day, province and one other
//!   dimension; hours for the newest two days), fed and rebuilt the same way: queries
//!   that use the province and one other dimension;
//! - SQL over `kpi_hourly` for the rest: two or more dimensions besides the province,
//!   and the hours a dimension cube does not hold (its [`gaps`](ioc_core::dim_cube::DimCube::gaps)).
//!
//! **The rollup rule.** The cube is the sum of the `kpi_hourly` rows of every commit
//! that removes no file. A commit with events carries their rollups; a backfill commit
//! ([`KpiEngine::backfill_rollups`]) carries the rollups of older commits that had
//! none, and no events; a commit that removes files (compaction) rewrites rows with the
//! same sums and is never applied.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{DateTime, Utc};
use datafusion::common::DFSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use ioc_core::AdminUnits;
use ioc_core::catalog::{Catalog, Gauge, KpiDef, KpiKind};
use ioc_core::counters::{
    Count, CounterDelta, Dim, DimFilter, DimValue, DimValues, PeriodTotals, ProvinceCube, ProvinceSel, ScopeKey,
    SeriesKey,
};
use ioc_core::dim_cube::DimCubes;
use ioc_core::event::Family;
use ioc_core::open_dossiers::OpenDossiers;
use ioc_core::time::{Bucket, HourBucket, LivePeriod, hour_of, hour_start};
use ioc_ingest::{CommitListener, Committed, Derive, DeriveError};
use ioc_storage::{KPI_HOURLY, Publish, Snapshot, Store, family_schema};
use thiserror::Error;
use tokio::sync::Semaphore;
use tracing::{info, warn};

mod state;

pub use state::{STATE_DIR, Saved, Startup, StateError};

use crate::context::period_context;
use crate::rollup::{RollupError, add_to_dim_cubes, cube_rows, rollup_batch};

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
    #[error("rollups: {0}")]
    Rollup(#[from] RollupError),
    #[error("could not publish the rollup backfill: other writers kept committing")]
    BackfillContention,
    #[error(
        "the answer would have {rows} rows, over the limit of {limit}; narrow the period, use a coarser bucket or group by fewer dimensions"
    )]
    TooManyRows { rows: usize, limit: usize },
    #[error("the KPI query ran longer than the {0:?} time limit and was cancelled; narrow the period or the slice")]
    Timeout(Duration),
    #[error("the KPI query needed more than the {limit_mib} MiB memory limit and was cancelled: {detail}")]
    Memory { limit_mib: usize, detail: String },
}

impl KpiError {
    /// A stable machine-readable code for the errors a request can cause.
    pub fn code(&self) -> &'static str {
        match self {
            KpiError::UnknownKpi(_) => "not_found",
            KpiError::UnknownDim(_) | KpiError::DimNotApplicable { .. } => "invalid_dimension",
            KpiError::TooManyRows { .. } => "too_many_rows",
            KpiError::Timeout(_) => "query_timeout",
            KpiError::Memory { .. } => "query_memory_limit",
            _ => "internal",
        }
    }
}

/// What one KPI answer may cost, as an ad-hoc SQL query may (CONTRACT.md §7.1): the
/// parts answered with SQL (rollups of dimensions outside the cube, the edge hours of
/// a period) run under a memory pool of their own, at most `max_concurrent` at once
/// (the others wait their turn); the whole answer runs under a time limit; and an
/// answer of more than `max_rows` rows is refused, saying how many it would have had.
#[derive(Debug, Clone)]
pub struct KpiLimits {
    pub memory_bytes: usize,
    pub timeout: Duration,
    pub max_rows: usize,
    pub max_concurrent: usize,
}

/// Enough for a year by day and province (12,775 rows) several times over.
pub const DEFAULT_KPI_MAX_ROWS: usize = 100_000;

impl Default for KpiLimits {
    fn default() -> Self {
        Self::from_sql(&crate::SqlLimits::default(), DEFAULT_KPI_MAX_ROWS)
    }
}

impl KpiLimits {
    /// The SQL engine's memory, time and concurrency limits, with a row cap of its own.
    pub fn from_sql(sql: &crate::SqlLimits, max_rows: usize) -> Self {
        Self { memory_bytes: sql.memory_bytes, timeout: sql.timeout, max_rows, max_concurrent: sql.max_concurrent }
    }
}

struct Compiled {
    family: Family,
    denominator: Arc<dyn PhysicalExpr>,
    numerator: Arc<dyn PhysicalExpr>,
}

#[derive(Default)]
struct Live {
    cube: ProvinceCube,
    dims: DimCubes,
    open: OpenDossiers,
    /// When the newest commit with events folded in was made.
    as_of: Option<DateTime<Utc>>,
    /// The store version covered: every commit up to it is counted, none after.
    version: Option<u64>,
    /// Running totals of the current day, month and year (Vietnam time) for live
    /// pushes, by [`LivePeriod::index`]; created on first use and rebuilt from the cube
    /// when the period turns.
    periods: [Option<PeriodTotals>; 3],
}

/// What [`KpiEngine::take_changes`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveChanges {
    /// The whole calendar period the totals are over.
    pub period: Period,
    /// The period is not the one of the last call: every total is in `changed`.
    pub rolled: bool,
    /// (KPI index, scope, total) of every total that changed since the last call.
    pub changed: Vec<(usize, ScopeKey, Count)>,
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
    /// The document and clause the target comes from (CONTRACT.md §7.4).
    pub target_source: Option<String>,
    pub count: Count,
    /// `None` when there is no data (ratio with a zero denominator).
    pub value: Option<f64>,
}

impl KpiValue {
    /// The value with the target of the scope (`None` = national) in `year`, asked
    /// without a level, as `GET /api/v1/kpis` and the websocket snapshots do.
    pub fn new(def: &KpiDef, province: Option<&str>, year: i32, count: Count, value: Option<f64>) -> Self {
        let target = def.target(province, year, None);
        Self { def: def.clone(), target: target.value, target_source: target.source.map(str::to_owned), count, value }
    }

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

/// Live KPI state, kept from committed rollups, plus the queries over it.
pub struct KpiEngine {
    catalog: Arc<Catalog>,
    compiled: Vec<Option<Compiled>>,
    /// Ratio KPI id -> index in the catalog.
    kpi_index: HashMap<String, usize>,
    /// The province codes of the reference data: the cube's slots.
    provinces: Vec<Arc<str>>,
    live: RwLock<Live>,
    store: Store,
    limits: KpiLimits,
    /// Bounds the SQL parts of answers running at once.
    permits: Arc<Semaphore>,
    /// The folder and version of the KPI state snapshot this engine last wrote or
    /// started from: a snapshot known to be good, not written again.
    state_saved: std::sync::Mutex<Option<(std::path::PathBuf, u64)>>,
}

/// The columns of a dossier batch that the open-dossier state needs.
const OPEN_DOSSIER_COLUMNS: [&str; 10] = [
    "type",
    "dossier_id",
    "due_at",
    "province_code",
    "commune_code",
    "agency_code",
    "level",
    "source",
    "procedure_code",
    "channel",
];

impl KpiEngine {
    /// Compiles the catalog against the table schemas. A KPI whose expression does not
    /// compile is a configuration error, reported with its id.
    pub fn new(catalog: Arc<Catalog>, store: Store, units: &AdminUnits) -> Result<Self, KpiError> {
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
        let kpi_index = catalog
            .kpis()
            .iter()
            .enumerate()
            .filter(|(i, _)| compiled[*i].is_some())
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        let provinces: Vec<Arc<str>> = units.provinces().iter().map(|p| Arc::from(p.code.as_str())).collect();
        let live = Live {
            cube: ProvinceCube::new(catalog.len(), provinces.iter().cloned()),
            dims: DimCubes::new(catalog.len()),
            ..Default::default()
        };
        let limits = KpiLimits::default();
        let permits = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
        Ok(Self {
            catalog,
            compiled,
            kpi_index,
            provinces,
            live: RwLock::new(live),
            store,
            limits,
            permits,
            state_saved: Default::default(),
        })
    }

    /// Answers under these limits instead of the defaults.
    pub fn with_limits(mut self, limits: KpiLimits) -> Self {
        self.permits = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &KpiLimits {
        &self.limits
    }

    /// Runs an answer under the time limit.
    async fn in_time<T>(&self, work: impl Future<Output = Result<T, KpiError>>) -> Result<T, KpiError> {
        tokio::time::timeout(self.limits.timeout, work).await.map_err(|_| KpiError::Timeout(self.limits.timeout))?
    }

    /// A DataFusion runtime for one SQL part of an answer: its own memory pool, no
    /// spilling to disk.
    fn runtime(&self) -> Result<Arc<RuntimeEnv>, KpiError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.limits.memory_bytes, 1.0)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build()?;
        Ok(Arc::new(runtime))
    }

    /// Runs one SQL part of an answer: waits for a permit, then runs within the pool.
    async fn run_limited(&self, ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, KpiError> {
        let _permit = self.permits.acquire().await.map_err(|_| KpiError::Timeout(self.limits.timeout))?;
        run(ctx, sql).await.map_err(|e| {
            let root = e.find_root().to_string();
            if root.contains("Resources exhausted") || root.contains("ResourcesExhausted") {
                KpiError::Memory { limit_mib: self.limits.memory_bytes >> 20, detail: root }
            } else {
                KpiError::Query(e)
            }
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Rebuilds the live state from a snapshot: the cube from the `kpi_hourly` files
    /// (never from raw events), the open dossiers from the dossier events' few columns
    /// they need. Exact: both are pure sums over committed rows. Run
    /// [`KpiEngine::backfill_rollups`] first on stores written by older versions. Later
    /// commits arrive through [`CommitListener`].
    pub fn rebuild(&self, snap: &Snapshot) -> Result<(), KpiError> {
        let started = std::time::Instant::now();
        // The cube and the open dossiers read different files: one thread each.
        let (cube, open) = std::thread::scope(|s| {
            let cube = s.spawn(|| self.rebuild_cube(snap));
            let open = self.rebuild_open(snap);
            (cube.join().expect("the cube rebuild thread panicked"), open)
        });
        let (((cube, dims), rollups, cube_ms), (open, dossiers, open_ms)) = (cube?, open?);
        let dim_cells = dims.cell_count();
        // The newest acceptance time: compacted files keep older ones, so not the last.
        let as_of = snap.history.iter().map(|(_, at, _)| *at).max();
        *self.live.write().expect("live lock") =
            Live { cube, dims, open, as_of, version: snap.version, periods: Default::default() };
        info!(
            rollups,
            dim_cells,
            dossiers,
            cube_ms,
            open_ms,
            ms = started.elapsed().as_millis() as u64,
            version = ?snap.version,
            "KPI state rebuilt from the rollups and the dossier events"
        );
        Ok(())
    }

    /// The province and dimension cubes from the `kpi_hourly` files: the cubes, their
    /// rows, milliseconds.
    fn rebuild_cube(&self, snap: &Snapshot) -> Result<((ProvinceCube, DimCubes), u64, u64), KpiError> {
        let started = std::time::Instant::now();
        let mut cube = ProvinceCube::new(self.catalog.len(), self.provinces.iter().cloned());
        let mut dims = DimCubes::new(self.catalog.len());
        let (mut rollups, mut skipped) = (0u64, 0usize);
        let mut rows = Vec::new();
        for file in snap.files(KPI_HOURLY) {
            for batch in self.store.read_file(file, None)? {
                rollups += batch.num_rows() as u64;
                skipped += self.fold_rollups(&mut cube, &mut dims, &batch, &mut rows)?;
            }
        }
        if skipped > 0 {
            warn!(rows = skipped, "kpi_hourly rows of KPIs that are no longer in the catalog were ignored");
        }
        Ok(((cube, dims), rollups, started.elapsed().as_millis() as u64))
    }

    /// Adds a `kpi_hourly` batch (every column) to the province cube and the dimension
    /// cubes; its province rows are left in `rows`. Returns the rows skipped (KPIs no
    /// longer in the catalog).
    fn fold_rollups(
        &self,
        cube: &mut ProvinceCube,
        dims: &mut DimCubes,
        batch: &RecordBatch,
        rows: &mut Vec<ioc_core::CubeRow>,
    ) -> Result<usize, RollupError> {
        rows.clear();
        let skipped = cube_rows(batch, &self.kpi_index, rows)?;
        cube.apply(rows);
        add_to_dim_cubes(batch, &self.kpi_index, dims)?;
        Ok(skipped)
    }

    /// The open dossiers from the dossier events: the state, its events, milliseconds.
    fn rebuild_open(&self, snap: &Snapshot) -> Result<(OpenDossiers, u64, u64), KpiError> {
        let started = std::time::Instant::now();
        let mut open = OpenDossiers::default();
        let mut dossiers = 0u64;
        for file in snap.files(Family::Dossier.table()) {
            for batch in self.store.read_file(file, Some(&OPEN_DOSSIER_COLUMNS))? {
                dossiers += batch.num_rows() as u64;
                track_open(&mut open, &batch);
            }
        }
        Ok((open, dossiers, started.elapsed().as_millis() as u64))
    }

    /// Writes the missing rollups of a store written by a version that had none: the
    /// commits found by [`commits_without_rollups`] get their rollups, computed from
    /// their event files, in one commit with no events and no source positions (a
    /// backfill commit). Published only right after the snapshot it was computed from;
    /// if another writer committed meanwhile (e.g. another instance backfilling too),
    /// it starts over from the new snapshot, so rollups are never written twice.
    /// Returns the backfill's version, `None` if nothing was missing.
    pub fn backfill_rollups(&self, now: DateTime<Utc>) -> Result<Option<u64>, KpiError> {
        for _attempt in 0..16 {
            let snap = self.store.refresh()?;
            let missing = commits_without_rollups(&snap);
            if missing.is_empty() {
                return Ok(None);
            }
            let started = std::time::Instant::now();
            let live: HashMap<&str, &ioc_storage::DataFile> =
                snap.files.values().flatten().map(|f| (f.path.as_str(), f)).collect();
            let mut staged: Option<ioc_storage::Staged> = None;
            let (mut events, mut chunk_events) = (0u64, 0u64);
            let mut delta = CounterDelta::default();
            let mut stage = |delta: &mut CounterDelta| -> Result<(), KpiError> {
                if delta.is_empty() {
                    return Ok(());
                }
                let batch = rollup_batch(&self.catalog, &std::mem::take(delta));
                let s = self.store.stage(&[(KPI_HOURLY, batch)])?;
                match staged.as_mut() {
                    Some(all) => all.extend(s),
                    None => staged = Some(s),
                }
                Ok(())
            };
            for (_, paths) in &missing {
                for path in paths {
                    let Some(file) = live.get(path.as_str()) else {
                        warn!(path, "an event file without rollups is no longer live; its rollups are not backfilled");
                        continue;
                    };
                    let Some(family) = Family::ALL.into_iter().find(|f| f.table() == file.table) else {
                        continue;
                    };
                    for batch in self.store.read_file(file, None)? {
                        events += batch.num_rows() as u64;
                        chunk_events += batch.num_rows() as u64;
                        delta.merge(self.delta_for(family, &batch)?);
                    }
                }
                // Bounded memory: stage a file every million events or so; the
                // files are published together, in one commit.
                if chunk_events >= 1_000_000 {
                    stage(&mut delta)?;
                    chunk_events = 0;
                }
            }
            stage(&mut delta)?;
            let Some(staged) = staged else {
                // Events that no ratio KPI counts: nothing to write.
                return Ok(None);
            };
            match self.store.publish(&staged, &BTreeMap::new(), now, snap.version)? {
                Publish::Committed(info) => {
                    info!(
                        commits = missing.len(),
                        events,
                        version = info.version,
                        ms = started.elapsed().as_millis() as u64,
                        "backfilled the KPI rollups of commits written without them"
                    );
                    return Ok(Some(info.version));
                }
                Publish::Behind(_) => {
                    info!("another writer committed during the rollup backfill; starting over");
                    self.store.discard(staged);
                }
            }
        }
        Err(KpiError::BackfillContention)
    }

    /// Counter deltas of one batch of a family: per ratio KPI, hour and dimension
    /// tuple, the events its denominator counts, how many its numerator counts, and
    /// their earliest and latest time.
    pub fn delta_for(&self, family: Family, batch: &RecordBatch) -> Result<CounterDelta, DataFusionError> {
        let mut delta = CounterDelta::default();
        if batch.num_rows() == 0 {
            return Ok(delta);
        }
        let times =
            batch.column_by_name("occurred_at").expect("occurred_at").as_primitive::<TimestampMicrosecondType>();
        let times = times.values();
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
                    let hour = times[i].div_euclid(3_600_000_000);
                    delta.add(kpi, hour, dims[i].clone(), Count::new(n, 1), times[i]);
                }
            }
        }
        Ok(delta)
    }

    /// The rollup rows of a commit's events.
    pub fn derive_delta(&self, batches: &[(Family, RecordBatch)]) -> Result<CounterDelta, DataFusionError> {
        let mut delta = CounterDelta::default();
        for (family, batch) in batches {
            delta.merge(self.delta_for(*family, batch)?);
        }
        Ok(delta)
    }

    /// Folds a commit into the live state: its rollup rows into the cubes and the
    /// period totals, its dossier events into the open-dossier state.
    pub fn apply(&self, committed: &Committed) {
        let mut rows = Vec::new();
        let mut live = self.live.write().expect("live lock");
        let live = &mut *live;
        for (table, batch) in &committed.derived {
            if table != KPI_HOURLY {
                continue;
            }
            match self.fold_rollups(&mut live.cube, &mut live.dims, batch, &mut rows) {
                Ok(0) => {}
                Ok(skipped) => warn!(rows = skipped, "kpi_hourly rows of KPIs not in the catalog were ignored"),
                // Rollups are written by this engine's own schema; failure is a bug.
                Err(e) => warn!(error = %e, "could not read the rollups of a commit"),
            }
            for totals in live.periods.iter_mut().flatten() {
                totals.apply(&rows);
            }
        }
        for (family, batch) in &committed.batches {
            if *family == Family::Dossier {
                track_open(&mut live.open, batch);
            }
        }
        if !committed.batches.is_empty() {
            live.as_of = live.as_of.max(Some(committed.committed_at));
        }
        live.version = live.version.max(Some(committed.version));
    }

    /// When the newest commit with events that the live state covers was made.
    pub fn as_of(&self) -> Option<DateTime<Utc>> {
        self.live.read().expect("live lock").as_of
    }

    /// The live period (day, month or year, Vietnam time) that contains `now`, whether
    /// it differs from the one of the last call (the period rolled over, or this is
    /// the first call), and the totals of every ratio KPI over it, nationally and per
    /// province, that changed since the last call: all of them when it rolled over.
    /// Late events in past hours of the period change totals too. Exactly what `list`
    /// answers for the period, since both are sums of the same cube.
    pub fn take_changes(&self, period: LivePeriod, now: DateTime<Utc>) -> LiveChanges {
        let (from, to) = period.range(now);
        let hours = hour_of(from.to_utc())..hour_of(to.to_utc());
        let mut live = self.live.write().expect("live lock");
        let live = &mut *live;
        let slot = &mut live.periods[period.index()];
        let rolled = slot.as_ref().is_none_or(|t| t.hours() != hours);
        if rolled {
            *slot = Some(PeriodTotals::new(hours, &live.cube));
        }
        let changed = slot.as_mut().map(PeriodTotals::take_changed).unwrap_or_default();
        LiveChanges { period: Period { from: from.to_utc(), to: to.to_utc() }, rolled, changed }
    }

    /// The month to date: [`KpiEngine::take_changes`] for [`LivePeriod::Mtd`].
    pub fn take_month_changes(&self, now: DateTime<Utc>) -> (Period, Vec<(usize, ScopeKey, Count)>) {
        let c = self.take_changes(LivePeriod::Mtd, now);
        (c.period, c.changed)
    }

    /// One ratio KPI's totals over the live period that contains `now`, by scope
    /// (national: `None`), from the running totals, without a scan. `None` until
    /// [`KpiEngine::take_changes`] has set them up for that period.
    pub fn period_totals(
        &self,
        period: LivePeriod,
        kpi: usize,
        now: DateTime<Utc>,
    ) -> Option<HashMap<ScopeKey, Count>> {
        let (from, to) = period.range(now);
        let hours = hour_of(from.to_utc())..hour_of(to.to_utc());
        let live = self.live.read().expect("live lock");
        let totals = live.periods[period.index()].as_ref().filter(|t| t.hours() == hours)?;
        Some(totals.all().filter(|(k, _, _)| *k == kpi).map(|(_, scope, c)| (scope.clone(), c)).collect())
    }

    /// The month to date: [`KpiEngine::period_totals`] for [`LivePeriod::Mtd`].
    pub fn month_totals(&self, kpi: usize, now: DateTime<Utc>) -> Option<HashMap<ScopeKey, Count>> {
        self.period_totals(LivePeriod::Mtd, kpi, now)
    }

    /// The dossiers overdue at `now`, nationally and per province.
    pub fn overdue_by_scope(&self, now: DateTime<Utc>) -> Vec<(ScopeKey, u64)> {
        let by_province = self.live.write().expect("live lock").open.overdue_by_province(now);
        let mut out: Vec<(ScopeKey, u64)> = vec![(None, by_province.values().sum())];
        out.extend(by_province.into_iter().filter(|(k, _)| k.is_some()));
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
        self.in_time(self.list_all(period, province, now)).await
    }

    async fn list_all(
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
            out.push(KpiValue::new(def, province, year, count, value));
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
        let rows = self.in_time(self.counts(idx, q.period, q.bucket, &q.group_by, &q.filter, now)).await?;
        let n = rows.values().filter(|c| !c.is_zero()).count();
        if n > self.limits.max_rows {
            return Err(KpiError::TooManyRows { rows: n, limit: self.limits.max_rows });
        }
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

    /// Counts of one KPI, exact for any `[from, to)`: whole hours from the cube (at
    /// most the province in filters and groups) or from SQL over `kpi_hourly` (other
    /// dimensions); the partial hours at the edges the same way when every event the
    /// KPI counts in that hour falls on one side of the edge, else from SQL over the
    /// stored events of that hour.
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
            let bucket_key = bucket.map(|b| b.floor(now).to_utc());
            let by_province = |d: &Dim| *d == Dim::ProvinceCode;
            if group_by.iter().all(by_province) && filter.0.iter().all(|(d, _)| by_province(d)) {
                // National or per-province: from the due index, without a scan.
                let counts = self.live.write().expect("live lock").open.overdue_by_province(now);
                let mut out: BTreeMap<SeriesKey, Count> = BTreeMap::new();
                for (p, n) in counts {
                    if filter.0.iter().all(|(_, want)| p.as_deref() == Some(want.as_str())) {
                        let key = group_by.iter().map(|_| p.clone()).collect();
                        out.entry((bucket_key, key)).or_default().numerator += n;
                    }
                }
                return Ok(out);
            }
            // Other dimensions: the overdue value tuples are copied out under the lock
            // (O(distinct tuples), never a walk over every open dossier), and grouped
            // without holding it.
            let overdue = self.live.write().expect("live lock").open.overdue(now);
            return Ok(overdue
                .grouped(filter, group_by)
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
        let province_only =
            group_by.iter().all(|d| *d == Dim::ProvinceCode) && filter.0.iter().all(|(d, _)| *d == Dim::ProvinceCode);
        let mut sql_ranges = Vec::new();
        // Whole hours to sum from the rollups with SQL.
        let mut rollup_hours: Vec<std::ops::Range<HourBucket>> = Vec::new();
        // Whole hours to sum: the inner ones and the edge hours whose events all fall
        // inside the period. They are contiguous, since edge hours border the inner ones.
        let mut whole: Option<(HourBucket, HourBucket)> = (full_start < full_end).then_some((full_start, full_end));
        {
            let live = self.live.read().expect("live lock");
            for (hour, a, b) in partial {
                let Some((lo, hi)) = live.cube.span(idx, hour) else {
                    continue;
                };
                let (a_us, b_us) = (a.timestamp_micros(), b.timestamp_micros());
                if lo >= a_us && hi < b_us {
                    whole = Some(whole.map_or((hour, hour + 1), |(s, e)| (s.min(hour), e.max(hour + 1))));
                } else if hi >= a_us && lo < b_us {
                    sql_ranges.push((hour, a, b));
                }
            }
            if province_only && let Some((s, e)) = whole {
                let mut provinces = filter.0.iter().map(|(_, p)| p.as_str());
                let sel = match provinces.next() {
                    None => ProvinceSel::All,
                    Some(p) if provinces.all(|q| q == p) => ProvinceSel::One(p),
                    // Two different provinces at once: nothing matches.
                    Some(_) => return Ok(out),
                };
                out = live.cube.series(idx, s..e, sel, !group_by.is_empty(), bucket);
            } else if let Some((s, e)) = whole {
                match live.dims.for_slice(group_by, filter) {
                    Some(cube) => {
                        out = cube.series(idx, s..e, group_by, filter, bucket);
                        rollup_hours = cube.gaps(s..e, bucket);
                    }
                    None => rollup_hours.push(s..e),
                }
            }
        }
        for hours in rollup_hours {
            for (key, c) in self.rollup_counts(def, hours, bucket, group_by, filter).await? {
                *out.entry(key).or_default() += c;
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

    /// Sums a KPI's rollups over whole hours with SQL over `kpi_hourly`, grouped by
    /// calendar bucket (Vietnam time) and dimensions.
    async fn rollup_counts(
        &self,
        def: &KpiDef,
        hours: std::ops::Range<HourBucket>,
        bucket: Option<Bucket>,
        group_by: &[Dim],
        filter: &DimFilter,
    ) -> Result<BTreeMap<SeriesKey, Count>, KpiError> {
        let (from, to) = (hour_start(hours.start), hour_start(hours.end));
        let sql = rollup_sql(&def.id, Period { from, to }, bucket, group_by, filter);
        let snap = self.store.snapshot();
        let ctx = period_context(
            &self.store,
            &snap,
            KPI_HOURLY,
            from.timestamp_micros(),
            to.timestamp_micros(),
            self.runtime()?,
        )?;
        let batches = self.run_limited(&ctx, &sql).await?;
        let mut out = BTreeMap::new();
        let skip = usize::from(bucket.is_some());
        for b in batches {
            let n = group_by.len();
            let num = b.column(skip + n).as_primitive::<arrow::datatypes::Int64Type>();
            let den = b.column(skip + n + 1).as_primitive::<arrow::datatypes::Int64Type>();
            let starts = (skip == 1).then(|| b.column(0).as_primitive::<TimestampMicrosecondType>());
            for i in 0..b.num_rows() {
                let key = starts.map(|s| DateTime::from_timestamp_micros(s.value(i)).expect("bucket start in range"));
                let dims = (0..n).map(|c| string_at(&b, skip + c, i)).collect();
                *out.entry((key, dims)).or_default() += Count::new(num.value(i) as u64, den.value(i) as u64);
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
        let table = def.family().table();
        let (from_us, to_us) = (period.from.timestamp_micros(), period.to.timestamp_micros());
        let ctx = period_context(&self.store, &snap, table, from_us, to_us, self.runtime()?)?;
        let mut out = Vec::new();
        for b in self.run_limited(&ctx, &sql).await? {
            let n = group_by.len();
            let num = b.column(n).as_primitive::<arrow::datatypes::Int64Type>();
            let den = b.column(n + 1).as_primitive::<arrow::datatypes::Int64Type>();
            for i in 0..b.num_rows() {
                let dims = (0..n).map(|c| string_at(&b, c, i)).collect();
                out.push((dims, Count::new(num.value(i) as u64, den.value(i) as u64)));
            }
        }
        Ok(out)
    }
}

async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, DataFusionError> {
    ctx.sql(sql).await?.execute_stream().await?.try_collect().await
}

fn string_at(b: &RecordBatch, col: usize, row: usize) -> DimValue {
    let col = b.column(col).as_string::<i32>();
    col.is_valid(row).then(|| Arc::<str>::from(col.value(row)))
}

impl Derive for KpiEngine {
    fn derive(&self, batches: &[(Family, RecordBatch)]) -> Result<Vec<(&'static str, RecordBatch)>, DeriveError> {
        let delta = self.derive_delta(batches).map_err(|e| DeriveError(e.to_string()))?;
        if delta.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![(KPI_HOURLY, rollup_batch(&self.catalog, &delta))])
    }
}

/// The commits of a snapshot whose events have no rollups, with the paths of the files
/// they added: commits that add event files, no `kpi_hourly` file and remove nothing,
/// made after the last backfill commit (one that adds `kpi_hourly` files and no event
/// files, and removes nothing), since a backfill covers every commit before it. Since
/// every commit with events made by this version carries its rollups, only data
/// written by older versions (without rollups) qualifies, plus the rare commit whose
/// events no ratio KPI counts (found again at each start, and cheap: nothing to write).
pub fn commits_without_rollups(snap: &Snapshot) -> Vec<(u64, Vec<String>)> {
    let table_of = |path: &str| path.split('/').nth(1).map(str::to_string).unwrap_or_default();
    let is_event = |t: &str| Family::ALL.iter().any(|f| f.table() == t);
    let mut out = Vec::new();
    for (version, _, paths) in &snap.history {
        if snap.rewrites.contains(version) {
            continue;
        }
        let tables: Vec<String> = paths.iter().map(|p| table_of(p)).collect();
        let events = tables.iter().any(|t| is_event(t));
        let rollups = tables.iter().any(|t| t == KPI_HOURLY);
        match (events, rollups) {
            (true, false) => out.push((*version, paths.clone())),
            // A backfill: it covers every commit before it.
            (false, true) => out.clear(),
            _ => {}
        }
    }
    out
}

/// The SQL that sums a KPI's rollups over `[from, to)` (whole hours), grouped by
/// Vietnam-time bucket (`UTC+7`, no daylight saving) and `group_by`.
pub fn rollup_sql(kpi: &str, period: Period, bucket: Option<Bucket>, group_by: &[Dim], filter: &DimFilter) -> String {
    let mut select = Vec::new();
    let mut group = Vec::new();
    if let Some(b) = bucket {
        let unit = match b {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Month => "month",
        };
        select.push(format!("date_trunc('{unit}', hour + INTERVAL '7 hours') - INTERVAL '7 hours' AS bucket_start"));
        group.push("bucket_start".to_string());
    }
    for d in group_by {
        select.push(d.as_str().to_string());
        group.push(d.as_str().to_string());
    }
    select.push("CAST(SUM(numerator) AS BIGINT) AS numerator".into());
    select.push("CAST(SUM(denominator) AS BIGINT) AS denominator".into());
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut conds = vec![
        format!("kpi = '{}'", kpi.replace('\'', "''")),
        format!("hour >= TIMESTAMP '{}'", ts(period.from)),
        format!("hour < TIMESTAMP '{}'", ts(period.to)),
    ];
    for (d, v) in &filter.0 {
        conds.push(format!("{} = '{}'", d.as_str(), v.replace('\'', "''")));
    }
    let mut sql = format!("SELECT {} FROM {KPI_HOURLY} WHERE {}", select.join(", "), conds.join(" AND "));
    if !group.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", group.join(", ")));
    }
    sql
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
    let dims: Vec<Option<&StringArray>> =
        Dim::ALL.iter().map(|d| batch.column_by_name(d.as_str()).and_then(|c| c.as_string_opt::<i32>())).collect();
    for i in 0..batch.num_rows() {
        match ty.value(i) {
            "dossier.received" if due.is_valid(i) => {
                let values = std::array::from_fn(|k| dims[k].filter(|c| c.is_valid(i)).map(|c| c.value(i)));
                open.receive(ids.value(i), due.value(i), values)
            }
            "dossier.resolved" | "dossier.closed" => open.finish(ids.value(i)),
            _ => {}
        }
    }
}
