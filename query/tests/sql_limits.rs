//! The SQL sandbox's memory and time limits, each on its own, over real data: a query
//! over the limit is cut off with its own error code, the same query (or a quick one)
//! within it answers. Each test fails if its limit is not applied.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use ioc_core::{AdminUnits, Catalog};
use ioc_query::context::admin_units_table;
use ioc_query::generate::write_simulated;
use ioc_query::{Caller, KpiEngine, Period, SqlEngine, SqlError, SqlLimits};
use ioc_storage::Store;

const ANALYST: Caller<'static> = Caller { token: "analyst-1", via: "test", province: None, admin: false, hook: None };

/// A store of `events` simulated events over January 2026.
fn store(events: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "test").unwrap();
    let units = Arc::new(AdminUnits::builtin());
    let engine = KpiEngine::new(Arc::new(Catalog::builtin()), store.clone(), &units).unwrap();
    let period = Period {
        from: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
    };
    write_simulated(&store, &engine, units, 7, events, period, 20_000).unwrap();
    (dir, store)
}

fn engine(store: &Store, limits: SqlLimits) -> SqlEngine {
    SqlEngine::new(store.clone(), admin_units_table(&AdminUnits::builtin()), limits)
}

/// One hash-table entry per dossier event: a few MiB for the store below.
const DISTINCT_IDS: &str = "SELECT count(*) FROM (SELECT DISTINCT event_id FROM dossier_events)";

#[tokio::test]
async fn a_query_over_the_memory_limit_is_refused_and_within_it_answers() {
    let (_dir, store) = store(40_000);
    let small = engine(&store, SqlLimits { memory_bytes: 1 << 20, ..SqlLimits::default() });
    let err = small.run(&ANALYST, DISTINCT_IDS).await.unwrap_err();
    assert!(matches!(err, SqlError::Memory { limit_mib: 1, .. }), "{err:?}");
    assert_eq!(err.code(), "query_memory_limit");
    // The small limit refuses what needs memory, not everything.
    let out = small.run(&ANALYST, "SELECT count(*) FROM dossier_events").await.unwrap();
    let dossier_events = out.batches[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0);
    assert!(dossier_events > 20_000, "{dossier_events} dossier events");

    let generous = engine(&store, SqlLimits { memory_bytes: 256 << 20, ..SqlLimits::default() });
    let out = generous.run(&ANALYST, DISTINCT_IDS).await.unwrap();
    let distinct = out.batches[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0);
    assert_eq!(distinct, dossier_events, "every event id once");
}

/// Never ends on its own: only the time limit stops it.
const ENDLESS: &str = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t";

#[tokio::test]
async fn a_query_over_the_time_limit_is_cancelled_and_a_quick_one_answers() {
    let (_dir, store) = store(2_000);
    let limit = Duration::from_secs(2);
    let engine = engine(&store, SqlLimits { timeout: limit, ..SqlLimits::default() });
    // The guard only keeps the suite from hanging if the limit is not applied.
    let err = tokio::time::timeout(Duration::from_secs(60), engine.run(&ANALYST, ENDLESS))
        .await
        .expect("the time limit did not stop the query")
        .unwrap_err();
    assert!(matches!(err, SqlError::Timeout(d) if d == limit), "{err:?}");
    assert_eq!(err.code(), "query_timeout");

    let out = engine
        .run(&ANALYST, "SELECT province_code, count(*) FROM dossier_events GROUP BY province_code")
        .await
        .unwrap();
    assert!(out.rows > 1 && !out.truncated, "{} rows", out.rows);
}
