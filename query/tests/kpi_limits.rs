//! KPI answers run under limits like ad-hoc SQL (CONTRACT.md §7.1): a row cap that
//! refuses an answer with the number of rows it would have had, a memory pool and a
//! time limit on the SQL parts, and a bound on how many of those run at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ioc_core::counters::{Dim, DimFilter};
use ioc_core::time::Bucket;
use ioc_core::{AdminUnits, Catalog};
use ioc_ingest::pipeline::{self, PipelineConfig};
use ioc_ingest::{IngestMetrics, Origin, Record, Simulator};
use ioc_query::{KpiEngine, KpiError, KpiLimits, Period, SeriesQuery};
use ioc_storage::Store;

fn end() -> DateTime<Utc> {
    "2026-03-20T10:00:00Z".parse().unwrap()
}

/// A store with 3,000 simulated events over the 20 days before `end()`.
async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "t").unwrap();
    let units = Arc::new(AdminUnits::builtin());
    let kpis = engine(&store, KpiLimits::default());
    let (ingestor, writer) = pipeline::start(
        store.clone(),
        &store.snapshot(),
        units.clone(),
        Some(kpis.clone()),
        vec![kpis],
        IngestMetrics::unregistered(),
        PipelineConfig::default(),
    )
    .unwrap();
    let mut sim = Simulator::new(units, 11);
    let span = 20 * 24 * 3600;
    let records: Vec<Record> = (0..3000)
        .map(|i| {
            let at = end() - chrono::Duration::seconds(span - i * span / 3000);
            Record::new(sim.next_event(at).to_json().to_string().into_bytes(), Origin::Simulator)
        })
        .collect();
    let out = ingestor.submit(records, BTreeMap::new()).await.unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    drop(ingestor);
    writer.join().unwrap();
    (dir, store)
}

fn engine(store: &Store, limits: KpiLimits) -> Arc<KpiEngine> {
    let e = KpiEngine::new(Arc::new(Catalog::builtin()), store.clone(), &AdminUnits::builtin()).unwrap();
    let e = e.with_limits(limits);
    e.rebuild(&store.refresh().unwrap()).unwrap();
    Arc::new(e)
}

fn by_day(group_by: &[Dim]) -> SeriesQuery {
    let period = Period { from: end() - chrono::Duration::days(30), to: end() };
    SeriesQuery { period, bucket: Some(Bucket::Day), group_by: group_by.to_vec(), filter: DimFilter::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_row_cap_is_refused_with_the_rows_it_would_have_had() {
    let (_dir, store) = store().await;
    let unlimited = engine(&store, KpiLimits::default());
    for group_by in [&[Dim::ProvinceCode][..], &[Dim::Channel], &[]] {
        let q = by_day(group_by);
        let (_, rows) = unlimited.series("online_submission_rate", &q, end()).await.unwrap();
        assert!(rows.len() > 20, "{group_by:?}: {} rows", rows.len());
        let capped = engine(&store, KpiLimits { max_rows: rows.len() - 1, ..KpiLimits::default() });
        match capped.series("online_submission_rate", &q, end()).await {
            Err(e @ KpiError::TooManyRows { .. }) => {
                assert!(
                    matches!(e, KpiError::TooManyRows { rows: n, limit } if n == rows.len() && limit == rows.len() - 1)
                );
                assert_eq!(e.code(), "too_many_rows");
                assert!(e.to_string().contains(&rows.len().to_string()), "{e}");
            }
            other => panic!("{group_by:?}: expected too_many_rows, got {other:?}"),
        }
        let exact = engine(&store, KpiLimits { max_rows: rows.len(), ..KpiLimits::default() });
        assert_eq!(exact.series("online_submission_rate", &q, end()).await.unwrap().1, rows, "at the cap it answers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_parts_of_an_answer_run_in_a_memory_pool() {
    let (_dir, store) = store().await;
    let tiny = engine(&store, KpiLimits { memory_bytes: 4 << 10, ..KpiLimits::default() });
    let q = by_day(&[Dim::AgencyCode, Dim::ProcedureCode]);
    match tiny.series("online_submission_rate", &q, end()).await {
        Err(e @ KpiError::Memory { .. }) => assert_eq!(e.code(), "query_memory_limit"),
        other => panic!("expected the memory limit, got {other:?}"),
    }
    // The cube needs no pool; a normal pool answers the same question.
    assert!(tiny.series("online_submission_rate", &by_day(&[Dim::ProvinceCode]), end()).await.is_ok());
    let normal = engine(&store, KpiLimits::default());
    assert!(!normal.series("online_submission_rate", &q, end()).await.unwrap().1.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_runs_past_the_time_limit_is_cancelled() {
    let (_dir, store) = store().await;
    let hasty = engine(&store, KpiLimits { timeout: Duration::from_nanos(1), ..KpiLimits::default() });
    // Two dimensions besides the province: SQL over the rollups.
    let q = by_day(&[Dim::Channel, Dim::ProcedureCode]);
    match hasty.series("online_submission_rate", &q, end()).await {
        Err(e @ KpiError::Timeout(_)) => assert_eq!(e.code(), "query_timeout"),
        other => panic!("expected the time limit, got {other:?}"),
    }
    assert!(engine(&store, KpiLimits::default()).series("online_submission_rate", &q, end()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_beyond_the_concurrency_limit_wait_their_turn() {
    let (_dir, store) = store().await;
    let one = engine(&store, KpiLimits { max_concurrent: 1, ..KpiLimits::default() });
    // Two dimensions besides the province: SQL over the rollups.
    let q = by_day(&[Dim::Source, Dim::Level]);
    let want = one.series("edoc_rate", &q, end()).await.unwrap().1;
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let (one, q) = (one.clone(), q.clone());
            tokio::spawn(async move { one.series("edoc_rate", &q, end()).await.map(|(_, rows)| rows) })
        })
        .collect();
    for r in runs {
        assert_eq!(r.await.unwrap().unwrap(), want);
    }
}
