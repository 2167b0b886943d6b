//! The store in a real S3-compatible bucket (SeaweedFS, see `support/seaweed.rs`):
//! commits read back by another client, two writers racing for versions, conditional
//! and multipart uploads, compaction with vacuum. The end-to-end side (the server on a
//! bucket through SIGKILLs, delta-rs reading it) is `tests/e2e_bucket.rs`.

#[path = "support/seaweed.rs"]
mod seaweed;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, StringArray};
use chrono::{DateTime, Utc};
use ioc_storage::compact::{self, CompactOptions};
use ioc_storage::fs::Fs;
use ioc_storage::object::{Bucket, ObjectFs, PART_BYTES};
use ioc_storage::{DEAD_LETTERS, DeadLetter, Store, dead_letter_batch};
use seaweed::SeaweedFs;

fn bucket_fs(weed: &SeaweedFs) -> ObjectFs {
    let options = weed.options();
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ObjectFs::new(Bucket::with_options(&weed.url(""), &options).unwrap()).unwrap()
}

fn open(weed: &SeaweedFs, prefix: &str, writer: &str) -> Store {
    let root = format!("{}/store", weed.url(prefix));
    Store::open_with_fs(root, writer, Arc::new(bucket_fs(weed))).unwrap()
}

fn letters(tag: &str, n: usize, at: &str) -> arrow::array::RecordBatch {
    let t: DateTime<Utc> = at.parse().unwrap();
    let rows: Vec<DeadLetter> = (0..n)
        .map(|i| DeadLetter {
            received_at: t + chrono::Duration::seconds(i as i64),
            origin: format!("{tag}#{i}"),
            error: "bad".into(),
            raw: vec![i as u8],
        })
        .collect();
    dead_letter_batch(&rows)
}

/// Every `origin` of the live dead letters, read through `store`.
fn origins(store: &Store) -> Vec<String> {
    let snap = store.snapshot();
    let mut out = Vec::new();
    for f in snap.files(DEAD_LETTERS) {
        for b in store.read_file(f, Some(&["origin"])).unwrap() {
            let col = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            out.extend((0..col.len()).map(|i| col.value(i).to_string()));
        }
    }
    out.sort();
    out
}

#[test]
fn commits_in_a_bucket_read_back_from_another_client() {
    let weed = SeaweedFs::start("ioc");
    let store = open(&weed, "site", "w1");
    let sources = BTreeMap::from([("kafka:ioc.events:0".to_string(), 7)]);
    let first = store.commit(&[(DEAD_LETTERS, letters("a", 3, "2026-03-01T00:00:00Z"))], sources, Utc::now()).unwrap();
    assert_eq!(first.version, 0);
    store.commit(&[(DEAD_LETTERS, letters("b", 2, "2026-03-02T00:00:00Z"))], BTreeMap::new(), Utc::now()).unwrap();
    assert!(store.bucket().is_some(), "a bucket store hands readers its bucket");

    let again = open(&weed, "site", "w2");
    let snap = again.snapshot();
    assert_eq!(snap.version, Some(1));
    assert_eq!(snap.rows(DEAD_LETTERS), 5);
    assert_eq!(snap.sources.get("kafka:ioc.events:0"), Some(&7));
    assert_eq!(origins(&again), ["a#0", "a#1", "a#2", "b#0", "b#1"]);
    assert!(again.orphans().unwrap().is_empty());
    // The Delta log of the table is in the bucket too, one commit per global commit.
    let fs = bucket_fs(&weed);
    let delta = format!("{}/store/tables/{DEAD_LETTERS}/_delta_log", weed.url("site"));
    let mut names: Vec<String> =
        fs.read_dir(Path::new(&delta)).unwrap().into_iter().map(|e| e.name.into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["00000000000000000000.json", "00000000000000000001.json"]);
    // Another prefix of the bucket is another store.
    assert_eq!(open(&weed, "elsewhere", "w3").snapshot().version, None);
}

#[test]
fn two_writers_on_one_bucket_never_share_a_version() {
    let weed = SeaweedFs::start("ioc");
    let per_writer = 12;
    std::thread::scope(|s| {
        for w in ["w1", "w2"] {
            let store = open(&weed, "race", w);
            s.spawn(move || {
                for i in 0..per_writer {
                    let batch = letters(&format!("{w}-{i}"), 1, "2026-03-01T00:00:00Z");
                    store.commit(&[(DEAD_LETTERS, batch)], BTreeMap::new(), Utc::now()).unwrap();
                }
            });
        }
    });
    let store = open(&weed, "race", "reader");
    let snap = store.snapshot();
    assert_eq!(snap.version, Some(2 * per_writer - 1), "every commit took its own version");
    let origins = origins(&store);
    assert_eq!(origins.len(), 2 * per_writer as usize);
    assert_eq!(origins.iter().collect::<BTreeSet<_>>().len(), origins.len(), "no commit twice: {origins:?}");
}

#[test]
fn of_writers_racing_for_one_name_exactly_one_wins() {
    let weed = SeaweedFs::start("ioc");
    let racers = 6;
    for round in 0..4 {
        let name = format!("{}/_log/{round:020}.json", weed.url("cas"));
        let barrier = std::sync::Barrier::new(racers);
        let won: Vec<usize> = std::thread::scope(|s| {
            let tasks: Vec<_> = (0..racers)
                .map(|r| {
                    let (fs, name, barrier) = (bucket_fs(&weed), &name, &barrier);
                    s.spawn(move || {
                        let tmp = format!("{name}.tmp-{r}");
                        barrier.wait();
                        match fs.put_if_absent(Path::new(&tmp), Path::new(name), format!("racer {r}").as_bytes()) {
                            Ok(()) => Some(r),
                            Err(e) if e.kind() == ErrorKind::AlreadyExists => None,
                            Err(e) => panic!("{e}"),
                        }
                    })
                })
                .collect();
            tasks.into_iter().filter_map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(won.len(), 1, "round {round}: winners {won:?}");
        assert_eq!(bucket_fs(&weed).read(Path::new(&name)).unwrap(), format!("racer {}", won[0]).as_bytes());
    }
}

#[test]
fn a_taken_name_is_refused_and_large_files_go_up_in_parts() {
    let weed = SeaweedFs::start("ioc");
    let fs = bucket_fs(&weed);
    let name = format!("{}/names/one.json", weed.url("p"));
    let tmp = format!("{}/names/.tmp", weed.url("p"));
    fs.put_if_absent(Path::new(&tmp), Path::new(&name), b"first").unwrap();
    let again = fs.put_if_absent(Path::new(&tmp), Path::new(&name), b"second").unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists, "{again}");
    assert_eq!(fs.read(Path::new(&name)).unwrap(), b"first");
    assert_eq!(fs.read(Path::new(&format!("{}/names/none", weed.url("p")))).unwrap_err().kind(), ErrorKind::NotFound);

    let big = format!("{}/big/file.parquet", weed.url("p"));
    let body: Vec<u8> = (0..PART_BYTES * 2 + 12345).map(|i| (i % 251) as u8).collect();
    let mut f = fs.create_new(Path::new(&big)).unwrap();
    for chunk in body.chunks(1 << 20) {
        f.write_all(chunk).unwrap();
    }
    assert!(!fs.exists(Path::new(&big)), "nothing is visible before it is made durable");
    f.sync_all().unwrap();
    assert_eq!(f.size().unwrap(), body.len() as u64);
    drop(f);
    assert_eq!(fs.file_len(Path::new(&big)).unwrap(), body.len() as u64);
    assert!(fs.read(Path::new(&big)).unwrap() == body, "the parts reassemble the file");
    assert!(fs.exists(Path::new(&format!("{}/big", weed.url("p")))), "a prefix with keys is a directory");
}

#[test]
fn compaction_and_vacuum_in_a_bucket() {
    let weed = SeaweedFs::start("ioc");
    let store = open(&weed, "compact", "w1");
    for i in 0..6 {
        let batch = letters(&format!("c{i}"), 4, "2026-03-01T01:00:00Z");
        store.commit(&[(DEAD_LETTERS, batch)], BTreeMap::new(), Utc::now()).unwrap();
    }
    let before = origins(&store);
    let old: Vec<String> = store.snapshot().files(DEAD_LETTERS).iter().map(|f| f.path.clone()).collect();
    let plan = compact::plan(&store.snapshot(), &CompactOptions { min_files: 2, ..CompactOptions::default() });
    let report = compact::compact(&store, &plan, None, &mut |_| {}).unwrap();
    assert_eq!(report.files_removed, 6);
    assert_eq!(store.snapshot().files(DEAD_LETTERS).len(), 1);
    assert_eq!(origins(&store), before);

    let fs = bucket_fs(&weed);
    let root = format!("{}/store", weed.url("compact"));
    let at = |rel: &str| Path::new(&root).join(rel);
    assert!(old.iter().all(|p| fs.exists(&at(p))), "removed files wait for the vacuum");
    let vacuumed = compact::vacuum(&store, Duration::ZERO, Utc::now()).unwrap();
    assert_eq!(vacuumed.files_deleted, 6);
    assert!(old.iter().all(|p| !fs.exists(&at(p))), "the vacuum deleted the removed files");
    let reopened = open(&weed, "compact", "w2");
    assert_eq!(origins(&reopened), before);
    assert!(reopened.orphans().unwrap().is_empty());
}
