//! The live counters, the counters rebuilt from storage after a restart, the running
//! month totals, and a plain SQL recompute over the stored Parquet give identical
//! numerators and denominators for every KPI, slice and period, on random event sets.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ioc_core::catalog::KpiKind;
use ioc_core::counters::{Count, Dim, DimFilter};
use ioc_core::time::{Bucket, start_of_month};
use ioc_core::{AdminUnits, Catalog};
use ioc_ingest::pipeline::{self, PipelineConfig};
use ioc_ingest::{IngestMetrics, Origin, Record, Simulator};
use ioc_query::context::admin_units_table;
use ioc_query::{KpiEngine, Period, SeriesQuery};
use ioc_storage::Store;
use proptest::prelude::*;

fn base() -> DateTime<Utc> {
    "2026-01-30T10:00:00Z".parse().unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    engine: Arc<KpiEngine>,
}

async fn ingest(seed: u64, offsets_min: &[i64], batches: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "test").unwrap();
    let units = Arc::new(AdminUnits::builtin());
    let catalog = Arc::new(Catalog::builtin());
    let engine = Arc::new(KpiEngine::new(catalog, store.clone(), admin_units_table(&units)).unwrap());
    // The running month totals start before any event and follow every commit.
    let _ = engine.take_month_changes(base());
    let (ingestor, handle) = pipeline::start(
        store.clone(),
        &store.snapshot(),
        units.clone(),
        vec![engine.clone()],
        IngestMetrics::unregistered(),
        PipelineConfig::default(),
    )
    .unwrap();
    let mut sim = Simulator::new(units, seed);
    let records: Vec<Record> = offsets_min
        .iter()
        .map(|m| {
            Record::new(
                sim.next_event(base() + Duration::minutes(*m)).to_json().to_string().into_bytes(),
                Origin::Simulator,
            )
        })
        .collect();
    let per = records.len().div_ceil(batches.max(1)).max(1);
    for chunk in records.chunks(per) {
        let out = ingestor.submit(chunk.to_vec(), BTreeMap::new()).await.unwrap();
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    }
    drop(ingestor);
    handle.join().unwrap();
    Setup { _dir: dir, store, engine }
}

fn sum(rows: &[(Vec<ioc_core::counters::DimValue>, Count)]) -> BTreeMap<Vec<ioc_core::counters::DimValue>, Count> {
    let mut m = BTreeMap::new();
    for (k, c) in rows {
        *m.entry(k.clone()).or_insert_with(Count::default) += *c;
    }
    m.retain(|_, c: &mut Count| !c.is_zero());
    m
}

/// The running month totals (what live pushes and month-to-date alerts read) equal SQL
/// over the month, nationally and per province.
async fn check_month_totals(setup: &Setup) -> Result<(), TestCaseError> {
    let start = start_of_month(base());
    let month = Period { from: start.to_utc(), to: Bucket::Month.next(start).to_utc() };
    let catalog = Catalog::builtin();
    for (idx, def) in catalog.kpis().iter().enumerate() {
        if !matches!(def.kind, KpiKind::Ratio { .. }) {
            continue;
        }
        let totals = setup.engine.month_totals(idx, base()).expect("month totals were set up");
        let national = sum(&setup.engine.sql_counts(def, month, &[], &DimFilter::default()).await.unwrap());
        prop_assert_eq!(
            totals.get(&None).copied().unwrap_or_default(),
            national.get(&vec![]).copied().unwrap_or_default(),
            "{} national",
            def.id
        );
        let by_province =
            sum(&setup.engine.sql_counts(def, month, &[Dim::ProvinceCode], &DimFilter::default()).await.unwrap());
        let by_province: BTreeMap<_, _> = by_province.into_iter().filter(|(k, _)| k[0].is_some()).collect();
        let live: BTreeMap<_, _> = totals
            .into_iter()
            .filter_map(|(scope, c)| Some((vec![Some(scope?)], c)))
            .filter(|(_, c)| !c.is_zero())
            .collect();
        prop_assert_eq!(live, by_province, "{} by province", def.id);
    }
    Ok(())
}

async fn check(setup: &Setup, periods: &[Period]) -> Result<(), TestCaseError> {
    check_month_totals(setup).await?;
    let rebuilt =
        KpiEngine::new(Arc::new(Catalog::builtin()), setup.store.clone(), admin_units_table(&AdminUnits::builtin()))
            .unwrap();
    rebuilt.rebuild(&setup.store.refresh().unwrap()).unwrap();
    let now = base() + Duration::days(10);
    let catalog = Catalog::builtin();
    for def in catalog.kpis() {
        let KpiKind::Ratio { event_type, .. } = &def.kind else {
            continue;
        };
        let mut slices: Vec<(Vec<Dim>, DimFilter)> = vec![
            (vec![], DimFilter::default()),
            (vec![Dim::ProvinceCode], DimFilter::default()),
            (vec![Dim::Level, Dim::Source], DimFilter(vec![(Dim::ProvinceCode, "01".into())])),
        ];
        if event_type.family() == ioc_core::Family::Dossier {
            slices.push((vec![Dim::ProcedureCode, Dim::Channel], DimFilter::default()));
        }
        for period in periods {
            for (group_by, filter) in &slices {
                let q =
                    SeriesQuery { period: *period, bucket: None, group_by: group_by.clone(), filter: filter.clone() };
                let (_, live) = setup.engine.series(&def.id, &q, now).await.unwrap();
                let (_, again) = rebuilt.series(&def.id, &q, now).await.unwrap();
                let sql = setup.engine.sql_counts(def, *period, group_by, filter).await.unwrap();
                let live_map = sum(&live.iter().map(|r| (r.dims.clone(), r.count)).collect::<Vec<_>>());
                let again_map = sum(&again.iter().map(|r| (r.dims.clone(), r.count)).collect::<Vec<_>>());
                prop_assert_eq!(&live_map, &sum(&sql), "{} {:?} {:?} {:?}", def.id, period, group_by, filter);
                prop_assert_eq!(&live_map, &again_map, "rebuilt differs: {}", def.id);
                // Values are ratios of the sums.
                for r in &live {
                    prop_assert_eq!(r.value, r.count.ratio());
                }
            }
            // Day buckets in Vietnam time sum up to the same per-day SQL answers.
            let q = SeriesQuery {
                period: *period,
                bucket: Some(Bucket::Day),
                group_by: vec![],
                filter: DimFilter::default(),
            };
            let (_, days) = setup.engine.series(&def.id, &q, now).await.unwrap();
            for row in days {
                let start = row.bucket.unwrap();
                let day = Period { from: start.max(period.from), to: (start + Duration::days(1)).min(period.to) };
                let sql = sum(&setup.engine.sql_counts(def, day, &[], &DimFilter::default()).await.unwrap());
                prop_assert_eq!(Some(&row.count), sql.get(&vec![]), "{} day {}", def.id, start);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn live_counters_rebuilt_counters_and_sql_agree(
        seed in any::<u64>(),
        offsets in prop::collection::vec(-3 * 24 * 60i64..3 * 24 * 60, 1..400),
        batches in 1usize..4,
        cut_a in 0i64..(6 * 24 * 3600),
        cut_len in 1i64..(3 * 24 * 3600),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let setup = ingest(seed, &offsets, batches).await;
            let all = Period { from: base() - Duration::days(4), to: base() + Duration::days(4) };
            // An arbitrary period with unaligned edges (seconds), exercising the partial
            // hours that the engine answers with SQL or whole-hour counters.
            let from = base() - Duration::days(3) + Duration::seconds(cut_a);
            let odd = Period { from, to: from + Duration::seconds(cut_len) };
            // A period aligned to Vietnam days.
            let day = Bucket::Day.floor(base()).to_utc();
            let aligned = Period { from: day - Duration::days(1), to: day + Duration::days(1) };
            check(&setup, &[all, odd, aligned]).await
        })?;
    }
}
