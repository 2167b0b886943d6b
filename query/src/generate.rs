//! A fast writer of simulated data, for benchmarks and load tests: seeded simulator
//! events spread evenly over a period, stored with their rollups exactly as the ingest
//! pipeline stores them (same tables, same rollup rows), but built straight into Arrow
//! batches (no JSON, no dedupe: simulator ids are unique per seed) and committed in
//! large commits.
//!
//! Each commit is dated by its last event (never later than now), as if the events had
//! been ingested as they happened. A server opened on the store then holds what a
//! server that ran through the period would: the dedupe window covers the last days'
//! ids, not the whole history.
//!
//! The live state of an engine is not updated: open a server on the store, or call
//! [`KpiEngine::rebuild`], to read the data.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use ioc_core::AdminUnits;
use ioc_core::event::Family;
use ioc_ingest::Simulator;
use ioc_storage::{FamilyBuilder, KPI_HOURLY, Store};

use crate::kpi::{KpiEngine, KpiError, Period};
use crate::rollup::rollup_batch;

/// What [`write_simulated`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    pub events: u64,
    pub rollup_rows: u64,
    pub commits: u64,
}

/// Writes `events` simulator events (seed `seed`), evenly spread over `period` in time
/// order, in commits of `per_commit` events, each with its rollups. `engine` computes
/// the rollups; it must be built on the same catalog as the readers.
pub fn write_simulated(
    store: &Store,
    engine: &KpiEngine,
    units: Arc<AdminUnits>,
    seed: u64,
    events: u64,
    period: Period,
    per_commit: usize,
) -> Result<Generated, KpiError> {
    let mut sim = Simulator::new(units, seed);
    let mut builders: Vec<FamilyBuilder> = Family::ALL.into_iter().map(FamilyBuilder::new).collect();
    let (from, span) = (period.from.timestamp_micros(), (period.to - period.from).num_microseconds().unwrap_or(0));
    let mut out = Generated { events: 0, rollup_rows: 0, commits: 0 };
    let mut pending = 0usize;
    for i in 0..events {
        let offset = (i128::from(span) * i128::from(i) / i128::from(events.max(1))) as i64;
        let at = DateTime::<Utc>::from_timestamp_micros(from + offset).expect("period in range");
        let ev = sim.next_event(at);
        builders[ev.family().index()].append(&ev);
        pending += 1;
        if pending >= per_commit.max(1) || i + 1 == events {
            let batches: Vec<(Family, RecordBatch)> = Family::ALL
                .into_iter()
                .zip(builders.iter_mut())
                .filter(|(_, b)| !b.is_empty())
                .map(|(f, b)| (f, b.finish()))
                .collect();
            let delta = engine.derive_delta(&batches)?;
            let mut tables: Vec<(&str, RecordBatch)> = batches.iter().map(|(f, b)| (f.table(), b.clone())).collect();
            if !delta.is_empty() {
                out.rollup_rows += delta.rows.len() as u64;
                tables.push((KPI_HOURLY, rollup_batch(engine.catalog(), &delta)));
            }
            store.commit(&tables, BTreeMap::new(), at.min(Utc::now()))?;
            out.events += pending as u64;
            out.commits += 1;
            pending = 0;
        }
    }
    Ok(out)
}
