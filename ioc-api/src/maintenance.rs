//! Table maintenance, run in the background by `ioc serve` and `ioc demo` and on
//! demand by `ioc compact`: retention, then compaction, then vacuum
//! (`ioc_storage::compact`). It runs on a blocking thread of its own, never on the
//! ingest writer, and publishes with compare-and-set, so ingest and queries go on.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use chrono::Utc;
use ioc_storage::compact::{self, CompactReport, RetentionReport, Rewrite, RewriteError, VacuumReport};
use ioc_storage::{StorageError, Store};
use prometheus::{IntCounter, Registry};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::CompactionSettings;

/// The rewrite applied to the merged rows of each table before they are written:
/// `kpi_hourly` rows are re-aggregated by key (sums of numerators and denominators, so
/// every answer stays the same, from fewer rows); every other table is kept as is.
pub fn rewrite_hook() -> Option<&'static Rewrite<'static>> {
    fn rewrite(table: &str, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, RewriteError> {
        if table == ioc_storage::KPI_HOURLY {
            return ioc_query::reaggregate_rollups(batches).map_err(|e| Box::new(e) as RewriteError);
        }
        Ok(batches)
    }
    Some(&rewrite)
}

/// Progress of one run, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Compaction will read this many files and bytes.
    Planned { files: usize, bytes: u64 },
    /// Bytes read so far.
    Merged(u64),
}

/// What one run did.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceReport {
    pub retention: RetentionReport,
    pub compaction: CompactReport,
    pub vacuum: VacuumReport,
    /// Live data files before and after the run, over every table.
    pub files_before: usize,
    pub files_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub elapsed: Duration,
}

/// Runs retention, compaction and vacuum once.
pub fn run_once(
    store: &Store,
    settings: &CompactionSettings,
    progress: &mut dyn FnMut(Progress),
) -> Result<MaintenanceReport, StorageError> {
    let started = Instant::now();
    let totals = |store: &Store| -> Result<(usize, u64), StorageError> {
        let snap = store.refresh()?;
        Ok((snap.files.values().map(Vec::len).sum(), snap.files.values().flatten().map(|f| f.bytes).sum()))
    };
    let (files_before, bytes_before) = totals(store)?;
    let retention = compact::apply_retention(store, &settings.retention_days, Utc::now())?;
    let plan = compact::plan(&*store.refresh()?, &settings.options);
    progress(Progress::Planned { files: plan.files(), bytes: plan.bytes() });
    let compaction = compact::compact(store, &plan, rewrite_hook(), &mut |done| progress(Progress::Merged(done)))?;
    let vacuum = compact::vacuum(store, settings.grace, Utc::now())?;
    let (files_after, bytes_after) = totals(store)?;
    Ok(MaintenanceReport {
        retention,
        compaction,
        vacuum,
        files_before,
        files_after,
        bytes_before,
        bytes_after,
        elapsed: started.elapsed(),
    })
}

/// Maintenance metrics, registered into the server's registry.
#[derive(Clone)]
pub struct MaintenanceMetrics {
    runs: IntCounter,
    failures: IntCounter,
    files_merged: IntCounter,
    bytes_written: IntCounter,
    conflicts: IntCounter,
    retention_files: IntCounter,
    vacuum_files: IntCounter,
}

impl MaintenanceMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            runs: IntCounter::new("ioc_compaction_runs_total", "Maintenance runs (retention, compaction, vacuum)")?,
            failures: IntCounter::new("ioc_compaction_failures_total", "Maintenance runs that failed")?,
            files_merged: IntCounter::new(
                "ioc_compaction_files_merged_total",
                "Small data files merged into larger ones by compaction",
            )?,
            bytes_written: IntCounter::new(
                "ioc_compaction_bytes_written_total",
                "Bytes of Parquet written by compaction",
            )?,
            conflicts: IntCounter::new(
                "ioc_compaction_conflicts_total",
                "Partitions left for a later run because another commit removed their files first",
            )?,
            retention_files: IntCounter::new(
                "ioc_retention_files_removed_total",
                "Data files removed from tables by retention",
            )?,
            vacuum_files: IntCounter::new(
                "ioc_vacuum_files_deleted_total",
                "Removed data files deleted from disk after the grace period",
            )?,
        };
        for c in
            [&m.runs, &m.failures, &m.files_merged, &m.bytes_written, &m.conflicts, &m.retention_files, &m.vacuum_files]
        {
            registry.register(Box::new(c.clone()))?;
        }
        Ok(m)
    }

    fn record(&self, r: &MaintenanceReport) {
        self.runs.inc();
        self.files_merged.inc_by(r.compaction.files_removed as u64);
        self.bytes_written.inc_by(r.compaction.bytes_written);
        self.conflicts.inc_by(r.compaction.conflicts as u64);
        self.retention_files.inc_by(r.retention.files_removed as u64);
        self.vacuum_files.inc_by(r.vacuum.files_deleted as u64);
    }
}

/// Runs maintenance every `settings.interval` (the first run one interval after
/// start) until `stop`, each run on a blocking thread. A run in progress finishes.
pub async fn run_background(
    store: Store,
    settings: CompactionSettings,
    metrics: MaintenanceMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + settings.interval, settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
        let (store, settings) = (store.clone(), settings.clone());
        match tokio::task::spawn_blocking(move || run_once(&store, &settings, &mut |_| {})).await {
            Ok(Ok(r)) => {
                metrics.record(&r);
                if r.compaction.files_removed + r.retention.files_removed + r.vacuum.files_deleted > 0 {
                    info!(
                        merged = r.compaction.files_removed,
                        written = r.compaction.files_added,
                        retention_removed = r.retention.files_removed,
                        vacuumed = r.vacuum.files_deleted,
                        files = r.files_after,
                        ms = r.elapsed.as_millis() as u64,
                        "table maintenance"
                    );
                }
            }
            Ok(Err(e)) => {
                metrics.failures.inc();
                warn!(error = %e, "table maintenance failed; trying again at the next interval");
            }
            Err(e) => {
                metrics.failures.inc();
                warn!(error = %e, "table maintenance panicked");
            }
        }
    }
}
