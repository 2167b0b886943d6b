//! Several writers over one store (scale-out): every event is stored once, and every
//! writer's listeners see every commit exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use ioc_core::AdminUnits;
use ioc_ingest::pipeline::{self, PipelineConfig};
use ioc_ingest::{CommitListener, Committed, IngestMetrics, Ingestor, Origin, Record, Simulator};
use ioc_storage::Store;

/// Counts the event rows of the commits it is told about.
#[derive(Default)]
struct RowCount(AtomicU64);

impl CommitListener for RowCount {
    fn on_commit(&self, committed: &Committed) {
        let rows: usize = committed.batches.iter().map(|(_, b)| b.num_rows()).sum();
        self.0.fetch_add(rows as u64, Ordering::SeqCst);
    }
}

fn start(dir: &std::path::Path, name: &str, units: &Arc<AdminUnits>) -> (Ingestor, Arc<RowCount>, Store) {
    let store = Store::open(dir, name).unwrap();
    let rows = Arc::new(RowCount::default());
    let (ingestor, _handle) = pipeline::start(
        store.clone(),
        &store.snapshot(),
        units.clone(),
        None,
        vec![rows.clone()],
        IngestMetrics::unregistered(),
        PipelineConfig::default(),
    )
    .unwrap();
    (ingestor, rows, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_given_the_same_events_at_once_store_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let units = Arc::new(AdminUnits::builtin());
    let (a, rows_a, store) = start(dir.path(), "a", &units);
    let (b, rows_b, _) = start(dir.path(), "b", &units);

    let mut sim = Simulator::new(units.clone(), 7);
    let now = Utc::now();
    let records: Vec<Record> = (0..3000)
        .map(|_| Record::new(sim.next_event(now).to_json().to_string().into_bytes(), Origin::Simulator))
        .collect();
    // Both writers get every chunk at the same moment: they race for each event.
    let mut accepted = 0;
    let mut duplicates = 0;
    for chunk in records.chunks(100) {
        let (x, y) = tokio::join!(a.submit(chunk.to_vec(), BTreeMap::new()), b.submit(chunk.to_vec(), BTreeMap::new()));
        for out in [x.unwrap(), y.unwrap()] {
            accepted += out.accepted;
            duplicates += out.duplicates;
        }
    }
    assert_eq!((accepted, duplicates), (3000, 3000), "each event accepted by exactly one writer");

    let snap = store.refresh().unwrap();
    let stored: u64 = ioc_core::Family::ALL.iter().map(|f| snap.rows(f.table())).sum();
    assert_eq!(stored, 3000, "each event stored once");
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    assert_eq!(rows_a.0.load(Ordering::SeqCst), 3000, "writer a's listeners saw every commit once");
    assert_eq!(rows_b.0.load(Ordering::SeqCst), 3000, "writer b's listeners saw every commit once");
}
