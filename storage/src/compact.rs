//! Table maintenance: compaction of small files, retention of old date partitions, and
//! the deferred deletion (vacuum) of files that commits removed.
//!
//! Ingest makes one small file per table and date for every group commit. Compaction
//! merges the small files of one partition (`tables/<table>/<date>/`) into files of up
//! to a target size, sorted by the table's time column, and publishes one commit per
//! partition whose `remove` names the merged files and whose `add` names the new ones.
//! It runs beside the ingest writer, never on it: it stages its files first, then
//! publishes with the log's compare-and-set. When other commits got there first, it
//! checks that none of them removed a file it merges (another compactor, or retention);
//! if one did, its files are discarded and the partition is left for the next run.
//! Otherwise it publishes after them: appends to the same partition are never lost,
//! because compaction removes only the files it read.
//!
//! A compaction commit adds no rows: writers do not fold it into dedupe or counters.
//! Each new file records when its rows were accepted (`accepted_at`), and files are
//! merged only with files accepted on the same Vietnam day (for tables with an
//! `event_id`), so the dedupe index rebuilt at start is exactly what it was before.
//!
//! Readers that hold an older snapshot may still read removed files, so nothing is
//! deleted when it is removed: [`vacuum`] deletes the files of removal commits older
//! than a grace period, idempotently.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use chrono::{DateTime, NaiveDate, Utc};
use ioc_core::time::vn_date;
use tracing::{debug, info, warn};

use crate::schema::schema_of;
use crate::store::{DataFile, Publish, Snapshot, Staged, StorageError, Store};

/// The default bound on the size of a compacted file: 128 MiB.
pub const DEFAULT_TARGET_BYTES: u64 = 128 << 20;
/// The default number of small files a partition needs before it is compacted.
pub const DEFAULT_MIN_FILES: usize = 8;
/// The default time a removed file stays on disk for readers of older snapshots.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// How many times a commit is tried again after other commits got there first.
const MAX_ATTEMPTS: usize = 64;

/// An error from a [`Rewrite`] hook.
pub type RewriteError = Box<dyn std::error::Error + Send + Sync>;

/// A per-table rewrite of the merged rows of one output file, applied before they are
/// written: `(table, rows of the files merged) -> rows to write`. Without one, rows are
/// written unchanged (identity). A rewrite may combine rows (e.g. sum the numerators
/// and denominators of rollups with the same key) but must keep them in the partition's
/// date; rows it moves to another date land in that date's partition.
pub type Rewrite<'a> = dyn Fn(&str, Vec<RecordBatch>) -> Result<Vec<RecordBatch>, RewriteError> + Send + Sync + 'a;

/// What compaction merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactOptions {
    /// Upper bound on a compacted file, estimated from the bytes of the files merged
    /// into it (merged files compress at least as well as their parts).
    pub target_bytes: u64,
    /// A partition is compacted once it holds at least this many files smaller than
    /// `target_bytes` (at least 2). Higher values rewrite less often.
    pub min_files: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self { target_bytes: DEFAULT_TARGET_BYTES, min_files: DEFAULT_MIN_FILES }
    }
}

/// The files of one partition to merge: each group becomes one new file.
#[derive(Debug, Clone)]
pub struct PartitionPlan {
    pub table: String,
    /// The partition's Vietnam date, as in its directory name.
    pub date: String,
    pub groups: Vec<Vec<DataFile>>,
}

impl PartitionPlan {
    pub fn files(&self) -> usize {
        self.groups.iter().map(Vec::len).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.groups.iter().flatten().map(|f| f.bytes).sum()
    }
}

/// What one compaction run will merge, planned from one snapshot.
#[derive(Debug, Clone, Default)]
pub struct CompactPlan {
    /// The snapshot version the plan was made from: every file in it was live then.
    pub version: Option<u64>,
    pub partitions: Vec<PartitionPlan>,
    /// When each file's rows were accepted (by path).
    accepted: BTreeMap<String, DateTime<Utc>>,
}

impl CompactPlan {
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Files to merge.
    pub fn files(&self) -> usize {
        self.partitions.iter().map(PartitionPlan::files).sum()
    }

    /// Bytes to read.
    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(PartitionPlan::bytes).sum()
    }
}

/// What a compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Commits published: one per partition compacted.
    pub commits: usize,
    pub files_removed: usize,
    pub files_added: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub rows_read: u64,
    pub rows_written: u64,
    /// Partitions left alone because another commit removed some of their files first.
    pub conflicts: usize,
}

/// The partition directory of a data file: `tables/<table>/<date>/<name>`.
fn partition_of(path: &str) -> Option<&str> {
    path.split('/').nth(2)
}

/// When the rows of each live file were accepted.
fn accepted_times(snap: &Snapshot) -> BTreeMap<String, DateTime<Utc>> {
    let mut out = BTreeMap::new();
    for (_, at, paths) in &snap.history {
        for p in paths {
            out.insert(p.clone(), *at);
        }
    }
    out
}

/// Plans a compaction of `snap`: per table and date partition (and per Vietnam day
/// of acceptance, for tables with an `event_id`), the files smaller than the target,
/// in time order, packed greedily into groups of at most `target_bytes`. A partition
/// with fewer than `min_files` such files is left alone, and so is a group of one.
pub fn plan(snap: &Snapshot, options: &CompactOptions) -> CompactPlan {
    let accepted = accepted_times(snap);
    let min_files = options.min_files.max(2);
    let mut partitions = Vec::new();
    for (table, files) in &snap.files {
        let by_event = schema_of(table).is_some_and(|s| s.field_with_name("event_id").is_ok());
        let mut by_key: BTreeMap<(&str, Option<NaiveDate>), Vec<&DataFile>> = BTreeMap::new();
        for f in files.iter().filter(|f| f.bytes < options.target_bytes) {
            let Some(date) = partition_of(&f.path) else { continue };
            let day = if by_event { accepted.get(&f.path).map(|t| vn_date(*t)) } else { None };
            by_key.entry((date, day)).or_default().push(f);
        }
        for ((date, _), mut small) in by_key {
            if small.len() < min_files {
                continue;
            }
            small.sort_by_key(|f| (f.min_time_us, f.max_time_us));
            let mut groups: Vec<Vec<DataFile>> = Vec::new();
            let mut current: Vec<DataFile> = Vec::new();
            let mut bytes = 0;
            for f in small {
                if !current.is_empty() && bytes + f.bytes > options.target_bytes {
                    groups.push(std::mem::take(&mut current));
                    bytes = 0;
                }
                bytes += f.bytes;
                current.push(f.clone());
            }
            groups.push(current);
            groups.retain(|g| g.len() >= 2);
            if !groups.is_empty() {
                partitions.push(PartitionPlan { table: table.clone(), date: date.to_string(), groups });
            }
        }
    }
    CompactPlan { version: snap.version, partitions, accepted }
}

/// Runs a plan: for each partition, merges every group into a new file (through
/// `rewrite`, if given), stages the new files, and publishes one commit that removes
/// the merged files and adds the new ones. `progress` is called with the bytes read so
/// far. Safe while writers and other compactors commit to the same store.
pub fn compact(
    store: &Store,
    plan: &CompactPlan,
    rewrite: Option<&Rewrite<'_>>,
    progress: &mut dyn FnMut(u64),
) -> Result<CompactReport, StorageError> {
    let mut report = CompactReport::default();
    let mut after = plan.version;
    // Every file that commits after `plan.version` removed, as far as seen: a later
    // partition must be checked against commits an earlier one already went past.
    let mut gone: HashSet<String> = HashSet::new();
    let mut done = 0u64;
    for part in &plan.partitions {
        let mut staged: Option<Staged> = None;
        let mut rows = (0u64, 0u64);
        let result = (|| -> Result<(), StorageError> {
            for group in &part.groups {
                let (new, read, written) = merge_group(store, &part.table, group, &plan.accepted, rewrite)?;
                rows.0 += read;
                rows.1 += written;
                match staged.as_mut() {
                    Some(s) => s.absorb(new),
                    None => staged = Some(new),
                }
                done += group.iter().map(|f| f.bytes).sum::<u64>();
                progress(done);
            }
            Ok(())
        })();
        let Some(staged) = staged else {
            result?;
            continue;
        };
        if let Err(e) = result {
            store.discard(staged);
            return Err(e);
        }
        let remove: Vec<String> = part.groups.iter().flatten().map(|f| f.path.clone()).collect();
        match publish_removal(store, &staged, &remove, &mut after, &mut gone)? {
            Some(version) => {
                report.commits += 1;
                report.files_removed += remove.len();
                report.files_added += staged.files.len();
                report.bytes_read += part.bytes();
                report.bytes_written += staged.files.iter().map(|f| f.bytes).sum::<u64>();
                report.rows_read += rows.0;
                report.rows_written += rows.1;
                debug!(version, table = %part.table, date = %part.date, merged = remove.len(), "compacted");
            }
            None => {
                info!(table = %part.table, date = %part.date, "another commit removed files this compaction merged; left for the next run");
                report.conflicts += 1;
                store.discard(staged);
            }
        }
    }
    Ok(report)
}

/// Reads one group, rewrites and stages it; returns the staged file(s), rows read and
/// rows staged.
fn merge_group(
    store: &Store,
    table: &str,
    group: &[DataFile],
    accepted: &BTreeMap<String, DateTime<Utc>>,
    rewrite: Option<&Rewrite<'_>>,
) -> Result<(Staged, u64, u64), StorageError> {
    let mut batches = Vec::new();
    for f in group {
        batches.extend(store.read_file(f, None)?);
    }
    let read: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if let Some(rewrite) = rewrite {
        batches =
            rewrite(table, batches).map_err(|source| StorageError::Rewrite { table: table.to_string(), source })?;
    }
    let staged = match batches.first() {
        Some(first) => {
            let merged = concat_batches(&first.schema(), &batches)?;
            drop(batches);
            store.stage(&[(table, merged)])?
        }
        None => store.stage(&[])?,
    };
    let written: u64 = staged.files.iter().map(|f| f.rows).sum();
    if rewrite.is_none() && written != read {
        let e = StorageError::Rewrite {
            table: table.to_string(),
            source: format!("merging {read} rows staged {written}").into(),
        };
        store.discard(staged);
        return Err(e);
    }
    // The rows keep the acceptance time of the files they come from (all on one
    // Vietnam day for event tables: see `plan`).
    let at = group.iter().filter_map(|f| f.accepted_at.or_else(|| accepted.get(&f.path).copied())).max();
    let mut staged = staged;
    for f in &mut staged.files {
        f.accepted_at = at;
    }
    Ok((staged, read, written))
}

/// Publishes a commit that removes `remove` (and adds what is staged) right after
/// `after`, moving `after` over newer commits. `gone` holds the files removed by the
/// commits already gone over since the files to remove were known to be live. Returns
/// the new version, or `None` if any of `remove` is gone.
fn publish_removal(
    store: &Store,
    staged: &Staged,
    remove: &[String],
    after: &mut Option<u64>,
    gone: &mut HashSet<String>,
) -> Result<Option<u64>, StorageError> {
    for _ in 0..MAX_ATTEMPTS {
        if remove.iter().any(|p| gone.contains(p)) {
            return Ok(None);
        }
        match store.publish_removal(staged, remove, Utc::now(), *after)? {
            Publish::Committed(info) => {
                *after = Some(info.version);
                return Ok(Some(info.version));
            }
            Publish::Behind(commits) => {
                gone.extend(commits.iter().flat_map(|c| c.remove.iter().cloned()));
                *after = commits.last().map(|c| c.version).or(*after);
            }
        }
    }
    Err(StorageError::Contention(MAX_ATTEMPTS))
}

/// What a retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Date partitions dropped, as (table, date).
    pub partitions: Vec<(String, String)>,
    pub files_removed: usize,
    pub bytes_removed: u64,
    pub rows_removed: u64,
}

/// Drops whole date partitions older than each table's retention, in days, with one
/// commit that removes their files: with `days = 90`, a partition is dropped once its
/// Vietnam date is more than 90 days before today's (Vietnam) date. Tables not in
/// `days` are kept forever. The files stay on disk until [`vacuum`].
pub fn apply_retention(
    store: &Store,
    days: &BTreeMap<String, u32>,
    now: DateTime<Utc>,
) -> Result<RetentionReport, StorageError> {
    let today = vn_date(now);
    for _ in 0..MAX_ATTEMPTS {
        let snap = store.refresh()?;
        let mut report = RetentionReport::default();
        let mut remove = Vec::new();
        for (table, keep) in days {
            let cutoff = today - chrono::Days::new(u64::from(*keep));
            let mut dropped: BTreeMap<&str, ()> = BTreeMap::new();
            for f in snap.files(table) {
                let Some(date) = partition_of(&f.path) else { continue };
                let Ok(d) = date.parse::<NaiveDate>() else { continue };
                if d < cutoff {
                    dropped.insert(date, ());
                    remove.push(f.path.clone());
                    report.files_removed += 1;
                    report.bytes_removed += f.bytes;
                    report.rows_removed += f.rows;
                }
            }
            report.partitions.extend(dropped.into_keys().map(|d| (table.clone(), d.to_string())));
        }
        if remove.is_empty() {
            return Ok(report);
        }
        let staged = store.stage(&[])?;
        match store.publish_removal(&staged, &remove, now, snap.version)? {
            Publish::Committed(info) => {
                info!(version = info.version, files = remove.len(), partitions = ?report.partitions, "retention dropped old partitions");
                return Ok(report);
            }
            // Plan again from the newer snapshot: some files may be gone already.
            Publish::Behind(_) => continue,
        }
    }
    Err(StorageError::Contention(MAX_ATTEMPTS))
}

/// What a vacuum run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumReport {
    pub files_deleted: usize,
    pub bytes_deleted: u64,
    /// Removed files still within the grace period, left on disk.
    pub files_pending: usize,
}

/// Deletes the files removed by commits made more than `grace` before `now`. Files
/// already gone are skipped, so it is idempotent and several processes may run it.
/// Files that no commit names (orphans) are never deleted: they may be the staged
/// files of a commit in flight. Nor is a file whose removal is not yet in its table's
/// Delta log ([`crate::delta::exported_through`]).
pub fn vacuum(store: &Store, grace: Duration, now: DateTime<Utc>) -> Result<VacuumReport, StorageError> {
    let snap = store.refresh()?;
    // A removed file is deleted only once its removal is in its table's Delta log, so
    // a Delta reader never meets a missing file: catch up first.
    if let Err(e) = crate::delta::export(store, None) {
        warn!(error = %e, "the Delta logs could not be brought up to date; files they still name are kept");
    }
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let mut report = VacuumReport::default();
    let mut through = store.vacuumed_through().lock().expect("vacuum lock");
    let mut complete = true;
    let mut new_through = *through;
    for (version, at, paths) in &snap.removed {
        if through.is_some_and(|t| *version <= t) {
            continue;
        }
        if now.signed_duration_since(*at) < grace {
            report.files_pending += paths.len();
            complete = false;
            continue;
        }
        for rel in paths {
            if snap.is_live(rel) {
                continue;
            }
            let table = rel.strip_prefix("tables/").and_then(|p| p.split('/').next()).unwrap_or_default();
            if crate::delta::exported_through(store, table) < Some(*version) {
                report.files_pending += 1;
                complete = false;
                continue;
            }
            let path = store.root().join(rel);
            let bytes = store.fs().file_len(&path).unwrap_or(0);
            match store.fs().remove_file(&path) {
                Ok(()) => {
                    report.files_deleted += 1;
                    report.bytes_deleted += bytes;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "could not delete a removed data file");
                    complete = false;
                }
            }
        }
        if complete {
            new_through = Some(*version);
        }
    }
    *through = new_through;
    if report.files_deleted > 0 {
        info!(files = report.files_deleted, bytes = report.bytes_deleted, "vacuum deleted removed data files");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::schema::{DEAD_LETTERS, DeadLetter, dead_letter_batch};
    use arrow::array::{AsArray, TimestampMicrosecondArray};
    use arrow::datatypes::TimestampMicrosecondType;

    const DAY: &str = "2026-03-10T03:00:00Z";

    /// `n` dead letters with distinct origins `tag#i`, spread over one Vietnam day.
    fn letters(tag: &str, n: usize, at: &str) -> RecordBatch {
        let t: DateTime<Utc> = at.parse().unwrap();
        dead_letter_batch(
            &(0..n)
                .map(|i| DeadLetter {
                    // Out of order on purpose: merged files must come out sorted.
                    received_at: t + chrono::Duration::seconds(((i * 7919) % 3600) as i64),
                    origin: format!("{tag}#{i}"),
                    error: "bad".into(),
                    raw: vec![i as u8],
                })
                .collect::<Vec<_>>(),
        )
    }

    fn commit(store: &Store, tag: &str, n: usize, at: &str) {
        store.commit(&[(DEAD_LETTERS, letters(tag, n, at))], BTreeMap::new(), Utc::now()).unwrap();
    }

    /// Every (origin, received_at) in the table, from the current snapshot's files.
    fn rows(store: &Store) -> Vec<(String, i64)> {
        let snap = store.refresh().unwrap();
        let mut out = Vec::new();
        for f in snap.files(DEAD_LETTERS) {
            for b in store.read_file(f, None).unwrap() {
                let origins = b.column_by_name("origin").unwrap().as_string::<i32>();
                let times = b.column_by_name("received_at").unwrap().as_primitive::<TimestampMicrosecondType>();
                out.extend(origins.iter().zip(times.values()).map(|(o, t)| (o.unwrap().to_string(), *t)));
            }
        }
        out.sort();
        out
    }

    fn options(min_files: usize) -> CompactOptions {
        CompactOptions { target_bytes: DEFAULT_TARGET_BYTES, min_files }
    }

    fn run(store: &Store, options: &CompactOptions) -> CompactReport {
        let plan = plan(&store.refresh().unwrap(), options);
        compact(store, &plan, None, &mut |_| {}).unwrap()
    }

    #[test]
    fn merging_keeps_every_row_once_sorted_by_time_and_hides_the_merged_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        for i in 0..10 {
            commit(&store, &format!("c{i}"), 50, DAY);
        }
        let before = rows(&store);
        let old: Vec<String> = store.snapshot().files(DEAD_LETTERS).iter().map(|f| f.path.clone()).collect();
        assert_eq!(old.len(), 10);

        let report = run(&store, &options(4));
        assert_eq!((report.commits, report.files_removed, report.files_added), (1, 10, 1));
        assert_eq!((report.rows_read, report.rows_written), (500, 500));
        assert_eq!(rows(&store), before, "every row exactly once");

        // A new snapshot, in this process or another, sees only the merged file.
        for snap in [store.snapshot(), Store::open(dir.path(), "r").unwrap().snapshot()] {
            let files = snap.files(DEAD_LETTERS);
            assert_eq!(files.len(), 1);
            assert!(old.iter().all(|p| !snap.is_live(p)));
            assert_eq!(files[0].rows, 500);
            let times: Vec<i64> = store
                .read_file(&files[0], Some(&["received_at"]))
                .unwrap()
                .iter()
                .flat_map(|b| {
                    b.column(0).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap().values().to_vec()
                })
                .collect();
            assert!(times.is_sorted(), "rows are sorted by time");
            assert_eq!((files[0].min_time_us, files[0].max_time_us), (times[0], times[times.len() - 1]));
        }
        // The merged files are still on disk for older readers, and not orphans.
        assert!(old.iter().all(|p| dir.path().join(p).exists()));
        assert!(store.orphans().unwrap().is_empty());
        // Nothing left to merge.
        assert_eq!(run(&store, &options(2)), CompactReport::default());
    }

    #[test]
    fn partitions_below_min_files_are_left_alone_and_groups_respect_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        for i in 0..3 {
            commit(&store, &format!("a{i}"), 20, "2026-03-10T03:00:00Z");
        }
        for i in 0..6 {
            commit(&store, &format!("b{i}"), 20, "2026-03-11T03:00:00Z");
        }
        let snap = store.snapshot();
        let one = snap.files(DEAD_LETTERS)[0].bytes;
        // Room for two files per group: the 6 files of the 11th become 3 files.
        let opts = CompactOptions { target_bytes: one * 2 + one / 2, min_files: 4 };
        let p = plan(&snap, &opts);
        assert_eq!(p.partitions.len(), 1);
        assert_eq!(p.partitions[0].date, "2026-03-11");
        assert!(p.partitions[0].groups.iter().all(|g| g.len() == 2), "{:?}", p.partitions[0].groups);
        let before = rows(&store);
        let report = compact(&store, &p, None, &mut |_| {}).unwrap();
        assert_eq!((report.files_removed, report.files_added), (6, 3));
        assert_eq!(rows(&store), before);
        assert_eq!(store.snapshot().files(DEAD_LETTERS).len(), 3 + 3);
    }

    #[test]
    fn an_append_published_between_stage_and_publish_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let compactor = Store::open(dir.path(), "c").unwrap();
        let writer = Store::open(dir.path(), "w").unwrap();
        for i in 0..5 {
            commit(&writer, &format!("c{i}"), 10, DAY);
        }
        let plan = plan(&compactor.refresh().unwrap(), &options(2));
        // The writer appends to the same partition while the compaction is staged:
        // the compactor's publish finds itself behind and publishes after it.
        let mut appended = false;
        let report = compact(&compactor, &plan, None, &mut |_| {
            if !appended {
                commit(&writer, "late", 7, DAY);
                appended = true;
            }
        })
        .unwrap();
        assert_eq!((report.commits, report.conflicts), (1, 0));
        let all = rows(&Store::open(dir.path(), "r").unwrap());
        assert_eq!(all.len(), 57);
        assert_eq!(all.iter().filter(|(o, _)| o.starts_with("late#")).count(), 7);
        let snap = writer.refresh().unwrap();
        assert_eq!(snap.files(DEAD_LETTERS).len(), 2, "the merged file and the late append");
    }

    #[test]
    fn a_second_compactor_racing_the_first_does_not_duplicate_rows() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path(), "a").unwrap();
        let b = Store::open(dir.path(), "b").unwrap();
        for i in 0..6 {
            commit(&a, &format!("c{i}"), 10, DAY);
        }
        let before = rows(&a);
        // Both plan from the same snapshot; b publishes while a is staging.
        let plan_a = plan(&a.refresh().unwrap(), &options(2));
        let plan_b = plan(&b.refresh().unwrap(), &options(2));
        let mut raced = None;
        let report_a = compact(&a, &plan_a, None, &mut |_| {
            if raced.is_none() {
                raced = Some(compact(&b, &plan_b, None, &mut |_| {}).unwrap());
            }
        })
        .unwrap();
        assert_eq!(raced.unwrap().commits, 1);
        assert_eq!((report_a.commits, report_a.conflicts), (0, 1));
        assert_eq!(rows(&Store::open(dir.path(), "r").unwrap()), before, "no row twice, none lost");
        assert!(a.orphans().unwrap().is_empty(), "the loser's staged files are discarded");
    }

    #[test]
    fn a_later_partition_is_checked_against_commits_an_earlier_one_went_past() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path(), "a").unwrap();
        let b = Store::open(dir.path(), "b").unwrap();
        for i in 0..3 {
            commit(&a, &format!("x{i}"), 10, "2026-03-10T03:00:00Z");
            commit(&a, &format!("y{i}"), 10, "2026-03-11T03:00:00Z");
        }
        let before = rows(&a);
        let plan_a = plan(&a.refresh().unwrap(), &options(2));
        assert_eq!(plan_a.partitions.iter().map(|p| p.date.as_str()).collect::<Vec<_>>(), ["2026-03-10", "2026-03-11"]);
        // While a merges the 10th, b compacts the 11th; a's publish of the 10th goes
        // past b's commit, and its 11th must then see that its files are gone.
        let mut plan_b = plan(&b.refresh().unwrap(), &options(2));
        plan_b.partitions.retain(|p| p.date == "2026-03-11");
        let mut raced = false;
        let report_a = compact(&a, &plan_a, None, &mut |_| {
            if !raced {
                raced = true;
                assert_eq!(compact(&b, &plan_b, None, &mut |_| {}).unwrap().commits, 1);
            }
        })
        .unwrap();
        assert_eq!((report_a.commits, report_a.conflicts), (1, 1));
        assert_eq!(rows(&Store::open(dir.path(), "r").unwrap()), before, "no row twice, none lost");
    }

    #[test]
    fn a_rewrite_hook_sees_the_merged_rows_and_its_output_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        for i in 0..4 {
            commit(&store, &format!("c{i}"), 10, DAY);
        }
        let seen = std::sync::Mutex::new(Vec::new());
        let keep_first: &Rewrite<'_> = &|table, batches| {
            seen.lock().unwrap().push((table.to_string(), batches.iter().map(RecordBatch::num_rows).sum::<usize>()));
            Ok(vec![batches[0].slice(0, 3)])
        };
        let p = plan(&store.refresh().unwrap(), &options(2));
        let report = compact(&store, &p, Some(keep_first), &mut |_| {}).unwrap();
        assert_eq!(*seen.lock().unwrap(), [(DEAD_LETTERS.to_string(), 40)]);
        assert_eq!((report.rows_read, report.rows_written), (40, 3));
        assert_eq!(store.snapshot().rows(DEAD_LETTERS), 3);
    }

    #[test]
    fn compacted_files_keep_when_their_rows_were_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        let t0: DateTime<Utc> = "2026-03-10T02:00:00Z".parse().unwrap();
        for i in 0..3 {
            let at = t0 + chrono::Duration::minutes(i);
            store.commit(&[(DEAD_LETTERS, letters(&format!("c{i}"), 5, DAY))], BTreeMap::new(), at).unwrap();
        }
        run(&store, &options(2));
        let reopened = Store::open(dir.path(), "r").unwrap().snapshot();
        let merged = &reopened.files(DEAD_LETTERS)[0];
        let newest = t0 + chrono::Duration::minutes(2);
        assert_eq!(merged.accepted_at, Some(newest));
        let (_, at, paths) = reopened.history.last().unwrap();
        assert_eq!((at, paths), (&newest, &vec![merged.path.clone()]), "not the compaction's own time");
        assert_eq!(reopened.removed.len(), 1);
    }

    #[test]
    fn retention_drops_only_partitions_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        let now: DateTime<Utc> = "2026-06-30T05:00:00Z".parse().unwrap();
        commit(&store, "old", 5, "2026-03-31T05:00:00Z"); // 91 days before
        commit(&store, "edge", 4, "2026-04-01T05:00:00Z"); // 90 days before: kept
        commit(&store, "new", 3, "2026-06-29T05:00:00Z");
        let report = apply_retention(&store, &BTreeMap::from([(DEAD_LETTERS.to_string(), 90)]), now).unwrap();
        assert_eq!(report.partitions, [(DEAD_LETTERS.to_string(), "2026-03-31".to_string())]);
        assert_eq!((report.files_removed, report.rows_removed), (1, 5));
        let left: Vec<String> = rows(&store).into_iter().map(|(o, _)| o.split('#').next().unwrap().into()).collect();
        assert_eq!(left.iter().collect::<HashSet<_>>(), HashSet::from([&"edge".to_string(), &"new".to_string()]));
        // Tables without a retention are kept forever; running again removes nothing.
        assert_eq!(apply_retention(&store, &BTreeMap::new(), now).unwrap(), RetentionReport::default());
        let again = apply_retention(&store, &BTreeMap::from([(DEAD_LETTERS.to_string(), 90)]), now).unwrap();
        assert_eq!(again, RetentionReport::default());
    }

    #[test]
    fn vacuum_deletes_only_removed_files_past_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        for i in 0..3 {
            commit(&store, &format!("c{i}"), 10, DAY);
        }
        let merged: Vec<String> = store.snapshot().files(DEAD_LETTERS).iter().map(|f| f.path.clone()).collect();
        run(&store, &options(2));
        // An orphan (a crashed or in-flight commit's file) must survive any vacuum.
        let live = store.snapshot().files(DEAD_LETTERS)[0].clone();
        let orphan = store.path_of(&live).with_file_name("inflight-1-1.parquet");
        fs::copy(store.path_of(&live), &orphan).unwrap();
        let grace = Duration::from_secs(3600);

        let now = Utc::now();
        let early = vacuum(&store, grace, now).unwrap();
        assert_eq!((early.files_deleted, early.files_pending), (0, 3));
        assert!(merged.iter().all(|p| dir.path().join(p).exists()));

        let later = now + chrono::Duration::hours(2);
        let report = vacuum(&store, grace, later).unwrap();
        assert_eq!((report.files_deleted, report.files_pending), (3, 0));
        assert!(merged.iter().all(|p| !dir.path().join(p).exists()));
        assert!(store.path_of(&live).exists(), "live files stay");
        assert!(orphan.exists(), "orphans are reported, never deleted");
        assert_eq!(store.orphans().unwrap(), vec![orphan]);
        // Idempotent, also from a fresh process that has not vacuumed before.
        assert_eq!(vacuum(&store, grace, later).unwrap(), VacuumReport::default());
        let other = Store::open(dir.path(), "v").unwrap();
        assert_eq!(vacuum(&other, grace, later).unwrap(), VacuumReport::default());
        assert_eq!(rows(&other).len(), 30);
    }
}
