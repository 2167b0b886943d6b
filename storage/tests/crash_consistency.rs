//! Crash consistency at the storage edge: real commits, compactions and vacuums are
//! recorded operation by operation (see `support`), and for every prefix of the
//! recording the state a power loss would leave is rebuilt and opened with the real
//! store. Every acknowledged commit must be there and whole, and nothing else may be
//! visible in part. A SIGKILL test cannot find a missing fsync (the page cache
//! survives a killed process); this can.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ioc_storage::compact::{self, CompactOptions};
use ioc_storage::{DEAD_LETTERS, Publish};
use support::{Checked, Scenario, assert_crash_consistent, check_prefixes, letters};

const DAY1: &str = "2026-03-10T03:00:00Z";
const DAY2: &str = "2026-03-11T03:00:00Z";
/// Before 2021: dropped by the retention in the compaction scenario.
const OLD_DAY: &str = "2020-01-15T03:00:00Z";

#[allow(clippy::print_stderr)]
fn replay(scenario: &Scenario) -> Checked {
    let checked = check_prefixes(scenario);
    eprintln!(
        "{}: {} operations, {} crash states ({} distinct) checked in {:?}",
        scenario.name, checked.ops, checked.states, checked.opened, checked.elapsed
    );
    assert_crash_consistent(&checked);
    checked
}

#[test]
fn a_power_loss_anywhere_in_plain_commits_keeps_every_acknowledged_commit_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::new("plain commits", dir.path(), "");
    let store = s.open("w");
    s.commit(&store, "a", 5, &[DAY1]);
    // One commit, two date partitions: two files, two directories.
    s.commit(&store, "b", 6, &[DAY1, DAY2]);
    s.commit(&store, "c", 3, &[DAY2]);
    let checked = replay(&s);
    assert!(checked.ops > 30, "the recording holds the commits' operations: {}", checked.ops);
}

#[test]
fn a_power_loss_anywhere_in_compaction_retention_and_vacuum_loses_and_duplicates_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::new("compaction", dir.path(), "");
    let store = s.open("w");
    for i in 0..3 {
        s.commit(&store, &format!("c{i}"), 4, &[DAY1]);
    }
    let old = s.commit(&store, "old", 2, &[OLD_DAY]);

    let plan = compact::plan(&store.refresh().unwrap(), &CompactOptions { min_files: 2, ..CompactOptions::default() });
    let report = compact::compact(&store, &plan, None, &mut |_| {}).unwrap();
    assert_eq!((report.commits, report.files_removed), (1, 3));
    s.ack(store.snapshot().version.unwrap(), Vec::new());

    // Keeps the partitions from 2021 on: drops OLD_DAY's, not DAY1's.
    let keep = (Utc::now() - "2021-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()).num_days();
    let retention = BTreeMap::from([(DEAD_LETTERS.to_string(), keep as u32)]);
    let dropped = compact::apply_retention(&store, &retention, Utc::now()).unwrap();
    assert_eq!(dropped.rows_removed, 2);
    let version = store.snapshot().version.unwrap();
    s.ack(version, Vec::new());
    s.drops.push((version, old));

    // Grace 0: the merged and dropped files are deleted now.
    let vacuumed = compact::vacuum(&store, Duration::ZERO, Utc::now()).unwrap();
    assert_eq!(vacuumed.files_deleted, 4);
    s.commit(&store, "after", 2, &[DAY1]);
    replay(&s);
}

#[test]
fn a_power_loss_anywhere_in_two_writers_interleaved_commits_keeps_both_writers_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::new("two writers", dir.path(), "");
    let a = s.open("a");
    let b = s.open("b");
    // a stages (making the partition's directories), b commits into the same
    // partition, a's publish finds itself behind and goes after b's commit.
    let (batch, origins) = letters("a0", 4, &[DAY1]);
    let staged = a.stage(&[(DEAD_LETTERS, batch)]).unwrap();
    s.commit(&b, "b0", 3, &[DAY1]);
    let Publish::Behind(newer) = a.publish(&staged, &BTreeMap::new(), Utc::now(), None).unwrap() else {
        panic!("published over b's commit");
    };
    assert_eq!(newer.iter().map(|c| c.version).collect::<Vec<_>>(), [0]);
    let Publish::Committed(info) = a.publish(&staged, &BTreeMap::new(), Utc::now(), Some(0)).unwrap() else {
        panic!("nothing newer than version 0, yet not published");
    };
    s.ack(info.version, origins);
    s.commit(&b, "b1", 2, &[DAY2]);
    s.commit(&a, "a1", 2, &[DAY2, DAY1]);
    assert_eq!(a.refresh().unwrap().version, Some(3));
    replay(&s);
}

#[test]
fn a_commit_into_a_directory_another_writer_made_and_has_not_synced_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::new("another writer's directory", dir.path(), "");
    let a = s.open("a");
    // Another writer's stage made the partition's directories and has not fsynced
    // their parents yet (it is still writing, or it crashed): a's commit into that
    // partition must make the whole chain durable itself.
    let other = s.recorder.fs();
    other.create_dir_all(&s.root().join("tables").join(DEAD_LETTERS).join("2026-03-10")).unwrap();
    s.commit(&a, "a", 3, &[DAY1]);
    replay(&s);
}

#[test]
fn opening_a_store_in_a_new_directory_makes_it_durable_up_to_the_first_directory_that_existed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::new("new root", dir.path(), "new/store");
    assert!(!Path::new(&dir.path().join("new")).exists());
    let store = s.open("w");
    s.commit(&store, "a", 2, &[DAY1]);
    replay(&s);
}
