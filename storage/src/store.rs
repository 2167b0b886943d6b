//! The store: Parquet files per table, made visible by an atomic commit log.
//!
//! Layout under the data directory:
//!
//! ```text
//! tables/<table>/<YYYY-MM-DD>/<writer>-<stage>-<n>.parquet     data, by Vietnam date
//! _log/<version:020>.json                                      one commit per file
//! ```
//!
//! A commit writes its Parquet files and fsyncs them and their directories, then
//! publishes a commit record `_log/<version>.json` by hard-linking a fully written,
//! fsynced temporary file to that name. The link fails if the name exists, so two
//! writers can never both take a version (put-if-absent, as Delta Lake does on local
//! disks); the loser re-reads the log and retries with the next version. Readers only
//! see files named by a commit record, so a crash at any point leaves either the whole
//! commit or none of it. A commit record also carries the source positions (e.g. Kafka
//! offsets) that its data covers: data and positions become durable together.
//!
//! What is fsynced, and when (`storage/tests/crash_consistency.rs` replays a power
//! loss after every operation of real commits to check it):
//!
//! - opening fsyncs the root (its `_log/` and `tables/` entries) and, for every
//!   directory on the way to the root that opening created, its parent;
//! - staging fsyncs every data file, then every directory on the way to it, whoever
//!   made them: the date directory (the file's entry), the table directory (the date
//!   directory's entry) and `tables/` (the table directory's entry), each once per
//!   call. Another writer may have just made a directory and not fsynced it yet;
//! - publishing fsyncs the record before linking it, and `_log/` after. Once the link
//!   is made the commit has happened: a failing refresh afterwards is logged, not
//!   returned, and a failing fsync of `_log/` is [`StorageError::CommitUnconfirmed`]:
//!   the commit may or may not survive a power loss, so it is neither a success nor
//!   "nothing was written". The store then takes no more writes
//!   ([`StorageError::Halted`]), as PostgreSQL stops at a failed fsync: a later commit
//!   could become durable while this one is lost, leaving a gap in the log. Restarting
//!   reads what is really on disk. (A failing fsync before the link is a plain error:
//!   nothing names those files, and a retry writes new ones.)
//!
//! Every file operation goes through an [`Fs`] (see [`crate::fs`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use arrow::array::{Array, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::{sort_to_indices, take_record_batch};
use arrow::datatypes::Schema;
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::delta::{self, DEFAULT_CHECKPOINT_INTERVAL, DELTA_LOG_DIR, Exporter};
use crate::fs::{DataReader, Fs, StdFs, write_synced};
use crate::object::{Bucket, ObjectFs, is_bucket_url};
use crate::schema::{adapt_batch, schema_of, time_column_of};

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("storage I/O error at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("Parquet error in {path}: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("commit log entry {path} is corrupt: {message}")]
    CorruptLog { path: PathBuf, message: String },
    #[error("Delta log {path}: {message}")]
    DeltaLog { path: PathBuf, message: String },
    #[error("unknown table `{0}`")]
    UnknownTable(String),
    #[error("could not take a commit version after {0} attempts: too much contention")]
    Contention(usize),
    #[error("compaction of `{table}`: {source}")]
    Rewrite { table: String, source: Box<dyn std::error::Error + Send + Sync> },
    /// The commit record was published (linked) as `version`, but fsyncing the log
    /// directory failed: the commit is visible now and may or may not survive a power
    /// loss. Not a failure to commit: the staged files must not be discarded. The
    /// store takes no more writes afterwards (see [`StorageError::Halted`]).
    #[error(
        "commit {version} was published as {path} but could not be confirmed durable (fsync of the log directory: {source})"
    )]
    CommitUnconfirmed { version: u64, path: PathBuf, source: io::Error },
    /// A commit of this process could not be confirmed durable earlier; nothing more is
    /// written until the process restarts and reads what is on disk.
    #[error(
        "the store takes no more writes: commit {version} could not be confirmed durable; restart to recover from what is on disk"
    )]
    Halted { version: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.to_path_buf(), source }
}

/// One data file, as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    pub table: String,
    /// Relative to the data directory, `/`-separated.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// Earliest and latest event time (µs) in the file (`received_at` for dead letters).
    pub min_time_us: i64,
    pub max_time_us: i64,
    /// When the rows were accepted, for a file that rewrites rows accepted by earlier
    /// commits (compaction); `None` means when this file's commit was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<DateTime<Utc>>,
}

/// A commit record: `_log/<version>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub version: u64,
    pub writer: String,
    pub committed_at: DateTime<Utc>,
    #[serde(default)]
    pub add: Vec<DataFile>,
    /// Files this commit takes out of the table: replaced by its `add` (compaction) or
    /// dropped (retention). A commit that removes files never adds new rows.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Source positions covered by this commit, e.g. `kafka:ioc.events:3` -> next offset.
    #[serde(default)]
    pub sources: BTreeMap<String, i64>,
}

/// What a reader sees: every live file and the latest source positions. It is also
/// what a checkpoint of the log holds (`_log/<version>.checkpoint.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last applied version, or `None` for an empty store.
    pub version: Option<u64>,
    pub files: BTreeMap<String, Vec<DataFile>>,
    pub sources: BTreeMap<String, i64>,
    /// (version, when the rows were accepted, files added), in version order: one entry
    /// for every commit that adds rows, and one per acceptance time for the files of a
    /// commit that rewrites rows (compaction), so that times are not strictly ordered.
    pub history: Vec<(u64, DateTime<Utc>, Vec<String>)>,
    /// Versions of the commits that removed files (compaction, retention): they rewrite
    /// or drop rows that earlier commits added, and add no new ones.
    pub rewrites: BTreeSet<u64>,
    /// (version, committed_at, files removed) for every commit that removed files, in
    /// version order. Readers of older snapshots may still read those files, so they are
    /// deleted only after a grace period (see [`crate::compact::vacuum`]).
    pub removed: Vec<(u64, DateTime<Utc>, Vec<String>)>,
}

impl Snapshot {
    pub fn files(&self, table: &str) -> &[DataFile] {
        self.files.get(table).map_or(&[], Vec::as_slice)
    }

    pub fn bytes(&self, table: &str) -> u64 {
        self.files(table).iter().map(|f| f.bytes).sum()
    }

    pub fn rows(&self, table: &str) -> u64 {
        self.files(table).iter().map(|f| f.rows).sum()
    }

    /// Whether a file is live in this snapshot.
    pub fn is_live(&self, path: &str) -> bool {
        self.files.values().flatten().any(|f| f.path == path)
    }

    fn apply(&mut self, c: &Commit) {
        if !c.remove.is_empty() {
            let gone: std::collections::HashSet<&str> = c.remove.iter().map(String::as_str).collect();
            for files in self.files.values_mut() {
                files.retain(|f| !gone.contains(f.path.as_str()));
            }
            self.removed.push((c.version, c.committed_at, c.remove.clone()));
        }
        for f in &c.add {
            self.files.entry(f.table.clone()).or_default().push(f.clone());
        }
        for (k, v) in &c.sources {
            self.sources.insert(k.clone(), *v);
        }
        if c.remove.is_empty() {
            self.history.push((c.version, c.committed_at, c.add.iter().map(|f| f.path.clone()).collect()));
        } else {
            self.rewrites.insert(c.version);
            // A rewrite keeps the acceptance time of the rows it rewrites (dedupe
            // windows and `as_of` depend on it); a removal alone accepts nothing.
            let mut by_time: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
            for f in &c.add {
                by_time.entry(f.accepted_at.unwrap_or(c.committed_at)).or_default().push(f.path.clone());
            }
            for (at, paths) in by_time {
                self.history.push((c.version, at, paths));
            }
        }
        self.version = Some(c.version);
    }
}

/// Data files written and fsynced, not yet visible: see [`Store::stage`].
#[derive(Debug)]
pub struct Staged {
    tag: String,
    pub(crate) files: Vec<DataFile>,
}

impl Staged {
    /// Takes over the files of another staged set, to publish them in one commit.
    pub(crate) fn absorb(&mut self, other: Staged) {
        self.files.extend(other.files);
    }
}

impl Staged {
    /// Adds the files of another staged set, so that one commit publishes both (e.g.
    /// when the data is too large to be staged in one call).
    pub fn extend(&mut self, other: Staged) {
        self.files.extend(other.files);
    }
}

/// What [`Store::publish`] did.
#[derive(Debug)]
pub enum Publish {
    Committed(CommitInfo),
    /// Other writers committed after the expected version; nothing was published.
    Behind(Vec<Commit>),
}

/// The result of a successful commit.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub version: u64,
    pub files: Vec<DataFile>,
}

struct Inner {
    root: PathBuf,
    writer: String,
    fs: Arc<dyn Fs>,
    /// For a store in a bucket: the readers' client of it (see [`Store::bucket`]).
    readers: Option<Bucket>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Numbers this process's staged file sets; versions are kept apart by the log.
    commit_lock: Mutex<u64>,
    zstd_level: i32,
    /// Removal commits up to this version were fully vacuumed by this process.
    pub(crate) vacuumed_through: Mutex<Option<u64>>,
    /// Numbers readiness probes, so that concurrent probes never share a file.
    probes: AtomicU64,
    /// Set to the version of a commit that could not be confirmed durable: no more
    /// writes from then on.
    halted: OnceLock<u64>,
    /// The Delta Lake export of every table (see [`crate::delta`]).
    delta: Mutex<Exporter>,
    /// A Delta checkpoint every this many versions of a table (0: none).
    checkpoint_interval: AtomicU64,
    /// Numbers temporary files, so that concurrent writes never share one.
    temps: AtomicU64,
    /// A checkpoint of the log every this many versions (0: none).
    log_checkpoint_interval: AtomicU64,
    /// The newest checkpoint of the log known to this process.
    log_checkpoint: Mutex<Option<u64>>,
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

const LOG_DIR: &str = "_log";
/// `_log/<version:020>.checkpoint.json`: the [`Snapshot`] at that version.
const CHECKPOINT_SUFFIX: &str = ".checkpoint.json";
/// A checkpoint of the commit log every this many versions, by default.
pub const DEFAULT_LOG_CHECKPOINT_INTERVAL: u64 = 500;
const TABLES_DIR: &str = "tables";

impl Store {
    /// Opens (creating if needed) the store at `root`. `writer` names this process in
    /// file names and commit records; use a distinct one per concurrent writer.
    ///
    /// A root that is a bucket URL, `s3://<bucket>/<prefix>`, opens the store in that
    /// bucket (CONTRACT.md §7.9), connecting as the standard `AWS_*` variables say
    /// (see [`crate::object`]).
    pub fn open(root: impl Into<PathBuf>, writer: impl Into<String>) -> Result<Self, StorageError> {
        let root = root.into();
        if !is_bucket_url(&root) {
            return Self::open_with_fs(root, writer, Arc::new(StdFs));
        }
        let url = root.to_string_lossy().into_owned();
        let fs = ObjectFs::from_env(&url).map_err(io_err(&root))?;
        Self::open_with_fs(root, writer, Arc::new(fs))
    }

    /// Whether a store was ever opened at `root` (a folder or a bucket URL, as for
    /// [`Store::open`]): its `_log/` exists.
    pub fn exists_at(root: &Path) -> Result<bool, StorageError> {
        let log = root.join(LOG_DIR);
        if !is_bucket_url(root) {
            return Ok(log.is_dir());
        }
        let fs = ObjectFs::from_env(&root.to_string_lossy()).map_err(io_err(root))?;
        Ok(fs.exists(&log))
    }

    /// Like [`Store::open`], doing every file operation through `fs` (see
    /// [`crate::fs`]): for tests that record operations or inject faults.
    pub fn open_with_fs(
        root: impl Into<PathBuf>,
        writer: impl Into<String>,
        fs: Arc<dyn Fs>,
    ) -> Result<Self, StorageError> {
        let root = root.into();
        // The directories on the way to the root that do not exist yet, root first.
        let mut missing = Vec::new();
        let mut dir = Some(root.as_path());
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty() && !fs.exists(d)) {
            missing.push(d.to_path_buf());
            dir = d.parent();
        }
        for dir in [root.join(LOG_DIR), root.join(TABLES_DIR)] {
            fs.create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        // Always, not only when created: another process may have just made them.
        sync_dir(&*fs, &root)?;
        for d in &missing {
            sync_dir(&*fs, &parent_of(d))?;
        }
        // Readers get a client of their own, on their own runtime, not the writer's.
        let readers = match fs.bucket() {
            Some(b) => Some(b.reconnect().map_err(io_err(&root))?),
            None => None,
        };
        let store = Store {
            inner: Arc::new(Inner {
                readers,
                root,
                writer: writer.into(),
                fs,
                snapshot: RwLock::new(Arc::new(Snapshot::default())),
                commit_lock: Mutex::new(0),
                zstd_level: 1,
                vacuumed_through: Mutex::new(None),
                probes: AtomicU64::new(0),
                halted: OnceLock::new(),
                delta: Mutex::new(Exporter::default()),
                checkpoint_interval: AtomicU64::new(DEFAULT_CHECKPOINT_INTERVAL),
                temps: AtomicU64::new(0),
                log_checkpoint_interval: AtomicU64::new(DEFAULT_LOG_CHECKPOINT_INTERVAL),
                log_checkpoint: Mutex::new(None),
            }),
        };
        // The log from its newest checkpoint on (the whole log without one), so that a
        // missing record after it is reported.
        let (snap, log, checkpoint) = store.open_log()?;
        *store.inner.snapshot.write().expect("snapshot lock") = Arc::new(snap);
        *store.inner.log_checkpoint.lock().expect("checkpoint lock") = checkpoint;
        // Brings the Delta logs up to date (builds them for a store written before
        // them); a failure is not the store's: the next commit tries again. After a
        // checkpoint, the exporter reads the commits its logs still lack itself.
        let exported = match checkpoint {
            None => delta::export_log(&store, &log),
            Some(_) => delta::export(&store, None),
        };
        if let Err(e) = exported {
            warn!(error = %e, "the Delta logs could not be brought up to date on open");
        }
        drop(log);
        let snap = store.snapshot();
        info!(
            version = ?snap.version,
            files = snap.files.values().map(Vec::len).sum::<usize>(),
            "opened store at {}",
            store.inner.root.display()
        );
        Ok(store)
    }

    /// Removal commits up to this version were fully vacuumed by this process.
    pub(crate) fn vacuumed_through(&self) -> &Mutex<Option<u64>> {
        &self.inner.vacuumed_through
    }

    pub(crate) fn delta_state(&self) -> &Mutex<Exporter> {
        &self.inner.delta
    }

    pub(crate) fn checkpoint_interval(&self) -> u64 {
        self.inner.checkpoint_interval.load(Ordering::Relaxed)
    }

    /// Writes a Delta checkpoint of a table every `n` of its versions (0: never);
    /// [`DEFAULT_CHECKPOINT_INTERVAL`] by default.
    pub fn set_delta_checkpoint_interval(&self, n: u64) {
        self.inner.checkpoint_interval.store(n, Ordering::Relaxed);
    }

    /// A fresh name for a temporary file in `_log/` (never read by anyone).
    pub(crate) fn temp_path(&self, kind: &str) -> PathBuf {
        let n = self.inner.temps.fetch_add(1, Ordering::Relaxed);
        self.inner.root.join(LOG_DIR).join(format!(".tmp-{kind}-{}-{n}", self.inner.writer))
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The file operations of this store.
    pub(crate) fn fs(&self) -> &dyn Fs {
        &*self.inner.fs
    }

    /// The bucket of a store in object storage (`None` on a disk), whose client
    /// readers such as DataFusion use to read the files at [`Store::path_of`]'s URLs.
    pub fn bucket(&self) -> Option<&Bucket> {
        self.inner.readers.as_ref()
    }

    /// Refuses writes once a commit could not be confirmed durable.
    fn check_not_halted(&self) -> Result<(), StorageError> {
        match self.inner.halted.get() {
            Some(&version) => Err(StorageError::Halted { version }),
            None => Ok(()),
        }
    }

    pub fn writer(&self) -> &str {
        &self.inner.writer
    }

    /// The current snapshot. It never changes; call again for newer commits.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.read().expect("snapshot lock").clone()
    }

    /// Applies commits written since the last refresh (by this or another writer).
    pub fn refresh(&self) -> Result<Arc<Snapshot>, StorageError> {
        let current = self.snapshot();
        let commits = self.commits_after(current.version)?;
        if commits.is_empty() {
            return Ok(current);
        }
        let mut snap = (*current).clone();
        for c in &commits {
            snap.apply(c);
        }
        let snap = Arc::new(snap);
        let mut slot = self.inner.snapshot.write().expect("snapshot lock");
        // Another thread may have refreshed further meanwhile: never go back.
        if slot.version < snap.version {
            *slot = snap.clone();
        }
        Ok(slot.clone())
    }

    /// The commit records after `after` (all of them for `None`), in version order.
    ///
    /// Probes `_log/<v>.json` for `v = after + 1, after + 2, ...` until one is missing,
    /// so a refresh costs one failed open when nothing is new, however long the log.
    /// (Opening the store lists the whole log once, which also detects gaps.)
    pub fn commits_after(&self, after: Option<u64>) -> Result<Vec<Commit>, StorageError> {
        let dir = self.inner.root.join(LOG_DIR);
        let mut out = Vec::new();
        for v in after.map_or(0, |v| v + 1).. {
            let path = dir.join(log_name(v));
            let text = match self.inner.fs.read(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(StorageError::Io { path, source: e }),
            };
            out.push(parse_commit(&path, v, &text)?);
        }
        Ok(out)
    }

    /// The state at opening: the newest readable checkpoint of the log (or nothing)
    /// with the commit records after it applied; those records; and the checkpoint's
    /// version. One listing of `_log/`.
    fn open_log(&self) -> Result<(Snapshot, Vec<Commit>, Option<u64>), StorageError> {
        let dir = self.inner.root.join(LOG_DIR);
        let (mut versions, mut checkpoints) = (Vec::new(), Vec::new());
        for entry in self.inner.fs.read_dir(&dir).map_err(io_err(&dir))? {
            let Some(name) = entry.name.to_str() else { continue };
            if let Some(v) = name.strip_suffix(CHECKPOINT_SUFFIX).and_then(|n| n.parse::<u64>().ok()) {
                checkpoints.push(v);
            } else if let Some(v) = name.strip_suffix(".json").and_then(|n| n.parse::<u64>().ok()) {
                versions.push(v);
            }
        }
        versions.sort_unstable();
        checkpoints.sort_unstable();
        // The newest checkpoint that reads back whole; an unreadable one is skipped
        // (the records it sums up are all still there).
        let mut snap = Snapshot::default();
        let mut checkpoint = None;
        for &cp in checkpoints.iter().rev() {
            match self.read_checkpoint(cp) {
                Ok(s) => {
                    snap = s;
                    checkpoint = Some(cp);
                    break;
                }
                Err(e) => warn!(version = cp, error = %e, "skipping an unreadable checkpoint of the commit log"),
            }
        }
        let from = checkpoint.map_or(0, |v| v + 1);
        versions.retain(|&v| v >= from);
        let log = self.read_versions(from, versions)?;
        for c in &log {
            snap.apply(c);
        }
        if let Some(cp) = checkpoint {
            debug!(checkpoint = cp, after = log.len(), "opened the commit log from a checkpoint");
        }
        Ok((snap, log, checkpoint))
    }

    fn read_checkpoint(&self, version: u64) -> Result<Snapshot, StorageError> {
        let path = self.inner.root.join(LOG_DIR).join(checkpoint_name(version));
        let text = self.inner.fs.read(&path).map_err(io_err(&path))?;
        let snap: Snapshot = serde_json::from_slice(&text)
            .map_err(|e| StorageError::CorruptLog { path: path.clone(), message: e.to_string() })?;
        if snap.version != Some(version) {
            let message = format!("holds version {:?}", snap.version);
            return Err(StorageError::CorruptLog { path, message });
        }
        Ok(snap)
    }

    /// Writes a checkpoint of the log at the current snapshot if one is due: opening
    /// then reads it and the records after it, not every record since the first.
    /// Keeps the newest two. A failure is logged: a checkpoint only saves reading.
    fn maybe_checkpoint_log(&self) {
        let interval = self.inner.log_checkpoint_interval.load(Ordering::Relaxed);
        let snap = self.snapshot();
        let Some(version) = snap.version else { return };
        let mut last = self.inner.log_checkpoint.lock().expect("checkpoint lock");
        if interval == 0 || version + 1 < last.map_or(0, |v| v + 1) + interval {
            return;
        }
        let dir = self.inner.root.join(LOG_DIR);
        let path = dir.join(checkpoint_name(version));
        let body = serde_json::to_vec(&*snap).expect("a snapshot serialises");
        let tmp = dir.join(format!(".tmp-checkpoint-{}", self.inner.writer));
        // The records it sums up are made durable first (another writer's fsync may have
        // failed), so that a checkpoint never leads the log after a power loss.
        let written = self.inner.fs.sync_dir(&dir).and_then(|()| self.inner.fs.put_if_absent(&tmp, &path, &body));
        match written.and_then(|()| self.inner.fs.sync_dir(&dir)) {
            Ok(()) => debug!(version, bytes = body.len(), "wrote a checkpoint of the commit log"),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                warn!(version, error = %e, "could not write a checkpoint of the commit log");
                return;
            }
        }
        let previous = last.replace(version);
        // Older checkpoints than the one before are never read again.
        if let Ok(entries) = self.inner.fs.read_dir(&dir) {
            for e in entries {
                let old = e.name.to_str().and_then(|n| n.strip_suffix(CHECKPOINT_SUFFIX)?.parse::<u64>().ok());
                if old.is_some_and(|v| v < previous.unwrap_or(0).min(version)) {
                    let _ = self.inner.fs.remove_file(&dir.join(&e.name));
                }
            }
        }
    }

    /// Writes a checkpoint of the log every `n` versions (0: never);
    /// [`DEFAULT_LOG_CHECKPOINT_INTERVAL`] by default.
    pub fn set_log_checkpoint_interval(&self, n: u64) {
        self.inner.log_checkpoint_interval.store(n, Ordering::Relaxed);
    }

    /// The commit records `versions` (sorted), which must be `from, from + 1, ...`.
    fn read_versions(&self, from: u64, versions: Vec<u64>) -> Result<Vec<Commit>, StorageError> {
        let dir = self.inner.root.join(LOG_DIR);
        let mut out = Vec::with_capacity(versions.len());
        for (expected, v) in (from..).zip(versions) {
            if v != expected {
                // A gap means a commit record is missing: never skip silently.
                return Err(StorageError::CorruptLog {
                    path: dir.join(log_name(expected)),
                    message: format!("missing (found version {v} after it)"),
                });
            }
            let path = dir.join(log_name(v));
            let text = self.inner.fs.read(&path).map_err(io_err(&path))?;
            out.push(parse_commit(&path, v, &text)?);
        }
        Ok(out)
    }

    /// Durably commits batches (table name, batch) and source positions as one unit,
    /// at the next free version. When this returns `Ok`, data and positions survive a
    /// crash or power loss.
    pub fn commit(
        &self,
        batches: &[(&str, RecordBatch)],
        sources: BTreeMap<String, i64>,
        committed_at: DateTime<Utc>,
    ) -> Result<CommitInfo, StorageError> {
        self.commit_replacing(batches, &[], sources, committed_at)
    }

    /// Like [`Store::commit`], and the same commit removes the files `remove` (paths as
    /// in [`DataFile::path`]): a rewrite such as compaction, atomic like any commit.
    pub fn commit_replacing(
        &self,
        batches: &[(&str, RecordBatch)],
        remove: &[String],
        sources: BTreeMap<String, i64>,
        committed_at: DateTime<Utc>,
    ) -> Result<CommitInfo, StorageError> {
        let staged = self.stage(batches)?;
        for _attempt in 0..64 {
            let after = self.refresh()?.version;
            match self.publish_record(&staged, remove, &sources, committed_at, after)? {
                Publish::Committed(info) => return Ok(info),
                Publish::Behind(_) => continue,
            }
        }
        self.discard(staged);
        Err(StorageError::Contention(64))
    }

    /// Step 1 of a commit: writes the data files, fsynced, in fsynced directories.
    /// Nothing is visible until [`Store::publish`] names them in a commit record.
    pub fn stage(&self, batches: &[(&str, RecordBatch)]) -> Result<Staged, StorageError> {
        self.check_not_halted()?;
        let tag = {
            let mut seq = self.inner.commit_lock.lock().expect("commit lock");
            *seq += 1;
            format!("{}-{}", self.inner.writer, *seq)
        };
        let mut files = Vec::new();
        // Every directory on the way to a staged file, each once: fsynced after the
        // files are written, whoever made them (see the module's notes).
        let mut dirs: Vec<PathBuf> = Vec::new();
        let tables_dir = self.inner.root.join(TABLES_DIR);
        let mut n = 0;
        for (table, batch) in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            let time_col = time_column_of(table);
            if schema_of(table).is_none() {
                return Err(StorageError::UnknownTable(table.to_string()));
            }
            for (day, part) in split_by_vn_day(batch, time_col)? {
                n += 1;
                let rel_dir = format!("{TABLES_DIR}/{table}/{day}");
                let table_dir = tables_dir.join(table);
                let dir = table_dir.join(day.to_string());
                self.inner.fs.create_dir_all(&dir).map_err(io_err(&dir))?;
                let rel = format!("{rel_dir}/{tag}-{n}.parquet");
                let path = self.inner.root.join(&rel);
                let (bytes, lo, hi) = self.write_parquet(&path, &part, time_col)?;
                push_unique(&mut dirs, dir);
                push_unique(&mut dirs, table_dir);
                files.push(DataFile {
                    table: table.to_string(),
                    path: rel,
                    rows: part.num_rows() as u64,
                    bytes,
                    min_time_us: lo,
                    max_time_us: hi,
                    accepted_at: None,
                });
            }
        }
        if !files.is_empty() {
            dirs.push(tables_dir);
        }
        for d in &dirs {
            sync_dir(&*self.inner.fs, d)?;
        }
        Ok(Staged { tag, files })
    }

    /// Step 2 of a commit: publishes the commit record of staged files as version
    /// `after + 1` (0 for `None`), and only then. If the log already holds commits after
    /// `after` (another writer got there first), nothing is published and those commits
    /// are returned, so that the caller can check them against its batch (e.g. for
    /// duplicate event ids) and try again after them: optimistic concurrency, as in
    /// Delta Lake. The record is published by hard-linking a fully written, fsynced
    /// temporary file to its name; the link fails if the name exists (put-if-absent).
    pub fn publish(
        &self,
        staged: &Staged,
        sources: &BTreeMap<String, i64>,
        committed_at: DateTime<Utc>,
        after: Option<u64>,
    ) -> Result<Publish, StorageError> {
        self.publish_record(staged, &[], sources, committed_at, after)
    }

    /// Like [`Store::publish`], for a commit that also removes live files (compaction,
    /// retention) and carries no source positions. On `Behind`, the caller must check
    /// that the newer commits did not remove any of `remove` before trying again.
    pub fn publish_removal(
        &self,
        staged: &Staged,
        remove: &[String],
        committed_at: DateTime<Utc>,
        after: Option<u64>,
    ) -> Result<Publish, StorageError> {
        self.publish_record(staged, remove, &BTreeMap::new(), committed_at, after)
    }

    fn publish_record(
        &self,
        staged: &Staged,
        remove: &[String],
        sources: &BTreeMap<String, i64>,
        committed_at: DateTime<Utc>,
        after: Option<u64>,
    ) -> Result<Publish, StorageError> {
        self.check_not_halted()?;
        let newer = self.commits_after(after)?;
        if !newer.is_empty() {
            self.refresh()?;
            return Ok(Publish::Behind(newer));
        }
        let version = after.map_or(0, |v| v + 1);
        let commit = Commit {
            version,
            writer: self.inner.writer.clone(),
            committed_at,
            add: staged.files.clone(),
            remove: remove.to_vec(),
            sources: sources.clone(),
        };
        let log_dir = self.inner.root.join(LOG_DIR);
        let tmp = log_dir.join(format!(".tmp-{}", staged.tag));
        let body = serde_json::to_vec(&commit).expect("commit serialises");
        let target = log_dir.join(log_name(version));
        let fs = &*self.inner.fs;
        let linked = fs.put_if_absent(&tmp, &target, &body);
        match linked {
            Ok(()) => {
                // The record has its name: the commit happened, whatever fails now.
                if let Err(source) = fs.sync_dir(&log_dir) {
                    let _ = self.inner.halted.set(version);
                    error!(
                        version, error = %source,
                        "commit record published but the log directory could not be fsynced: durability unknown; this store takes no more writes"
                    );
                    return Err(StorageError::CommitUnconfirmed { version, path: target, source });
                }
                if let Err(e) = self.refresh() {
                    warn!(version, error = %e, "committed, but the snapshot could not be refreshed; a later refresh applies it");
                }
                // The Delta logs follow the global log (which stays authoritative).
                if let Err(e) = delta::export(self, Some(&commit)) {
                    delta::warn_failed(version, &e);
                }
                self.maybe_checkpoint_log();
                debug!(version, files = staged.files.len(), "committed");
                Ok(Publish::Committed(CommitInfo { version, files: staged.files.clone() }))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                debug!(version, "version taken by another writer");
                let newer = self.commits_after(after)?;
                self.refresh()?;
                Ok(Publish::Behind(newer))
            }
            Err(e) => Err(StorageError::Io { path: target, source: e }),
        }
    }

    /// Removes staged files that will never be published. Best effort: files that no
    /// commit names are never read anyway (see [`Store::orphans`]).
    pub fn discard(&self, staged: Staged) {
        for f in staged.files {
            let path = self.path_of(&f);
            if let Err(e) = self.inner.fs.remove_file(&path) {
                warn!(path = %path.display(), error = %e, "could not remove a discarded data file");
            }
        }
    }

    fn write_parquet(&self, path: &Path, batch: &RecordBatch, time_col: &str) -> Result<(u64, i64, i64), StorageError> {
        let pq = |source| StorageError::Parquet { path: path.to_path_buf(), source };
        // Sort by time: row-group and page statistics then prune time ranges well.
        let times = time_column(batch, time_col)?;
        let (lo, hi) = (arrow::compute::min(times).unwrap_or(0), arrow::compute::max(times).unwrap_or(0));
        let order = sort_to_indices(batch.column_by_name(time_col).expect("time column"), None, None)?;
        let sorted = take_record_batch(batch, &order)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(self.inner.zstd_level).expect("valid level")))
            .set_created_by(concat!("ioc ", env!("CARGO_PKG_VERSION")).to_string())
            .build();
        let file = self.inner.fs.create_new(path).map_err(io_err(path))?;
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(pq)?;
        writer.write(&sorted).map_err(pq)?;
        let mut file = writer.into_inner().map_err(pq)?;
        file.sync_all().map_err(io_err(path))?;
        let bytes = file.size().map_err(io_err(path))?;
        Ok((bytes, lo, hi))
    }

    /// Absolute path of a data file.
    /// (For a store in a bucket, the text of its URL: `s3://<bucket>/<prefix>/...`.)
    pub fn path_of(&self, file: &DataFile) -> PathBuf {
        self.inner.root.join(&file.path)
    }

    /// Reads a data file, optionally only some columns, in the table's current schema
    /// (or its projection on `columns`, in the schema's order), whichever version wrote
    /// it: the columns a table gained since the file was written read as NULL
    /// ([`adapt_batch`]). So every reader (rebuilds, the rollup backfill, folding other
    /// writers' commits, compaction merging old and new files) gets one schema.
    pub fn read_file(&self, file: &DataFile, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>, StorageError> {
        let path = self.path_of(file);
        let target = schema_of(&file.table).map(|s| match columns {
            None => s,
            Some(cols) => Arc::new(Schema::new(
                s.fields().iter().filter(|f| cols.contains(&f.name().as_str())).cloned().collect::<Vec<_>>(),
            )),
        });
        let batches = match self.inner.fs.open_data(&path).map_err(io_err(&path))? {
            DataReader::File(f) => read_parquet(f, columns),
            DataReader::Bytes(b) => read_parquet(b, columns),
        };
        let pq = |source| StorageError::Parquet { path: path.clone(), source };
        batches
            .map_err(pq)?
            .into_iter()
            .map(|batch| match &target {
                Some(schema) => adapt_batch(&batch, schema),
                None => Ok(batch),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(StorageError::Arrow)
    }

    /// Whether the store can take writes now (for readiness): creates, fsyncs and
    /// removes a file of its own, so concurrent probes never touch each other's.
    pub fn check_writable(&self) -> Result<(), StorageError> {
        self.check_not_halted()?;
        let n = self.inner.probes.fetch_add(1, Ordering::Relaxed);
        let probe = self.inner.root.join(LOG_DIR).join(format!(".probe-{}-{n}", self.inner.writer));
        write_synced(&*self.inner.fs, &probe, b"").map_err(io_err(&probe))?;
        self.inner.fs.remove_file(&probe).map_err(io_err(&probe))
    }

    /// Files under `tables/` that no commit names: left by a crash between writing data
    /// and publishing its commit. They are never read.
    pub fn orphans(&self) -> Result<Vec<PathBuf>, StorageError> {
        let snap = self.snapshot();
        // Removed files awaiting their vacuum are named by a commit: not orphans.
        let live: std::collections::HashSet<&str> = snap
            .files
            .values()
            .flatten()
            .map(|f| f.path.as_str())
            .chain(snap.removed.iter().flat_map(|(_, _, paths)| paths.iter().map(String::as_str)))
            .collect();
        let mut out = Vec::new();
        let fs = &*self.inner.fs;
        let tables = self.inner.root.join(TABLES_DIR);
        for table in fs.read_dir(&tables).map_err(io_err(&tables))? {
            if !table.is_dir {
                continue;
            }
            let table = tables.join(table.name);
            for day in fs.read_dir(&table).map_err(io_err(&table))? {
                // The Delta log is not data.
                if !day.is_dir || day.name == DELTA_LOG_DIR {
                    continue;
                }
                let day = table.join(day.name);
                for f in fs.read_dir(&day).map_err(io_err(&day))? {
                    let p = day.join(f.name);
                    let rel = p.strip_prefix(&self.inner.root).unwrap_or(&p).to_string_lossy().replace('\\', "/");
                    if !live.contains(rel.as_str()) {
                        out.push(p);
                    }
                }
            }
        }
        if !out.is_empty() {
            warn!(count = out.len(), "found uncommitted data files; they are ignored");
        }
        Ok(out)
    }
}

fn push_unique(v: &mut Vec<PathBuf>, p: PathBuf) {
    if !v.contains(&p) {
        v.push(p);
    }
}

fn parse_commit(path: &Path, version: u64, text: &[u8]) -> Result<Commit, StorageError> {
    let c: Commit = serde_json::from_slice(text)
        .map_err(|e| StorageError::CorruptLog { path: path.to_path_buf(), message: e.to_string() })?;
    if c.version != version {
        return Err(StorageError::CorruptLog {
            path: path.to_path_buf(),
            message: format!("says version {}", c.version),
        });
    }
    Ok(c)
}

fn log_name(version: u64) -> String {
    format!("{version:020}.json")
}

fn checkpoint_name(version: u64) -> String {
    format!("{version:020}{CHECKPOINT_SUFFIX}")
}

/// The batches of a Parquet file, optionally only some columns.
fn read_parquet<T: parquet::file::reader::ChunkReader + 'static>(
    source: T,
    columns: Option<&[&str]>,
) -> Result<Vec<RecordBatch>, parquet::errors::ParquetError> {
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(source)?.with_batch_size(8192);
    if let Some(cols) = columns {
        let mask = ProjectionMask::columns(builder.parquet_schema(), cols.iter().copied());
        builder = builder.with_projection(mask);
    }
    builder.build()?.map(|b| b.map_err(Into::into)).collect()
}

fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<(), StorageError> {
    fs.sync_dir(dir).map_err(io_err(dir))
}

/// The directory holding `path`'s entry (`.` for a relative path of one component).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ if path.has_root() => path.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn time_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a TimestampMicrosecondArray, StorageError> {
    batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>()).ok_or_else(|| {
        StorageError::Arrow(arrow::error::ArrowError::SchemaError(format!("no timestamp column `{name}`")))
    })
}

/// Splits a batch by the Vietnam date of a timestamp column.
fn split_by_vn_day(batch: &RecordBatch, time_col: &str) -> Result<Vec<(NaiveDate, RecordBatch)>, StorageError> {
    let times = time_column(batch, time_col)?;
    let mut groups: BTreeMap<NaiveDate, Vec<u32>> = BTreeMap::new();
    for (i, t) in times.iter().enumerate() {
        let t = t.unwrap_or(0);
        let day = ioc_core::time::vn_date(DateTime::from_timestamp_micros(t).unwrap_or_default());
        groups.entry(day).or_default().push(i as u32);
    }
    if groups.len() == 1 {
        let (day, _) = groups.into_iter().next().expect("one group");
        return Ok(vec![(day, batch.clone())]);
    }
    groups.into_iter().map(|(day, idx)| Ok((day, take_record_batch(batch, &UInt32Array::from(idx))?))).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;

    use super::*;
    use crate::schema::{DEAD_LETTERS, DeadLetter, dead_letter_batch};

    /// `n` dead letters received at `at` (the other modules' tests use them too).
    pub(crate) fn letters(n: usize, at: &str) -> RecordBatch {
        let t: DateTime<Utc> = at.parse().unwrap();
        dead_letter_batch(
            &(0..n)
                .map(|i| DeadLetter {
                    received_at: t,
                    origin: format!("test#{i}"),
                    error: "bad".into(),
                    raw: vec![0xff, i as u8],
                })
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn opening_reads_the_newest_checkpoint_and_the_records_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w1").unwrap();
        store.set_log_checkpoint_interval(3);
        for i in 0..8 {
            let sources = BTreeMap::from([("kafka:t:0".to_string(), i)]);
            store.commit(&[(DEAD_LETTERS, letters(2, "2026-01-01T00:00:00Z"))], sources, Utc::now()).unwrap();
        }
        let mut cps: Vec<String> = fs::read_dir(dir.path().join(LOG_DIR))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.ends_with(CHECKPOINT_SUFFIX))
            .collect();
        cps.sort();
        // Due at versions 2 and 5; older ones than the one before the newest are gone.
        assert_eq!(cps, [checkpoint_name(2), checkpoint_name(5)]);
        let whole = store.snapshot();
        // The records the newest checkpoint sums up are not read again: removing one
        // changes nothing (without the checkpoint it would be a gap).
        fs::remove_file(dir.path().join(LOG_DIR).join(log_name(1))).unwrap();
        let reopened = Store::open(dir.path(), "w2").unwrap();
        assert_eq!(*reopened.snapshot(), *whole);
        assert_eq!(reopened.snapshot().sources["kafka:t:0"], 7);
        // An unreadable checkpoint is skipped for the one before it.
        fs::write(dir.path().join(LOG_DIR).join(checkpoint_name(5)), b"{ torn").unwrap();
        assert_eq!(*Store::open(dir.path(), "w3").unwrap().snapshot(), *whole);
    }

    #[test]
    fn committed_data_and_source_positions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w1").unwrap();
        let sources = BTreeMap::from([("kafka:t:0".to_string(), 42)]);
        let info = store.commit(&[(DEAD_LETTERS, letters(3, "2026-01-01T00:00:00Z"))], sources, Utc::now()).unwrap();
        assert_eq!(info.version, 0);
        store.commit(&[(DEAD_LETTERS, letters(2, "2026-01-02T00:00:00Z"))], BTreeMap::new(), Utc::now()).unwrap();

        let reopened = Store::open(dir.path(), "w2").unwrap();
        let snap = reopened.snapshot();
        assert_eq!(snap.version, Some(1));
        assert_eq!(snap.rows(DEAD_LETTERS), 5);
        assert_eq!(snap.sources["kafka:t:0"], 42);
        let f = &snap.files(DEAD_LETTERS)[0];
        let batches = reopened.read_file(f, Some(&["origin"])).unwrap();
        assert_eq!(batches[0].num_columns(), 1);
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
        assert!(reopened.orphans().unwrap().is_empty());
    }

    #[test]
    fn rows_are_partitioned_by_vietnam_date() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        // 16:30Z is 23:30 in Vietnam; 17:30Z is already the next day there.
        let a = letters(1, "2026-01-01T16:30:00Z");
        let b = letters(2, "2026-01-01T17:30:00Z");
        let both = arrow::compute::concat_batches(&a.schema(), [&a, &b]).unwrap();
        let info = store.commit(&[(DEAD_LETTERS, both)], BTreeMap::new(), Utc::now()).unwrap();
        let mut days: Vec<(String, u64)> =
            info.files.iter().map(|f| (f.path.split('/').nth(2).unwrap().to_string(), f.rows)).collect();
        days.sort();
        assert_eq!(days, [("2026-01-01".into(), 1), ("2026-01-02".into(), 2)]);
    }

    #[test]
    fn concurrent_writers_never_share_a_version() {
        let dir = tempfile::tempdir().unwrap();
        let stores: Vec<Store> = (0..2).map(|i| Store::open(dir.path(), format!("w{i}")).unwrap()).collect();
        std::thread::scope(|s| {
            for st in &stores {
                s.spawn(move || {
                    for _ in 0..20 {
                        st.commit(&[(DEAD_LETTERS, letters(1, "2026-01-01T00:00:00Z"))], BTreeMap::new(), Utc::now())
                            .unwrap();
                    }
                });
            }
        });
        let snap = Store::open(dir.path(), "r").unwrap().snapshot();
        assert_eq!(snap.version, Some(39));
        assert_eq!(snap.rows(DEAD_LETTERS), 40, "every commit of both writers is visible once");
    }

    #[test]
    fn publishing_after_a_stale_version_returns_the_newer_commits_instead() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path(), "a").unwrap();
        let b = Store::open(dir.path(), "b").unwrap();
        let staged = a.stage(&[(DEAD_LETTERS, letters(1, "2026-01-01T00:00:00Z"))]).unwrap();
        b.commit(&[(DEAD_LETTERS, letters(2, "2026-01-01T00:00:00Z"))], BTreeMap::new(), Utc::now()).unwrap();

        let Publish::Behind(newer) = a.publish(&staged, &BTreeMap::new(), Utc::now(), None).unwrap() else {
            panic!("published over a commit it had not seen");
        };
        assert_eq!(newer.iter().map(|c| (c.version, c.writer.as_str())).collect::<Vec<_>>(), [(0, "b")]);
        let Publish::Committed(info) = a.publish(&staged, &BTreeMap::new(), Utc::now(), Some(0)).unwrap() else {
            panic!("nothing newer than version 0, yet not published");
        };
        assert_eq!(info.version, 1);
        assert_eq!(a.snapshot().rows(DEAD_LETTERS), 3);
        assert_eq!(b.refresh().unwrap().rows(DEAD_LETTERS), 3, "the other writer sees it after a refresh");
    }

    #[test]
    fn a_data_file_without_a_commit_record_is_never_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        store.commit(&[(DEAD_LETTERS, letters(1, "2026-01-01T00:00:00Z"))], BTreeMap::new(), Utc::now()).unwrap();
        // Simulate a crash after the data file was written but before the log entry.
        let snap = store.snapshot();
        let f = &snap.files(DEAD_LETTERS)[0];
        let stray = store.path_of(f).with_file_name("crashed-1-1.parquet");
        fs::copy(store.path_of(f), &stray).unwrap();
        let reopened = Store::open(dir.path(), "w").unwrap();
        assert_eq!(reopened.snapshot().rows(DEAD_LETTERS), 1);
        assert_eq!(reopened.orphans().unwrap(), vec![stray]);
    }

    #[test]
    fn a_replacing_commit_swaps_files_atomically_and_is_marked_as_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        for _ in 0..2 {
            store.commit(&[(DEAD_LETTERS, letters(2, "2026-01-01T00:00:00Z"))], BTreeMap::new(), Utc::now()).unwrap();
        }
        let old: Vec<String> = store.snapshot().files(DEAD_LETTERS).iter().map(|f| f.path.clone()).collect();
        let info = store
            .commit_replacing(&[(DEAD_LETTERS, letters(4, "2026-01-01T00:00:00Z"))], &old, BTreeMap::new(), Utc::now())
            .unwrap();
        let snap = Store::open(dir.path(), "r").unwrap().snapshot();
        assert_eq!(snap.files(DEAD_LETTERS).len(), 1);
        assert_eq!(snap.rows(DEAD_LETTERS), 4);
        assert_eq!(snap.rewrites, BTreeSet::from([info.version]));
    }

    #[test]
    fn a_gap_in_the_log_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        for _ in 0..3 {
            store.commit(&[], BTreeMap::new(), Utc::now()).unwrap();
        }
        fs::remove_file(dir.path().join(LOG_DIR).join(log_name(1))).unwrap();
        let err = Store::open(dir.path(), "w").err().unwrap().to_string();
        assert!(err.contains("00000000000000000001.json") && err.contains("missing"), "{err}");
    }

    #[test]
    fn concurrent_readiness_probes_never_fail_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        let errors = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        if let Err(e) = store.check_writable() {
                            errors.lock().unwrap().push(e.to_string());
                        }
                    }
                });
            }
        });
        let errors = errors.into_inner().unwrap();
        assert!(errors.is_empty(), "{} of 400 concurrent probes failed, e.g. {:?}", errors.len(), errors.first());
        let left: Vec<_> = fs::read_dir(dir.path().join(LOG_DIR)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "probes leave nothing behind: {left:?}");
    }

    /// The real file system, with faults the test switches on.
    #[derive(Default)]
    struct Faults {
        /// Fsyncs of `_log/` fail once a commit record was linked.
        log_sync: std::sync::atomic::AtomicBool,
        /// Reads of commit records fail once one was linked (the refresh after it).
        log_read: std::sync::atomic::AtomicBool,
        linked: std::sync::atomic::AtomicBool,
    }

    struct FaultyFs(Arc<Faults>);

    impl FaultyFs {
        fn hit(&self, fault: &std::sync::atomic::AtomicBool, path: &Path) -> io::Result<()> {
            let armed = fault.load(Ordering::SeqCst) && self.0.linked.load(Ordering::SeqCst);
            if armed && path.components().any(|c| c.as_os_str() == LOG_DIR) {
                return Err(io::Error::other("injected I/O error"));
            }
            Ok(())
        }
    }

    impl Fs for FaultyFs {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            StdFs.create_dir_all(path)
        }
        fn create_new(&self, path: &Path) -> io::Result<Box<dyn crate::fs::FsFile>> {
            StdFs.create_new(path)
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            self.hit(&self.0.log_sync, path)?;
            StdFs.sync_dir(path)
        }
        fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
            StdFs.hard_link(original, link)?;
            self.0.linked.store(true, Ordering::SeqCst);
            Ok(())
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            StdFs.remove_file(path)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.hit(&self.0.log_read, path)?;
            StdFs.read(path)
        }
        fn read_dir(&self, path: &Path) -> io::Result<Vec<crate::fs::DirEntry>> {
            StdFs.read_dir(path)
        }
        fn file_len(&self, path: &Path) -> io::Result<u64> {
            StdFs.file_len(path)
        }
        fn exists(&self, path: &Path) -> bool {
            StdFs.exists(path)
        }
    }

    fn faulty_store(dir: &Path) -> (Store, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        (Store::open_with_fs(dir, "w", Arc::new(FaultyFs(faults.clone()))).unwrap(), faults)
    }

    #[test]
    fn a_log_fsync_failing_after_the_link_is_an_unconfirmed_commit_and_the_store_takes_no_more_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = faulty_store(dir.path());
        faults.log_sync.store(true, Ordering::SeqCst);
        let err = store.commit(&[(DEAD_LETTERS, letters(2, "2026-01-01T00:00:00Z"))], BTreeMap::new(), Utc::now());
        let Err(StorageError::CommitUnconfirmed { version: 0, ref path, .. }) = err else {
            panic!("not an unconfirmed commit: {err:?}");
        };
        assert!(path.ends_with("00000000000000000000.json"), "{}", path.display());
        let message = err.unwrap_err().to_string();
        assert!(message.contains("commit 0") && message.contains("not be confirmed durable"), "{message}");

        // The commit is published (it is in the page cache), whole: nothing was discarded.
        let other = Store::open(dir.path(), "r").unwrap();
        assert_eq!((other.snapshot().version, other.snapshot().rows(DEAD_LETTERS)), (Some(0), 2));
        assert!(other.orphans().unwrap().is_empty());
        let log: Vec<_> = fs::read_dir(dir.path().join(LOG_DIR)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(log, ["00000000000000000000.json"], "the temporary record is removed");

        // No more writes, and readiness says why, even once the disk looks fine again.
        faults.log_sync.store(false, Ordering::SeqCst);
        let halted = |r: Result<(), StorageError>| matches!(r, Err(StorageError::Halted { version: 0 }));
        assert!(halted(store.check_writable()));
        assert!(halted(store.stage(&[(DEAD_LETTERS, letters(1, "2026-01-01T00:00:00Z"))]).map(|_| ())));
        assert!(halted(store.commit(&[], BTreeMap::new(), Utc::now()).map(|_| ())));
        assert_eq!(Store::open(dir.path(), "r").unwrap().snapshot().version, Some(0), "nothing more was published");
    }

    #[test]
    fn a_refresh_failing_after_the_link_does_not_turn_the_commit_into_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = faulty_store(dir.path());
        faults.log_read.store(true, Ordering::SeqCst);
        let staged = store.stage(&[(DEAD_LETTERS, letters(3, "2026-01-01T00:00:00Z"))]).unwrap();
        let published = store.publish(&staged, &BTreeMap::new(), Utc::now(), None);
        let Ok(Publish::Committed(info)) = published else { panic!("the commit was made, yet: {published:?}") };
        assert_eq!(info.version, 0);
        assert_eq!(store.snapshot().version, None, "the snapshot could not be refreshed yet");
        faults.log_read.store(false, Ordering::SeqCst);
        assert_eq!(store.refresh().unwrap().rows(DEAD_LETTERS), 3, "a later refresh applies it");
        store.check_writable().unwrap();
    }
}
