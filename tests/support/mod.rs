//! Shared helpers for the end-to-end tests: spawn the real `ioc` binary on a free
//! loopback port with its own data directory, talk to it over HTTP, stop or kill it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ioc_core::AdminUnits;
use ioc_core::event::{Body, Channel, Event, ServiceLevel};
use ioc_ingest::Simulator;
use serde_json::Value;

/// Statements the SQL sandbox must refuse, over HTTP and PostgreSQL alike, while the
/// server stays up: file access, writes, engine settings, and runaway queries.
pub const SANDBOX_ATTACKS: &[&str] = &[
    "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
    "COPY (SELECT 1) TO '/tmp/ioc-copy-test.csv'",
    "COPY dossier_events TO '/tmp/ioc-copy-test.csv'",
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "DROP TABLE dossier_events",
    "INSERT INTO dead_letters SELECT * FROM dead_letters",
    "DELETE FROM dossier_events",
    "SET datafusion.execution.batch_size = 1",
    "SET datafusion.runtime.memory_limit = '100G'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_parquet('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT count(*) FROM admin_units a, admin_units b, admin_units c, admin_units d",
    "SELECT * FROM dossier_events a CROSS JOIN document_events b CROSS JOIN other_events c CROSS JOIN admin_units d",
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t",
    "SELEC nonsense",
];

/// The tests' Python: `IOC_TEST_PYTHON`, or the repository's `.venv/bin/python`, which
/// `.ci/run` makes from `tests/requirements.txt` (delta-rs, DuckDB, PyYAML, helm).
pub fn test_python() -> PathBuf {
    std::env::var_os("IOC_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

/// The real S3-compatible server of the bucket tests (SeaweedFS), shared with the
/// storage crate's tests.
#[path = "../../storage/tests/support/seaweed.rs"]
pub mod seaweed;

/// Every stored table, as the storage crate lists them (the lake script is given them).
pub fn lake_tables() -> Vec<&'static str> {
    ioc_storage::schema::tables().map(|(t, _)| t).collect()
}

/// The tests' Python, checked to have the lake's readers.
pub fn lake_python() -> PathBuf {
    let python = test_python();
    let probe = Command::new(&python).args(["-c", "import deltalake, duckdb, pyarrow"]).output();
    match probe {
        Ok(out) if out.status.success() => python,
        _ => panic!(
            "the lake tests need a Python with deltalake, duckdb and pyarrow at {} (or set IOC_TEST_PYTHON): \
             run `bash .ci/run`, or `python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt` \
             in the repository",
            python.display()
        ),
    }
}

/// What delta-rs and DuckDB read from the Delta tables of the store at `store_root` (a
/// folder, or an `s3://` URL reached with `env`), by `tests/lake/read_delta.py`.
pub fn read_lake(store_root: &Path, at: &[(String, u64)], env: &[(&str, String)]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lake/read_delta.py");
    let mut cmd = Command::new(lake_python());
    cmd.arg(script).arg(store_root).envs(env.iter().map(|(k, v)| (k, v)));
    for t in lake_tables() {
        cmd.arg("--table").arg(t);
    }
    for (table, version) in at {
        cmd.arg("--at").arg(format!("{table}={version}"));
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "read_delta.py failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn ioc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ioc")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `ioc serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub port: u16,
    /// The PostgreSQL wire protocol port.
    pub pg_port: u16,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
    pub token: Option<String>,
}

impl Server {
    pub async fn start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_on(free_port(), data_dir, args, env).await
    }

    /// As [`Server::start`], on a given HTTP port (a restart on the same address).
    pub async fn start_on(port: u16, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let pg_port = free_port();
        let mut cmd = Command::new(ioc_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--http")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--pg")
            .arg(format!("127.0.0.1:{pg_port}"))
            .args(args)
            .env_remove("IOC_AUTH_TOKENS")
            .env("IOC_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn ioc");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            pg_port,
            data_dir: data_dir.to_path_buf(),
            client: reqwest::Client::new(),
            token: None,
        };
        server.wait_healthy().await;
        server
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    async fn wait_healthy(&self) {
        // Generous: the benchmarks start servers on 50M stored events (about a minute).
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(r) = self.client.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "ioc did not become healthy on {}", self.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// POSTs NDJSON; returns (status, JSON body).
    pub async fn post_ndjson(&self, lines: &[String]) -> (u16, Value) {
        let body = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        let r = self
            .auth(self.client.post(format!("{}/api/v1/events", self.base)))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.auth(self.client.get(format!("{}{path}", self.base))).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The status and the raw body, unparsed (for timing the server's answer alone).
    pub async fn get_bytes(&self, path: &str) -> (u16, usize) {
        let r = self.auth(self.client.get(format!("{}{path}", self.base))).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.map_or(0, |b| b.len()))
    }

    pub async fn sql(&self, sql: &str) -> (u16, Value) {
        let r = self
            .auth(self.client.post(format!("{}/api/v1/sql", self.base)))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A single number from a SQL query.
    pub async fn sql_count(&self, sql: &str) -> i64 {
        let (status, v) = self.sql(sql).await;
        assert_eq!(status, 200, "{sql}: {v}");
        v["rows"][0][0].as_i64().unwrap_or_else(|| panic!("{sql}: {v}"))
    }

    /// The `/metrics` page (with the server's token, when it has one).
    pub async fn metrics_text(&self) -> String {
        let r = self.auth(self.client.get(format!("{}/metrics", self.base))).send().await.unwrap();
        assert!(r.status().is_success(), "GET /metrics: {}", r.status());
        r.text().await.unwrap()
    }

    /// Asserts that `/metrics` exposes every named metric.
    pub async fn assert_metrics(&self, names: &[&str]) {
        let text = self.metrics_text().await;
        for name in names {
            assert!(text.contains(name), "{name} missing from /metrics");
        }
    }

    /// The sum of every sample of a metric in `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The sum of the samples of a metric whose labels include every `key="value"`
    /// pair in `labels` (0 when absent), e.g.
    /// `metric_where("ioc_kafka_rebalances_total", &[("kind", "revoke")])`.
    pub async fn metric_where(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
            .filter_map(|rest| rest.split_once('}'))
            .filter(|(set, _)| labels.iter().all(|(k, v)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\""))))
            .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
            .sum()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seeded realistic events whose times spread over the `days` before `end`.
pub fn events(seed: u64, n: usize, end: DateTime<Utc>, days: i64) -> Vec<Event> {
    let mut sim = Simulator::new(Arc::new(AdminUnits::builtin()), seed);
    let span = days * 24 * 3600;
    (0..n)
        .map(|i| {
            let back = span - (i as i64 * span / n.max(1) as i64);
            sim.next_event(end - chrono::Duration::seconds(back))
        })
        .collect()
}

pub fn lines(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.to_json().to_string()).collect()
}

/// The contract's KPI definitions (CONTRACT.md §2 and §7.5), written independently of
/// the shipped catalog: (numerator, denominator) per KPI id.
pub fn expected_counts(events: &[Event], province: Option<&str>) -> BTreeMap<&'static str, (u64, u64)> {
    let mut m: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut add = |id: &'static str, den: bool, num: bool| {
        let e = m.entry(id).or_default();
        if den {
            e.1 += 1;
            if num {
                e.0 += 1;
            }
        }
    };
    for e in events {
        if province.is_some() && e.province_code.as_deref() != province {
            continue;
        }
        match &e.body {
            Body::DossierReceived {
                channel,
                service_level,
                digitized,
                reused_data,
                authenticated,
                synced_dvcqg,
                ..
            } => {
                let online = *channel == Channel::Online;
                add("full_online_rate", *service_level == ServiceLevel::Full, online);
                add("online_submission_rate", true, online);
                add("digitization_rate", true, *digitized);
                add("data_reuse_rate", true, *reused_data);
                add("eid_auth_rate", online, *authenticated);
                // CONTRACT.md §7.5: over the dossiers that carry the optional flag.
                add("dvcqg_sync_rate", synced_dvcqg.is_some(), *synced_dvcqg == Some(true));
            }
            Body::DossierResolved { due_at, result_electronic, .. } => {
                add("on_time_rate", true, e.occurred_at <= *due_at);
                add("e_result_rate", true, *result_electronic);
            }
            Body::DossierPaid { online, .. } => add("online_payment_rate", true, *online),
            Body::DossierRated { satisfied, .. } => add("satisfaction_rate", true, *satisfied),
            Body::DocumentSent { electronic, signed, secret, .. } => {
                add("edoc_rate", !secret, *electronic);
                add("signed_edoc_rate", *electronic && !secret, *signed);
            }
            Body::WorkRecordClosed { online, secret, .. } => add("online_work_record_rate", !secret, *online),
            Body::InspectionCompleted { digital, .. } => add("digital_inspection_rate", true, *digital),
            Body::ReportSubmitted { via_system, .. } => add("report_online_rate", true, *via_system),
            // CONTRACT.md §7.5: every resolution, and the rated ones for satisfaction.
            Body::FeedbackResolved { due_at, satisfied, .. } => {
                add("feedback_on_time_rate", true, e.occurred_at <= *due_at);
                add("feedback_satisfaction_rate", satisfied.is_some(), *satisfied == Some(true));
            }
            Body::DossierClosed { .. } | Body::FeedbackReceived { .. } => {}
        }
    }
    m
}

/// Compares `GET /api/v1/kpis` over a period with the independent expectations.
pub async fn check_kpis(server: &Server, events: &[Event], query: &str, province: Option<&str>) -> Result<(), String> {
    let expected = expected_counts(events, province);
    let (status, v) = server.get(&format!("/api/v1/kpis?{query}")).await;
    if status != 200 {
        return Err(format!("status {status}: {v}"));
    }
    let list = v.as_array().ok_or_else(|| format!("not a list: {v}"))?;
    if list.len() != KPI_COUNT {
        return Err(format!("expected 17 ratios and the overdue gauge, got {}", list.len()));
    }
    for k in list.iter().filter(|k| k["kind"] != "gauge") {
        let id = k["id"].as_str().unwrap_or_default();
        let (num, den) = expected.get(id).copied().unwrap_or_default();
        if (k["numerator"].as_u64(), k["denominator"].as_u64()) != (Some(num), Some(den)) {
            return Err(format!("{id}: expected {num}/{den}, got {k}"));
        }
        let (value_ok, status) = if den == 0 {
            (k["value"].is_null(), "no_data")
        } else {
            let value = num as f64 / den as f64;
            // JSON parsing may be 1 ulp off; the ratio itself is what is checked.
            let close = k["value"].as_f64().is_some_and(|v| (v - value).abs() < 1e-12);
            (close, if value >= k["target"].as_f64().unwrap_or(f64::NAN) { "ok" } else { "below_target" })
        };
        if !value_ok || k["status"] != status {
            return Err(format!("{id}: expected {num}/{den} and {status}, got {k}"));
        }
    }
    Ok(())
}

/// Asserts that `GET /api/v1/kpis` over a period equals the independent expectations.
pub async fn assert_kpis(server: &Server, events: &[Event], query: &str, province: Option<&str>) {
    if let Err(e) = check_kpis(server, events, query, province).await {
        panic!("{e}");
    }
}

/// For asynchronous sources (Kafka): the live counters follow a commit by moments, so
/// wait for them to match, then they must match exactly.
pub async fn wait_for_kpis(server: &Server, events: &[Event], query: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match check_kpis(server, events, query, None).await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A real tansu broker on a free loopback port, with sqlite storage in its own folder.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Broker {
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Starts tansu and creates the topics with 4 partitions. Fails loudly when tansu
    /// is not installed: `.ci/run` installs it.
    pub async fn start(topics: &[&str]) -> Broker {
        let mut b = Broker { child: None, port: free_port(), dir: tempfile::tempdir().unwrap() };
        b.spawn().await;
        for t in topics {
            b.create_topic(t).await;
        }
        b
    }

    async fn spawn(&mut self) {
        let child = Command::new(tansu_bin())
            .arg("broker")
            .arg("--listener-url")
            .arg(self.url())
            .arg("--advertised-listener-url")
            .arg(self.url())
            .arg("--storage-engine")
            .arg("sqlite://tansu.db")
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is not installed: run `cargo install --locked tansu --features dynostore,libsql`");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn create_topic(&self, topic: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(tansu_bin())
                .args(["topic", "create", topic, "--broker", &self.url(), "--partitions", "4"])
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "could not create {topic}: {}", String::from_utf8_lossy(&out.stderr));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the broker (SIGKILL) and starts it again on the same port and storage.
    pub async fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn().await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tansu_bin() -> String {
    std::env::var("TANSU").unwrap_or_else(|_| "tansu".into())
}

/// A producer for tests: a real rdkafka client, keyed messages.
pub fn producer(brokers: &str) -> rdkafka::producer::FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "zstd")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap()
}

/// Produces (key, payload) pairs and waits until the broker acknowledged all of them.
pub async fn produce(producer: &rdkafka::producer::FutureProducer, topic: &str, messages: &[(String, Vec<u8>)]) {
    use rdkafka::producer::FutureRecord;
    let mut pending = Vec::new();
    for (key, payload) in messages {
        let mut record = FutureRecord::to(topic).key(key.as_str()).payload(payload.as_slice());
        loop {
            match producer.send_result(record) {
                Ok(d) => {
                    pending.push(d);
                    break;
                }
                Err((_, r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for d in pending {
        d.await.unwrap().unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));
    }
}

/// Waits until `sql` counts at least `want`, failing with the last count seen.
pub async fn wait_for_count(server: &Server, sql: &str, want: i64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let n = server.sql_count(sql).await;
        if n >= want {
            return;
        }
        assert!(Instant::now() < deadline, "timed out: {sql} gave {n}, waiting for {want}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every stored event, across the five event tables.
pub const ALL_EVENTS: &str = "SELECT count(*) FROM (SELECT event_id FROM dossier_events UNION ALL SELECT event_id FROM document_events UNION ALL SELECT event_id FROM work_record_events UNION ALL SELECT event_id FROM other_events UNION ALL SELECT event_id FROM feedback_events)";

/// The KPIs of the shipped catalog: 17 ratios (CONTRACT.md §2 and §7.5) and the
/// overdue gauge.
pub const KPI_COUNT: usize = 18;

/// A `kB` line of /proc/<pid>/status, such as `VmHWM:` (peak RSS), for benchmarks.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
