//! KPI API latency over a year of data, and the server's memory after start-up.
//!
//! 1. `N` seeded simulator events spread over the last 365 days are written straight
//!    into a fresh data dir with their rollups (`ioc_query::generate`), in commits of
//!    200,000 events;
//! 2. `ioc serve` starts on it (the KPI state is rebuilt from `kpi_hourly`); start-up
//!    time and RSS are read once it is healthy;
//! 3. `GET /api/v1/kpis` (national and one province), `GET /api/v1/kpis/{id}` with
//!    `group_by=province_code` and `bucket=day|month`, by one other dimension
//!    (`group_by=channel|agency_code|procedure_code`, `channel=online&group_by=province_code`,
//!    communes of one province), and the QĐ 766 index
//!    (`GET /api/v1/index`, national and ranked by province) are timed over 1 day, 1 month and
//!    1 year (Vietnam dates), sequentially, p50 and p99 of `--rounds` requests each,
//!    timed from sending the request to the last byte of the answer (the client does
//!    not parse it: a year by province and day is 1.5 MB of JSON, and parsing it into
//!    a `serde_json::Value` took as long as the server took to answer).
//!
//! Run: `cargo bench -p ioc-api --bench kpi_queries -- [--events N] [--rounds R]
//! [--keep DIR]` (defaults 1,500,000 and 100). With `--keep`, the data dir is DIR and
//! is kept; if it already holds data, generation is skipped. After generating, `ioc
//! compact` merges the files (as the background task would), which the SQL benchmark
//! (`sql_duckdb`) then reads too. Figures go to BENCHMARKS.md.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use ioc_core::time::{start_of_day, vn_date};
use ioc_core::{AdminUnits, Catalog};
use ioc_query::{KpiEngine, Period, generate};
use ioc_storage::Store;
use support::{Server, status_kib};

fn main() {
    let (mut n, mut rounds) = (1_500_000u64, 100usize);
    let mut keep: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => n = args.next().and_then(|v| v.parse().ok()).expect("--events takes a number"),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).expect("--rounds takes a number"),
            "--keep" => keep = Some(args.next().expect("--keep takes a folder").into()),
            "--bench" => {}
            other => eprintln!("ignoring argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(n, rounds, keep));
}

async fn run(n: u64, rounds: usize, keep: Option<std::path::PathBuf>) {
    let temp = tempfile::tempdir().unwrap();
    let dir_path = keep.unwrap_or_else(|| temp.path().to_path_buf());
    let fresh = !dir_path.join("store/_log").is_dir();
    let units = Arc::new(AdminUnits::builtin());
    let now = Utc::now();
    let today = start_of_day(now).to_utc();
    let year = Period { from: today - chrono::Duration::days(365), to: now };
    if fresh {
        let store = Store::open(dir_path.as_path().join("store"), "generator").unwrap();
        let engine = KpiEngine::new(Arc::new(Catalog::builtin()), store.clone(), &units).unwrap();
        let started = Instant::now();
        let g = generate::write_simulated(&store, &engine, units.clone(), 42, n, year, 200_000).unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "generated {} events ({} rollup rows, {} commits) in {secs:.1} s: {:.0} events/s",
            g.events,
            g.rollup_rows,
            g.commits,
            g.events as f64 / secs
        );
        let started = Instant::now();
        let out = std::process::Command::new(support::ioc_bin())
            .args(["compact", "--grace-secs", "0", "--data-dir"])
            .arg(&dir_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "ioc compact: {}", String::from_utf8_lossy(&out.stderr));
        println!(
            "ioc compact in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).trim().replace('\n', "; ")
        );
    }
    let started = Instant::now();
    let server = Server::start(dir_path.as_path(), &[], &[]).await;
    println!(
        "ioc serve: healthy after {:.2} s; VmRSS {} MiB, VmHWM {} MiB",
        started.elapsed().as_secs_f64(),
        status_kib(server.child.id(), "VmRSS:") / 1024,
        status_kib(server.child.id(), "VmHWM:") / 1024
    );
    let day = vn_date(now) - Days::new(1);
    let periods = [
        ("1 day", day, day + Days::new(1)),
        ("1 month", day - Days::new(30), day + Days::new(1)),
        ("1 year", day - Days::new(364), day + Days::new(1)),
    ];
    println!("{:<8} {:<48} {:>9} {:>9}", "period", "request", "p50 ms", "p99 ms");
    for (name, from, to) in periods {
        let q = format!("from={from}&to={to}");
        let requests = [
            format!("/api/v1/kpis?{q}"),
            format!("/api/v1/kpis?{q}&province_code=01"),
            format!("/api/v1/kpis/online_submission_rate?{q}&group_by=province_code&bucket=day"),
            format!("/api/v1/kpis/online_submission_rate?{q}&group_by=province_code&bucket=month"),
            format!("/api/v1/kpis/online_submission_rate?{q}&province_code=79&bucket=day"),
            format!("/api/v1/index?{q}"),
            format!("/api/v1/index?{q}&group_by=province_code"),
            // Other dimensions, with at most the province besides: the dimension cubes.
            format!("/api/v1/kpis/online_submission_rate?{q}&group_by=channel"),
            format!("/api/v1/kpis/online_submission_rate?{q}&group_by=agency_code"),
            format!("/api/v1/kpis/online_submission_rate?{q}&group_by=procedure_code"),
            format!("/api/v1/kpis/online_submission_rate?{q}&channel=online&group_by=province_code"),
            format!("/api/v1/kpis/online_submission_rate?{q}&group_by=commune_code&province_code=79"),
        ];
        for path in requests {
            let (status, _) = server.get(&path).await;
            assert_eq!(status, 200, "{path}");
            let mut times: Vec<Duration> = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t = Instant::now();
                let (status, _) = server.get_bytes(&path).await;
                times.push(t.elapsed());
                assert_eq!(status, 200);
            }
            times.sort();
            let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)].as_secs_f64() * 1e3;
            let shown = path.split('?').map(|s| s.replace(&q, "…")).collect::<Vec<_>>().join("?");
            println!("{name:<8} {shown:<48} {:>9.2} {:>9.2}", pct(0.5), pct(0.99));
        }
    }
    println!(
        "after the queries: VmRSS {} MiB, VmHWM {} MiB",
        status_kib(server.child.id(), "VmRSS:") / 1024,
        status_kib(server.child.id(), "VmHWM:") / 1024
    );
    // Two dimensions besides the province: answered with SQL over kpi_hourly.
    let q = format!("from={}&to={}", day - Days::new(30), day + Days::new(1));
    let t = Instant::now();
    let path = format!("/api/v1/kpis/online_submission_rate?{q}&group_by=channel,procedure_code&bucket=day");
    let (status, _) = server.get(&path).await;
    assert_eq!(status, 200);
    println!("1 month by channel and procedure (SQL over kpi_hourly): {:.1} ms", t.elapsed().as_secs_f64() * 1e3);

    // A clean stop writes a snapshot of the KPI state; the restart loads it.
    let year_q = format!("/api/v1/kpis?from={}&to={}", day - Days::new(364), day + Days::new(1));
    let (_, before) = server.get(&year_q).await;
    let mut server = server;
    let t = Instant::now();
    assert!(server.stop().success());
    println!("clean stop (with the KPI state snapshot) in {:.2} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let server = Server::start(dir_path.as_path(), &[], &[]).await;
    let ready = t.elapsed().as_secs_f64();
    let from = if server.metric_where("ioc_kpi_startup_seconds", &[("from", "snapshot")]).await > 0.0 {
        "snapshot"
    } else {
        "rebuild"
    };
    println!(
        "restart: healthy after {ready:.2} s (KPI state from the {from}); VmRSS {} MiB, VmHWM {} MiB",
        status_kib(server.child.id(), "VmRSS:") / 1024,
        status_kib(server.child.id(), "VmHWM:") / 1024
    );
    let (_, after) = server.get(&year_q).await;
    // Ratios only: the overdue gauge moves with the clock.
    let ratios = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        let list = v.get("kpis").unwrap_or(v).as_array().cloned().unwrap_or_default();
        list.into_iter().filter(|k| k["kind"] == "ratio").collect()
    };
    assert!(!ratios(&before).is_empty(), "{before}");
    assert_eq!(ratios(&before), ratios(&after), "the year's KPIs after the restart");
}
