//! The read-only SQL sandbox used by `POST /api/v1/sql`, the PostgreSQL wire protocol
//! and `ioc sql`.
//!
//! Layers, each enough on its own for what it guards:
//! 1. DataFusion's `SQLOptions` refuse DDL, DML (including `COPY`) and statements
//!    (`SET`, transactions) at plan time.
//! 2. Sessions have no URL tables and no file-reading table functions, and the only
//!    tables are the contract's, so no query can name a server file.
//! 3. Every query runs with its own memory pool (no spilling to disk), a timeout that
//!    drops (cancels) the execution, a row cap, and a concurrency limit.
//! 4. Row security: a caller scoped to a province gets sessions in which every table
//!    is a view over a filter on that province, so no table, view, join or subquery
//!    can reach another province's rows (see [`crate::context`]).
//!
//! Every statement, accepted or not, is written to the audit log with the caller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::cache::cache_manager::{CacheManager, CacheManagerConfig};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;
use ioc_core::catalog::Catalog;
use ioc_storage::Store;
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::audit::{AuditEntry, AuditLog};
use crate::context::{Scope, build_context};

/// Limits that apply to every ad-hoc query.
#[derive(Debug, Clone)]
pub struct SqlLimits {
    pub memory_bytes: usize,
    pub timeout: Duration,
    pub max_rows: usize,
    pub max_concurrent: usize,
    /// Largest estimated output of a join without any join condition (a cartesian
    /// product). Larger ones are refused before they run.
    pub max_cross_join_rows: u64,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            timeout: Duration::from_secs(30),
            max_rows: 10_000,
            max_concurrent: 4,
            max_cross_join_rows: 100_000_000,
        }
    }
}

/// Room for Parquet footers and page indexes shared by all queries: enough for the
/// footers of a few thousand files.
const METADATA_CACHE_BYTES: usize = 64 << 20;

/// Why a query did not produce a result. Every variant but `Internal` is the user's
/// to fix.
#[derive(Debug, Error)]
pub enum SqlError {
    #[error("only read-only queries are allowed: {0}")]
    NotReadOnly(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the query ran longer than the {0:?} time limit and was cancelled")]
    Timeout(Duration),
    #[error("the query needed more than the {limit_mib} MiB memory limit and was cancelled: {detail}")]
    Memory { limit_mib: usize, detail: String },
    #[error(
        "the query joins tables without a join condition: about {estimated} rows, over the limit of {limit}; add join conditions (ON ...) or filter first"
    )]
    CrossJoin { estimated: u64, limit: u64 },
    #[error("too many queries are running; try again shortly")]
    Busy,
    #[error("the query was cancelled: the client cancelled it or went away")]
    Cancelled,
    #[error("internal error while running the query: {0}")]
    Internal(String),
}

impl SqlError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SqlError::NotReadOnly(_) => "read_only",
            SqlError::Invalid(_) => "invalid_sql",
            SqlError::Timeout(_) => "query_timeout",
            SqlError::Memory { .. } => "query_memory_limit",
            SqlError::CrossJoin { .. } => "cross_join_limit",
            SqlError::Busy => "too_many_queries",
            SqlError::Cancelled => "query_cancelled",
            SqlError::Internal(_) => "internal",
        }
    }
}

/// Audits a statement whose run was dropped before it finished.
struct Unfinished<'a> {
    engine: &'a SqlEngine,
    caller: &'a Caller<'a>,
    sql: &'a str,
    started: Instant,
    finished: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.engine.record(self.caller, self.sql, self.started, Err(&SqlError::Cancelled));
        }
    }
}

/// The result of a query: at most `max_rows` rows.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    pub truncated: bool,
    pub elapsed: Duration,
}

/// Extra set-up for a session, e.g. the PostgreSQL catalog for wire-protocol clients.
pub type SessionHook = dyn Fn(&SessionContext) -> Result<(), DataFusionError> + Send + Sync;

/// Who runs a statement, and how.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    /// The token's name (never the token), for the audit log.
    pub token: &'a str,
    /// `http`, `pg` or `cli`.
    pub via: &'a str,
    /// Row security: only this province's rows, in every table and view.
    pub province: Option<&'a str>,
    /// Admins also see the `audit_log` table.
    pub admin: bool,
    pub hook: Option<&'a SessionHook>,
}

impl Caller<'_> {
    fn scope(&self) -> Scope<'_> {
        Scope { province: self.province, admin: self.admin }
    }
}

/// A statement's parameter types and result columns, without running it (the
/// PostgreSQL extended protocol's Describe).
#[derive(Debug, Clone)]
pub struct Described {
    pub params: Vec<Option<arrow::datatypes::DataType>>,
    pub schema: SchemaRef,
}

/// Runs ad-hoc SQL over the latest committed data.
#[derive(Clone)]
pub struct SqlEngine {
    store: Store,
    admin_units: Arc<MemTable>,
    admin_rows: u64,
    limits: SqlLimits,
    permits: Arc<Semaphore>,
    audit: Option<Arc<AuditLog>>,
    catalog: Option<Arc<Catalog>>,
    /// Parquet footers, file statistics and file listings, shared by every query's
    /// runtime. Data files are immutable and never reuse a name, so an entry can only
    /// go unused, never stale (and DataFusion checks size and mtime anyway).
    caches: Arc<CacheManager>,
}

impl SqlEngine {
    pub fn new(store: Store, admin_units: Arc<MemTable>, limits: SqlLimits) -> Self {
        let permits = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
        let admin_rows = ioc_core::AdminUnits::builtin().communes().len() as u64;
        let caches =
            CacheManager::try_new(&CacheManagerConfig::default().with_metadata_cache_limit(METADATA_CACHE_BYTES))
                .expect("the default cache configuration is valid");
        Self { store, admin_units, admin_rows, limits, permits, audit: None, catalog: None, caches }
    }

    /// A runtime for one query: its own memory pool, no spilling, the shared caches.
    fn runtime(&self, memory_limit: Option<usize>) -> Result<Arc<RuntimeEnv>, SqlError> {
        let mut builder = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled));
        if let Some(bytes) = memory_limit {
            builder = builder.with_memory_limit(bytes, 1.0);
        }
        let mut runtime = builder.build().map_err(|e| SqlError::Internal(e.to_string()))?;
        runtime.cache_manager = self.caches.clone();
        Ok(Arc::new(runtime))
    }

    /// Writes every statement to this audit log, and lets admins query it.
    pub fn with_audit(mut self, audit: Arc<AuditLog>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Adds `kpi_catalog`, `kpi_target()`, `kpi_target_source()` and the views `kpi_daily` and `provinces`.
    pub fn with_catalog(mut self, catalog: Arc<Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    pub fn limits(&self) -> &SqlLimits {
        &self.limits
    }

    /// Runs one read-only statement for `caller`, within the limits, and audits it.
    pub async fn run(&self, caller: &Caller<'_>, sql: &str) -> Result<QueryOutput, SqlError> {
        self.run_with_params(caller, sql, None).await
    }

    /// As [`SqlEngine::run`], with values for `$1`, `$2`, ... placeholders.
    pub async fn run_with_params(
        &self,
        caller: &Caller<'_>,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput, SqlError> {
        // Dropped before the end (a pg cancel request, a client gone), the statement
        // is audited as cancelled.
        let mut unfinished = Unfinished { engine: self, caller, sql, started: Instant::now(), finished: false };
        let result = self.execute(caller, sql, params).await;
        unfinished.finished = true;
        let started = unfinished.started;
        self.record(caller, sql, started, result.as_ref().map(|o| (o.rows, o.truncated)));
        result
    }

    /// Plans a statement for `caller` without running it: its parameter and result
    /// types. Refuses what [`SqlEngine::run`] would refuse at plan time.
    /// A refused statement is audited here; an accepted one when it runs.
    pub async fn describe(&self, caller: &Caller<'_>, sql: &str) -> Result<Described, SqlError> {
        let started = Instant::now();
        let result = self.describe_plan(caller, sql).await;
        if let Err(e) = &result {
            self.record(caller, sql, started, Err(e));
        }
        result
    }

    async fn describe_plan(&self, caller: &Caller<'_>, sql: &str) -> Result<Described, SqlError> {
        let runtime = self.runtime(None)?;
        let snap = self.store.snapshot();
        let ctx = self.session(caller, &snap, runtime).await?;
        let df = self.plan(&ctx, sql).await?;
        let plan = df.logical_plan();
        let types = plan.get_parameter_types().map_err(|e| self.classify(e))?;
        let mut params: Vec<(usize, Option<arrow::datatypes::DataType>)> = types
            .into_iter()
            .filter_map(|(k, t)| Some((k.trim_start_matches('$').parse::<usize>().ok()?, t)))
            .collect();
        params.sort_by_key(|(i, _)| *i);
        Ok(Described {
            params: params.into_iter().map(|(_, t)| t).collect(),
            schema: Arc::new(plan.schema().as_arrow().clone()),
        })
    }

    async fn execute(
        &self,
        caller: &Caller<'_>,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput, SqlError> {
        let _permit = self.permits.try_acquire().map_err(|_| SqlError::Busy)?;
        let started = Instant::now();
        let runtime = self.runtime(Some(self.limits.memory_bytes))?;
        let snap = self.store.refresh().map_err(|e| SqlError::Internal(e.to_string()))?;
        let ctx = self.session(caller, &snap, runtime).await?;
        let limit = self.limits.max_rows;
        let work = async {
            let mut df = self.plan(&ctx, sql).await?;
            if let Some(params) = params {
                df = df.with_param_values(params).map_err(|e| self.classify(e))?;
            }
            let plan = df.clone().into_optimized_plan().map_err(|e| self.classify(e))?;
            let rows_of = |table: &str| match table {
                "admin_units" => self.admin_rows,
                t => snap.rows(t),
            };
            estimate_rows(&plan, &rows_of, self.limits.max_cross_join_rows)?;
            let stream = df.execute_stream().await.map_err(|e| self.classify(e))?;
            collect_capped(stream, limit).await.map_err(|e| self.classify(e))
        };
        // Dropping the future on timeout drops the stream, which cancels execution.
        let (schema, batches, rows, truncated) = tokio::time::timeout(self.limits.timeout, work)
            .await
            .map_err(|_| SqlError::Timeout(self.limits.timeout))??;
        Ok(QueryOutput { schema, batches, rows, truncated, elapsed: started.elapsed() })
    }

    /// A session as `caller` would get it over the current snapshot, to read its
    /// catalog (table names and schemas); queries go through [`SqlEngine::run`].
    pub async fn session_for(&self, caller: &Caller<'_>) -> Result<SessionContext, SqlError> {
        let runtime = self.runtime(None)?;
        let snap = self.store.snapshot();
        self.session(caller, &snap, runtime).await
    }

    async fn session(
        &self,
        caller: &Caller<'_>,
        snap: &ioc_storage::Snapshot,
        runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    ) -> Result<SessionContext, SqlError> {
        let audit = if caller.admin { self.audit.as_deref() } else { None };
        let ctx = build_context(
            &self.store,
            snap,
            self.admin_units.clone(),
            runtime,
            caller.scope(),
            audit,
            self.catalog.as_ref(),
        )
        .await
        .map_err(|e| SqlError::Internal(e.to_string()))?;
        if let Some(hook) = caller.hook {
            hook(&ctx).map_err(|e| SqlError::Internal(e.to_string()))?;
        }
        Ok(ctx)
    }

    async fn plan(&self, ctx: &SessionContext, sql: &str) -> Result<DataFrame, SqlError> {
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        ctx.sql_with_options(sql, options).await.map_err(|e| self.classify(e))
    }

    /// Audits a statement: `(rows, truncated)` or why it was refused.
    fn record(&self, caller: &Caller<'_>, sql: &str, started: Instant, result: Result<(usize, bool), &SqlError>) {
        let Some(audit) = &self.audit else { return };
        let (outcome, rows, error) = match result {
            Ok((rows, truncated)) => {
                ((if truncated { "truncated" } else { "ok" }).to_string(), Some(rows as u64), None)
            }
            Err(e) => (e.code().to_string(), None, Some(e.to_string())),
        };
        audit.record(&AuditEntry {
            at: chrono::Utc::now(),
            token: caller.token.to_string(),
            via: caller.via.to_string(),
            sql: sql.to_string(),
            outcome,
            rows,
            ms: Some(started.elapsed().as_millis() as u64),
            error,
        });
    }

    fn classify(&self, e: DataFusionError) -> SqlError {
        let e = e.find_root().to_string();
        let msg = e.trim_start_matches("Error during planning: ").to_string();
        if msg.contains("not supported: ")
            && (msg.starts_with("DDL") || msg.starts_with("DML") || msg.starts_with("Statement"))
        {
            return SqlError::NotReadOnly(msg);
        }
        if msg.contains("Resources exhausted") || msg.contains("ResourcesExhausted") {
            return SqlError::Memory { limit_mib: self.limits.memory_bytes >> 20, detail: msg };
        }
        SqlError::Invalid(msg)
    }
}

/// An upper-bound estimate of a plan's output rows, from the committed row counts.
/// Refuses joins without any condition whose product exceeds `limit`.
fn estimate_rows(plan: &LogicalPlan, rows_of: &dyn Fn(&str) -> u64, limit: u64) -> Result<u64, SqlError> {
    let children: Vec<u64> =
        plan.inputs().into_iter().map(|c| estimate_rows(c, rows_of, limit)).collect::<Result<_, _>>()?;
    Ok(match plan {
        LogicalPlan::TableScan(scan) => {
            let rows = rows_of(scan.table_name.table()).max(1);
            scan.fetch.map_or(rows, |f| rows.min(f as u64))
        }
        LogicalPlan::Join(join) if join.on.is_empty() && join.filter.is_none() => {
            let product = children.iter().fold(1u64, |a, b| a.saturating_mul(*b));
            if product > limit {
                return Err(SqlError::CrossJoin { estimated: product, limit });
            }
            product
        }
        _ => children.into_iter().max().unwrap_or(1),
    })
}

async fn collect_capped(
    mut stream: SendableRecordBatchStream,
    limit: usize,
) -> Result<(SchemaRef, Vec<RecordBatch>, usize, bool), DataFusionError> {
    let schema = stream.schema();
    let mut batches = Vec::new();
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if rows + batch.num_rows() > limit {
            let keep = limit - rows;
            if keep > 0 {
                batches.push(batch.slice(0, keep));
            }
            return Ok((schema, batches, limit, true));
        }
        rows += batch.num_rows();
        batches.push(batch);
    }
    Ok((schema, batches, rows, false))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::builder::table_scan_with_filter_and_fetch;
    use datafusion::logical_expr::{JoinType, LogicalPlanBuilder, col, lit, table_scan};

    use datafusion::functions_aggregate::expr_fn::count;

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("v", DataType::Int64, false)])
    }

    fn scan(table: &str) -> LogicalPlanBuilder {
        table_scan(Some(table), &schema(), None).unwrap()
    }

    fn scan_fetch(table: &str, fetch: usize) -> LogicalPlanBuilder {
        table_scan_with_filter_and_fetch(Some(table), &schema(), None, vec![], Some(fetch)).unwrap()
    }

    /// Committed rows per table, as a snapshot would count them.
    fn rows_of(table: &str) -> u64 {
        match table {
            "a" => 1_000,
            "b" => 2_000,
            "c" => 3_000,
            "empty" => 0,
            "huge" => u64::MAX / 2,
            other => panic!("no table {other}"),
        }
    }

    fn estimate(plan: LogicalPlanBuilder, limit: u64) -> Result<u64, SqlError> {
        estimate_rows(&plan.build().unwrap(), &rows_of, limit)
    }

    fn refused(result: Result<u64, SqlError>) -> (u64, u64) {
        match result {
            Err(SqlError::CrossJoin { estimated, limit }) => (estimated, limit),
            other => panic!("expected a cross-join refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_table_scan_counts_its_committed_rows_or_its_fetch_if_smaller() {
        assert_eq!(estimate(scan("a"), u64::MAX).unwrap(), 1_000);
        assert_eq!(estimate(scan_fetch("a", 10), u64::MAX).unwrap(), 10);
        assert_eq!(estimate(scan_fetch("a", 5_000), u64::MAX).unwrap(), 1_000);
        // An empty table counts as one row, never zero.
        assert_eq!(estimate(scan("empty"), u64::MAX).unwrap(), 1);
        assert_eq!(estimate(scan_fetch("empty", 0), u64::MAX).unwrap(), 0);
    }

    #[test]
    fn a_join_without_condition_multiplies_and_is_refused_above_the_limit() {
        let ab = || scan("a").cross_join(scan("b").build().unwrap()).unwrap();
        assert_eq!(estimate(ab(), 2_000_000).unwrap(), 2_000_000, "at the limit: allowed");
        assert_eq!(refused(estimate(ab(), 1_999_999)), (2_000_000, 1_999_999));
        // Products of products, and fetches below the join.
        let abc = ab().cross_join(scan("c").build().unwrap()).unwrap();
        assert_eq!(refused(estimate(abc, 1_000_000_000)), (6_000_000_000, 1_000_000_000));
        let fetched = scan_fetch("a", 10).cross_join(scan("b").build().unwrap()).unwrap();
        assert_eq!(estimate(fetched, 20_000).unwrap(), 20_000);
        // A refused product anywhere in the plan refuses the plan.
        let above = ab()
            .filter(col("a.k").gt(lit(5)))
            .unwrap()
            .aggregate(Vec::<datafusion::prelude::Expr>::new(), vec![count(lit(1))])
            .unwrap();
        assert_eq!(refused(estimate(above, 1_000_000)), (2_000_000, 1_000_000));
    }

    #[test]
    fn joins_with_conditions_and_other_nodes_take_their_largest_input() {
        let b = || scan("b").build().unwrap();
        let equi = scan("a").join(b(), JoinType::Inner, (vec!["a.k"], vec!["b.k"]), None).unwrap();
        assert_eq!(estimate(equi, 1).unwrap(), 2_000);
        let theta = scan("a").join_on(b(), JoinType::Inner, [col("a.k").lt(col("b.k"))]).unwrap();
        assert_eq!(estimate(theta, 1).unwrap(), 2_000);
        let left = scan("c").join(b(), JoinType::Left, (vec!["c.k"], vec!["b.k"]), None).unwrap();
        assert_eq!(estimate(left, 1).unwrap(), 3_000);
        assert_eq!(estimate(scan("a").filter(col("k").gt(lit(1))).unwrap(), 1).unwrap(), 1_000);
        assert_eq!(estimate(scan("a").union(scan("c").build().unwrap()).unwrap(), 1).unwrap(), 3_000);
        assert_eq!(estimate(scan("c").limit(0, Some(5)).unwrap(), 1).unwrap(), 3_000, "a Limit node is not a fetch");
        // A join with a condition over a product still carries the product.
        let over = scan("a")
            .cross_join(b())
            .unwrap()
            .join(scan("c").build().unwrap(), JoinType::Inner, (vec!["a.k"], vec!["c.k"]), None)
            .unwrap();
        assert_eq!(estimate(over, 2_000_000).unwrap(), 2_000_000);
    }

    #[test]
    fn the_product_saturates_instead_of_overflowing() {
        let cube = || {
            scan("huge")
                .alias("x")
                .unwrap()
                .cross_join(scan("huge").alias("y").unwrap().build().unwrap())
                .unwrap()
                .cross_join(scan("huge").alias("z").unwrap().build().unwrap())
                .unwrap()
        };
        assert_eq!(estimate(cube(), u64::MAX).unwrap(), u64::MAX);
        assert_eq!(refused(estimate(cube(), u64::MAX - 1)), (u64::MAX, u64::MAX - 1));
    }

    /// Plans as the engine plans: SQL in a session, then the optimizer.
    #[tokio::test]
    async fn planned_sql_is_refused_only_for_joins_without_conditions() {
        let ctx = SessionContext::new();
        for t in ["a", "b"] {
            ctx.register_table(t, Arc::new(MemTable::try_new(Arc::new(schema()), vec![vec![]]).unwrap())).unwrap();
        }
        let estimate = async |sql: &str| {
            let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
            estimate_rows(&plan, &rows_of, 1_000_000)
        };
        assert_eq!(refused(estimate("SELECT count(*) FROM a, b").await), (2_000_000, 1_000_000));
        assert_eq!(refused(estimate("SELECT a.v FROM a CROSS JOIN b WHERE b.v > 3").await), (2_000_000, 1_000_000));
        assert_eq!(estimate("SELECT a.v FROM a, b WHERE a.k = b.k").await.unwrap(), 2_000);
        assert_eq!(estimate("SELECT a.v FROM a JOIN b ON a.k < b.k").await.unwrap(), 2_000);
        assert_eq!(estimate("SELECT * FROM a LIMIT 3").await.unwrap(), 3);
    }
}
