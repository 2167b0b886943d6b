//! Schema evolution: a store written by an older version has event files without the
//! columns added since (`synced_dvcqg`, `province_code_original`,
//! `commune_code_original`). Reading them gives batches in the table's current schema,
//! with those columns NULL, and compaction merges old and new files into one file of
//! the current schema, every value kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Schema;
use chrono::{DateTime, Duration, Utc};
use ioc_core::event::{Body, Channel, Event, Family, Level, ServiceLevel};
use ioc_storage::compact::{self, CompactOptions};
use ioc_storage::{FamilyBuilder, Store, family_schema};

/// The columns this version added to the event tables.
const ADDED: [&str; 3] = ["synced_dvcqg", "province_code_original", "commune_code_original"];

fn at() -> DateTime<Utc> {
    "2026-03-10T03:00:00Z".parse().unwrap()
}

fn received(i: usize, remapped_from: Option<&str>) -> Event {
    Event {
        event_id: format!("e-{i}"),
        occurred_at: at() + Duration::minutes(i as i64),
        source: "motcua".into(),
        agency_code: "000.00.00.H08".into(),
        level: Level::Province,
        province_code: Some("08".into()),
        commune_code: None,
        province_code_original: remapped_from.map(str::to_string),
        commune_code_original: remapped_from.map(|_| "00001".to_string()),
        body: Body::DossierReceived {
            dossier_id: format!("D{i}"),
            procedure_code: "1.001612".into(),
            channel: Channel::Online,
            service_level: ServiceLevel::Full,
            due_at: at() + Duration::days(3),
            digitized: i.is_multiple_of(2),
            reused_data: false,
            authenticated: true,
            synced_dvcqg: remapped_from.map(|_| !i.is_multiple_of(2)),
        },
    }
}

fn batch(events: &[Event]) -> RecordBatch {
    let mut b = FamilyBuilder::new(Family::Dossier);
    for e in events {
        b.append(e);
    }
    b.finish()
}

/// The batch as the previous version wrote it: without the columns added since.
fn old_schema_batch(batch: &RecordBatch) -> RecordBatch {
    let keep: Vec<usize> =
        (0..batch.num_columns()).filter(|&i| !ADDED.contains(&batch.schema().field(i).name().as_str())).collect();
    let b = batch.project(&keep).unwrap();
    let schema = Arc::new(Schema::new(b.schema().fields().clone()));
    RecordBatch::try_new(schema, b.columns().to_vec()).unwrap()
}

fn strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    b.column_by_name(name).unwrap().as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
}

#[test]
fn files_without_the_new_columns_read_as_the_current_schema_and_compact_with_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "w").unwrap();
    let table = Family::Dossier.table();
    let old_events: Vec<Event> = (0..3).map(|i| received(i, None)).collect();
    let old = old_schema_batch(&batch(&old_events));
    assert_eq!(old.num_columns() + 3, family_schema(Family::Dossier).fields().len());
    store.commit(&[(table, old.clone())], BTreeMap::new(), Utc::now()).unwrap();
    let new_events: Vec<Event> = (3..5).map(|i| received(i, Some("02"))).collect();
    store.commit(&[(table, batch(&new_events))], BTreeMap::new(), Utc::now()).unwrap();

    let snap = store.snapshot();
    let files = snap.files(table);
    assert_eq!(files.len(), 2);
    // The old file, whole: the current schema, the added columns NULL, the rest as written.
    let read = store.read_file(&files[0], None).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].schema(), family_schema(Family::Dossier));
    for name in ADDED {
        assert_eq!(read[0].column_by_name(name).unwrap().null_count(), 3, "{name}");
    }
    for (i, f) in old.schema().fields().iter().enumerate() {
        assert_eq!(read[0].column_by_name(f.name()).unwrap(), old.column(i), "{}", f.name());
    }
    // A projection that names an added column gets it, NULL, in the schema's order.
    let some = store.read_file(&files[0], Some(&["province_code_original", "event_id"])).unwrap();
    let names: Vec<String> = some[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["event_id", "province_code_original"]);
    assert_eq!(strings(&some[0], "province_code_original"), [None, None, None]);

    // Compaction merges the old and the new file into one file of the current schema.
    let plan = compact::plan(&store.refresh().unwrap(), &CompactOptions { min_files: 2, ..CompactOptions::default() });
    let report = compact::compact(&store, &plan, None, &mut |_| {}).unwrap();
    assert_eq!((report.files_removed, report.files_added, report.rows_written), (2, 1, 5));
    let snap = store.refresh().unwrap();
    let [merged] = snap.files(table) else { panic!("one file after compaction: {:?}", snap.files(table)) };
    let rows = store.read_file(merged, None).unwrap();
    let rows = arrow::compute::concat_batches(&family_schema(Family::Dossier), &rows).unwrap();
    assert_eq!(rows, batch(&old_events.iter().chain(&new_events).cloned().collect::<Vec<_>>()));
    assert_eq!(
        strings(&rows, "province_code_original"),
        [None, None, None, Some("02".into()), Some("02".into())],
        "old rows NULL, new rows as written"
    );
    let synced: Vec<Option<bool>> = rows.column_by_name("synced_dvcqg").unwrap().as_boolean().iter().collect();
    assert_eq!(synced, [None, None, None, Some(true), Some(false)]);
}
