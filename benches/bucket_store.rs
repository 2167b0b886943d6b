//! The store in an S3-compatible bucket against the store on local disk, side by side
//! in one run on one machine (CONTRACT.md §7.9):
//!
//! 1. a real SeaweedFS (`weed mini`, as the tests start it) on free loopback ports;
//! 2. for each store, in the order local, bucket, local, bucket: `ioc serve` on an empty
//!    data dir, `N` seeded events posted over HTTP by 4 concurrent clients in batches of
//!    1,000 (each answered only once durable), timed from the first post to the last
//!    answer; then the same SQL queries, each run `R` times, and the median kept; then a
//!    restart on the same data, timed to `/readyz`.
//!
//! Run: `cargo bench -p ioc-api --bench bucket_store -- [--events N] [--rounds R]`
//! (defaults 200,000 and 10). SeaweedFS shares the machine's cores with `ioc`, so the
//! bucket's figures include the server's own CPU. Figures go to BENCHMARKS.md.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use support::seaweed::SeaweedFs;
use support::{Server, events, lines};

const QUERIES: &[(&str, &str)] = &[
    ("count", "SELECT count(*) FROM dossier_events"),
    ("by province", "SELECT province_code, count(*) AS n FROM dossier_events GROUP BY province_code ORDER BY n DESC"),
    (
        "on-time rate by month",
        "SELECT date_trunc('month', occurred_at) AS m, avg(CASE WHEN type = 'dossier.resolved' THEN 1.0 ELSE 0.0 END) \
         FROM dossier_events GROUP BY m ORDER BY m",
    ),
    ("distinct dossiers", "SELECT count(DISTINCT dossier_id) FROM dossier_events"),
];

fn main() {
    let (mut n, mut rounds) = (200_000usize, 10usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => n = args.next().and_then(|v| v.parse().ok()).expect("--events takes a number"),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).expect("--rounds takes a number"),
            "--bench" => {}
            other => eprintln!("ignoring argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(n, rounds));
}

#[derive(Default, Clone)]
struct Figures {
    ingest_events_per_s: f64,
    commit_p50_ms: f64,
    queries_ms: Vec<f64>,
    ready_s: f64,
}

async fn run(n: usize, rounds: usize) {
    let weed = SeaweedFs::start("ioc");
    let evs = events(42, n, Utc::now() - chrono::Duration::minutes(1), 30);
    let batches: Vec<String> =
        lines(&evs).chunks(1000).map(|b| b.iter().map(|l| format!("{l}\n")).collect::<String>()).collect();
    drop(evs);
    let mut local: Vec<Figures> = Vec::new();
    let mut bucket: Vec<Figures> = Vec::new();
    for round in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        local.push(one(&dir.path().join("data"), &[], &batches, rounds).await);
        let state = tempfile::tempdir().unwrap();
        let url = weed.url(&format!("bench-{round}"));
        let env = weed.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        bucket.push(one_on(Path::new(&url), state.path(), &env, &batches, rounds).await);
    }
    let best = |f: &[Figures], pick: &dyn Fn(&Figures) -> f64, max: bool| {
        f.iter().map(pick).fold(if max { f64::MIN } else { f64::MAX }, |a, b| if max { a.max(b) } else { a.min(b) })
    };
    println!();
    println!("| measure ({n} events, best of 2 runs each) | local disk | bucket (SeaweedFS) | bucket / local |");
    println!("|---|---|---|---|");
    let row =
        |name: &str, l: f64, b: f64, unit: &str| println!("| {name} | {l:.1} {unit} | {b:.1} {unit} | {:.2} |", b / l);
    row(
        "HTTP ingest, 4 clients × 1,000-event batches",
        best(&local, &|f| f.ingest_events_per_s, true),
        best(&bucket, &|f| f.ingest_events_per_s, true),
        "events/s",
    );
    row(
        "answer time of one 1,000-event batch, p50",
        best(&local, &|f| f.commit_p50_ms, false),
        best(&bucket, &|f| f.commit_p50_ms, false),
        "ms",
    );
    let mut ratios = Vec::new();
    for (i, (name, _)) in QUERIES.iter().enumerate() {
        let (l, b) = (best(&local, &|f| f.queries_ms[i], false), best(&bucket, &|f| f.queries_ms[i], false));
        ratios.push(b / l);
        row(&format!("SQL `{name}`, median of {rounds}"), l, b, "ms");
    }
    let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    println!("| SQL geometric mean of the ratios | | | {geomean:.2} |");
    row("restart to ready", best(&local, &|f| f.ready_s, false), best(&bucket, &|f| f.ready_s, false), "s");
}

async fn one(data: &Path, env: &[(&str, &str)], batches: &[String], rounds: usize) -> Figures {
    one_on(data, data, env, batches, rounds).await
}

async fn one_on(data: &Path, state: &Path, env: &[(&str, &str)], batches: &[String], rounds: usize) -> Figures {
    let args = ["--state-dir", state.to_str().unwrap()];
    let mut server = Server::start(data, &args, env).await;
    let url = format!("{}/api/v1/events", server.base);
    let started = Instant::now();
    let mut answers = Vec::new();
    let mut tasks = Vec::new();
    for part in batches.chunks(batches.len().div_ceil(4)) {
        let (client, url, part) = (server.client.clone(), url.clone(), part.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for body in part {
                let t = Instant::now();
                let r = client.post(&url).header("content-type", "application/x-ndjson").body(body).send().await;
                assert!(r.unwrap().status().is_success());
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times
        }));
    }
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    let events: usize = batches.iter().map(|b| b.lines().count()).sum();
    let mut queries_ms = Vec::new();
    for (_, sql) in QUERIES {
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let (status, v) = server.sql(sql).await;
            assert_eq!(status, 200, "{sql}: {v}");
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        queries_ms.push(median(&mut times));
    }
    server.stop();
    let t = Instant::now();
    let again = Server::start_on(server.port, data, &args, env).await;
    loop {
        if again.get("/readyz").await.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ready_s = t.elapsed().as_secs_f64();
    let f =
        Figures { ingest_events_per_s: events as f64 / secs, commit_p50_ms: median(&mut answers), queries_ms, ready_s };
    println!(
        "{}: {:.0} events/s, batch p50 {:.1} ms, SQL {:?} ms, ready after {:.2} s",
        data.display(),
        f.ingest_events_per_s,
        f.commit_p50_ms,
        f.queries_ms.iter().map(|q| (q * 10.0).round() / 10.0).collect::<Vec<_>>(),
        f.ready_s
    );
    f
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
