//! DataFusion sessions over the committed data: the contract's tables (CONTRACT.md §4).
//!
//! A session is built per query from one storage [`Snapshot`], so a query sees one
//! consistent set of commits and never a half-written file.
//!
//! **Row security** is enforced on the plan, not on SQL text: for a caller scoped to a
//! province, every table is registered as a view whose plan is a filter
//! `province_code = '<p>'` over the real table, and tables without a province
//! (`dead_letters`) are registered empty. The real tables are never registered under
//! any name, so no table, view, join, subquery or `information_schema` trick reaches
//! them; the filter is part of every plan that reads data and shows in `EXPLAIN`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, StringViewBuilder};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use datafusion::catalog::TableProvider;
use datafusion::common::{Constraint, Constraints};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{
    ColumnarValue, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility, col, lit,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use ioc_core::AdminUnits;
use ioc_core::catalog::{Catalog, KpiDef, parse_level};
use ioc_storage::{DataFile, Snapshot, Store, schema};

use crate::audit::AuditLog;
use crate::date_trunc::MemoDateTrunc;
use crate::eager_aggregate::EagerAggregate;
use crate::view_eq::ViewEquality;
use crate::view_groups::ViewGroupAggregate;

/// What a session may see.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// Only this province's rows.
    pub province: Option<&'a str>,
    /// The `audit_log` table too.
    pub admin: bool,
}

/// `table` as the caller may see it: itself, or a view over a filter on the province.
fn scoped(
    name: &str,
    table: Arc<dyn TableProvider>,
    province: Option<&str>,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    let Some(p) = province else { return Ok(table) };
    let schema = table.schema();
    if schema.column_with_name("province_code").is_none() {
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    }
    let plan = LogicalPlanBuilder::scan(name, provider_as_source(table), None)?
        .filter(col("province_code").eq(lit(p.to_string())))?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The `admin_units` table: provinces and communes with Vietnamese names.
pub fn admin_units_table(units: &AdminUnits) -> Arc<MemTable> {
    let schema = Arc::new(Schema::new(
        ["province_code", "province_name", "commune_code", "commune_name", "commune_type"]
            .map(|n| Field::new(n, DataType::Utf8View, false))
            .to_vec(),
    ));
    let mut cols: Vec<StringViewBuilder> = (0..5).map(|_| StringViewBuilder::new()).collect();
    for c in units.communes() {
        for (b, v) in
            cols.iter_mut().zip([&c.province_code, &c.province_name, &c.commune_code, &c.commune_name, &c.commune_type])
        {
            b.append_value(v);
        }
    }
    let batch = RecordBatch::try_new(schema.clone(), cols.iter_mut().map(|b| Arc::new(b.finish()) as _).collect())
        .expect("admin units batch");
    // `commune_code` is the key: `AdminUnits` refuses a file that repeats one. The
    // planner's functional dependencies come from this, and `EagerAggregate` uses them.
    let key = Constraints::new_unverified(vec![Constraint::PrimaryKey(vec![2])]);
    Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("admin units table").with_constraints(key))
}

/// A table over the files a snapshot lists for it.
fn snapshot_table(
    store: &Store,
    snap: &Snapshot,
    table: &str,
    schema: arrow::datatypes::SchemaRef,
    runtime: &RuntimeEnv,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    let files: Vec<&DataFile> = snap.files(table).iter().collect();
    files_table(store, &files, view_schema(&schema), runtime)
}

fn files_table(
    store: &Store,
    files: &[&DataFile],
    schema: arrow::datatypes::SchemaRef,
    runtime: &RuntimeEnv,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    if files.is_empty() {
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    }
    // A store in a bucket: the runtime reads the files' s3:// URLs with its client.
    if let Some(bucket) = store.bucket() {
        let url = datafusion::execution::object_store::ObjectStoreUrl::parse(&bucket.url)?;
        runtime.register_object_store(url.as_ref(), bucket.store.clone());
    }
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(store.path_of(f).to_string_lossy()))
        .collect::<Result<Vec<_>, _>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?.with_cache(runtime.cache_manager.get_file_statistic_cache())))
}

/// `schema` with its `Utf8` code and label columns as `Utf8View`. Ad-hoc SQL reads
/// them this way: the Parquet reader then hands out views (short codes inline, no copy
/// of the value bytes), and grouping, joining and `take` move 16-byte views instead of
/// strings. Measured on 20M events: 1.82× → 1.67× DuckDB's time (geometric mean).
///
/// Identifiers (`event_id`, `dossier_id`, ...: long and nearly unique) stay `Utf8`:
/// views of them keep whole decoded pages alive, and DataFusion's memory accounting
/// counts a shared buffer once per batch that references it, so a `count(DISTINCT
/// dossier_id)` that fits in 1 GiB as `Utf8` was refused at 4 GiB as views.
fn view_schema(schema: &Schema) -> arrow::datatypes::SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 if !f.name().ends_with("_id") => {
                    Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View))
                }
                _ => f.clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Settings every session gets.
///
/// Partial aggregation gives up (passes rows through to the final one) when it merges
/// fewer than half of its first 100,000 rows, not a fifth as by default: a GROUP BY on
/// an identifier (`count(DISTINCT dossier_id)`) then costs one hash table instead of
/// two, which took that benchmark query from 9.5 s to 5.7 s and 3.4 to 2.0 GiB.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new();
    config.options_mut().execution.skip_partial_aggregation_probe_ratio_threshold = 0.5;
    config
        .with_information_schema(true)
        .with_default_catalog_and_schema("ioc", "public")
        .with_create_default_catalog_and_schema(true)
}

/// A session with [`session_config`] on `runtime`, whose plans group events before a
/// lookup join ([`EagerAggregate`]) and group by one text column with
/// [`ViewGroupAggregateExec`](crate::view_groups::ViewGroupAggregateExec), whose
/// filters compare text to literals by views ([`ViewEquality`]), and whose
/// `date_trunc` is [`MemoDateTrunc`].
pub fn new_session(runtime: Arc<RuntimeEnv>) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(session_config())
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rule(Arc::new(EagerAggregate))
        .with_physical_optimizer_rule(Arc::new(ViewGroupAggregate))
        .with_physical_optimizer_rule(Arc::new(ViewEquality))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_udf(MemoDateTrunc::udf());
    ctx
}

/// The `kpi_catalog` table: one row per KPI with its names, kind, national default
/// target and its source, and direction.
pub fn kpi_catalog_table(catalog: &Catalog) -> Result<Arc<MemTable>, DataFusionError> {
    let text = |n| Field::new(n, DataType::Utf8, false);
    let schema = Arc::new(Schema::new(vec![
        text("kpi"),
        text("name_vi"),
        text("name_en"),
        text("kind"),
        Field::new("target", DataType::Float64, false),
        text("direction"),
        Field::new("target_source", DataType::Utf8, true),
    ]));
    let kpis = catalog.kpis();
    let col = |f: &dyn Fn(&KpiDef) -> String| -> ArrayRef {
        Arc::new(StringArray::from(kpis.iter().map(f).collect::<Vec<_>>()))
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            col(&|k| k.id.clone()),
            col(&|k| k.name_vi.clone()),
            col(&|k| k.name_en.clone()),
            col(&|k| k.kind_name().to_string()),
            Arc::new(Float64Array::from(kpis.iter().map(|k| k.target).collect::<Vec<_>>())),
            col(&|k| k.direction.as_str().to_string()),
            Arc::new(StringArray::from(kpis.iter().map(|k| k.target_source.clone()).collect::<Vec<_>>())),
        ],
    )?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// `kpi_target(kpi, province_code, year[, level])` and, with `source`,
/// `kpi_target_source(...)`: the target that applies, resolved as everywhere else by
/// [`KpiDef::target`] (a province's own beats the national one, then the latest
/// `from_year`, then the level's), or the source it comes from; NULL for an unknown
/// KPI. Without a level (or with NULL), targets limited to a level do not apply.
#[derive(Debug)]
struct KpiTarget {
    catalog: Arc<Catalog>,
    source: bool,
    signature: Signature,
}

impl KpiTarget {
    fn udf(catalog: Arc<Catalog>, source: bool) -> ScalarUDF {
        let (text, int) = (DataType::Utf8View, DataType::Int32);
        let three = vec![text.clone(), text.clone(), int];
        let four = [three.clone(), vec![text]].concat();
        let signature =
            Signature::one_of(vec![TypeSignature::Exact(three), TypeSignature::Exact(four)], Volatility::Immutable);
        ScalarUDF::new_from_impl(Self { catalog, source, signature })
    }
}

impl PartialEq for KpiTarget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.catalog, &other.catalog) && self.source == other.source
    }
}

impl Eq for KpiTarget {}

impl Hash for KpiTarget {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.catalog).hash(state);
        self.source.hash(state);
    }
}

impl ScalarUDFImpl for KpiTarget {
    fn name(&self) -> &str {
        if self.source { "kpi_target_source" } else { "kpi_target" }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType, DataFusionError> {
        Ok(if self.source { DataType::Utf8 } else { DataType::Float64 })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue, DataFusionError> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (kpi, province) = (arrays[0].as_string_view(), arrays[1].as_string_view());
        let year = arrays[2].as_primitive::<Int32Type>();
        let level = arrays.get(3).map(|a| a.as_string_view());
        let targets = (0..kpi.len()).map(|i| {
            let def = kpi.is_valid(i).then(|| self.catalog.get(kpi.value(i))).flatten()?.1;
            let p = province.is_valid(i).then(|| province.value(i));
            let l = level.filter(|l| l.is_valid(i)).and_then(|l| parse_level(l.value(i)));
            Some(def.target(p, if year.is_valid(i) { year.value(i) } else { 0 }, l))
        });
        let out: ArrayRef = if self.source {
            Arc::new(targets.map(|t| t.and_then(|t| t.source)).collect::<StringArray>())
        } else {
            Arc::new(targets.map(|t| t.map(|t| t.value)).collect::<Float64Array>())
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Views for humans, over the (possibly row-secured) tables: daily KPI values per
/// province with their targets, and province names.
const VIEWS: &[(&str, &str)] = &[
    (
        "kpi_daily",
        "SELECT kpi, day, province_code, numerator, denominator, \
           CASE WHEN denominator > 0 THEN CAST(numerator AS DOUBLE) / CAST(denominator AS DOUBLE) END AS value, \
           kpi_target(kpi, province_code, CAST(date_part('year', day) AS INT)) AS target, \
           kpi_target_source(kpi, province_code, CAST(date_part('year', day) AS INT)) AS target_source \
         FROM (SELECT kpi, CAST(hour + INTERVAL '7 hours' AS DATE) AS day, province_code, \
                 SUM(numerator) AS numerator, SUM(denominator) AS denominator \
               FROM kpi_hourly GROUP BY 1, 2, 3)",
    ),
    ("provinces", "SELECT DISTINCT province_code, province_name FROM admin_units"),
];

/// Builds a session with every contract table registered as `scope` may see it, on
/// the given runtime (which carries the memory limit), plus, with a catalog,
/// `kpi_catalog`, `kpi_target()`, `kpi_target_source()` and the views. `audit` is registered as the
/// `audit_log` table when the scope is an admin's.
pub async fn build_context(
    store: &Store,
    snap: &Snapshot,
    admin_units: Arc<MemTable>,
    runtime: Arc<RuntimeEnv>,
    scope: Scope<'_>,
    audit: Option<&AuditLog>,
    catalog: Option<&Arc<Catalog>>,
) -> Result<SessionContext, DataFusionError> {
    let ctx = new_session(runtime.clone());
    for (name, schema) in schema::tables() {
        ctx.register_table(name, scoped(name, snapshot_table(store, snap, name, schema, &runtime)?, scope.province)?)?;
    }
    ctx.register_table("admin_units", scoped("admin_units", admin_units, scope.province)?)?;
    if let Some(audit) = audit.filter(|_| scope.admin && scope.province.is_none()) {
        ctx.register_table("audit_log", audit.table()?)?;
    }
    if let Some(catalog) = catalog {
        ctx.register_table("kpi_catalog", kpi_catalog_table(catalog)?)?;
        ctx.register_udf(KpiTarget::udf(catalog.clone(), false));
        ctx.register_udf(KpiTarget::udf(catalog.clone(), true));
        for (name, sql) in VIEWS {
            let plan = ctx.state().create_logical_plan(sql).await?;
            ctx.register_table(*name, Arc::new(ViewTable::new(plan, Some(sql.to_string()))))?;
        }
        if let Some(index) = catalog.index() {
            // The current month, Vietnam time; national rows only for callers who see
            // every province.
            let (from, to) = ioc_core::time::LivePeriod::Mtd.range(chrono::Utc::now());
            let sql = crate::index::service_index_sql(index, from.to_utc(), to.to_utc(), scope.province.is_none());
            let plan = ctx.state().create_logical_plan(&sql).await?;
            ctx.register_table("service_index", Arc::new(ViewTable::new(plan, Some(sql))))?;
        }
    }
    Ok(ctx)
}

/// A session with one table only, over just the files of the snapshot whose time
/// range (`min_time_us..=max_time_us`) meets `[from_us, to_us)`: the engine's queries
/// over one period then open only the files that can hold rows of it. `runtime`
/// carries the query's memory limit.
pub fn period_context(
    store: &Store,
    snap: &Snapshot,
    table: &str,
    from_us: i64,
    to_us: i64,
    runtime: Arc<RuntimeEnv>,
) -> Result<SessionContext, DataFusionError> {
    let schema = schema::schema_of(table).ok_or_else(|| DataFusionError::Plan(format!("unknown table `{table}`")))?;
    let files: Vec<&DataFile> =
        snap.files(table).iter().filter(|f| f.max_time_us >= from_us && f.min_time_us < to_us).collect();
    let ctx = new_session(runtime);
    ctx.register_table(table, files_table(store, &files, schema, &ctx.runtime_env())?)?;
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use arrow::array::Float64Array;

    use super::*;

    /// `kpi_target()` and `kpi_target_source()` resolve as [`KpiDef::target`] does, with
    /// and without a level, for literals and for columns.
    #[tokio::test]
    async fn kpi_target_functions_resolve_like_the_catalog() {
        let catalog = Arc::new(Catalog::builtin());
        let ctx = new_session(Arc::new(RuntimeEnv::default()));
        ctx.register_udf(KpiTarget::udf(catalog.clone(), false));
        ctx.register_udf(KpiTarget::udf(catalog.clone(), true));
        let sql = "SELECT kpi_target(k, p, CAST(y AS INT), l) AS t, kpi_target_source(k, p, CAST(y AS INT), l) AS s, \
                     kpi_target(k, p, CAST(y AS INT)) AS t3 \
                   FROM (VALUES ('online_work_record_rate', '24', 2024, 'province'), \
                                ('online_work_record_rate', '24', 2030, 'province'), \
                                ('online_work_record_rate', '24', 2030, NULL), \
                                ('digital_inspection_rate', NULL, 2030, NULL), \
                                ('nope', '24', 2024, NULL)) AS v(k, p, y, l)";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let floats = |i: usize| -> Vec<Option<f64>> {
            b.column(i).as_any().downcast_ref::<Float64Array>().unwrap().iter().collect()
        };
        let sources: Vec<Option<String>> = arrow::compute::cast(b.column(1), &DataType::Utf8)
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_owned))
            .collect();
        assert_eq!(floats(0), [Some(0.95), Some(0.95), Some(1.0), Some(0.7), None]);
        assert_eq!(
            floats(2),
            [Some(0.9), Some(1.0), Some(1.0), Some(0.7), None],
            "no level: level-limited ones do not apply"
        );
        let def = |id| catalog.get(id).unwrap().1;
        let want = [
            def("online_work_record_rate").target(Some("24"), 2024, Some(ioc_core::event::Level::Province)).source,
            def("online_work_record_rate").target(Some("24"), 2030, Some(ioc_core::event::Level::Province)).source,
            def("online_work_record_rate").target(Some("24"), 2030, None).source,
            def("digital_inspection_rate").target(None, 2030, None).source,
            None,
        ];
        assert_eq!(sources, want.map(|s| s.map(str::to_owned)));
        assert!(sources[0].as_deref().is_some_and(|s| s.contains("Bắc Giang")), "{sources:?}");
    }
}
