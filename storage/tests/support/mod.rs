//! Power-loss replay for the store, in the spirit of ALICE and CrashMonkey.
//!
//! [`Recorder`] is an [`Fs`] that runs every operation on the real file system and logs
//! the ones that change what a power loss leaves: directories made, files created,
//! file fsyncs (with the file's contents read back at that moment), directory fsyncs,
//! hard links and removals. [`crash_state`] builds, for a prefix of that log, the
//! state a power loss right after it leaves on disk, and [`check_prefixes`] opens the
//! real [`Store`] on each such state and checks what it sees against the commits that
//! were acknowledged before the crash.
//!
//! The crash model starts from the state at the beginning of the recording: the
//! recording root exists, is durable and is empty. Then:
//!
//! - a file's data survives only as of its last fsync (a file never fsynced is empty);
//! - a directory entry (a file created, linked or removed, a directory made) survives
//!   only if its directory was fsynced after the operation ([`Model::Strict`]): each
//!   directory holds the entries it had at its last fsync, or none if it was never
//!   fsynced; a directory exists only if its own entry survives, up to the root;
//! - or every entry survives but data is still only what was fsynced
//!   ([`Model::MetadataOnly`]): this catches a commit record naming a file whose data
//!   was never fsynced.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use chrono::{DateTime, Utc};
use ioc_storage::fs::{DirEntry, Fs, FsFile, StdFs};
use ioc_storage::{Commit, DEAD_LETTERS, DeadLetter, Store, dead_letter_batch};

/// One operation that changes what survives a power loss; paths are relative to the
/// recording root.
#[derive(Debug, Clone)]
pub enum Op {
    Mkdir(PathBuf),
    Create(PathBuf),
    /// The file's whole contents when it was fsynced.
    SyncFile(PathBuf, Vec<u8>),
    SyncDir(PathBuf),
    Link {
        from: PathBuf,
        to: PathBuf,
    },
    Unlink(PathBuf),
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Mkdir(p) => write!(f, "mkdir {}", p.display()),
            Op::Create(p) => write!(f, "create {}", p.display()),
            Op::SyncFile(p, data) => write!(f, "fsync {} ({} bytes)", p.display(), data.len()),
            Op::SyncDir(p) => write!(f, "fsync dir {}/", p.display()),
            Op::Link { from, to } => write!(f, "link {} -> {}", from.display(), to.display()),
            Op::Unlink(p) => write!(f, "unlink {}", p.display()),
        }
    }
}

/// Records the operations done through it under `root`, and does them on the real
/// file system.
pub struct Recorder {
    root: PathBuf,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    /// Records under `root`, which must exist; it is taken as durable and empty.
    pub fn new(root: &Path) -> Arc<Self> {
        Arc::new(Self { root: root.to_path_buf(), ops: Mutex::new(Vec::new()) })
    }

    pub fn fs(self: &Arc<Self>) -> Arc<dyn Fs> {
        Arc::new(RecordingFs(self.clone()))
    }

    /// Operations recorded so far.
    pub fn len(&self) -> usize {
        self.ops.lock().unwrap().len()
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    fn rel(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.root)
            .unwrap_or_else(|_| panic!("{} is outside the recording root {}", path.display(), self.root.display()))
            .to_path_buf()
    }

    fn push(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }
}

struct RecordingFs(Arc<Recorder>);

struct RecordingFile {
    inner: Box<dyn FsFile>,
    path: PathBuf,
    recorder: Arc<Recorder>,
}

impl Write for RecordingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl FsFile for RecordingFile {
    fn sync_all(&mut self) -> io::Result<()> {
        self.inner.sync_all()?;
        let data = std::fs::read(&self.path)?;
        self.recorder.push(Op::SyncFile(self.recorder.rel(&self.path), data));
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

impl Fs for RecordingFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut p = path;
        while !p.exists() {
            missing.push(p.to_path_buf());
            p = p.parent().expect("the recording root exists");
        }
        StdFs.create_dir_all(path)?;
        for dir in missing.iter().rev() {
            self.0.push(Op::Mkdir(self.0.rel(dir)));
        }
        Ok(())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let inner = StdFs.create_new(path)?;
        self.0.push(Op::Create(self.0.rel(path)));
        Ok(Box::new(RecordingFile { inner, path: path.to_path_buf(), recorder: self.0.clone() }))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        StdFs.sync_dir(path)?;
        self.0.push(Op::SyncDir(self.0.rel(path)));
        Ok(())
    }

    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        StdFs.hard_link(original, link)?;
        self.0.push(Op::Link { from: self.0.rel(original), to: self.0.rel(link) });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)?;
        self.0.push(Op::Unlink(self.0.rel(path)));
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdFs.read(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        StdFs.read_dir(path)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        StdFs.file_len(path)
    }

    fn exists(&self, path: &Path) -> bool {
        StdFs.exists(path)
    }
}

/// Which crash model builds a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Model {
    /// Directory entries as of their directory's last fsync; data as of its last fsync.
    Strict,
    /// Every directory entry survives; data only as of its last fsync.
    MetadataOnly,
}

impl Model {
    pub const ALL: [Model; 2] = [Model::Strict, Model::MetadataOnly];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    /// A file, by inode: hard links share one.
    File(usize),
}

/// What a power loss right after `ops` leaves: directories and files (with their
/// contents), relative to the recording root, parents before children.
pub fn crash_state(ops: &[Op], model: Model) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let root = PathBuf::new();
    let mut live: BTreeMap<PathBuf, Node> = BTreeMap::from([(root.clone(), Node::Dir)]);
    let mut synced: HashMap<PathBuf, Vec<(PathBuf, Node)>> = HashMap::new();
    let mut data: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut inodes = 0;
    for op in ops {
        match op {
            Op::Mkdir(p) => {
                live.insert(p.clone(), Node::Dir);
            }
            Op::Create(p) => {
                inodes += 1;
                live.insert(p.clone(), Node::File(inodes));
            }
            Op::SyncFile(p, bytes) => {
                let Some(Node::File(inode)) = live.get(p) else {
                    panic!("fsync of {} that is not a file", p.display())
                };
                data.insert(*inode, bytes.clone());
            }
            Op::SyncDir(d) => {
                let children = live.iter().filter(|(p, _)| p.parent() == Some(d.as_path()));
                synced.insert(d.clone(), children.map(|(p, n)| (p.clone(), *n)).collect());
            }
            Op::Link { from, to } => {
                let node = live[from];
                live.insert(to.clone(), node);
            }
            Op::Unlink(p) => {
                live.remove(p);
            }
        }
    }
    let survivors: Vec<(PathBuf, Node)> = match model {
        Model::MetadataOnly => live.into_iter().filter(|(p, _)| *p != root).collect(),
        Model::Strict => {
            let mut out = Vec::new();
            let mut dirs = vec![root];
            while let Some(d) = dirs.pop() {
                for (p, n) in synced.get(&d).into_iter().flatten() {
                    if *n == Node::Dir {
                        dirs.push(p.clone());
                    }
                    out.push((p.clone(), *n));
                }
            }
            out
        }
    };
    survivors
        .into_iter()
        .map(|(p, n)| match n {
            Node::Dir => (p, None),
            Node::File(inode) => (p, Some(data.get(&inode).cloned().unwrap_or_default())),
        })
        .collect()
}

/// Writes a crash state into `dir` (which exists and is empty).
pub fn materialize(state: &BTreeMap<PathBuf, Option<Vec<u8>>>, dir: &Path) {
    for (p, contents) in state {
        match contents {
            None => std::fs::create_dir_all(dir.join(p)).unwrap(),
            Some(bytes) => std::fs::write(dir.join(p), bytes).unwrap(),
        }
    }
}

/// A commit the scenario made and what it was told.
#[derive(Debug, Clone)]
pub struct Ack {
    /// Operations recorded when the call that made the commit returned `Ok`: the commit
    /// is acknowledged in every crash after at least that many operations.
    pub after_ops: usize,
    pub version: u64,
}

/// A recorded run of real commits, to replay.
pub struct Scenario {
    pub name: &'static str,
    pub recorder: Arc<Recorder>,
    /// The store's root, relative to the recording root.
    pub store: PathBuf,
    pub acks: Vec<Ack>,
    /// The origins of the dead letters each version adds (none for compaction).
    pub rows: BTreeMap<u64, Vec<String>>,
    /// Versions whose rows a later version drops (retention): (dropping, dropped).
    pub drops: Vec<(u64, u64)>,
}

impl Scenario {
    pub fn new(name: &'static str, root: &Path, store: &str) -> Self {
        Self {
            name,
            recorder: Recorder::new(root),
            store: PathBuf::from(store),
            acks: Vec::new(),
            rows: BTreeMap::new(),
            drops: Vec::new(),
        }
    }

    /// The store's root on the real disk.
    pub fn root(&self) -> PathBuf {
        if self.store.as_os_str().is_empty() {
            self.recorder.root.clone()
        } else {
            self.recorder.root.join(&self.store)
        }
    }

    /// Opens the store through the recorder.
    pub fn open(&self, writer: &str) -> Store {
        Store::open_with_fs(self.root(), writer, self.recorder.fs()).unwrap()
    }

    /// The origins of the rows readers must see once versions `..visible` are visible.
    fn expected_rows(&self, visible: u64) -> Vec<String> {
        let dropped: Vec<u64> = self.drops.iter().filter(|(by, _)| *by < visible).map(|(_, v)| *v).collect();
        let mut out: Vec<String> = self
            .rows
            .range(..visible)
            .filter(|(v, _)| !dropped.contains(v))
            .flat_map(|(_, o)| o.iter().cloned())
            .collect();
        out.sort();
        out
    }

    /// Commits dead letters `tag#0..n` received on `days` (RFC 3339 times), and
    /// records the acknowledgement.
    pub fn commit(&mut self, store: &Store, tag: &str, n: usize, days: &[&str]) -> u64 {
        let (batch, origins) = letters(tag, n, days);
        let info = store.commit(&[(DEAD_LETTERS, batch)], BTreeMap::new(), Utc::now()).unwrap();
        self.ack(info.version, origins);
        info.version
    }

    /// Records that `version` was acknowledged now, adding `origins`.
    pub fn ack(&mut self, version: u64, origins: Vec<String>) {
        self.acks.push(Ack { after_ops: self.recorder.len(), version });
        if !origins.is_empty() {
            self.rows.insert(version, origins);
        }
    }
}

/// `n` dead letters with origins `tag#i`, spread round-robin over `days`.
pub fn letters(tag: &str, n: usize, days: &[&str]) -> (RecordBatch, Vec<String>) {
    let letters: Vec<DeadLetter> = (0..n)
        .map(|i| DeadLetter {
            received_at: days[i % days.len()].parse::<DateTime<Utc>>().unwrap() + chrono::Duration::seconds(i as i64),
            origin: format!("{tag}#{i}"),
            error: "bad".into(),
            raw: vec![i as u8],
        })
        .collect();
    let origins = letters.iter().map(|l| l.origin.clone()).collect();
    (dead_letter_batch(&letters), origins)
}

/// What [`check_prefixes`] went through.
#[derive(Debug, Default)]
pub struct Checked {
    pub ops: usize,
    /// (prefix, model) pairs: `(ops + 1) * 2`.
    pub states: usize,
    /// Distinct states opened with the store (the others repeat one of them).
    pub opened: usize,
    pub failures: Vec<String>,
    pub elapsed: std::time::Duration,
}

/// For every prefix of the recorded operations (none, the first, ..., all) and both
/// models, builds the crash state, opens the real store on it and checks it. Returns
/// what was checked, with a message per failure that names the prefix and the commit.
pub fn check_prefixes(scenario: &Scenario) -> Checked {
    let started = Instant::now();
    let ops = scenario.recorder.ops();
    let real_root = scenario.root();
    // What the run wrote, version by version: what any visible commit must equal.
    let reference = Store::open(&real_root, "reference").unwrap().commits_after(None).unwrap();
    let log = scenario.store.join("_log");
    let linked_at: BTreeMap<u64, usize> = reference
        .iter()
        .map(|c| {
            let name = log.join(format!("{:020}.json", c.version));
            let at = ops.iter().position(|op| matches!(op, Op::Link { to, .. } if *to == name));
            (c.version, at.unwrap_or_else(|| panic!("commit {} was never linked", c.version)))
        })
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    let mut checked = Checked { ops: ops.len(), ..Checked::default() };
    let mut seen = HashSet::new();
    for k in 0..=ops.len() {
        let acked: Vec<&Ack> = scenario.acks.iter().filter(|a| a.after_ops <= k).collect();
        let linked: Vec<u64> = linked_at.iter().filter(|(_, at)| **at < k).map(|(v, _)| *v).collect();
        for model in Model::ALL {
            checked.states += 1;
            let state = crash_state(&ops[..k], model);
            let mut h = std::hash::DefaultHasher::new();
            (&state, acked.len(), &linked).hash(&mut h);
            if !seen.insert(h.finish()) {
                continue;
            }
            checked.opened += 1;
            let dir = scratch.path().join(format!("{k}-{model:?}"));
            std::fs::create_dir(&dir).unwrap();
            materialize(&state, &dir);
            if let Err(e) = check_state(&dir.join(&scenario.store), &acked, &linked, &reference, scenario) {
                let last = if k == 0 { "none".to_string() } else { ops[k - 1].to_string() };
                checked.failures.push(format!(
                    "scenario `{}`, model {model:?}, crash after {k} of {} operations (the last: {last}): {e}",
                    scenario.name,
                    ops.len()
                ));
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    checked.elapsed = started.elapsed();
    checked
}

/// Opens the store in a crash state and checks it: every acknowledged commit is there
/// and whole; every visible commit is one the run linked, equal to what it wrote, and
/// whole; the visible versions have no gap (opening checks that); and the rows readers
/// see are exactly those of the visible commits.
fn check_state(
    root: &Path,
    acked: &[&Ack],
    linked: &[u64],
    reference: &[Commit],
    scenario: &Scenario,
) -> Result<(), String> {
    let store = Store::open(root, "crash-check").map_err(|e| format!("the store does not open: {e}"))?;
    let snap = store.snapshot();
    let visible = snap.version.map_or(0, |v| v + 1);
    if let Some(a) = acked.iter().find(|a| a.version >= visible) {
        return Err(format!("acknowledged commit {} is not visible (the log holds {visible} commits)", a.version));
    }
    let commits = store.commits_after(None).map_err(|e| format!("the log does not read: {e}"))?;
    let mut added_by: HashMap<&str, u64> = HashMap::new();
    for c in &commits {
        if !linked.contains(&c.version) {
            return Err(format!("commit {} is visible although its record was never linked", c.version));
        }
        if Some(c) != reference.get(c.version as usize) {
            return Err(format!("commit {} differs from what was written: {c:?}", c.version));
        }
        for f in &c.add {
            added_by.insert(&f.path, c.version);
        }
    }
    let mut seen = Vec::new();
    for f in snap.files.values().flatten() {
        let v = added_by.get(f.path.as_str()).copied().unwrap_or(u64::MAX);
        let len = std::fs::metadata(store.path_of(f)).map(|m| m.len());
        if len.as_ref().ok() != Some(&f.bytes) {
            return Err(format!("commit {v}'s file {} has {len:?} bytes, not {}", f.path, f.bytes));
        }
        let batches = store.read_file(f, Some(&["origin"])).map_err(|e| format!("commit {v}'s file: {e}"))?;
        let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if n as u64 != f.rows {
            return Err(format!("commit {v}'s file {} reads {n} rows, not {}", f.path, f.rows));
        }
        for b in &batches {
            seen.extend(b.column(0).as_string::<i32>().iter().map(|o| o.unwrap_or_default().to_string()));
        }
    }
    check_delta_log(&store, &snap)?;
    let expected = scenario.expected_rows(visible);
    seen.sort();
    if seen != expected {
        let missing: Vec<&String> = expected.iter().filter(|o| !seen.contains(o)).take(3).collect();
        let extra: Vec<&String> = seen.iter().filter(|o| !expected.contains(o)).take(3).collect();
        return Err(format!(
            "readers see {} rows, the {visible} visible commits add {} (missing e.g. {missing:?}, extra e.g. {extra:?})",
            seen.len(),
            expected.len(),
        ));
    }
    Ok(())
}

/// The Delta log of every table, as reopening the store leaves it, names exactly the
/// snapshot's live files: each Delta commit parses whole, the `txn` versions rise and
/// none is past the global log (the Delta log follows it, never leads it).
fn check_delta_log(store: &Store, snap: &ioc_storage::Snapshot) -> Result<(), String> {
    for (table, _) in ioc_storage::schema::tables() {
        let dir = ioc_storage::delta::delta_log_dir(store.root(), table);
        let mut live: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mut last_txn = None;
        for v in 0.. {
            let path = dir.join(format!("{v:020}.json"));
            let Ok(text) = std::fs::read_to_string(&path) else { break };
            for line in text.lines() {
                let a: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| format!("Delta commit {v} of {table}: {e}: {line:?}"))?;
                if let Some(txn) = a["txn"]["version"].as_u64() {
                    if last_txn >= Some(txn) || snap.version < Some(txn) {
                        return Err(format!("Delta commit {v} of {table} has txn {txn} after {last_txn:?}"));
                    }
                    last_txn = Some(txn);
                }
                if let Some(p) = a["add"]["path"].as_str() {
                    live.insert(p.to_string());
                }
                if let Some(p) = a["remove"]["path"].as_str() {
                    live.remove(p);
                }
            }
        }
        let want: std::collections::BTreeSet<String> = snap
            .files(table)
            .iter()
            .map(|f| f.path.strip_prefix(&format!("tables/{table}/")).unwrap_or(&f.path).to_string())
            .collect();
        if live != want {
            return Err(format!("the Delta log of {table} names {live:?}, the snapshot {want:?}"));
        }
    }
    Ok(())
}

/// Asserts that no crash state failed, listing the first failures.
pub fn assert_crash_consistent(checked: &Checked) {
    assert!(
        checked.failures.is_empty(),
        "{} of {} crash states are inconsistent:\n{}",
        checked.failures.len(),
        checked.states,
        checked.failures.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
    );
}
