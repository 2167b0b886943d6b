//! The Kafka source: one consumer group member, exactly-once in effect.
//!
//! Offset semantics, decided on purpose:
//! - Messages are batched by size or age and submitted to the pipeline together with
//!   the positions they cover (`kafka:<topic>:<partition>` → next offset). Data and
//!   positions are durable in the same storage commit.
//! - Only then are the offsets committed to the broker, every few seconds and on
//!   shutdown. The broker's committed offset is therefore never ahead of storage; after
//!   a crash or a rebalance the consumer resumes at or before the stored position,
//!   messages below the stored position are skipped, and the `event_id` dedupe makes
//!   any other replay harmless.
//! - The consumer polls on its own thread; only flushes go through the async runtime.
//! - On revoke, buffered messages of revoked partitions are dropped, not stored: the
//!   new owner reads them again from the last committed offset.
//! - Back-pressure: while a batch is being made durable nothing more is read, and
//!   librdkafka's prefetch queue is bounded (`queued.max.messages.kbytes`).
//! - Invalid messages go to the dead-letter table (via the pipeline) and to the
//!   `ioc.dead_letters` topic, with their origin and the reason in headers. The topic
//!   is a best-effort mirror of the table: dead letters are queued in librdkafka's
//!   bounded queue without waiting for delivery, so a flood of them never holds up the
//!   consumer loop (past `max.poll.interval.ms`, the group would rebalance). When that
//!   queue stays full they are dropped and counted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ioc_core::ValidationError;
use ioc_storage::Store;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, FutureProducer, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::pipeline::{Ingestor, Origin, Record};

pub const DEFAULT_TOPIC: &str = "ioc.events";
pub const DEFAULT_GROUP: &str = "ioc";
pub const DEAD_LETTER_TOPIC: &str = "ioc.dead_letters";

/// How many dead letters librdkafka may hold, queued or in flight, and how many KiB:
/// twice a full batch (20,000 by default), so that a batch of nothing but invalid
/// messages fits while the previous one is still being delivered; 64 MiB, like the
/// consumer's prefetch queue (a dead letter is at most `max_message_bytes`).
const DEAD_LETTER_QUEUE_MESSAGES: usize = 40_000;
const DEAD_LETTER_QUEUE_KBYTES: usize = 65_536;
/// How long one flush waits in all for room in a full dead-letter queue before it drops
/// the rest: far below `max.poll.interval.ms`.
const DEAD_LETTER_QUEUE_WAIT: Duration = Duration::from_secs(1);
/// How long shutdown waits for queued dead letters to be delivered.
const DEAD_LETTER_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum KafkaSourceError {
    #[error("Kafka client: {0}")]
    Client(#[from] KafkaError),
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group: String,
    pub dead_letter_topic: String,
    /// Flush when this many messages are buffered...
    pub max_batch: usize,
    /// ...or when the oldest buffered message is this old.
    pub max_age: Duration,
    /// Larger messages are rejected (and dead-lettered, truncated to this size).
    pub max_message_bytes: usize,
    /// How partitions are owned.
    pub assignment: Assignment,
    /// How often durable offsets are also committed to the broker.
    pub broker_commit_interval: Duration,
}

/// How this instance comes to own partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// The consumer group splits partitions between instances (scale-out).
    Group,
    /// This instance owns every partition of the topics and resumes each exactly at
    /// its stored position, with no group coordination (single node). Offsets are
    /// still committed to the group, for tools that watch lag.
    All,
}

impl Assignment {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "group" => Some(Self::Group),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topics: vec![DEFAULT_TOPIC.into()],
            group: DEFAULT_GROUP.into(),
            dead_letter_topic: DEAD_LETTER_TOPIC.into(),
            max_batch: 20_000,
            max_age: Duration::from_millis(250),
            max_message_bytes: 1 << 20,
            assignment: Assignment::Group,
            broker_commit_interval: Duration::from_secs(5),
        }
    }
}

/// Kafka metrics, defined with their log lines.
#[derive(Clone)]
pub struct KafkaMetrics {
    messages: IntCounter,
    bytes: IntCounter,
    skipped: IntCounter,
    rebalances: IntCounterVec,
    commit_seconds: Histogram,
    lag: IntGaugeVec,
    errors: IntCounterVec,
    connected: IntGauge,
    assigned: IntGauge,
    dead_letters: IntCounterVec,
}

impl KafkaMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            messages: IntCounter::new("ioc_kafka_messages_total", "Kafka messages consumed")?,
            bytes: IntCounter::new("ioc_kafka_bytes_total", "Kafka payload bytes consumed")?,
            skipped: IntCounter::new(
                "ioc_kafka_skipped_total",
                "Messages below the stored position, skipped on replay after a restart or rebalance",
            )?,
            rebalances: IntCounterVec::new(
                Opts::new("ioc_kafka_rebalances_total", "Consumer group rebalances, by kind"),
                &["kind"],
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "ioc_kafka_batch_commit_seconds",
                    "From submitting a Kafka batch to its offsets being committed to the broker",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    "ioc_kafka_lag",
                    "Messages between the committed offset and the high watermark (librdkafka statistics)",
                ),
                &["topic", "partition"],
            )?,
            errors: IntCounterVec::new(Opts::new("ioc_kafka_errors_total", "Kafka client errors, by kind"), &["kind"])?,
            connected: IntGauge::new("ioc_kafka_connected", "1 when the last poll of the broker succeeded")?,
            assigned: IntGauge::new("ioc_kafka_assigned_partitions", "Partitions this instance owns now")?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "ioc_kafka_dead_letters_total",
                    "Rejected messages mirrored to the dead-letter topic, by outcome: sent, failed (not delivered), \
                     dropped (the producer's queue stayed full, or shutdown came first); all are in the dead_letters \
                     table",
                ),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.skipped.clone()))?;
        registry.register(Box::new(m.rebalances.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.connected.clone()))?;
        registry.register(Box::new(m.assigned.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        Ok(m)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.get() == 1
    }

    fn error(&self, kind: &str, error: &KafkaError) {
        warn!(kind, %error, "Kafka error; retrying with back-off");
        self.errors.with_label_values(&[kind]).inc();
        self.connected.set(0);
    }
}

/// Rebalances seen by librdkafka's thread, handed to the consumer loop.
#[derive(Default)]
struct Ctx {
    revoked: Mutex<Vec<(String, i32)>>,
    assigned: Mutex<bool>,
    metrics: Option<KafkaMetrics>,
}

impl ClientContext for Ctx {
    /// Consumer lag per partition from librdkafka's own statistics (every 5 s): no extra
    /// broker requests, and nothing on the consume path.
    fn stats(&self, stats: rdkafka::Statistics) {
        let Some(m) = &self.metrics else { return };
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal unassigned partition; -1 lag means unknown.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    m.lag.with_label_values(&[topic.as_str(), &partition.to_string()]).set(p.consumer_lag);
                }
            }
        }
    }

    /// librdkafka reports lost brokers here; readiness turns false until the consumer
    /// is assigned partitions or commits again.
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(%error, reason, "Kafka client error");
        if let Some(m) = &self.metrics {
            m.errors.with_label_values(&["client"]).inc();
            m.connected.set(0);
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<(String, i32)> =
                tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
            info!(partitions = ?parts, "partitions revoked");
            if let Some(m) = &self.metrics {
                m.rebalances.with_label_values(&["revoke"]).inc();
            }
            self.revoked.lock().expect("revoked lock").extend(parts);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts: Vec<(String, i32)> =
                tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
            info!(partitions = ?parts, "partitions assigned");
            if let Some(m) = &self.metrics {
                m.rebalances.with_label_values(&["assign"]).inc();
                m.connected.set(1);
            }
            *self.assigned.lock().expect("assigned lock") = true;
        }
    }
}

fn position_key(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}:{partition}")
}

/// Next offset by topic and partition; looked up per message without allocating.
type Offsets = HashMap<String, HashMap<i32, i64>>;

/// The stored (durable) next offset of every partition, from the storage log.
fn stored_positions(store: &Store) -> Offsets {
    let mut out = Offsets::new();
    match store.refresh() {
        Ok(snap) => {
            for (key, next) in &snap.sources {
                let parsed = key.strip_prefix("kafka:").and_then(|k| k.rsplit_once(':'));
                if let Some((topic, partition)) = parsed
                    && let Ok(partition) = partition.parse::<i32>()
                {
                    out.entry(topic.to_string()).or_default().insert(partition, *next);
                }
            }
        }
        Err(e) => warn!(error = %e, "could not read stored positions; relying on dedupe"),
    }
    out
}

struct Pending {
    records: Vec<Record>,
    /// The next offset each partition's buffered messages cover.
    positions: Offsets,
    since: Option<Instant>,
}

impl Pending {
    fn new() -> Self {
        Self { records: Vec::new(), positions: Offsets::new(), since: None }
    }

    fn drop_partitions(&mut self, revoked: &HashSet<(String, i32)>) -> usize {
        let before = self.records.len();
        self.records.retain(|r| match &r.origin {
            Origin::Kafka { topic, partition, .. } => !revoked.contains(&(topic.clone(), *partition)),
            _ => true,
        });
        for (topic, parts) in &mut self.positions {
            parts.retain(|p, _| !revoked.contains(&(topic.clone(), *p)));
        }
        self.positions.retain(|_, parts| !parts.is_empty());
        if self.records.is_empty() {
            self.since = None;
        }
        before - self.records.len()
    }
}

/// Consumes until `shutdown` turns true, then makes the last batch durable, commits
/// its offsets, and returns.
///
/// The consumer polls on a thread of its own (`BaseConsumer::poll`), as a bare client
/// does: waking an async task for every message costs more than the message (measured:
/// a third of the throughput went to task switches). Only a flush, which waits for the
/// writer, goes through the runtime.
pub async fn run(
    config: KafkaConfig,
    ingestor: Ingestor,
    store: Store,
    metrics: KafkaMetrics,
    shutdown: watch::Receiver<bool>,
) -> Result<(), KafkaSourceError> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || consume(config, ingestor, store, metrics, shutdown, runtime))
        .await
        .unwrap_or_else(|e| {
            warn!(error = %e, "the Kafka consumer thread panicked");
            Ok(())
        })
}

fn consume(
    config: KafkaConfig,
    ingestor: Ingestor,
    store: Store,
    metrics: KafkaMetrics,
    mut shutdown: watch::Receiver<bool>,
    runtime: tokio::runtime::Handle,
) -> Result<(), KafkaSourceError> {
    let ctx = Ctx { metrics: Some(metrics.clone()), ..Default::default() };
    let consumer: BaseConsumer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        // Also the rebalance timeout: how long the group waits for a killed member.
        .set("max.poll.interval.ms", "20000")
        .set("queued.max.messages.kbytes", "65536")
        .set("statistics.interval.ms", "5000")
        .set("fetch.message.max.bytes", (config.max_message_bytes.max(1 << 20) * 2).to_string())
        .create_with_context(ctx)?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    match config.assignment {
        Assignment::Group => consumer.subscribe(&topics)?,
        Assignment::All => {
            if !assign_all(&consumer, &topics, &store, &metrics, &shutdown) {
                return Ok(());
            }
        }
    }
    let dead_letters = DeadLetterTopic::new(
        &config.brokers,
        &config.dead_letter_topic,
        DEAD_LETTER_QUEUE_MESSAGES,
        DEAD_LETTER_QUEUE_WAIT,
        &metrics,
    )?;
    info!(brokers = %config.brokers, topics = ?config.topics, group = %config.group, "Kafka consumer started");

    let mut stored = stored_positions(&store);
    let mut broker = Offsets::new();
    let mut broker_committed = Instant::now();
    let mut pending = Pending::new();
    let poll_wait = config.max_age.min(Duration::from_millis(100));
    let mut backoff = Duration::from_millis(100);
    let flush_now =
        |pending: &mut Pending, stored: &mut Offsets, broker: &mut Offsets, shutdown: &mut watch::Receiver<bool>| {
            let (records, rejected) = runtime.block_on(flush(pending, &ingestor, &metrics, stored, broker, shutdown));
            dead_letters.send(rejected.iter().map(|(index, error)| (&records[*index], error.as_str())));
        };
    while !*shutdown.borrow() {
        match consumer.poll(poll_wait) {
            None => {}
            Some(Ok(m)) => {
                metrics.connected.set(1);
                backoff = Duration::from_millis(100);
                // A rebalance runs inside `poll`: see it before judging this message
                // against the stored positions of the new assignment.
                on_rebalance(&consumer, &store, &mut pending, &mut stored);
                let (partition, offset) = (m.partition(), m.offset());
                if stored.get(m.topic()).and_then(|p| p.get(&partition)).is_some_and(|next| offset < *next) {
                    metrics.skipped.inc();
                    continue;
                }
                let payload = m.payload().unwrap_or_default();
                metrics.messages.inc();
                metrics.bytes.inc_by(payload.len() as u64);
                let origin = Origin::Kafka { topic: m.topic().to_string(), partition, offset };
                let record = if payload.len() > config.max_message_bytes {
                    Record {
                        raw: payload[..config.max_message_bytes].to_vec(),
                        origin,
                        pre_rejected: Some(ValidationError::too_large(payload.len(), config.max_message_bytes)),
                    }
                } else {
                    Record::new(payload.to_vec(), origin)
                };
                pending.records.push(record);
                match pending.positions.get_mut(m.topic()) {
                    Some(parts) => {
                        parts.insert(partition, offset + 1);
                    }
                    None => {
                        pending.positions.insert(m.topic().to_string(), HashMap::from([(partition, offset + 1)]));
                    }
                }
                pending.since.get_or_insert_with(Instant::now);
            }
            Some(Err(e)) => {
                metrics.error("consume", &e);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        on_rebalance(&consumer, &store, &mut pending, &mut stored);
        let full = pending.records.len() >= config.max_batch;
        let old = pending.since.is_some_and(|t| t.elapsed() >= config.max_age);
        if full || old {
            flush_now(&mut pending, &mut stored, &mut broker, &mut shutdown);
        }
        if broker_committed.elapsed() >= config.broker_commit_interval {
            commit_to_broker(&consumer, &mut broker, &metrics);
            broker_committed = Instant::now();
        }
    }
    flush_now(&mut pending, &mut stored, &mut broker, &mut shutdown);
    commit_to_broker(&consumer, &mut broker, &metrics);
    // Give the last asynchronous commit a moment to reach the broker.
    let _ = consumer.poll(Duration::from_millis(100));
    dead_letters.close(DEAD_LETTER_SHUTDOWN_WAIT);
    info!("Kafka consumer stopped");
    Ok(())
}

/// Applies rebalances seen since the last call. Buffered messages of revoked
/// partitions belong to the next owner now: they are dropped, not stored. After an
/// assignment the stored positions are read again, since other instances may have
/// stored further while they owned a partition.
fn on_rebalance(consumer: &BaseConsumer<Ctx>, store: &Store, pending: &mut Pending, stored: &mut Offsets) {
    let revoked: HashSet<(String, i32)> = consumer.context().revoked.lock().expect("lock").drain(..).collect();
    if !revoked.is_empty() {
        let dropped = pending.drop_partitions(&revoked);
        if dropped > 0 {
            info!(dropped, "dropped buffered messages of revoked partitions");
        }
    }
    let assigned = std::mem::take(&mut *consumer.context().assigned.lock().expect("lock"));
    if assigned {
        *stored = stored_positions(store);
    }
    if (assigned || !revoked.is_empty())
        && let (Ok(assignment), Some(m)) = (consumer.assignment(), &consumer.context().metrics)
    {
        m.assigned.set(assignment.count() as i64);
    }
}

/// Assigns every partition of `topics` to this consumer, each at its stored position
/// (or the beginning). Waits, with back-off, until the topics exist. False on shutdown.
fn assign_all(
    consumer: &BaseConsumer<Ctx>,
    topics: &[&str],
    store: &Store,
    metrics: &KafkaMetrics,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    let mut backoff = Duration::from_millis(200);
    loop {
        let stored = stored_positions(store);
        let mut tpl = TopicPartitionList::new();
        let mut missing = Vec::new();
        for topic in topics {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                Ok(md) => {
                    let parts: Vec<i32> = md
                        .topics()
                        .iter()
                        .filter(|t| t.name() == *topic && t.error().is_none())
                        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                        .collect();
                    if parts.is_empty() {
                        missing.push(topic.to_string());
                    }
                    for p in parts {
                        let offset = stored
                            .get(*topic)
                            .and_then(|parts| parts.get(&p))
                            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                        if tpl.add_partition_offset(topic, p, offset).is_err() {
                            missing.push(topic.to_string());
                        }
                    }
                }
                Err(e) => {
                    metrics.error("metadata", &e);
                    missing.push(topic.to_string());
                }
            }
        }
        if missing.is_empty() {
            match consumer.assign(&tpl) {
                Ok(()) => {
                    metrics.connected.set(1);
                    metrics.assigned.set(tpl.count() as i64);
                    info!(partitions = tpl.count(), "assigned every partition at its stored position");
                    return true;
                }
                Err(e) => metrics.error("assign", &e),
            }
        } else {
            warn!(topics = ?missing, "topics not found yet; waiting for them to be created");
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if *shutdown.borrow() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Makes the pending batch durable (retrying until it is, or until shutdown) and notes
/// its offsets for the next broker commit. Returns the batch and its rejected records
/// (index and reason), for the dead-letter topic; nothing when it was not made durable.
async fn flush(
    pending: &mut Pending,
    ingestor: &Ingestor,
    metrics: &KafkaMetrics,
    stored: &mut Offsets,
    broker: &mut Offsets,
    shutdown: &mut watch::Receiver<bool>,
) -> (Vec<Record>, Vec<(usize, String)>) {
    if pending.records.is_empty() && pending.positions.is_empty() {
        return Default::default();
    }
    let started = Instant::now();
    let records = std::mem::take(&mut pending.records);
    let positions: BTreeMap<String, i64> = pending
        .positions
        .iter()
        .flat_map(|(t, parts)| parts.iter().map(move |(p, o)| (position_key(t, *p), *o)))
        .collect();
    let mut backoff = Duration::from_millis(200);
    let outcome = loop {
        match ingestor.submit(records.clone(), positions.clone()).await {
            Ok(o) => break o,
            Err(e) => {
                warn!(error = %e, "could not make a Kafka batch durable; retrying (offsets are not committed)");
                if *shutdown.borrow() {
                    // Nothing was committed to the broker: the next run reads it again.
                    return Default::default();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    for (topic, parts) in std::mem::take(&mut pending.positions) {
        let to_broker = broker.entry(topic.clone()).or_default();
        for (partition, next) in parts {
            stored.entry(topic.clone()).or_default().insert(partition, next);
            to_broker.insert(partition, next);
        }
    }
    pending.since = None;
    metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
    (records, outcome.rejected)
}

/// The dead-letter topic, a best-effort mirror of the `dead_letters` table (which holds
/// every rejected message durably before it gets here).
///
/// Dead letters are handed to librdkafka's queue and not waited for: a
/// `ThreadedProducer` serves the delivery reports on its own thread and counts them
/// (`DeadLetterReports`). Waiting for each delivery in the consumer loop made 20,000
/// invalid messages take longer than `max.poll.interval.ms`, so the group rebalanced
/// and the valid messages behind them waited. The queue is bounded; when it is full,
/// one flush waits at most `full_wait` in all for room, then drops the rest.
struct DeadLetterTopic {
    producer: ThreadedProducer<DeadLetterReports>,
    topic: String,
    full_wait: Duration,
    dropped: IntCounter,
    failed: IntCounter,
}

impl DeadLetterTopic {
    fn new(
        brokers: &str,
        topic: &str,
        queue_messages: usize,
        full_wait: Duration,
        metrics: &KafkaMetrics,
    ) -> Result<Self, KafkaError> {
        let reports = DeadLetterReports::new(metrics);
        let (dropped, failed) = (reports.dropped.clone(), reports.failed.clone());
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "20")
            .set("queue.buffering.max.messages", queue_messages.to_string())
            .set("queue.buffering.max.kbytes", DEAD_LETTER_QUEUE_KBYTES.to_string())
            .create_with_context(reports)?;
        Ok(Self { producer, topic: topic.to_string(), full_wait, dropped, failed })
    }

    /// Queues one message per rejected record, with the reason and the origin in the
    /// `ioc-error` and `ioc-origin` headers, and returns without waiting for delivery.
    fn send<'a>(&self, letters: impl IntoIterator<Item = (&'a Record, &'a str)>) {
        let deadline = Instant::now() + self.full_wait;
        let (mut dropped, mut failed) = (0u64, 0u64);
        for (record, error) in letters {
            let origin = record.origin.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header { key: "ioc-error", value: Some(error) })
                .insert(Header { key: "ioc-origin", value: Some(origin.as_str()) });
            let mut letter = BaseRecord::<(), [u8]>::to(&self.topic).payload(&record.raw).headers(headers);
            loop {
                match self.producer.send(letter) {
                    Ok(()) => break,
                    // The producer's thread frees room as deliveries are reported.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < deadline =>
                    {
                        letter = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        dropped += 1;
                        break;
                    }
                    Err((error, _)) => {
                        if failed == 0 {
                            warn!(%error, origin, "could not queue a dead letter for its topic (it is in the dead_letters table)");
                        }
                        failed += 1;
                        break;
                    }
                }
            }
        }
        if dropped > 0 {
            warn!(
                dropped,
                "the dead-letter topic's queue stayed full; dropped these dead letters from the topic (they are in the \
                 dead_letters table)"
            );
            self.dropped.inc_by(dropped);
        }
        self.failed.inc_by(failed);
    }

    /// Waits up to `timeout` for queued dead letters to be delivered; what is left is
    /// purged when the producer is dropped, and counted as dropped.
    fn close(self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            warn!(
                %error,
                left = self.producer.in_flight_count(),
                "dead letters not delivered to their topic before shutdown (they are in the dead_letters table)"
            );
        }
    }
}

/// Counts the delivery reports of the dead-letter topic, on the producer's thread.
struct DeadLetterReports {
    sent: IntCounter,
    failed: IntCounter,
    dropped: IntCounter,
    /// Failures since the last warning, which is logged at most every 10 seconds.
    unwarned: AtomicU64,
    warned: Mutex<Option<Instant>>,
}

impl DeadLetterReports {
    fn new(metrics: &KafkaMetrics) -> Self {
        let outcome = |o: &str| metrics.dead_letters.with_label_values(&[o]);
        Self {
            sent: outcome("sent"),
            failed: outcome("failed"),
            dropped: outcome("dropped"),
            unwarned: AtomicU64::new(0),
            warned: Mutex::new(None),
        }
    }
}

impl ClientContext for DeadLetterReports {}

impl ProducerContext for DeadLetterReports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let (error, message) = match result {
            Ok(_) => {
                self.sent.inc();
                return;
            }
            // Purged when the producer is dropped at shutdown.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight), _)) => {
                self.dropped.inc();
                return;
            }
            Err(e) => e,
        };
        self.failed.inc();
        let failures = self.unwarned.fetch_add(1, Ordering::Relaxed) + 1;
        let mut warned = self.warned.lock().expect("warned lock");
        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *warned = Some(Instant::now());
            self.unwarned.store(0, Ordering::Relaxed);
            let origin = message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "ioc-origin"))
                .and_then(|h| h.value)
                .map(String::from_utf8_lossy);
            warn!(
                %error,
                ?origin,
                failures,
                "could not deliver dead letters to their topic (they are in the dead_letters table)"
            );
        }
    }
}

/// Commits durable offsets to the broker, asynchronously. The stored positions are
/// what resuming relies on; the broker's committed offsets serve lag tools and are a
/// fallback, so they are sent every few seconds rather than after every batch (on
/// tansu, each one is a sqlite write that delays the fetches behind it).
fn commit_to_broker(consumer: &BaseConsumer<Ctx>, broker: &mut Offsets, metrics: &KafkaMetrics) {
    if broker.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, parts) in std::mem::take(broker) {
        for (partition, next) in parts {
            if tpl.add_partition_offset(&topic, partition, Offset::Offset(next)).is_err() {
                warn!(topic, partition, "could not build the offset commit");
            }
        }
    }
    // A lost broker commit only means a replay that the stored positions and dedupe
    // absorb.
    match consumer.commit(&tpl, CommitMode::Async) {
        Ok(()) => metrics.connected.set(1),
        Err(e) => metrics.error("commit", &e),
    }
}

/// A producer for `ioc simulate --kafka`: keyed by entity id, zstd-compressed.
pub fn producer(brokers: &str) -> Result<FutureProducer, KafkaSourceError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "zstd")
        .set("linger.ms", "20")
        .set("message.timeout.ms", "60000")
        .create()?)
}

/// Creates topics that do not exist yet (brokers such as tansu do not auto-create).
pub async fn ensure_topics(brokers: &str, topics: &[&str], partitions: i32) -> Result<(), KafkaSourceError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let results = admin.create_topics(new.iter(), &AdminOptions::new()).await?;
    for r in results {
        if let Err((topic, code)) = r
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            warn!(topic, ?code, "could not create topic");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no broker to deliver to and room for 10, a batch of 100 dead letters queues
    /// 10 and, after the bounded wait, drops the other 90; shutdown drops the 10 after
    /// its own bounded wait. Nothing waits for a delivery.
    #[test]
    fn dead_letters_beyond_a_full_queue_are_dropped_and_counted() {
        let metrics = KafkaMetrics::register(&Registry::new()).unwrap();
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let brokers = format!("127.0.0.1:{port}");
        let topic = DeadLetterTopic::new(&brokers, "dlq", 10, Duration::from_millis(200), &metrics).unwrap();
        let origin = |offset| Origin::Kafka { topic: "ioc.events".into(), partition: 0, offset };
        let records: Vec<Record> = (0..100).map(|i| Record::new(format!("bad {i}").into_bytes(), origin(i))).collect();
        let outcome = |o: &str| metrics.dead_letters.with_label_values(&[o]).get();

        topic.send(records.iter().map(|r| (r, "not JSON")));
        assert_eq!((outcome("sent"), outcome("failed"), outcome("dropped")), (0, 0, 90));
        assert_eq!(topic.producer.in_flight_count(), 10);

        topic.close(Duration::from_millis(100));
        assert_eq!((outcome("sent"), outcome("failed"), outcome("dropped")), (0, 0, 100));
    }
}
