//! 1,000 websocket clients and a steady 10,000 events/s: latency from a durable commit
//! to its delivery on every client, and the server's RSS.
//!
//! - `ioc serve` (release) with 34 province-scoped viewer tokens and one national one.
//! - Half the clients watch the nation (`kpis: ["*"]`); the other half are provincial
//!   wall displays, each with its province's token.
//! - Load: simulated events at `--rate` per second, posted over HTTP in batches every
//!   100 ms, with no `report.submitted` events.
//! - Probes: every 200 ms one `report.submitted` event (province 01) is posted alone.
//!   `report_online_rate` then moves only with probes, so a client that receives a
//!   national `report_online_rate` with denominator `k` has received probe `k`. A
//!   probe's latency is its arrival time minus the moment its POST was *sent*: an upper
//!   bound of "durable to delivered" (it also counts the commit itself).
//!
//! Run: `cargo bench -p ioc-api --bench ws_fanout -- [--clients N] [--rate N] [--secs N]`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use ioc_core::{AdminUnits, EventType};
use ioc_ingest::Simulator;
use serde_json::{Value, json};
use support::{Server, status_kib};
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let (mut clients, mut rate, mut secs) = (1000usize, 10_000usize, 30u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || args.next().and_then(|v| v.parse::<u64>().ok()).expect("a number");
        match a.as_str() {
            "--clients" => clients = num() as usize,
            "--rate" => rate = num() as usize,
            "--secs" => secs = num(),
            "--bench" => {}
            other => eprintln!("ignoring argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(clients, rate, secs));
}

/// Send time of each probe, by probe number (1-based).
type Probes = Arc<Mutex<Vec<Instant>>>;

async fn run(clients: usize, rate: usize, secs: u64) {
    let units = Arc::new(AdminUnits::builtin());
    let provinces: Vec<String> = units.provinces().iter().map(|p| p.code.clone()).collect();
    let mut tokens: Vec<String> =
        vec!["viewer:bench-national-token-0001".into(), "ingest:bench-ingest-token-0001".into()];
    tokens.extend(provinces.iter().map(|p| format!("viewer@{p}:bench-province-token-{p}")));
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[], &[("IOC_AUTH_TOKENS", &tokens.join(","))]).await;
    let port = server.port;
    let http = reqwest::Client::new();
    let events_url = format!("{}/api/v1/events", server.base);
    let post = move |lines: Vec<String>| {
        let (http, url) = (http.clone(), events_url.clone());
        async move {
            let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let r = http
                .post(url)
                .bearer_auth("bench-ingest-token-0001")
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };

    let probes: Probes = Arc::new(Mutex::new(Vec::new()));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let token = if i % 2 == 0 {
            "bench-national-token-0001".to_string()
        } else {
            format!("bench-province-token-{}", provinces[i / 2 % provinces.len()])
        };
        let (probes, latencies, stop) = (probes.clone(), latencies.clone(), stop.clone());
        tasks.push(tokio::spawn(async move { client(port, token, probes, latencies, stop).await }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.metric("ioc_ws_clients").await < clients as f64 {
        assert!(Instant::now() < deadline, "clients did not all connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{clients} clients connected");

    let started = Instant::now();
    let mut sim = Simulator::new(units.clone(), 7);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut posts = Vec::new();
    let mut sent = 0usize;
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        n += 1;
        let now = Utc::now();
        let lines: Vec<String> = std::iter::repeat_with(|| sim.next_event(now))
            .filter(|e| e.event_type() != EventType::ReportSubmitted)
            .take(rate / 10)
            .map(|e| e.to_json().to_string())
            .collect();
        sent += lines.len();
        posts.push(tokio::spawn(post(lines)));
        if n.is_multiple_of(2) {
            let probe = json!({
                "event_id": format!("probe-{n}"), "type": "report.submitted", "occurred_at": Utc::now().to_rfc3339(),
                "source": "bench", "agency_code": "000.00.00.H01", "level": "province", "province_code": "01",
                "report_id": format!("R-{n}"), "via_system": true,
            })
            .to_string();
            let probes = probes.clone();
            let send = post(vec![probe]);
            posts.push(tokio::spawn(async move {
                probes.lock().unwrap().push(Instant::now());
                send.await
            }));
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    for p in posts {
        assert_eq!(p.await.unwrap(), 200, "a load POST failed");
    }
    let accepted_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak_rss = status_kib(server.child.id(), "VmHWM:");
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
    };
    let probes_sent = probes.lock().unwrap().len();
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| clients | {clients} (half national, half province-scoped) |");
    println!(
        "| load | {sent} events in {load_secs:.1} s = {:.0} events/s offered; all durable after {accepted_secs:.1} s |",
        sent as f64 / load_secs
    );
    println!("| probes | {probes_sent}, {} deliveries measured |", lat.len());
    println!("| latency p50 | {:.0} ms |", pct(0.50));
    println!("| latency p99 | {:.0} ms |", pct(0.99));
    println!("| latency max | {:.0} ms |", lat.last().copied().unwrap_or(f64::NAN));
    println!("| server peak RSS | {} MiB |", peak_rss / 1024);
}

async fn client(
    port: u16,
    token: String,
    probes: Probes,
    latencies: Arc<Mutex<Vec<f64>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let url = format!("ws://127.0.0.1:{port}/api/v1/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    ws.send(Message::text(json!({"op": "subscribe", "kpis": ["*"], "group_by": null}).to_string())).await.unwrap();
    let mut seen = 0usize;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await else {
            continue;
        };
        let Message::Text(text) = msg else { continue };
        let at = Instant::now();
        if !text.contains("report_online_rate") {
            continue;
        }
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["type"] != "kpi" || v["scope"] != json!({}) && v["scope"] != json!({"province_code": "01"}) {
            continue;
        }
        let k = v["denominator"].as_u64().unwrap_or(0) as usize;
        if k > seen {
            let sent = probes.lock().unwrap();
            let mut lat = latencies.lock().unwrap();
            for t in sent.iter().take(k.min(sent.len())).skip(seen) {
                lat.push(at.duration_since(*t).as_secs_f64() * 1000.0);
            }
            seen = k;
        }
    }
}
