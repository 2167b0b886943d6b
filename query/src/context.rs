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

use std::sync::Arc;

use arrow::array::{RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
use datafusion::prelude::{SessionConfig, SessionContext};
use ioc_core::AdminUnits;
use ioc_storage::{DataFile, Snapshot, Store, schema};

use crate::audit::AuditLog;

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
            .map(|n| Field::new(n, DataType::Utf8, false))
            .to_vec(),
    ));
    let mut cols: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
    for c in units.communes() {
        for (b, v) in
            cols.iter_mut().zip([&c.province_code, &c.province_name, &c.commune_code, &c.commune_name, &c.commune_type])
        {
            b.append_value(v);
        }
    }
    let batch = RecordBatch::try_new(schema.clone(), cols.iter_mut().map(|b| Arc::new(b.finish()) as _).collect())
        .expect("admin units batch");
    Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("admin units table"))
}

/// A table over the files a snapshot lists for it.
fn snapshot_table(
    store: &Store,
    snap: &Snapshot,
    table: &str,
    schema: arrow::datatypes::SchemaRef,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    let files: Vec<&DataFile> = snap.files(table).iter().collect();
    files_table(store, &files, schema)
}

fn files_table(
    store: &Store,
    files: &[&DataFile],
    schema: arrow::datatypes::SchemaRef,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    if files.is_empty() {
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    }
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(store.path_of(f).to_string_lossy()))
        .collect::<Result<Vec<_>, _>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// Settings every session gets.
pub fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("ioc", "public")
        .with_create_default_catalog_and_schema(true)
}

/// Builds a session with every contract table registered as `scope` may see it, on
/// the given runtime (which carries the memory limit). `audit` is registered as the
/// `audit_log` table when the scope is an admin's.
pub fn build_context(
    store: &Store,
    snap: &Snapshot,
    admin_units: Arc<MemTable>,
    runtime: Arc<RuntimeEnv>,
    scope: Scope<'_>,
    audit: Option<&AuditLog>,
) -> Result<SessionContext, DataFusionError> {
    let ctx = SessionContext::new_with_config_rt(session_config(), runtime);
    for (name, schema) in schema::tables() {
        ctx.register_table(name, scoped(name, snapshot_table(store, snap, name, schema)?, scope.province)?)?;
    }
    ctx.register_table("admin_units", scoped("admin_units", admin_units, scope.province)?)?;
    if let Some(audit) = audit.filter(|_| scope.admin && scope.province.is_none()) {
        let batch = audit.batch().map_err(|e| DataFusionError::External(Box::new(e)))?;
        ctx.register_table("audit_log", Arc::new(MemTable::try_new(AuditLog::schema(), vec![vec![batch]])?))?;
    }
    Ok(ctx)
}

/// A session with no memory limit, for the engine's own queries.
pub fn internal_context(
    store: &Store,
    snap: &Snapshot,
    admin_units: Arc<MemTable>,
) -> Result<SessionContext, DataFusionError> {
    build_context(store, snap, admin_units, RuntimeEnvBuilder::new().build_arc()?, Scope::default(), None)
}

/// A session with one table only, over just the files of the snapshot whose time
/// range (`min_time_us..=max_time_us`) meets `[from_us, to_us)`: the engine's queries
/// over one period then open only the files that can hold rows of it.
pub fn period_context(
    store: &Store,
    snap: &Snapshot,
    table: &str,
    from_us: i64,
    to_us: i64,
) -> Result<SessionContext, DataFusionError> {
    let schema = schema::schema_of(table).ok_or_else(|| DataFusionError::Plan(format!("unknown table `{table}`")))?;
    let files: Vec<&DataFile> =
        snap.files(table).iter().filter(|f| f.max_time_us >= from_us && f.min_time_us < to_us).collect();
    let ctx = SessionContext::new_with_config(session_config());
    ctx.register_table(table, files_table(store, &files, schema)?)?;
    Ok(ctx)
}
