//! Ad-hoc SQL through our engine versus DuckDB, on the same Parquet files.
//!
//! Reads a data dir written by `kpi_queries --keep DIR` (generated, then compacted).
//! Ten typical leader queries run through [`SqlEngine`] (the same path as `ioc sql`,
//! HTTP and pgwire, with the sandbox's limits) and through DuckDB (Python `duckdb`
//! from PyPI) over `read_parquet` of the very files the store lists. Each query runs
//! `--runs` times after one warm-up; the median is reported, with the ratio
//! ours / DuckDB, and both engines' row counts are checked to agree.
//!
//! Run: `pip install duckdb && cargo bench -p ioc-api --bench sql_duckdb -- --data-dir DIR [--runs R] [--only NAME]`
//! (`--only` keeps the queries whose name contains NAME; `--explain` prints our
//! `EXPLAIN ANALYZE` of each instead of timing).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ioc_core::AdminUnits;
use ioc_query::context::admin_units_table;
use ioc_query::{Caller, SqlEngine, SqlLimits};
use ioc_storage::Store;

/// (name, SQL): valid in both dialects.
const QUERIES: &[(&str, &str)] = &[
    ("count", "SELECT count(*) FROM dossier_events"),
    ("by province", "SELECT province_code, count(*) AS n FROM dossier_events GROUP BY province_code ORDER BY n DESC"),
    (
        "online share by channel",
        "SELECT channel, avg(CASE WHEN online THEN 1.0 ELSE 0.0 END) AS share FROM dossier_events \
         WHERE type = 'dossier.received' GROUP BY channel ORDER BY channel",
    ),
    (
        "e-docs by month",
        "SELECT date_trunc('month', occurred_at) AS m, count(*) AS n FROM document_events WHERE electronic \
         GROUP BY m ORDER BY m",
    ),
    (
        "top procedures, last 30 days",
        "SELECT procedure_code, count(*) AS n FROM dossier_events WHERE type = 'dossier.resolved' \
         AND occurred_at >= TIMESTAMP '2026-10-01 00:00:00' GROUP BY procedure_code ORDER BY n DESC, procedure_code LIMIT 10",
    ),
    (
        "join admin_units",
        "SELECT a.province_name, count(*) AS n FROM dossier_events d JOIN admin_units a \
         ON a.commune_code = d.commune_code GROUP BY a.province_name ORDER BY n DESC, a.province_name LIMIT 10",
    ),
    (
        "distinct dossiers by agency",
        "SELECT agency_code, count(DISTINCT dossier_id) AS n FROM dossier_events GROUP BY agency_code \
         ORDER BY n DESC, agency_code LIMIT 10",
    ),
    (
        "KPI from rollups",
        "SELECT kpi, sum(numerator) * 1.0 / sum(denominator) AS value FROM kpi_hourly \
         WHERE hour >= TIMESTAMP '2026-01-01 00:00:00' GROUP BY kpi ORDER BY kpi",
    ),
    (
        "e-doc share by province",
        "SELECT province_code, sum(CASE WHEN electronic THEN 1 ELSE 0 END) * 1.0 / count(*) AS share \
         FROM document_events GROUP BY province_code ORDER BY province_code",
    ),
    (
        "late resolutions",
        "SELECT count(*) FROM dossier_events WHERE type = 'dossier.resolved' AND due_at < occurred_at",
    ),
];

const DUCKDB: &str = r#"
import json, statistics, sys, time, duckdb
store, runs, csv = sys.argv[1], int(sys.argv[2]), sys.argv[3]
files = json.loads(sys.stdin.readline())
queries = json.loads(sys.stdin.readline())
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute("SET enable_progress_bar = false")
for table, paths in files.items():
    if paths:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({[store + '/' + p for p in paths]!r})")
con.execute(f"""CREATE TABLE admin_units AS SELECT province_code, province_name, commune_code, commune_name, commune_type
                FROM read_csv('{csv}', all_varchar = true)""")
out = []
for sql in queries:
    rows = len(con.execute(sql).fetchall())
    times = []
    for _ in range(runs):
        t = time.perf_counter(); con.execute(sql).fetchall(); times.append(time.perf_counter() - t)
    out.append({"rows": rows, "median_s": statistics.median(times)})
print(json.dumps(out))
"#;

fn main() {
    let (mut dir, mut runs, mut only, mut explain) = (None::<PathBuf>, 5usize, None::<String>, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data-dir" => dir = args.next().map(PathBuf::from),
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs takes a number"),
            "--only" => only = args.next(),
            "--explain" => explain = true,
            "--bench" => {}
            other => eprintln!("ignoring argument {other}"),
        }
    }
    let dir = dir.expect("--data-dir DIR (a data dir written by `kpi_queries --keep DIR`)");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let queries: Vec<(&str, &str)> =
        QUERIES.iter().copied().filter(|(name, _)| only.as_ref().is_none_or(|o| name.contains(o.as_str()))).collect();
    rt.block_on(run(&dir, runs, &queries, explain));
}

async fn run(dir: &Path, runs: usize, queries: &[(&str, &str)], explain: bool) {
    let store = Store::open(dir.join("store"), "bench-reader").unwrap();
    let snap = store.refresh().unwrap();
    let limits = SqlLimits {
        // DataFusion does not spill here (the sandbox disables it): count(DISTINCT) over
        // 50M events needs more than 4 GiB.
        memory_bytes: 12 << 30,
        timeout: Duration::from_secs(600),
        max_rows: 1_000_000,
        ..SqlLimits::default()
    };
    let engine = SqlEngine::new(store.clone(), admin_units_table(&AdminUnits::builtin()), limits)
        .with_catalog(Arc::new(ioc_core::Catalog::builtin()));
    let caller = Caller { token: "bench", via: "bench", province: None, admin: true, hook: None };
    if explain {
        for (name, sql) in queries {
            let out = engine.run(&caller, &format!("EXPLAIN ANALYZE {sql}")).await.unwrap();
            println!("== {name}\n{}", arrow::util::pretty::pretty_format_batches(&out.batches).unwrap());
        }
        return;
    }
    let mut ours = Vec::new();
    for (name, sql) in queries {
        let rows = engine.run(&caller, sql).await.unwrap_or_else(|e| panic!("{name}: {e}")).rows;
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            engine.run(&caller, sql).await.unwrap_or_else(|e| panic!("{name}: {e}"));
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        ours.push((rows, times[times.len() / 2]));
    }

    let files: serde_json::Map<String, serde_json::Value> = snap
        .files
        .iter()
        .map(|(t, fs)| (t.clone(), fs.iter().map(|f| f.path.clone()).collect::<Vec<_>>().into()))
        .collect();
    let csv = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/admin_units_2025.csv");
    let mut child = Command::new("python3")
        .args(["-c", DUCKDB, &dir.join("store").to_string_lossy(), &runs.to_string(), csv])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", serde_json::Value::Object(files)).unwrap();
        let sqls: Vec<&str> = queries.iter().map(|(_, s)| *s).collect();
        writeln!(stdin, "{}", serde_json::to_string(&sqls).unwrap()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "duckdb failed (pip install duckdb)");
    // The result is the last line; anything before it is DuckDB's own output.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let duck: Vec<serde_json::Value> = serde_json::from_str(stdout.lines().last().unwrap_or("[]")).unwrap();

    let events: u64 = ioc_core::event::Family::ALL.iter().map(|f| snap.rows(f.table())).sum();
    println!("{events} events in {} files; median of {runs} runs", snap.files.values().map(Vec::len).sum::<usize>());
    println!("{:<30} {:>8} {:>10} {:>10} {:>7}", "query", "rows", "ours ms", "duckdb ms", "ratio");
    let mut ratios = Vec::new();
    for (((name, _), (rows, t)), d) in queries.iter().zip(&ours).zip(&duck) {
        let (drows, dt) = (d["rows"].as_u64().unwrap() as usize, d["median_s"].as_f64().unwrap());
        assert_eq!(*rows, drows, "{name}: both engines return the same number of rows");
        ratios.push(t / dt);
        println!("{name:<30} {rows:>8} {:>10.1} {:>10.1} {:>7.2}", t * 1e3, dt * 1e3, t / dt);
    }
    let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    println!("geometric mean ratio: {geo:.2}");
}
