//! Ingest telemetry: each metric is defined here once, next to the log line that goes
//! with it. Registered into a registry passed in by the binary (no global registry).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tracing::{debug, warn};

#[derive(Clone)]
pub struct IngestMetrics {
    ingested: IntCounterVec,
    duplicates: IntCounterVec,
    rejected: IntCounterVec,
    commits: IntCounter,
    commit_failures: IntCounter,
    commit_seconds: Histogram,
    storage_bytes: IntGaugeVec,
    dedupe_ids: IntGauge,
}

impl IngestMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            ingested: IntCounterVec::new(
                Opts::new("ioc_events_ingested_total", "Events accepted and durably stored, by source"),
                &["source"],
            )?,
            duplicates: IntCounterVec::new(
                Opts::new("ioc_events_duplicate_total", "Events dropped as repeats of an accepted event_id, by source"),
                &["source"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "ioc_events_rejected_total",
                    "Events rejected to the dead-letter store, by origin and reason",
                ),
                &["origin", "reason"],
            )?,
            commits: IntCounter::new("ioc_commits_total", "Durable storage commits")?,
            commit_failures: IntCounter::new("ioc_commit_failures_total", "Storage commits that failed")?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "ioc_commit_duration_seconds",
                    "Time to make a batch durable (Parquet + fsync + log)",
                )
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            )?,
            storage_bytes: IntGaugeVec::new(
                Opts::new("ioc_storage_bytes", "Bytes of committed Parquet data, by table"),
                &["table"],
            )?,
            dedupe_ids: IntGauge::new("ioc_dedupe_ids", "event_id hashes held by the dedupe index")?,
        };
        registry.register(Box::new(m.ingested.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.commits.clone()))?;
        registry.register(Box::new(m.commit_failures.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.storage_bytes.clone()))?;
        registry.register(Box::new(m.dedupe_ids.clone()))?;
        Ok(m)
    }

    /// Metrics that go nowhere, for tools and tests that do not serve `/metrics`.
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }

    pub fn accepted(&self, source: &str, n: u64) {
        self.ingested.with_label_values(&[source]).inc_by(n);
    }

    pub fn duplicates(&self, source: &str, n: u64) {
        self.duplicates.with_label_values(&[source]).inc_by(n);
    }

    pub fn rejected(&self, origin: &str, reason: &str, error: &str) {
        debug!(origin, reason, error, "event rejected to dead letters");
        self.rejected.with_label_values(&[origin, reason]).inc();
    }

    pub fn committed(&self, seconds: f64) {
        self.commits.inc();
        self.commit_seconds.observe(seconds);
    }

    pub fn commit_failed(&self, error: &dyn std::error::Error) {
        warn!(%error, "storage commit failed; the batch is not acknowledged");
        self.commit_failures.inc();
    }

    pub fn storage_bytes(&self, table: &str, bytes: u64) {
        self.storage_bytes.with_label_values(&[table]).set(bytes as i64);
    }

    pub fn dedupe_ids(&self, n: usize) {
        self.dedupe_ids.set(n as i64);
    }
}
