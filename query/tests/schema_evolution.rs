//! A store written by the previous version: its event files lack the columns added
//! since (`synced_dvcqg`, `province_code_original`, `commune_code_original`). SQL reads
//! those columns as NULL, the KPI state is backfilled and rebuilt from the old files
//! (rollups and open dossiers), and compaction merges old and new files into one file
//! of the current schema; every answer stays the same throughout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, Schema};
use chrono::{DateTime, Duration, Utc};
use ioc_core::catalog::KpiKind;
use ioc_core::counters::{Count, DimFilter};
use ioc_core::event::{Body, Event, Family};
use ioc_core::{AdminUnits, Catalog};
use ioc_ingest::{Derive, Simulator};
use ioc_query::context::admin_units_table;
use ioc_query::{Caller, KpiEngine, Period, SqlEngine, SqlLimits, commits_without_rollups};
use ioc_storage::compact::{self, CompactOptions};
use ioc_storage::{FamilyBuilder, Store};

/// The columns this version added to the event tables.
const ADDED: [&str; 3] = ["synced_dvcqg", "province_code_original", "commune_code_original"];

fn base() -> DateTime<Utc> {
    "2026-03-10T03:00:00Z".parse().unwrap()
}

/// Simulated events of every family, a minute apart, from `from` on.
fn events(seed: u64, n: usize, from: DateTime<Utc>) -> Vec<Event> {
    let mut sim = Simulator::new(Arc::new(AdminUnits::builtin()), seed);
    (0..n).map(|i| sim.next_event(from + Duration::minutes(i as i64))).collect()
}

fn batches(events: &[Event]) -> Vec<(Family, RecordBatch)> {
    let mut builders: Vec<FamilyBuilder> = Family::ALL.into_iter().map(FamilyBuilder::new).collect();
    for e in events {
        builders[e.family().index()].append(e);
    }
    Family::ALL
        .into_iter()
        .zip(builders.iter_mut())
        .filter(|(_, b)| !b.is_empty())
        .map(|(f, b)| (f, b.finish()))
        .collect()
}

/// The batch as the previous version wrote it: without the columns added since.
fn old_schema(batch: &RecordBatch) -> RecordBatch {
    let keep: Vec<usize> =
        (0..batch.num_columns()).filter(|&i| !ADDED.contains(&batch.schema().field(i).name().as_str())).collect();
    let b = batch.project(&keep).unwrap();
    RecordBatch::try_new(Arc::new(Schema::new(b.schema().fields().clone())), b.columns().to_vec()).unwrap()
}

fn engine(store: &Store) -> KpiEngine {
    KpiEngine::new(Arc::new(Catalog::builtin()), store.clone(), &AdminUnits::builtin()).unwrap()
}

async fn sql_count(store: &Store, sql: &str) -> i64 {
    let engine = SqlEngine::new(store.clone(), admin_units_table(&AdminUnits::builtin()), SqlLimits::default());
    let caller = Caller { token: "test", via: "test", province: None, admin: true, hook: None };
    let out = engine.run(&caller, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    out.batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Dossiers received, neither resolved nor closed, and due before `now`: computed from
/// the events, independently of the engine.
fn overdue(events: &[Event], now: DateTime<Utc>) -> u64 {
    let mut due: HashMap<&str, DateTime<Utc>> = HashMap::new();
    let mut done: HashSet<&str> = HashSet::new();
    for e in events {
        match &e.body {
            Body::DossierReceived { dossier_id, due_at, .. } => {
                due.insert(dossier_id, *due_at);
            }
            Body::DossierResolved { dossier_id, .. } | Body::DossierClosed { dossier_id, .. } => {
                done.insert(dossier_id);
            }
            _ => {}
        }
    }
    due.iter().filter(|(id, at)| !done.contains(*id) && **at < now).count() as u64
}

/// Every KPI of `engine` over `period`: ratios equal SQL over the stored events, and
/// the overdue gauge equals `overdue`.
async fn check(engine: &KpiEngine, period: Period, now: DateTime<Utc>, overdue: u64, what: &str) {
    let values = engine.list(period, None, now).await.unwrap();
    for v in &values {
        match v.def.kind {
            KpiKind::Ratio { .. } => {
                let sql = engine.sql_counts(&v.def, period, &[], &DimFilter::default()).await.unwrap();
                let sql = sql.into_iter().fold(Count::default(), |mut a, (_, c)| {
                    a += c;
                    a
                });
                assert_eq!(v.count, sql, "{what}: {}", v.def.id);
            }
            KpiKind::Gauge(_) => assert_eq!(v.count.numerator, overdue, "{what}: {}", v.def.id),
        }
    }
    let counted: u64 = values.iter().filter(|v| v.def.kind_name() == "ratio").map(|v| v.count.denominator).sum();
    assert!(counted > 100, "{what}: the old events are counted ({counted})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_before_the_new_columns_is_read_backfilled_rebuilt_and_compacted_with_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "old").unwrap();
    // The old version's commits: every event table without the added columns, and no
    // rollups (as before rollups), in two commits on the same dates.
    let old = events(3, 600, base());
    for chunk in old.chunks(300) {
        let tables: Vec<(&str, RecordBatch)> = batches(chunk).iter().map(|(f, b)| (f.table(), old_schema(b))).collect();
        store.commit(&tables, BTreeMap::new(), Utc::now()).unwrap();
    }
    let snap = store.refresh().unwrap();
    assert_eq!(commits_without_rollups(&snap).len(), 2);

    // SQL over the old files: the added columns exist, NULL.
    let dossiers = old.iter().filter(|e| e.family() == Family::Dossier).count() as i64;
    assert!(dossiers > 300);
    let nulls = "SELECT count(*) FROM dossier_events WHERE synced_dvcqg IS NULL AND province_code_original IS NULL AND commune_code_original IS NULL";
    assert_eq!(sql_count(&store, nulls).await, dossiers);
    assert_eq!(sql_count(&store, "SELECT count(*) FROM (SELECT * FROM other_events)").await, {
        old.iter().filter(|e| e.family() == Family::Other).count() as i64
    });

    // The new version starts: backfill from the old files, then rebuild.
    let upgraded = Arc::new(engine(&store));
    assert!(upgraded.backfill_rollups(Utc::now()).unwrap().is_some());
    upgraded.rebuild(&store.refresh().unwrap()).unwrap();
    let period = Period { from: base() - Duration::days(1), to: base() + Duration::days(3) };
    let now = base() + Duration::days(2);
    check(&upgraded, period, now, overdue(&old, now), "backfilled and rebuilt").await;

    // New commits with the current schema and their rollups, as the pipeline writes
    // them, on the same dates.
    let new = events(4, 300, base() + Duration::minutes(30));
    let tables = batches(&new);
    let mut commit: Vec<(&str, RecordBatch)> = tables.iter().map(|(f, b)| (f.table(), b.clone())).collect();
    commit.extend(upgraded.derive(&tables).unwrap());
    store.commit(&commit, BTreeMap::new(), Utc::now()).unwrap();
    let all: Vec<Event> = old.iter().chain(&new).cloned().collect();
    let rebuilt = engine(&store);
    rebuilt.rebuild(&store.refresh().unwrap()).unwrap();
    check(&rebuilt, period, now, overdue(&all, now), "old and new files").await;

    // Compaction merges the old and new files of each partition into one.
    let before = store.refresh().unwrap().files(Family::Dossier.table()).len();
    let plan = compact::plan(&store.refresh().unwrap(), &CompactOptions { min_files: 2, ..CompactOptions::default() });
    compact::compact(&store, &plan, None, &mut |_| {}).unwrap();
    let snap = store.refresh().unwrap();
    let after = snap.files(Family::Dossier.table()).len();
    assert!(after < before, "dossier files: {before} -> {after}");
    let all_dossiers = all.iter().filter(|e| e.family() == Family::Dossier).count() as i64;
    assert_eq!(sql_count(&store, "SELECT count(*) FROM dossier_events").await, all_dossiers);
    let (flagged, synced) = flags(&new);
    assert!(flagged > 20 && synced > 10, "the new events carry the flag: {flagged}, {synced}");
    assert_eq!(
        sql_count(&store, nulls).await,
        all_dossiers - flagged,
        "the flag survives compaction; nothing was remapped"
    );
    assert_eq!(sql_count(&store, "SELECT count(*) FROM dossier_events WHERE synced_dvcqg").await, synced);
    let compacted = engine(&store);
    compacted.rebuild(&snap).unwrap();
    check(&compacted, period, now, overdue(&all, now), "compacted").await;
    // The KPI over the flag counts only the new events, the ones that carry it.
    let (_, dvcqg) = compacted.catalog().get("dvcqg_sync_rate").unwrap();
    let values = compacted.list(period, None, now).await.unwrap();
    let value = values.iter().find(|v| v.def.id == dvcqg.id).unwrap();
    assert_eq!((value.count.numerator, value.count.denominator), (synced as u64, flagged as u64));
}

/// Dossier receipts that carry `synced_dvcqg`, and those with it true.
fn flags(events: &[Event]) -> (i64, i64) {
    let flags: Vec<bool> = events
        .iter()
        .filter_map(|e| match e.body {
            Body::DossierReceived { synced_dvcqg, .. } => synced_dvcqg,
            _ => None,
        })
        .collect();
    (flags.len() as i64, flags.iter().filter(|v| **v).count() as i64)
}
