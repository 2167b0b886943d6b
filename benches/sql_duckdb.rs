//! Ad-hoc SQL through our engine versus DuckDB, on the same Parquet files.
//!
//! Reads a data dir written by `kpi_queries --keep DIR` (generated, then compacted).
//! Ten typical leader queries run through [`SqlEngine`] (the same path as `ioc sql`,
//! HTTP and pgwire, with the sandbox's limits) and through DuckDB (Python `duckdb`
//! from PyPI) over `read_parquet` of the very files the store lists. Each query runs
//! `--runs` times after one warm-up, alternating with DuckDB run by run; the medians
//! are reported, with the ratio ours / DuckDB, and both engines' row counts are
//! checked to agree.
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

/// DuckDB, driven one run at a time: a line of JSON (the SQL) in, a line out with the
/// row count and the seconds it took.
const DUCKDB: &str = r#"
import json, sys, time, duckdb
store, csv = sys.argv[1], sys.argv[2]
files = json.loads(sys.stdin.readline())
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute("SET enable_progress_bar = false")
for table, paths in files.items():
    if paths:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({[store + '/' + p for p in paths]!r})")
con.execute(f"""CREATE TABLE admin_units AS SELECT province_code, province_name, commune_code, commune_name, commune_type
                FROM read_csv('{csv}', all_varchar = true)""")
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    sql = json.loads(line)
    t = time.perf_counter(); rows = len(con.execute(sql).fetchall()); s = time.perf_counter() - t
    print(json.dumps({"rows": rows, "s": s}), flush=True)
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
    let files: serde_json::Map<String, serde_json::Value> = snap
        .files
        .iter()
        .map(|(t, fs)| (t.clone(), fs.iter().map(|f| f.path.clone()).collect::<Vec<_>>().into()))
        .collect();
    let mut duck = DuckDb::start(&dir.join("store"), &serde_json::Value::Object(files));

    // Runs alternate between the engines, so that the machine's ups and downs fall on
    // both alike; each query's first run (cold caches) is not counted.
    let mut results = Vec::new();
    for (name, sql) in queries {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut rows = (0, 0);
        for run in 0..=runs {
            let t = Instant::now();
            rows.0 = engine.run(&caller, sql).await.unwrap_or_else(|e| panic!("{name}: {e}")).rows;
            let ours_s = t.elapsed().as_secs_f64();
            let (duck_rows, duck_s) = duck.run(sql);
            rows.1 = duck_rows;
            if run > 0 {
                ours.push(ours_s);
                theirs.push(duck_s);
            }
        }
        assert_eq!(rows.0, rows.1, "{name}: both engines return the same number of rows");
        results.push((rows.0, median(ours), median(theirs)));
    }

    let events: u64 = ioc_core::event::Family::ALL.iter().map(|f| snap.rows(f.table())).sum();
    println!("{events} events in {} files; median of {runs} runs", snap.files.values().map(Vec::len).sum::<usize>());
    println!("{:<30} {:>8} {:>10} {:>10} {:>7}", "query", "rows", "ours ms", "duckdb ms", "ratio");
    let mut ratios = Vec::new();
    for ((name, _), &(rows, t, dt)) in queries.iter().zip(&results) {
        ratios.push(t / dt);
        println!("{name:<30} {rows:>8} {:>10.1} {:>10.1} {:>7.2}", t * 1e3, dt * 1e3, t / dt);
    }
    let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    println!("geometric mean ratio: {geo:.2}");
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// A Python process holding one DuckDB connection over the store's files.
struct DuckDb {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl DuckDb {
    fn start(store: &Path, files: &serde_json::Value) -> Self {
        use std::io::Write;
        let csv = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/admin_units_2025.csv");
        let mut child = Command::new("python3")
            .args(["-c", DUCKDB, &store.to_string_lossy(), csv])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{files}").unwrap();
        let mut duck = Self { stdout: std::io::BufReader::new(child.stdout.take().unwrap()), child, stdin };
        assert!(duck.reply()["ready"].as_bool().unwrap_or(false), "duckdb did not start (pip install duckdb)");
        duck
    }

    /// Rows and seconds of one run of `sql`.
    fn run(&mut self, sql: &str) -> (usize, f64) {
        use std::io::Write;
        writeln!(self.stdin, "{}", serde_json::Value::from(sql)).unwrap();
        let reply = self.reply();
        (reply["rows"].as_u64().expect("rows") as usize, reply["s"].as_f64().expect("seconds"))
    }

    /// The next JSON line; anything else is DuckDB's own output.
    fn reply(&mut self) -> serde_json::Value {
        use std::io::BufRead;
        loop {
            let mut line = String::new();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "duckdb exited");
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                return v;
            }
        }
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
