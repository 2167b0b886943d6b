//! The read-only SQL sandbox used by `POST /api/v1/sql`, `ioc sql` and (later) the
//! PostgreSQL wire protocol.
//!
//! Layers, each enough on its own for what it guards:
//! 1. DataFusion's `SQLOptions` refuse DDL, DML (including `COPY`) and statements
//!    (`SET`, transactions) at plan time.
//! 2. Sessions have no URL tables and no file-reading table functions, and the only
//!    tables are the contract's, so no query can name a server file.
//! 3. Every query runs with its own memory pool (no spilling to disk), a timeout that
//!    drops (cancels) the execution, a row cap, and a concurrency limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use futures::StreamExt;
use ioc_storage::Store;
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::context::build_context;

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
            SqlError::Internal(_) => "internal",
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

/// Runs ad-hoc SQL over the latest committed data.
#[derive(Clone)]
pub struct SqlEngine {
    store: Store,
    admin_units: Arc<MemTable>,
    admin_rows: u64,
    limits: SqlLimits,
    permits: Arc<Semaphore>,
}

impl SqlEngine {
    pub fn new(store: Store, admin_units: Arc<MemTable>, limits: SqlLimits) -> Self {
        let permits = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
        let admin_rows = ioc_core::AdminUnits::builtin().communes().len() as u64;
        Self { store, admin_units, admin_rows, limits, permits }
    }

    pub fn limits(&self) -> &SqlLimits {
        &self.limits
    }

    pub async fn run(&self, sql: &str) -> Result<QueryOutput, SqlError> {
        let _permit = self.permits.try_acquire().map_err(|_| SqlError::Busy)?;
        let started = Instant::now();
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.limits.memory_bytes, 1.0)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        let snap = self.store.refresh().map_err(|e| SqlError::Internal(e.to_string()))?;
        let ctx = build_context(&self.store, &snap, self.admin_units.clone(), runtime)
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let limit = self.limits.max_rows;
        let work = async {
            let df = ctx.sql_with_options(sql, options).await.map_err(|e| self.classify(e))?;
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
