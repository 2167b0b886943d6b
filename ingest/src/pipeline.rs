//! The ingest pipeline: decode + validate → dedupe → Arrow batches → durable commit →
//! listeners (live counters), in that order and on one writer thread.
//!
//! Sources (HTTP handlers, the simulator, the Kafka consumer) submit records and wait
//! for the outcome. The writer takes every submission already queued (group commit),
//! so one fsync covers many small requests. A submission is answered only after its
//! data and its source positions are durable and the listeners have seen them, which
//! gives every source read-your-writes.
//!
//! If a commit is published but cannot be confirmed durable
//! ([`StorageError::CommitUnconfirmed`]), its group is answered with
//! [`IngestError::OutcomeUnknown`] and the writer stops: its dedupe index and the
//! listeners' state may no longer match what will be found on disk, so only a restart,
//! which rebuilds both from storage, can go on. A client that sends the group again
//! after the restart gets duplicates if the commit survived, and a fresh commit if not.

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use chrono::{DateTime, Utc};
use ioc_core::event::{DecodeOptions, Family, decode_event_with};
use ioc_core::{AdminUnits, time::vn_date};
use ioc_storage::{
    Commit, DEAD_LETTERS, DeadLetter, FamilyBuilder, Publish, Snapshot, StorageError, Store, dead_letter_batch,
};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use crate::dedupe::{DedupeIndex, id_hash};
use crate::telemetry::IngestMetrics;

#[derive(Debug, Error)]
pub enum IngestError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("the ingest pipeline has stopped")]
    Stopped,
    #[error(transparent)]
    Derive(#[from] DeriveError),
    /// The submission was committed as `version`, but the commit could not be
    /// confirmed durable: it may or may not survive a power loss. The pipeline has
    /// stopped; after a restart, sending the same records again is safe (events of a
    /// commit that survived come back as duplicates).
    #[error(
        "the outcome is unknown: committed as version {version} but not confirmed durable ({reason}); the ingest pipeline has stopped; send again after a restart (events already stored are recognised as duplicates)"
    )]
    OutcomeUnknown { version: u64, reason: String },
}

/// A [`Derive`] implementation could not compute its tables.
#[derive(Debug, Error)]
#[error("deriving tables from a commit's events: {0}")]
pub struct DeriveError(pub String);

/// Computes tables derived from a commit's events (the KPI rollups), which are written
/// in the same commit: derived rows are exactly as durable, and as atomic, as the
/// events they come from. Called on the writer thread with the final batches of every
/// commit, right before they are staged (again if the batch is planned again).
pub trait Derive: Send + Sync {
    /// (table, batch) pairs to stage with the events; empty batches are skipped.
    fn derive(&self, batches: &[(Family, RecordBatch)]) -> Result<Vec<(&'static str, RecordBatch)>, DeriveError>;
}

/// Where a record came from; written with its dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Http { request: String, index: usize },
    Kafka { topic: String, partition: i32, offset: i64 },
    Simulator,
}

impl Origin {
    /// A short, bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Http { .. } => "http",
            Origin::Kafka { .. } => "kafka",
            Origin::Simulator => "simulator",
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Http { request, index } => write!(f, "http:{request}#{index}"),
            Origin::Kafka { topic, partition, offset } => write!(f, "kafka:{topic}/{partition}@{offset}"),
            Origin::Simulator => f.write_str("simulator"),
        }
    }
}

/// One raw record to ingest.
#[derive(Debug, Clone)]
pub struct Record {
    pub raw: Vec<u8>,
    pub origin: Origin,
    /// When set, the record was already rejected by its source (e.g. a malformed
    /// request body or an oversized message); it still goes to the dead letters.
    pub pre_rejected: Option<ioc_core::ValidationError>,
}

impl Record {
    pub fn new(raw: Vec<u8>, origin: Origin) -> Self {
        Self { raw, origin, pre_rejected: None }
    }
}

/// What happened to a submission. Indexes are positions within the submission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<(usize, String)>,
    /// The commit version that made it durable, if anything was written.
    pub version: Option<u64>,
}

/// Batches of one commit, handed to listeners after they are durable.
#[derive(Debug, Clone)]
pub struct Committed {
    pub version: u64,
    pub committed_at: DateTime<Utc>,
    /// The events, per family.
    pub batches: Vec<(Family, RecordBatch)>,
    /// The derived tables' rows of the commit (see [`Derive`]): what this writer's
    /// `Derive` produced, or, for another writer's commit, the rows of its files that
    /// are neither events nor dead letters, e.g. a rollup backfill with no events.
    pub derived: Vec<(String, RecordBatch)>,
}

/// Told about every commit, after it is durable and before sources get their answer.
/// Listeners must be quick: they run on the writer thread.
pub trait CommitListener: Send + Sync {
    fn on_commit(&self, committed: &Committed);
}

struct Submission {
    records: Vec<Record>,
    positions: BTreeMap<String, i64>,
    reply: oneshot::Sender<Result<Outcome, IngestError>>,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub dedupe_window_days: u32,
    /// Upper bound on the records one group commit takes.
    pub max_group_records: usize,
    /// How records are decoded (what becomes of pre-2025 province codes).
    pub decode: DecodeOptions,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            dedupe_window_days: crate::dedupe::DEFAULT_WINDOW_DAYS,
            max_group_records: 200_000,
            decode: DecodeOptions::default(),
        }
    }
}

/// A handle to the pipeline; cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    tx: mpsc::Sender<Submission>,
}

impl Ingestor {
    /// True once the writer has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits until the writer has folded in every commit that other writers sharing the
    /// store have made (their events into dedupe, their batches into the listeners).
    pub async fn sync(&self) -> Result<(), IngestError> {
        self.submit(Vec::new(), BTreeMap::new()).await.map(|_| ())
    }

    /// Submits records (and the source positions they cover) and waits until they are
    /// durable, or the commit failed.
    pub async fn submit(&self, records: Vec<Record>, positions: BTreeMap<String, i64>) -> Result<Outcome, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Submission { records, positions, reply }).await.map_err(|_| IngestError::Stopped)?;
        rx.await.map_err(|_| IngestError::Stopped)?
    }
}

/// Starts the writer thread from `snapshot`, the storage state that the listeners
/// were rebuilt from: the writer hands them every later commit, its own and other
/// writers', once each and in version order. `derive`, if given, adds derived tables
/// (KPI rollups) to every commit that has events. It stops when every [`Ingestor`] is
/// dropped; join the returned handle to wait for the last commit.
pub fn start(
    store: Store,
    snapshot: &Snapshot,
    units: Arc<AdminUnits>,
    derive: Option<Arc<dyn Derive>>,
    listeners: Vec<Arc<dyn CommitListener>>,
    metrics: IngestMetrics,
    config: PipelineConfig,
) -> Result<(Ingestor, thread::JoinHandle<()>), IngestError> {
    let started = Instant::now();
    let dedupe = rebuild_dedupe(&store, snapshot, config.dedupe_window_days, Utc::now())?;
    info!(ids = dedupe.len(), ms = started.elapsed().as_millis() as u64, "dedupe index rebuilt from storage");
    metrics.dedupe_ids(dedupe.len());
    let (tx, rx) = mpsc::channel(1024);
    let mut writer = Writer { store, units, derive, listeners, metrics, dedupe, config, seen: snapshot.version };
    let handle = thread::Builder::new()
        .name("ioc-ingest-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| IngestError::Storage(StorageError::Io { path: "<writer thread>".into(), source: e }))?;
    Ok((Ingestor { tx }, handle))
}

/// Rebuilds the dedupe index from the `event_id` columns of the commits in `snapshot`
/// that fall within the window.
pub fn rebuild_dedupe(
    store: &Store,
    snap: &Snapshot,
    window_days: u32,
    now: DateTime<Utc>,
) -> Result<DedupeIndex, StorageError> {
    let mut idx = DedupeIndex::new(window_days);
    let oldest = vn_date(now) - chrono::Days::new(u64::from(idx.window_days()));
    let live: std::collections::HashMap<&str, &ioc_storage::DataFile> =
        snap.files.values().flatten().map(|f| (f.path.as_str(), f)).collect();
    for (_, committed_at, paths) in &snap.history {
        let day = vn_date(*committed_at);
        if day < oldest {
            continue;
        }
        for path in paths {
            let Some(file) = live.get(path.as_str()) else {
                continue;
            };
            if !Family::ALL.iter().any(|f| f.table() == file.table) {
                continue;
            }
            for batch in store.read_file(file, Some(&["event_id"]))? {
                for h in event_id_hashes(&batch) {
                    idx.insert(day, h);
                }
            }
        }
    }
    idx.evict(vn_date(now));
    Ok(idx)
}

fn event_id_hashes(batch: &RecordBatch) -> impl Iterator<Item = u128> + '_ {
    let ids = batch.column_by_name("event_id").expect("event_id column").as_string::<i32>();
    ids.iter().flatten().map(id_hash)
}

struct Writer {
    store: Store,
    units: Arc<AdminUnits>,
    derive: Option<Arc<dyn Derive>>,
    listeners: Vec<Arc<dyn CommitListener>>,
    metrics: IngestMetrics,
    dedupe: DedupeIndex,
    config: PipelineConfig,
    /// The last commit version folded into the dedupe index and handed to listeners.
    seen: Option<u64>,
}

/// One attempt at committing a group: what to write and what to answer.
#[derive(Default)]
struct Plan {
    batches: Vec<(Family, RecordBatch)>,
    dead: Vec<DeadLetter>,
    /// Hashes of the event ids this commit accepts.
    fresh: HashSet<u128>,
    positions: BTreeMap<String, i64>,
    outcomes: Vec<Outcome>,
    accepted: BTreeMap<String, u64>,
    duplicates: BTreeMap<String, u64>,
    /// Accepted events remapped from a pre-2025 province code, by (old code, new code).
    remapped: BTreeMap<(String, String), u64>,
    /// (origin kind, reason, message) of each rejected record, for metrics.
    rejected: Vec<(&'static str, &'static str, String)>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.dead.is_empty() && self.positions.is_empty()
    }
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::Receiver<Submission>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            let mut records = group[0].records.len();
            while records < self.config.max_group_records {
                match rx.try_recv() {
                    Ok(s) => {
                        records += s.records.len();
                        group.push(s);
                    }
                    Err(_) => break,
                }
            }
            if self.process(group).is_break() {
                // Whatever is still queued was never tried: nothing of it is stored.
                rx.close();
                while let Ok(s) = rx.try_recv() {
                    let _ = s.reply.send(Err(IngestError::Stopped));
                }
                error!("ingest writer stopped: the store could not confirm a commit durable; restart to go on");
                return;
            }
        }
        info!("ingest writer stopped: all sources closed");
    }

    /// Commits one group and answers it; breaks when the writer must stop.
    fn process(&mut self, group: Vec<Submission>) -> ControlFlow<()> {
        let now = Utc::now();
        self.dedupe.evict(vn_date(now));
        match self.commit_group(&group, now) {
            Ok((plan, version)) => {
                if version.is_some() {
                    let snap = self.store.snapshot();
                    for (table, files) in &snap.files {
                        self.metrics.storage_bytes(table, files.iter().map(|f| f.bytes).sum());
                    }
                }
                for (origin, reason, message) in &plan.rejected {
                    self.metrics.rejected(origin, reason, message);
                }
                for (source, n) in &plan.duplicates {
                    self.metrics.duplicates(source, *n);
                }
                for (source, n) in &plan.accepted {
                    self.metrics.accepted(source, *n);
                }
                for ((old, new), n) in &plan.remapped {
                    self.metrics.remapped(old, new, *n);
                }
                self.metrics.dedupe_ids(self.dedupe.len());
                for (sub, mut out) in group.into_iter().zip(plan.outcomes) {
                    out.version = version;
                    let _ = sub.reply.send(Ok(out));
                }
                ControlFlow::Continue(())
            }
            Err(IngestError::Storage(StorageError::CommitUnconfirmed { version, source, .. })) => {
                // Published, maybe not durable: neither a success nor "nothing was
                // stored". The dedupe index and the listeners did not take the commit
                // and may disagree with what a restart finds: stop.
                let e = IngestError::OutcomeUnknown { version, reason: source.to_string() };
                self.metrics.commit_failed(&e);
                error!(error = %e, "{} submissions are answered with an unknown outcome", group.len());
                for sub in group {
                    let _ = sub.reply.send(Err(IngestError::OutcomeUnknown { version, reason: source.to_string() }));
                }
                ControlFlow::Break(())
            }
            Err(e) => {
                self.metrics.commit_failed(&e);
                error!(error = %e, "commit failed; {} submissions are answered with an error", group.len());
                // The store refuses writes for good after an unconfirmed commit (e.g. by
                // compaction on the same store): stop too.
                let halted = match &e {
                    IngestError::Storage(StorageError::Halted { version }) => Some(*version),
                    _ => None,
                };
                let msg = e.to_string();
                for sub in group {
                    let _ = sub.reply.send(Err(match halted {
                        Some(version) => IngestError::Storage(StorageError::Halted { version }),
                        None => IngestError::Storage(StorageError::Io {
                            path: "<commit>".into(),
                            source: std::io::Error::other(msg.clone()),
                        }),
                    }));
                }
                if halted.is_some() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            }
        }
    }

    /// Makes a group durable. Commits by other writers sharing the store are folded in
    /// first (their ids into the dedupe index, their batches to the listeners), and the
    /// commit is published only right after the last commit folded in. If another
    /// writer commits in between, its commit is folded in too; if it stored an id that
    /// this group accepts, the group is planned again, so an event is never stored
    /// twice, however many instances share the store.
    fn commit_group(&mut self, group: &[Submission], now: DateTime<Utc>) -> Result<(Plan, Option<u64>), IngestError> {
        loop {
            self.sync()?;
            let plan = self.plan(group, now);
            if plan.is_empty() {
                return Ok((plan, None));
            }
            let mut tables: Vec<(&str, RecordBatch)> =
                plan.batches.iter().map(|(f, b)| (f.table(), b.clone())).collect();
            if !plan.dead.is_empty() {
                tables.push((DEAD_LETTERS, dead_letter_batch(&plan.dead)));
            }
            let derived = match &self.derive {
                Some(d) if !plan.batches.is_empty() => d.derive(&plan.batches)?,
                _ => Vec::new(),
            };
            tables.extend(derived.iter().cloned());
            let started = Instant::now();
            let staged = self.store.stage(&tables)?;
            loop {
                match self.store.publish(&staged, &plan.positions, now, self.seen)? {
                    Publish::Committed(info) => {
                        self.metrics.committed(started.elapsed().as_secs_f64());
                        self.seen = Some(info.version);
                        for h in &plan.fresh {
                            self.dedupe.insert(vn_date(now), *h);
                        }
                        let derived = derived.into_iter().map(|(t, b)| (t.to_string(), b)).collect();
                        let committed =
                            Committed { version: info.version, committed_at: now, batches: plan.batches, derived };
                        for l in &self.listeners {
                            l.on_commit(&committed);
                        }
                        let plan = Plan { batches: committed.batches, ..plan };
                        return Ok((plan, Some(info.version)));
                    }
                    Publish::Behind(commits) => {
                        let mut clash = false;
                        for c in &commits {
                            clash |= self.fold(c)?.iter().any(|h| plan.fresh.contains(h));
                        }
                        if clash {
                            info!("another writer stored some of these events first; planning the batch again");
                            self.store.discard(staged);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Folds in the commits other writers made since the last one seen.
    fn sync(&mut self) -> Result<(), StorageError> {
        let commits = self.store.commits_after(self.seen)?;
        if !commits.is_empty() {
            self.store.refresh()?;
        }
        for c in &commits {
            self.fold(c)?;
        }
        Ok(())
    }

    /// Folds one commit by another writer into the dedupe index and the listeners, and
    /// returns the hashes of the event ids it added.
    fn fold(&mut self, commit: &Commit) -> Result<Vec<u128>, StorageError> {
        debug_assert_eq!(Some(commit.version), self.seen.map_or(Some(0), |v| v.checked_add(1)));
        let mut ids = Vec::new();
        // A commit that removes files rewrites existing rows (compaction): nothing new.
        if commit.remove.is_empty() {
            let mut batches = Vec::new();
            let mut derived = Vec::new();
            for file in &commit.add {
                if file.table == DEAD_LETTERS {
                    continue;
                }
                let family = Family::ALL.into_iter().find(|f| f.table() == file.table);
                for batch in self.store.read_file(file, None)? {
                    match family {
                        Some(family) => {
                            ids.extend(event_id_hashes(&batch));
                            batches.push((family, batch));
                        }
                        None => derived.push((file.table.clone(), batch)),
                    }
                }
            }
            let day = vn_date(commit.committed_at);
            for h in &ids {
                self.dedupe.insert(day, *h);
            }
            if !batches.is_empty() || !derived.is_empty() {
                let committed =
                    Committed { version: commit.version, committed_at: commit.committed_at, batches, derived };
                for l in &self.listeners {
                    l.on_commit(&committed);
                }
            }
        }
        self.seen = Some(commit.version);
        Ok(ids)
    }

    /// Decodes, validates and dedupes a group against the index: what to write.
    fn plan(&self, group: &[Submission], now: DateTime<Utc>) -> Plan {
        let mut builders: Vec<FamilyBuilder> = Family::ALL.into_iter().map(FamilyBuilder::new).collect();
        let mut plan = Plan { outcomes: Vec::with_capacity(group.len()), ..Plan::default() };
        for sub in group {
            let mut out = Outcome::default();
            for (i, rec) in sub.records.iter().enumerate() {
                let decoded = match &rec.pre_rejected {
                    Some(e) => Err(e.clone()),
                    None => decode_event_with(&rec.raw, &self.units, &self.config.decode, now),
                };
                match decoded {
                    Err(e) => {
                        let msg = e.to_string();
                        plan.rejected.push((rec.origin.kind(), e.kind.as_str(), msg.clone()));
                        plan.dead.push(DeadLetter {
                            received_at: now,
                            origin: rec.origin.to_string(),
                            error: msg.clone(),
                            raw: rec.raw.clone(),
                        });
                        out.rejected.push((i, msg));
                    }
                    Ok(ev) => {
                        let h = id_hash(&ev.event_id);
                        if self.dedupe.contains(h) || !plan.fresh.insert(h) {
                            *plan.duplicates.entry(ev.source.clone()).or_default() += 1;
                            out.duplicates += 1;
                        } else {
                            builders[ev.family().index()].append(&ev);
                            *plan.accepted.entry(ev.source.clone()).or_default() += 1;
                            if let (Some(old), Some(new)) = (&ev.province_code_original, &ev.province_code) {
                                *plan.remapped.entry((old.clone(), new.clone())).or_default() += 1;
                            }
                            out.accepted += 1;
                        }
                    }
                }
            }
            for (k, v) in &sub.positions {
                let p = plan.positions.entry(k.clone()).or_insert(*v);
                *p = (*p).max(*v);
            }
            plan.outcomes.push(out);
        }
        plan.batches = Family::ALL
            .into_iter()
            .zip(builders.iter_mut())
            .filter(|(_, b)| !b.is_empty())
            .map(|(f, b)| (f, b.finish()))
            .collect();
        plan
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    use ioc_storage::fs::{DirEntry, Fs, FsFile, StdFs};

    use ioc_core::event::LegacyProvinceCodes;

    use super::*;
    use crate::Simulator;

    /// The real file system, whose fsyncs of the commit log directory fail once armed.
    /// The store fsyncs `_log/` only right after linking a commit record, so an armed
    /// fault hits a commit that is published but cannot be confirmed durable.
    struct FailingLogSync(Arc<AtomicBool>);

    impl Fs for FailingLogSync {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            StdFs.create_dir_all(path)
        }
        fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            StdFs.create_new(path)
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            if self.0.load(Ordering::SeqCst) && path.ends_with("_log") {
                return Err(io::Error::other("injected I/O error"));
            }
            StdFs.sync_dir(path)
        }
        fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
            StdFs.hard_link(original, link)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            StdFs.remove_file(path)
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

    fn start_on(store: &Store, units: &Arc<AdminUnits>) -> (Ingestor, thread::JoinHandle<()>) {
        start(
            store.clone(),
            &store.snapshot(),
            units.clone(),
            None,
            Vec::new(),
            IngestMetrics::unregistered(),
            PipelineConfig::default(),
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_not_confirmed_durable_is_answered_as_unknown_and_stops_the_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let units = Arc::new(AdminUnits::builtin());
        let fail = Arc::new(AtomicBool::new(false));
        let store = Store::open_with_fs(dir.path(), "w", Arc::new(FailingLogSync(fail.clone()))).unwrap();
        let (ingestor, writer) = start_on(&store, &units);
        let mut sim = Simulator::new(units.clone(), 3);
        let now = Utc::now();
        let records: Vec<Record> = (0..20)
            .map(|_| Record::new(sim.next_event(now).to_json().to_string().into_bytes(), Origin::Simulator))
            .collect();
        assert_eq!(ingestor.submit(records[..10].to_vec(), BTreeMap::new()).await.unwrap().accepted, 10);

        fail.store(true, Ordering::SeqCst);
        let err = ingestor.submit(records[10..].to_vec(), BTreeMap::new()).await.unwrap_err();
        assert!(matches!(err, IngestError::OutcomeUnknown { version: 1, .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("outcome is unknown") && message.contains("version 1"), "{message}");

        // The writer stops: later submissions are refused (asked first, so that a writer
        // that goes on fails the test instead of hanging it), its thread ends, and
        // readiness sees a closed pipeline.
        let later = ingestor.submit(records[..1].to_vec(), BTreeMap::new()).await;
        assert!(matches!(later, Err(IngestError::Stopped)), "{later:?}");
        tokio::task::spawn_blocking(move || writer.join().unwrap()).await.unwrap();
        assert!(ingestor.is_closed());
        drop(ingestor);

        // A restart rebuilds from disk. Here the commit survived (no power was lost), so
        // the client's re-send of the unconfirmed group is deduplicated.
        let store = Store::open(dir.path(), "w2").unwrap();
        assert_eq!(store.snapshot().version, Some(1));
        let (ingestor, _writer) = start_on(&store, &units);
        let again = ingestor.submit(records[10..].to_vec(), BTreeMap::new()).await.unwrap();
        assert_eq!((again.accepted, again.duplicates), (0, 10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_halted_by_another_unconfirmed_commit_stops_the_pipeline_with_nothing_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let units = Arc::new(AdminUnits::builtin());
        let fail = Arc::new(AtomicBool::new(false));
        let store = Store::open_with_fs(dir.path(), "w", Arc::new(FailingLogSync(fail.clone()))).unwrap();
        let (ingestor, writer) = start_on(&store, &units);
        // Another user of the same store (compaction, a backfill) has a commit that
        // cannot be confirmed durable: the store takes no more writes.
        fail.store(true, Ordering::SeqCst);
        let other = store.commit(&[], BTreeMap::new(), Utc::now());
        assert!(matches!(other, Err(StorageError::CommitUnconfirmed { version: 0, .. })), "{other:?}");
        fail.store(false, Ordering::SeqCst);

        let mut sim = Simulator::new(units.clone(), 5);
        let record = Record::new(sim.next_event(Utc::now()).to_json().to_string().into_bytes(), Origin::Simulator);
        let err = ingestor.submit(vec![record.clone()], BTreeMap::new()).await.unwrap_err();
        assert!(matches!(err, IngestError::Storage(StorageError::Halted { version: 0 })), "{err:?}");
        let later = ingestor.submit(vec![record], BTreeMap::new()).await;
        assert!(matches!(later, Err(IngestError::Stopped)), "{later:?}");
        tokio::task::spawn_blocking(move || writer.join().unwrap()).await.unwrap();
        assert!(ingestor.is_closed());
        assert_eq!(Store::open(dir.path(), "r").unwrap().snapshot().version, Some(0), "nothing more was committed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_legacy_code_mode_reaches_the_decoder_and_remapped_events_are_counted_once() {
        let units = Arc::new(AdminUnits::builtin());
        let event = |id: &str, province: &str| {
            let text = format!(
                r#"{{"event_id":"{id}","type":"report.submitted","occurred_at":"2026-01-05T01:00:00Z","source":"s",
                "agency_code":"a","level":"province","province_code":"{province}","report_id":"B","via_system":true}}"#
            );
            Record::new(text.into_bytes(), Origin::Simulator)
        };
        for (mode, accepted) in [(LegacyProvinceCodes::Reject, 1), (LegacyProvinceCodes::Remap, 3)] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), "w").unwrap();
            let registry = prometheus::Registry::new();
            let config = PipelineConfig { decode: DecodeOptions { legacy_province_codes: mode }, ..Default::default() };
            let metrics = IngestMetrics::register(&registry).unwrap();
            let (ingestor, _writer) =
                start(store.clone(), &store.snapshot(), units.clone(), None, Vec::new(), metrics, config).unwrap();
            let records = vec![event("a", "02"), event("b", "01"), event("c", "02"), event("a", "02")];
            let out = ingestor.submit(records, BTreeMap::new()).await.unwrap();
            assert_eq!((out.accepted, out.duplicates), (accepted, usize::from(mode == LegacyProvinceCodes::Remap)));
            let remapped: Vec<(Vec<String>, f64)> = registry
                .gather()
                .iter()
                .filter(|f| f.name() == "ioc_events_remapped_total")
                .flat_map(|f| f.get_metric().to_vec())
                .map(|m| (m.get_label().iter().map(|l| l.value().to_string()).collect(), m.get_counter().get_value()))
                .collect();
            match mode {
                LegacyProvinceCodes::Reject => {
                    assert!(remapped.is_empty(), "{remapped:?}");
                    assert!(out.rejected.iter().all(|(_, e)| e.contains("from before 2025-07-01")), "{out:?}");
                }
                LegacyProvinceCodes::Remap => {
                    assert_eq!(remapped, [(vec!["02".to_string(), "08".to_string()], 2.0)], "the repeat is not counted")
                }
            }
        }
    }
}
