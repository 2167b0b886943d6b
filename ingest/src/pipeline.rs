//! The ingest pipeline: decode + validate → dedupe → Arrow batches → durable commit →
//! listeners (live counters), in that order and on one writer thread.
//!
//! Sources (HTTP handlers, the simulator, the Kafka consumer) submit records and wait
//! for the outcome. The writer takes every submission already queued (group commit),
//! so one fsync covers many small requests. A submission is answered only after its
//! data and its source positions are durable and the listeners have seen them, which
//! gives every source read-your-writes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use arrow::array::{Array, RecordBatch, StringArray};
use chrono::{DateTime, Utc};
use ioc_core::event::{Family, decode_event};
use ioc_core::{AdminUnits, time::vn_date};
use ioc_storage::{DEAD_LETTERS, DeadLetter, FamilyBuilder, StorageError, Store, dead_letter_batch};
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
    pub batches: Vec<(Family, RecordBatch)>,
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
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self { dedupe_window_days: crate::dedupe::DEFAULT_WINDOW_DAYS, max_group_records: 200_000 }
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

    /// Submits records (and the source positions they cover) and waits until they are
    /// durable, or the commit failed.
    pub async fn submit(&self, records: Vec<Record>, positions: BTreeMap<String, i64>) -> Result<Outcome, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Submission { records, positions, reply }).await.map_err(|_| IngestError::Stopped)?;
        rx.await.map_err(|_| IngestError::Stopped)?
    }
}

/// Starts the writer thread. It stops when every [`Ingestor`] is dropped; join the
/// returned handle to wait for the last commit.
pub fn start(
    store: Store,
    units: Arc<AdminUnits>,
    listeners: Vec<Arc<dyn CommitListener>>,
    metrics: IngestMetrics,
    config: PipelineConfig,
) -> Result<(Ingestor, thread::JoinHandle<()>), IngestError> {
    let started = Instant::now();
    let dedupe = rebuild_dedupe(&store, config.dedupe_window_days, Utc::now())?;
    info!(ids = dedupe.len(), ms = started.elapsed().as_millis() as u64, "dedupe index rebuilt from storage");
    metrics.dedupe_ids(dedupe.len());
    let (tx, rx) = mpsc::channel(1024);
    let mut writer = Writer { store, units, listeners, metrics, dedupe, config };
    let handle = thread::Builder::new()
        .name("ioc-ingest-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| IngestError::Storage(StorageError::Io { path: "<writer thread>".into(), source: e }))?;
    Ok((Ingestor { tx }, handle))
}

/// Rebuilds the dedupe index from the `event_id` columns of recent commits.
pub fn rebuild_dedupe(store: &Store, window_days: u32, now: DateTime<Utc>) -> Result<DedupeIndex, StorageError> {
    let mut idx = DedupeIndex::new(window_days);
    let snap = store.snapshot();
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
            if file.table == DEAD_LETTERS {
                continue;
            }
            for batch in store.read_file(file, Some(&["event_id"]))? {
                let ids = batch.column(0).as_any().downcast_ref::<StringArray>().expect("event_id is Utf8");
                for id in ids.iter().flatten() {
                    idx.insert(day, id_hash(id));
                }
            }
        }
    }
    idx.evict(vn_date(now));
    Ok(idx)
}

struct Writer {
    store: Store,
    units: Arc<AdminUnits>,
    listeners: Vec<Arc<dyn CommitListener>>,
    metrics: IngestMetrics,
    dedupe: DedupeIndex,
    config: PipelineConfig,
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
            self.process(group);
        }
        info!("ingest writer stopped: all sources closed");
    }

    fn process(&mut self, group: Vec<Submission>) {
        let now = Utc::now();
        let today = vn_date(now);
        self.dedupe.evict(today);
        let mut builders: Vec<FamilyBuilder> = Family::ALL.into_iter().map(FamilyBuilder::new).collect();
        let mut dead = Vec::new();
        let mut fresh: HashSet<u128> = HashSet::new();
        let mut positions = BTreeMap::new();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut accepted_by_source: BTreeMap<String, u64> = BTreeMap::new();

        for sub in &group {
            let mut out = Outcome::default();
            for (i, rec) in sub.records.iter().enumerate() {
                let decoded = match &rec.pre_rejected {
                    Some(e) => Err(e.clone()),
                    None => decode_event(&rec.raw, &self.units, now),
                };
                match decoded {
                    Err(e) => {
                        let msg = e.to_string();
                        self.metrics.rejected(rec.origin.kind(), e.kind.as_str(), &msg);
                        dead.push(DeadLetter {
                            received_at: now,
                            origin: rec.origin.to_string(),
                            error: msg.clone(),
                            raw: rec.raw.clone(),
                        });
                        out.rejected.push((i, msg));
                    }
                    Ok(ev) => {
                        let h = id_hash(&ev.event_id);
                        if self.dedupe.contains(h) || !fresh.insert(h) {
                            self.metrics.duplicate(&ev.source);
                            out.duplicates += 1;
                        } else {
                            builders[ev.family().index()].append(&ev);
                            *accepted_by_source.entry(ev.source.clone()).or_default() += 1;
                            out.accepted += 1;
                        }
                    }
                }
            }
            for (k, v) in &sub.positions {
                let p = positions.entry(k.clone()).or_insert(*v);
                *p = (*p).max(*v);
            }
            outcomes.push(out);
        }

        let batches: Vec<(Family, RecordBatch)> = Family::ALL
            .into_iter()
            .zip(builders.iter_mut())
            .filter(|(_, b)| !b.is_empty())
            .map(|(f, b)| (f, b.finish()))
            .collect();
        let result = if batches.is_empty() && dead.is_empty() && positions.is_empty() {
            Ok(None)
        } else {
            let mut tables: Vec<(&str, RecordBatch)> = batches.iter().map(|(f, b)| (f.table(), b.clone())).collect();
            if !dead.is_empty() {
                tables.push((DEAD_LETTERS, dead_letter_batch(&dead)));
            }
            let started = Instant::now();
            match self.store.commit(&tables, positions, now) {
                Ok(info) => {
                    self.metrics.committed(started.elapsed().as_secs_f64());
                    Ok(Some(info.version))
                }
                Err(e) => {
                    self.metrics.commit_failed(&e);
                    Err(e)
                }
            }
        };

        match result {
            Ok(version) => {
                for h in fresh {
                    self.dedupe.insert(today, h);
                }
                if let Some(version) = version {
                    let committed = Committed { version, committed_at: now, batches };
                    for l in &self.listeners {
                        l.on_commit(&committed);
                    }
                    let snap = self.store.snapshot();
                    for (table, files) in &snap.files {
                        self.metrics.storage_bytes(table, files.iter().map(|f| f.bytes).sum());
                    }
                }
                for (source, n) in accepted_by_source {
                    self.metrics.accepted(&source, n);
                }
                self.metrics.dedupe_ids(self.dedupe.len());
                for (sub, mut out) in group.into_iter().zip(outcomes) {
                    out.version = version;
                    let _ = sub.reply.send(Ok(out));
                }
            }
            Err(e) => {
                error!(error = %e, "commit failed; {} submissions are answered with an error", group.len());
                let msg = e.to_string();
                for sub in group {
                    let _ = sub.reply.send(Err(IngestError::Storage(StorageError::Io {
                        path: "<commit>".into(),
                        source: std::io::Error::other(msg.clone()),
                    })));
                }
            }
        }
    }
}
