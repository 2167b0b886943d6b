//! Kafka → durable storage, against a raw consume of the same topic from the same broker.
//!
//! One run, side by side, on one machine:
//! 1. a real tansu broker (sqlite storage) on a free loopback port; `N` seeded events
//!    produced to `ioc.events` (4 partitions, zstd, keyed by entity id);
//! 2. **raw**: a bare rdkafka consumer (the same librdkafka as `ioc`) that assigns the 4
//!    partitions and only counts messages, from client creation to the N-th message;
//! 3. **ioc**: `ioc serve --kafka-assignment all` on an empty data dir, from process
//!    start until `ioc_events_ingested_total` (counted after the fsynced commit) is N;
//! 4. raw again, so that a broker warming up does not favour one side.
//!
//! Run: `cargo bench -p ioc-api --bench kafka_ingest -- [--events N]` (default 300,000).
//! It needs `tansu` on the PATH (see README.md). Figures go to BENCHMARKS.md.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use support::{Broker, Server, events, produce, producer, status_kib};

const TOPIC: &str = "ioc.events";

fn main() {
    let mut n = 300_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => n = args.next().and_then(|v| v.parse().ok()).expect("--events takes a number"),
            "--bench" => {}
            other => eprintln!("ignoring argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let broker = Broker::start(&[TOPIC, "ioc.dead_letters"]).await;
    let evs = events(42, n, Utc::now() - chrono::Duration::minutes(1), 5);
    let msgs: Vec<(String, Vec<u8>)> =
        evs.iter().map(|e| (e.entity_id().to_string(), e.to_json().to_string().into_bytes())).collect();
    let bytes: usize = msgs.iter().map(|(_, p)| p.len()).sum();
    drop(evs);
    let started = Instant::now();
    produce(&producer(&broker.brokers()), TOPIC, &msgs).await;
    let produce_s = started.elapsed().as_secs_f64();
    drop(msgs);
    println!("produced {n} events ({:.1} MB) in {produce_s:.1} s", bytes as f64 / 1e6);

    let brokers = broker.brokers();
    let raw1 = tokio::task::spawn_blocking({
        let b = brokers.clone();
        move || raw_consume(&b, n)
    })
    .await
    .unwrap();
    println!("raw consume 1: {:.2} s, {:.0} msg/s", raw1.secs, n as f64 / raw1.secs);

    let ioc = ioc_ingest(&broker, n).await;
    println!(
        "ioc ingest:    {:.2} s, {:.0} events/s, {:.2} CPU-s, peak RSS {} MiB",
        ioc.secs,
        n as f64 / ioc.secs,
        ioc.cpu_secs,
        ioc.peak_rss_kib / 1024
    );

    let raw2 = tokio::task::spawn_blocking(move || raw_consume(&brokers, n)).await.unwrap();
    println!("raw consume 2: {:.2} s, {:.0} msg/s", raw2.secs, n as f64 / raw2.secs);

    let raw_best = raw1.secs.min(raw2.secs);
    let raw_rate = n as f64 / raw_best;
    let ioc_rate = n as f64 / ioc.secs;
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| events | {n} ({:.0} bytes each on average) |", bytes as f64 / n as f64);
    println!("| raw rdkafka consume (best of 2) | {raw_rate:.0} msg/s |");
    println!("| ioc Kafka → fsynced Parquet + commit | {ioc_rate:.0} events/s |");
    println!("| ratio ioc / raw | {:.2} |", ioc_rate / raw_rate);
    println!("| ioc events per CPU-second | {:.0} |", n as f64 / ioc.cpu_secs);
    println!("| ioc peak RSS | {} MiB |", ioc.peak_rss_kib / 1024);
}

struct Raw {
    secs: f64,
}

/// A bare consumer that only counts: the broker's deliverable rate to one client.
fn raw_consume(brokers: &str, n: usize) -> Raw {
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("raw-{}", Utc::now().timestamp_nanos_opt().unwrap_or_default()))
        .set("enable.auto.commit", "false")
        .set("queued.max.messages.kbytes", "65536")
        .set("fetch.message.max.bytes", "2097152")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = 0usize;
    let mut payload_bytes = 0usize;
    while seen < n {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                seen += 1;
                payload_bytes += m.payload().map_or(0, <[u8]>::len);
            }
            Some(Err(e)) => eprintln!("raw consumer: {e}"),
            None => assert!(started.elapsed() < Duration::from_secs(600), "raw consumer stalled at {seen}"),
        }
    }
    assert!(payload_bytes > 0);
    Raw { secs: started.elapsed().as_secs_f64() }
}

struct Ingest {
    secs: f64,
    cpu_secs: f64,
    peak_rss_kib: u64,
}

async fn ioc_ingest(broker: &Broker, n: usize) -> Ingest {
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let server =
        Server::start(data.path(), &["--kafka-brokers", &broker.brokers(), "--kafka-assignment", "all"], &[]).await;
    loop {
        let ingested = server.metric("ioc_events_ingested_total").await;
        if ingested >= n as f64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "ioc stalled at {ingested} events");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let pid = server.child.id();
    let cpu_secs = cpu_seconds(pid);
    let peak_rss_kib = status_kib(pid, "VmHWM:");
    Ingest { secs, cpu_secs, peak_rss_kib }
}

/// User + system CPU time of a process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    ticks / hz
}
