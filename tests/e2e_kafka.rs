//! Kafka end to end against a real broker (tansu): exactly-once effect across
//! duplicates, invalid messages, SIGKILLs of the consumer and a broker restart.

mod support;

use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use rand::{Rng, SeedableRng};
use support::*;

const TOPIC: &str = "ioc.events";

/// (key, payload) of one Kafka message.
type Message = (String, Vec<u8>);

/// `n` valid events, with 1% invalid messages of every kind the issue names and
/// re-sends of 2% of the valid ones mixed in. Returns (events, messages, invalid count).
fn workload(seed: u64, n: usize) -> (Vec<ioc_core::Event>, Vec<Message>, usize) {
    let now = Utc::now();
    let evs = events(seed, n, now - Duration::minutes(1), 5);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut msgs: Vec<Message> =
        evs.iter().map(|e| (e.entity_id().to_string(), e.to_json().to_string().into_bytes())).collect();
    let invalid_kinds: [Vec<u8>; 5] = [
        b"\xff\xfe\xfd not utf-8".to_vec(),
        Vec::new(),
        b"[1,2,3]".to_vec(),
        b"{\"event_id\": \"half\"".to_vec(),
        b"{\"event_id\": \"x\", \"type\": \"dossier.received\"}".to_vec(),
    ];
    let invalid = n / 100;
    for i in 0..invalid {
        let at = rng.random_range(0..msgs.len());
        msgs.insert(at, (format!("bad-{i}"), invalid_kinds[i % invalid_kinds.len()].clone()));
    }
    // A producer re-sending 2% of the events.
    for _ in 0..n / 50 {
        let e = &evs[rng.random_range(0..evs.len())];
        msgs.push((e.entity_id().to_string(), e.to_json().to_string().into_bytes()));
    }
    (evs, msgs, invalid)
}

fn period_query() -> String {
    let now = Utc::now();
    let from = (now - Duration::days(6)).to_rfc3339().replace('+', "%2B");
    let to = (now + Duration::minutes(10)).to_rfc3339().replace('+', "%2B");
    format!("from={from}&to={to}")
}

async fn serve_kafka(data: &std::path::Path, broker: &Broker) -> Server {
    Server::start(data, &["--kafka-brokers", &broker.brokers()], &[]).await
}

/// A single node that owns every partition and resumes at its stored positions. tansu
/// never evicts a SIGKILLed member from a classic consumer group (its partitions stay
/// assigned to the dead member), so kill-and-restart runs this way.
async fn serve_kafka_single_node(data: &std::path::Path, broker: &Broker) -> Server {
    Server::start(data, &["--kafka-brokers", &broker.brokers(), "--kafka-assignment", "all"], &[]).await
}

/// Waits until the Kafka source reports itself connected (partitions assigned).
async fn wait_until_ready(server: &Server) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, v) = server.get("/readyz").await;
        if status == 200 && v["checks"]["sources"]["kafka"] == "connected" {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "an idle Kafka consumer never became ready: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_events_are_stored_and_counted_exactly_once_with_dead_letters() {
    let broker = Broker::start(&[TOPIC, "ioc.dead_letters"]).await;
    let data = tempfile::tempdir().unwrap();
    let server = serve_kafka(data.path(), &broker).await;
    // An idle consumer that holds its partitions is ready, before any message.
    wait_until_ready(&server).await;
    let (evs, msgs, invalid) = workload(11, 50_000);
    produce(&producer(&broker.brokers()), TOPIC, &msgs).await;

    wait_for_count(&server, ALL_EVENTS, evs.len() as i64, 240).await;
    wait_for_count(&server, "SELECT count(*) FROM dead_letters", invalid as i64, 60).await;
    assert_eq!(server.sql_count(ALL_EVENTS).await, evs.len() as i64, "each event once");
    assert_eq!(server.sql_count("SELECT count(*) FROM dead_letters").await, invalid as i64);
    let origins = server.sql_count("SELECT count(*) FROM dead_letters WHERE origin LIKE 'kafka:ioc.events/%@%'").await;
    assert_eq!(origins, invalid as i64, "dead letters carry topic, partition and offset");
    let empty = server.sql_count("SELECT count(*) FROM dead_letters WHERE raw = X''").await;
    assert!(empty > 0, "the empty payload is kept as a dead letter");
    wait_for_kpis(&server, &evs, &period_query()).await;

    // The same dead letters went to the ioc.dead_letters topic.
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let dlq: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "dlq-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&["ioc.dead_letters"]).unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < invalid {
        let m =
            tokio::time::timeout(std::time::Duration::from_secs(60), dlq.recv()).await.expect("DLQ message").unwrap();
        use rdkafka::message::{Headers, Message};
        let origin = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "ioc-origin").and_then(|h| h.value.map(|v| v.to_vec())))
            .expect("origin header");
        seen.insert(origin);
    }
    assert_eq!(seen.len(), invalid);

    let (status, v) = server.get("/readyz").await;
    assert_eq!((status, v["checks"]["sources"]["kafka"].as_str()), (200, Some("connected")), "{v}");
    server
        .assert_metrics(&[
            "ioc_kafka_messages_total",
            "ioc_kafka_bytes_total",
            "ioc_kafka_rebalances_total",
            "ioc_kafka_batch_commit_seconds",
            "ioc_kafka_dead_letters_total",
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_consumer_ten_times_loses_and_doubles_nothing() {
    let broker = Broker::start(&[TOPIC, "ioc.dead_letters"]).await;
    let data = tempfile::tempdir().unwrap();
    let (evs, msgs, invalid) = workload(12, 30_000);
    let p = producer(&broker.brokers());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    // Produce in 10 slices; after each, let the consumer run a random while and kill it.
    let slices: Vec<&[Message]> = msgs.chunks(msgs.len().div_ceil(10)).collect();
    for slice in &slices {
        let mut server = serve_kafka_single_node(data.path(), &broker).await;
        produce(&p, TOPIC, slice).await;
        tokio::time::sleep(std::time::Duration::from_millis(rng.random_range(50..1500))).await;
        server.kill9();
    }
    let server = serve_kafka_single_node(data.path(), &broker).await;
    wait_for_count(&server, ALL_EVENTS, evs.len() as i64, 240).await;
    wait_for_count(&server, "SELECT count(*) FROM dead_letters", invalid as i64, 60).await;
    // Give a late duplicate a chance to show up before asserting exactness.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(server.sql_count(ALL_EVENTS).await, evs.len() as i64, "0 lost, 0 doubled");
    assert_eq!(server.sql_count("SELECT count(*) FROM dead_letters").await, invalid as i64);
    wait_for_kpis(&server, &evs, &period_query()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_keeps_the_totals_exact() {
    let mut broker = Broker::start(&[TOPIC, "ioc.dead_letters"]).await;
    let data = tempfile::tempdir().unwrap();
    let server = serve_kafka(data.path(), &broker).await;
    let (evs, msgs, invalid) = workload(13, 20_000);
    let (first, second) = msgs.split_at(msgs.len() / 2);
    produce(&producer(&broker.brokers()), TOPIC, first).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    broker.restart().await;
    produce(&producer(&broker.brokers()), TOPIC, second).await;
    wait_for_count(&server, ALL_EVENTS, evs.len() as i64, 240).await;
    wait_for_count(&server, "SELECT count(*) FROM dead_letters", invalid as i64, 60).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(server.sql_count(ALL_EVENTS).await, evs.len() as i64);
    assert_eq!(server.sql_count("SELECT count(*) FROM dead_letters").await, invalid as i64);
    wait_for_kpis(&server, &evs, &period_query()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_in_one_group_split_the_partitions_and_total_exactly() {
    let broker = Broker::start(&[TOPIC, "ioc.dead_letters"]).await;
    let data = tempfile::tempdir().unwrap();
    let a = serve_kafka(data.path(), &broker).await;
    let b = serve_kafka(data.path(), &broker).await;
    // Wait for the group to settle with partitions on both members.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let (pa, pb) =
            (a.metric("ioc_kafka_assigned_partitions").await, b.metric("ioc_kafka_assigned_partitions").await);
        if pa > 0.0 && pb > 0.0 && pa + pb == 4.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the group never split 4 partitions: {pa} and {pb}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let (evs, msgs, invalid) = workload(14, 20_000);
    produce(&producer(&broker.brokers()), TOPIC, &msgs).await;

    // Both instances write to one store; each sees every commit.
    for server in [&a, &b] {
        wait_for_count(server, ALL_EVENTS, evs.len() as i64, 240).await;
        wait_for_count(server, "SELECT count(*) FROM dead_letters", invalid as i64, 60).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for server in [&a, &b] {
        assert_eq!(server.sql_count(ALL_EVENTS).await, evs.len() as i64, "0 lost, 0 doubled");
        assert_eq!(server.sql_count("SELECT count(*) FROM dead_letters").await, invalid as i64);
        // Each instance's live KPIs fold in the other's commits too.
        wait_for_kpis(server, &evs, &period_query()).await;
        assert!(server.metric("ioc_kafka_messages_total").await > 0.0, "each instance consumed some partitions");
    }
}

/// The `ioc-origin` header of each of the first `want` messages on the dead-letter
/// topic, after checking that each also carries a non-empty `ioc-error`.
async fn dead_letter_origins(broker: &Broker, want: usize) -> BTreeSet<String> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    let dlq: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "dlq-check")
        .set("enable.auto.commit", "false")
        // Small fetches (tansu takes the request's limit, not the partition's): each
        // record fetched costs tansu a scan of its header table, and every client's
        // requests, the heartbeats of the consumer under test included, wait behind it.
        .set("message.max.bytes", "16384")
        .set("fetch.max.bytes", "16384")
        .create()
        .unwrap();
    // Assigned, not subscribed: from the beginning, with no group to join.
    let mut partitions = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        partitions.add_partition_offset("ioc.dead_letters", p, rdkafka::Offset::Beginning).unwrap();
    }
    dlq.assign(&partitions).unwrap();
    let mut origins = BTreeSet::new();
    for _ in 0..want {
        let m = tokio::time::timeout(std::time::Duration::from_secs(60), dlq.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} messages on the dead-letter topic", origins.len()))
            .unwrap();
        let header = |key: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == key).and_then(|h| h.value.map(|v| v.to_vec())))
                .map(|v| String::from_utf8(v).unwrap())
                .unwrap_or_else(|| panic!("no {key} header"))
        };
        assert!(!header("ioc-error").is_empty(), "the reason is in the ioc-error header");
        origins.insert(header("ioc-origin"));
    }
    origins
}

/// How many messages a topic's 4 partitions hold (high minus low watermarks).
fn messages_on(broker: &Broker, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", broker.brokers()).create().unwrap();
    (0..4)
        .map(|p| {
            let (low, high) = c.fetch_watermarks(topic, p, std::time::Duration::from_secs(10)).unwrap();
            high - low
        })
        .sum()
}

/// 20,000 invalid messages in a row (bytes that are not an event, and JSON events that
/// fail a rule), between valid events. Mirroring them to the dead-letter topic does not
/// hold up the consumer: the group never rebalances, the valid events behind them are
/// stored once and counted, and every invalid message is in the `dead_letters` table
/// and on the `ioc.dead_letters` topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invalid_messages_neither_rebalances_the_group_nor_stalls_valid_events() {
    const INVALID: usize = 20_000;
    let broker = Broker::start(&[TOPIC, "ioc.dead_letters"]).await;
    let data = tempfile::tempdir().unwrap();
    let server = &serve_kafka(data.path(), &broker).await;
    wait_until_ready(server).await;
    let rebalances =
        |kind: &'static str| async move { server.metric_where("ioc_kafka_rebalances_total", &[("kind", kind)]).await };
    let dead_letters =
        |o: &'static str| async move { server.metric_where("ioc_kafka_dead_letters_total", &[("outcome", o)]).await };
    let assigned = rebalances("assign").await;
    assert!(assigned >= 1.0, "the consumer joined the group");
    assert_eq!(rebalances("revoke").await, 0.0);

    let evs = events(15, 6_000, Utc::now() - Duration::minutes(1), 5);
    let valid = |e: &ioc_core::Event| (e.entity_id().to_string(), e.to_json().to_string().into_bytes());
    let (before, after) = evs.split_at(1_000);
    let mut msgs: Vec<Message> = before.iter().map(valid).collect();
    let provincial = evs.iter().find(|e| e.province_code.is_some()).unwrap().to_json();
    for i in 0..INVALID {
        let payload = match i % 4 {
            0 => {
                let mut e = provincial.clone();
                e["event_id"] = format!("unknown-province-{i}").into();
                e["province_code"] = "99".into();
                e.to_string().into_bytes()
            }
            1 => format!(r#"{{"event_id": "missing-fields-{i}", "type": "dossier.received"}}"#).into_bytes(),
            2 => format!("not json {i}").into_bytes(),
            _ => format!("[{i}]").into_bytes(),
        };
        msgs.push((format!("bad-{i}"), payload));
    }
    msgs.extend(after.iter().map(valid));
    produce(&producer(&broker.brokers()), TOPIC, &msgs).await;
    let produced = std::time::Instant::now();

    wait_for_count(server, "SELECT count(*) FROM dead_letters", INVALID as i64, 240).await;
    let stored = produced.elapsed();
    wait_for_count(server, ALL_EVENTS, evs.len() as i64, 240).await;
    let counted = produced.elapsed();
    // Every dead letter's delivery to the topic is reported (they are not waited for).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while dead_letters("sent").await < INVALID as f64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let delivered = produced.elapsed();
    let timeline = format!(
        "after producing: dead letters stored in {stored:?}, events in {counted:?}, delivered in {delivered:?}"
    );
    assert_eq!(
        (dead_letters("sent").await, dead_letters("failed").await, dead_letters("dropped").await),
        (INVALID as f64, 0.0, 0.0),
        "every dead letter was delivered to the topic (sent, failed, dropped); {timeline}"
    );
    assert_eq!(rebalances("revoke").await, 0.0, "the group never took the partitions away; {timeline}");
    assert_eq!(rebalances("assign").await, assigned, "no assignment after the first; {timeline}");
    let (status, v) = server.get("/readyz").await;
    assert_eq!((status, v["checks"]["sources"]["kafka"].as_str()), (200, Some("connected")), "{v}");

    // Give a late duplicate a chance to show up before asserting exactness.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(server.sql_count(ALL_EVENTS).await, evs.len() as i64, "each valid event once");
    assert_eq!(server.sql_count("SELECT count(*) FROM dead_letters").await, INVALID as i64);
    let distinct = server.sql_count("SELECT count(DISTINCT origin) FROM dead_letters").await;
    assert_eq!(distinct, INVALID as i64, "each invalid message is one dead letter");
    wait_for_kpis(server, &evs, &period_query()).await;

    // The topic holds one message per dead letter. Reading all 20,000 back takes 80 s:
    // tansu 0.6 looks up each fetched record's headers with a scan of every header row
    // (its header table has no index), so a sample of them is read.
    assert_eq!(messages_on(&broker, "ioc.dead_letters"), INVALID as i64, "one message per dead letter");
    let sample = dead_letter_origins(&broker, 1_000).await;
    assert_eq!(sample.len(), 1_000, "distinct origins");
    let listed = sample.iter().map(|o| format!("'{o}'")).collect::<Vec<_>>().join(", ");
    let known = server.sql_count(&format!("SELECT count(*) FROM dead_letters WHERE origin IN ({listed})")).await;
    assert_eq!(known, 1_000, "the topic's messages are the stored dead letters, by origin");
}
