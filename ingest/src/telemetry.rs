//! Ingest telemetry: each metric is defined here once, next to the log line that goes
//! with it. Registered into a registry passed in by the binary (no global registry).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tracing::{debug, warn};

/// Distinct values a label fed by input (e.g. `source`) may take (CONTRACT.md §7.2).
pub const MAX_LABEL_VALUES: usize = 256;
/// The label value under which everything past [`MAX_LABEL_VALUES`] is counted.
pub const OTHER_LABEL: &str = "other";

/// The values seen of a label that input chooses: the first [`MAX_LABEL_VALUES`]
/// distinct ones are kept as they are, every later one is `other`. Prometheus keeps a
/// series per label value forever, so without a cap a source could grow the
/// registry (and every scrape) without bound.
#[derive(Clone, Default)]
pub struct CappedLabel {
    seen: Arc<Mutex<HashSet<String>>>,
}

impl CappedLabel {
    /// The label value to count `value` under.
    pub fn get<'a>(&self, value: &'a str) -> &'a str {
        let mut seen = self.seen.lock().expect("label lock");
        if seen.contains(value) {
            return value;
        }
        if seen.len() < MAX_LABEL_VALUES {
            seen.insert(value.to_string());
            return value;
        }
        OTHER_LABEL
    }
}

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
    /// Labels from the fixed list of pre-2025 codes (29 values), never free input.
    remapped: IntCounterVec,
    /// `source` comes from the events: capped.
    sources: CappedLabel,
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
            remapped: IntCounterVec::new(
                Opts::new(
                    "ioc_events_remapped_total",
                    "Events accepted with a province code from before 2025-07-01, stored under the province since \
                     (--legacy-province-codes remap), by the code they came with and the code they were stored under",
                ),
                &["old_province_code", "province_code"],
            )?,
            sources: CappedLabel::default(),
        };
        registry.register(Box::new(m.ingested.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.commits.clone()))?;
        registry.register(Box::new(m.commit_failures.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.storage_bytes.clone()))?;
        registry.register(Box::new(m.dedupe_ids.clone()))?;
        registry.register(Box::new(m.remapped.clone()))?;
        Ok(m)
    }

    /// Metrics that go nowhere, for tools and tests that do not serve `/metrics`.
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }

    pub fn accepted(&self, source: &str, n: u64) {
        self.ingested.with_label_values(&[self.sources.get(source)]).inc_by(n);
    }

    pub fn duplicates(&self, source: &str, n: u64) {
        self.duplicates.with_label_values(&[self.sources.get(source)]).inc_by(n);
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

    /// `n` events came with the pre-2025 province code `old` and were stored under
    /// `new`. Both are from the shipped map of 63 codes (validation remaps nothing
    /// else), so the label takes at most 29 values.
    pub fn remapped(&self, old: &str, new: &str, n: u64) {
        debug!(old, new, n, "events remapped from a pre-2025 province code");
        self.remapped.with_label_values(&[old, new]).inc_by(n);
    }

    pub fn dedupe_ids(&self, n: usize) {
        self.dedupe_ids.set(n as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_fed_by_input_takes_at_most_256_values_and_the_rest_are_other() {
        let registry = Registry::new();
        let m = IngestMetrics::register(&registry).unwrap();
        for i in 0..3000 {
            m.accepted(&format!("source-{i}"), 1);
            m.duplicates(&format!("source-{i}"), 2);
        }
        // A value seen before the cap keeps its own series.
        m.accepted("source-7", 5);
        for family in registry.gather() {
            let name = family.name();
            if name != "ioc_events_ingested_total" && name != "ioc_events_duplicate_total" {
                continue;
            }
            let series: Vec<(String, f64)> = family
                .get_metric()
                .iter()
                .map(|s| (s.get_label()[0].value().to_string(), s.get_counter().get_value()))
                .collect();
            assert_eq!(series.len(), MAX_LABEL_VALUES + 1, "{name}: 256 sources and `other`");
            let per = if name == "ioc_events_duplicate_total" { 2.0 } else { 1.0 };
            let other = series.iter().find(|(l, _)| l == OTHER_LABEL).map(|(_, v)| *v);
            assert_eq!(other, Some(per * (3000 - MAX_LABEL_VALUES) as f64), "{name}: nothing is lost");
            let total: f64 = series.iter().map(|(_, v)| v).sum();
            let extra = if name == "ioc_events_ingested_total" { 5.0 } else { 0.0 };
            assert_eq!(total, per * 3000.0 + extra, "{name}");
        }
    }
}
