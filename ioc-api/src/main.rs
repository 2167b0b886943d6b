//! `ioc`: the one binary (CONTRACT.md §6).
//!
//! Exit codes: 0 on success, 2 on bad arguments or configuration (naming the flag or
//! key), 1 on any other failure.

// The binary talks to its user on stdout/stderr; libraries log through `tracing`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use ioc_api::config::{ConfigError, FileConfig, Overrides, Settings};
use ioc_api::server::{self, Mode, ServerError};
use ioc_core::AdminUnits;
use ioc_ingest::Simulator;
use ioc_query::SqlEngine;
use ioc_query::context::admin_units_table;
use ioc_storage::Store;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "ioc", version, about = "Intelligent Operations Center backend for Vietnam's Home Affairs sector")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system on this machine with a built-in simulator (no Kafka).
    Demo(Common),
    /// Run in production.
    Serve(Common),
    /// Generate load: seeded events to an IOC server, a file or Kafka.
    Simulate(SimulateArgs),
    /// Query the stored data locally and print a table.
    Sql(SqlArgs),
    /// Compact small files, apply retention and delete files removed before the grace
    /// period, now. Safe while a server writes to the same data directory.
    Compact(CompactArgs),
    /// The Delta Lake tables other engines read (`<data-dir>/store/tables/<table>/`).
    #[command(subcommand)]
    Lake(LakeCommand),
}

#[derive(Subcommand)]
enum LakeCommand {
    /// Delete every table's `_delta_log/` and write it again from the commit log (for
    /// a damaged Delta log). Run it with no server writing to the data directory.
    Rebuild(LakeArgs),
}

#[derive(Args)]
struct LakeArgs {
    /// TOML config file (for data_dir).
    #[arg(long, env = "IOC_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory (or s3:// bucket) [default: ./ioc-data].
    #[arg(long, env = "IOC_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Clone, Default)]
struct Common {
    /// TOML config file; its keys mirror these flags.
    #[arg(long, env = "IOC_CONFIG")]
    config: Option<PathBuf>,
    /// Where data, the commit log and the audit log live: a folder, or a bucket
    /// `s3://BUCKET/PREFIX` (connection from the AWS_* variables) [default: ./ioc-data;
    /// the demo uses a fresh temporary folder].
    #[arg(long, env = "IOC_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where the SQL audit log and the alert state and history live [default: the data
    /// dir; ./ioc-state when the data dir is a bucket].
    #[arg(long, env = "IOC_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "IOC_HTTP")]
    http: Option<String>,
    /// PostgreSQL wire protocol listen address [default: 127.0.0.1:5433].
    #[arg(long, env = "IOC_PG")]
    pg: Option<String>,
    /// Kafka bootstrap brokers, comma-separated.
    #[arg(long, env = "IOC_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Kafka topics to consume, comma-separated [default: ioc.events].
    #[arg(long, env = "IOC_KAFKA_TOPICS")]
    kafka_topics: Option<String>,
    /// Kafka consumer group [default: ioc].
    #[arg(long, env = "IOC_KAFKA_GROUP")]
    kafka_group: Option<String>,
    /// Partition ownership: `group` (the consumer group splits partitions between
    /// instances) or `all` (this instance owns every partition, single node) [default: group].
    #[arg(long, env = "IOC_KAFKA_ASSIGNMENT")]
    kafka_assignment: Option<String>,
    /// KPI catalog file replacing the built-in one.
    #[arg(long, env = "IOC_CATALOG")]
    catalog: Option<PathBuf>,
    /// Simulated events per second (demo) [default: 200].
    #[arg(long, env = "IOC_RATE")]
    rate: Option<u32>,
    /// Largest accepted request body for POST /api/v1/events [default: 16 MiB].
    #[arg(long, env = "IOC_BODY_LIMIT_BYTES")]
    body_limit_bytes: Option<usize>,
    /// How long an event_id is remembered for dedupe, in days (at least 35) [default: 40].
    #[arg(long, env = "IOC_DEDUPE_WINDOW_DAYS")]
    dedupe_window_days: Option<u32>,
    /// Events with a province code from before 2025-07-01: `reject` them to the dead
    /// letters, or `remap` them to the province since that date, keeping the code they
    /// came with in `province_code_original` [default: reject].
    #[arg(long, env = "IOC_LEGACY_PROVINCE_CODES")]
    legacy_province_codes: Option<String>,
    /// Memory limit per SQL query, in MiB [default: 256].
    #[arg(long, env = "IOC_SQL_MEMORY_LIMIT_MB")]
    sql_memory_limit_mb: Option<usize>,
    /// Time limit per SQL query, in seconds [default: 30].
    #[arg(long, env = "IOC_SQL_TIMEOUT_SECS")]
    sql_timeout_secs: Option<u64>,
    /// Row cap per SQL query [default: 10000].
    #[arg(long, env = "IOC_SQL_MAX_ROWS")]
    sql_max_rows: Option<usize>,
    /// Row cap per KPI series answer; larger answers are refused with `too_many_rows`
    /// [default: 100000].
    #[arg(long, env = "IOC_KPI_MAX_ROWS")]
    kpi_max_rows: Option<usize>,
    /// Seconds between websocket pings [default: 15].
    #[arg(long, env = "IOC_WS_PING_INTERVAL_SECS")]
    ws_ping_interval_secs: Option<u64>,
    /// A websocket client that answers no ping or takes no message for this many
    /// seconds is disconnected as too slow [default: 45].
    #[arg(long, env = "IOC_WS_TIMEOUT_SECS")]
    ws_timeout_secs: Option<u64>,
    /// Alert rules file (TOML) [default: one national rule per ratio KPI at its target].
    #[arg(long, env = "IOC_ALERT_RULES")]
    alert_rules: Option<PathBuf>,
    /// Alertmanager-compatible webhook that receives firing and resolved alerts.
    #[arg(long, env = "IOC_ALERT_WEBHOOK_URL")]
    alert_webhook_url: Option<String>,
    /// Seconds between alert evaluations [default: 15].
    #[arg(long, env = "IOC_ALERT_EVAL_INTERVAL_SECS")]
    alert_eval_interval_secs: Option<u64>,
    /// Alerts are stale, and never fire, when no event was committed for this many
    /// seconds [default: 3600].
    #[arg(long, env = "IOC_ALERT_STALE_AFTER_SECS")]
    alert_stale_after_secs: Option<u64>,
    /// Compaction merges small files into files of up to this size, in MiB [default: 128].
    #[arg(long, env = "IOC_COMPACTION_TARGET_FILE_MB")]
    compaction_target_file_mb: Option<u64>,
    /// Seconds between background compaction, retention and vacuum runs [default: 300].
    #[arg(long, env = "IOC_COMPACTION_INTERVAL_SECS")]
    compaction_interval_secs: Option<u64>,
    /// A date partition is compacted once it has this many small files [default: 8].
    #[arg(long, env = "IOC_COMPACTION_MIN_FILES")]
    compaction_min_files: Option<usize>,
    /// Files removed by compaction or retention are deleted from disk this many seconds
    /// later, for readers of older snapshots [default: 3600].
    #[arg(long, env = "IOC_COMPACTION_GRACE_SECS")]
    compaction_grace_secs: Option<u64>,
    /// Days to keep per table, `TABLE=DAYS,...`; 0 keeps forever [default:
    /// dead_letters=90, everything else forever].
    #[arg(long, env = "IOC_RETENTION_DAYS")]
    retention_days: Option<String>,
}

#[derive(Args)]
struct SimulateArgs {
    /// Events per second.
    #[arg(long, env = "IOC_SIMULATE_RATE")]
    rate: u32,
    /// How many seconds of events to generate.
    #[arg(long, env = "IOC_SIMULATE_DURATION")]
    duration: u64,
    /// Post to an IOC server (base URL or the /api/v1/events URL).
    #[arg(long, env = "IOC_SIMULATE_HTTP", group = "target")]
    http: Option<String>,
    /// Write NDJSON to a file.
    #[arg(long, env = "IOC_SIMULATE_OUT", group = "target")]
    out: Option<PathBuf>,
    /// Produce to Kafka (comma-separated brokers).
    #[arg(long, env = "IOC_SIMULATE_KAFKA", group = "target")]
    kafka: Option<String>,
    /// Kafka topic for --kafka (created with --partitions if missing).
    #[arg(long, env = "IOC_SIMULATE_TOPIC", default_value = "ioc.events")]
    topic: String,
    /// Partitions of topics that --kafka creates.
    #[arg(long, env = "IOC_SIMULATE_PARTITIONS", default_value_t = 4)]
    partitions: i32,
    /// Random seed: the same seed and start give the same events.
    #[arg(long, env = "IOC_SIMULATE_SEED", default_value_t = 1)]
    seed: u64,
    /// Time of the first event (RFC 3339) [default: the start of the current hour].
    #[arg(long, env = "IOC_SIMULATE_START")]
    start: Option<String>,
    /// Bearer token for --http.
    #[arg(long, env = "IOC_TOKEN")]
    token: Option<String>,
}

#[derive(Args)]
struct SqlArgs {
    /// TOML config file (for data_dir and SQL limits).
    #[arg(long, env = "IOC_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory (or s3:// bucket) to query [default: ./ioc-data].
    #[arg(long, env = "IOC_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where the SQL audit log lives [default: the data dir; ./ioc-state for a bucket].
    #[arg(long, env = "IOC_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Output format: table, csv or json.
    #[arg(long, env = "IOC_SQL_FORMAT", default_value = "table")]
    format: String,
    /// The query.
    query: String,
}

#[derive(Args)]
struct CompactArgs {
    /// TOML config file (for data_dir and the [compaction] and [retention] keys).
    #[arg(long, env = "IOC_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory (or s3:// bucket) to compact [default: ./ioc-data].
    #[arg(long, env = "IOC_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Merge small files into files of up to this size, in MiB [default: 128].
    #[arg(long, env = "IOC_COMPACTION_TARGET_FILE_MB")]
    target_file_mb: Option<u64>,
    /// Compact a date partition once it has this many small files [default: 8].
    #[arg(long, env = "IOC_COMPACTION_MIN_FILES")]
    min_files: Option<usize>,
    /// Delete removed files only this many seconds after their removal [default: 3600].
    /// 0 deletes at once: only when no server or query reads this data directory.
    #[arg(long, env = "IOC_COMPACTION_GRACE_SECS")]
    grace_secs: Option<u64>,
    /// Days to keep per table, `TABLE=DAYS,...`; 0 keeps forever [default:
    /// dead_letters=90].
    #[arg(long, env = "IOC_RETENTION_DAYS")]
    retention_days: Option<String>,
}

/// An error that means "bad arguments or configuration": exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

const DEFAULT_DATA_DIR: &str = "ioc-data";

/// The store of the data dir, for the commands that work on existing data (`sql`,
/// `compact`, `lake rebuild`); a usage error if there is none.
fn existing_store(s: &Settings) -> Result<PathBuf> {
    let root = s.data_dir.join("store");
    if !Store::exists_at(&root)? {
        return Err(UsageError(format!("--data-dir: no IOC data in {}", s.data_dir.display())).into());
    }
    Ok(root)
}

fn settings(c: &Common) -> Result<Settings, ConfigError> {
    let file = match &c.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let overrides = Overrides {
        data_dir: c.data_dir.clone(),
        state_dir: c.state_dir.clone(),
        http: c.http.clone(),
        pg: c.pg.clone(),
        kafka_brokers: c.kafka_brokers.clone(),
        kafka_topics: c.kafka_topics.clone(),
        kafka_group: c.kafka_group.clone(),
        kafka_assignment: c.kafka_assignment.clone(),
        catalog: c.catalog.clone(),
        rate: c.rate,
        body_limit_bytes: c.body_limit_bytes,
        dedupe_window_days: c.dedupe_window_days,
        legacy_province_codes: c.legacy_province_codes.clone(),
        auth_tokens: std::env::var("IOC_AUTH_TOKENS").ok(),
        sql_memory_limit_mb: c.sql_memory_limit_mb,
        sql_timeout_secs: c.sql_timeout_secs,
        sql_max_rows: c.sql_max_rows,
        kpi_max_rows: c.kpi_max_rows,
        ws_ping_interval_secs: c.ws_ping_interval_secs,
        ws_timeout_secs: c.ws_timeout_secs,
        alert_rules: c.alert_rules.clone(),
        alert_webhook_url: c.alert_webhook_url.clone(),
        alert_eval_interval_secs: c.alert_eval_interval_secs,
        alert_stale_after_secs: c.alert_stale_after_secs,
        compaction_target_file_mb: c.compaction_target_file_mb,
        compaction_interval_secs: c.compaction_interval_secs,
        compaction_min_files: c.compaction_min_files,
        compaction_grace_secs: c.compaction_grace_secs,
        retention_days: c.retention_days.clone(),
    };
    Settings::resolve(overrides, file, DEFAULT_DATA_DIR)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn run_server(c: Common, demo: bool) -> Result<()> {
    let mut s = settings(&c).map_err(|e| UsageError(e.to_string()))?;
    // Without --data-dir (or a config/env value), the demo starts fresh in a temporary
    // folder that is removed when it stops, so it always starts in seconds.
    let _scratch = if demo && c.data_dir.is_none() && std::env::var_os("IOC_DATA_DIR").is_none() && c.config.is_none() {
        let dir = tempfile::Builder::new().prefix("ioc-demo-").tempdir().context("creating a temporary data dir")?;
        s.data_dir = dir.path().to_path_buf();
        Some(dir)
    } else {
        None
    };
    let mode = if demo { Mode::Demo { rate: s.rate } } else { Mode::Serve };
    if demo {
        #[allow(clippy::print_stdout)]
        {
            println!(
                "IOC demo: open http://{}/ in a browser (Ctrl+C to stop). Data in {}",
                s.http,
                s.data_dir.display()
            );
        }
    }
    match server::run(s, mode, shutdown_signal()).await {
        Ok(()) => Ok(()),
        Err(ServerError::Config(e)) => Err(UsageError(e.to_string()).into()),
        Err(ServerError::Alerts(e)) if e.is_config() => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

async fn run_simulate(a: SimulateArgs) -> Result<()> {
    if a.rate == 0 {
        return Err(UsageError("--rate must be positive".into()).into());
    }
    let start: DateTime<Utc> = match &a.start {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| UsageError(format!("--start: `{s}` is not an RFC 3339 timestamp")))?
            .to_utc(),
        None => ioc_core::time::hour_start(ioc_core::time::hour_of(Utc::now())),
    };
    let total = u64::from(a.rate) * a.duration;
    let mut sim = Simulator::new(Arc::new(AdminUnits::builtin()), a.seed);
    let step_us = 1_000_000 / i64::from(a.rate);
    let at = |i: u64| start + chrono::Duration::microseconds(step_us * i as i64);
    if let Some(path) = &a.out {
        let file = std::fs::File::create(path).with_context(|| format!("--out {}", path.display()))?;
        let mut w = std::io::BufWriter::new(file);
        for i in 0..total {
            serde_json::to_writer(&mut w, &sim.next_event(at(i)).to_json())?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        eprintln!("wrote {total} events to {}", path.display());
        return Ok(());
    }
    if let Some(brokers) = &a.kafka {
        return produce_to_kafka(&a, brokers, total, |i| sim.next_event(at(i))).await;
    }
    let Some(url) = &a.http else {
        return Err(UsageError("one of --http, --out or --kafka is required".into()).into());
    };
    let url = if url.contains("/api/v1/events") {
        url.clone()
    } else {
        format!("{}/api/v1/events", url.trim_end_matches('/'))
    };
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (mut sent, mut accepted, mut duplicates, mut rejected) = (0u64, 0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * f64::from(a.rate)) as u64).clamp(1, total);
        if due <= sent {
            continue;
        }
        let mut body = Vec::new();
        for i in sent..due {
            serde_json::to_writer(&mut body, &sim.next_event(at(i)).to_json())?;
            body.push(b'\n');
        }
        let mut req = client.post(&url).header("content-type", "application/x-ndjson").body(body);
        if let Some(t) = &a.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("POST {url} answered {status}: {text}");
        }
        let v: serde_json::Value = serde_json::from_str(&text)?;
        accepted += v["accepted"].as_u64().unwrap_or(0);
        duplicates += v["duplicates"].as_u64().unwrap_or(0);
        rejected += v["rejected"].as_array().map_or(0, |r| r.len() as u64);
        sent = due;
    }
    eprintln!(
        "sent {sent} events in {:.1}s: {accepted} accepted, {duplicates} duplicates, {rejected} rejected",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `simulate --kafka`: paced at --rate, keyed by entity id, with a progress bar.
async fn produce_to_kafka(
    a: &SimulateArgs,
    brokers: &str,
    total: u64,
    mut next: impl FnMut(u64) -> ioc_core::Event,
) -> Result<()> {
    use rdkafka::producer::FutureRecord;
    ioc_ingest::kafka::ensure_topics(brokers, &[&a.topic, ioc_ingest::kafka::DEAD_LETTER_TOPIC], a.partitions)
        .await
        .context("--kafka: creating topics")?;
    let producer = ioc_ingest::kafka::producer(brokers).context("--kafka")?;
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut deliveries = Vec::new();
    let mut sent = 0u64;
    let mut failed = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * f64::from(a.rate)) as u64).clamp(1, total);
        while sent < due {
            let event = next(sent);
            let payload = event.to_json().to_string();
            let mut record = FutureRecord::to(&a.topic).key(event.entity_id()).payload(&payload);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        r,
                    )) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => bail!("--kafka: producing failed: {e}"),
                }
            }
            sent += 1;
        }
        bar.set_position(sent);
        if deliveries.len() > 10_000 {
            for d in deliveries.drain(..) {
                failed += u64::from(!matches!(d.await, Ok(Ok(_))));
            }
        }
    }
    for d in deliveries {
        failed += u64::from(!matches!(d.await, Ok(Ok(_))));
    }
    bar.finish_and_clear();
    if failed > 0 {
        bail!("--kafka: {failed} of {sent} events were not acknowledged by the broker");
    }
    eprintln!("produced {sent} events to {} in {:.1}s", a.topic, started.elapsed().as_secs_f64());
    Ok(())
}

async fn run_sql(a: SqlArgs) -> Result<()> {
    let common = Common {
        config: a.config.clone(),
        data_dir: a.data_dir.clone(),
        state_dir: a.state_dir.clone(),
        ..Common::default()
    };
    let s = settings(&common).map_err(|e| UsageError(e.to_string()))?;
    let store = Store::open(existing_store(&s)?, "sql-cli")?;
    let catalog = Arc::new(ioc_api::server::load_catalog(s.catalog.as_ref()).map_err(|e| UsageError(e.to_string()))?);
    let mut engine = SqlEngine::new(store, admin_units_table(&AdminUnits::builtin()), s.sql).with_catalog(catalog);
    match ioc_query::AuditLog::open(&s.state_dir) {
        Ok(audit) => engine = engine.with_audit(audit),
        Err(e) => tracing::warn!(error = %e, "the SQL audit log is not writable; this query is not audited"),
    }
    let caller = ioc_query::Caller { token: "cli", via: "cli", province: None, admin: true, hook: None };
    let out = engine.run(&caller, &a.query).await?;
    let mut stdout = std::io::stdout().lock();
    match a.format.as_str() {
        "table" => {
            writeln!(stdout, "{}", arrow::util::pretty::pretty_format_batches(&out.batches)?)?;
        }
        "csv" => stdout.write_all(&ioc_api::json::csv(&out.schema, &out.batches)?)?,
        "json" => {
            let v = serde_json::json!({
                "columns": ioc_api::json::columns(&out.schema),
                "rows": ioc_api::json::rows(&out.batches),
                "truncated": out.truncated,
            });
            writeln!(stdout, "{v}")?;
        }
        other => return Err(UsageError(format!("--format: `{other}` is not one of table, csv, json")).into()),
    }
    if out.truncated {
        eprintln!("(truncated at {} rows)", out.rows);
    }
    Ok(())
}

async fn run_compact(a: CompactArgs) -> Result<()> {
    use std::io::IsTerminal;
    let common = Common {
        config: a.config.clone(),
        data_dir: a.data_dir.clone(),
        compaction_target_file_mb: a.target_file_mb,
        compaction_min_files: a.min_files,
        compaction_grace_secs: a.grace_secs,
        retention_days: a.retention_days.clone(),
        ..Common::default()
    };
    let s = settings(&common).map_err(|e| UsageError(e.to_string()))?;
    let root = existing_store(&s)?;
    let writer = format!("compact{}x{}", std::process::id(), Utc::now().timestamp_millis());
    let store = Store::open(root, writer)?;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "compacting {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let progress_bar = bar.clone();
    let compaction = s.compaction.clone();
    let r = tokio::task::spawn_blocking(move || {
        ioc_api::maintenance::run_once(&store, &compaction, &mut |p| match p {
            ioc_api::maintenance::Progress::Planned { bytes, .. } => progress_bar.set_length(bytes),
            ioc_api::maintenance::Progress::Merged(done) => progress_bar.set_position(done),
        })
    })
    .await
    .context("compaction thread")??;
    bar.finish_and_clear();
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let secs = r.elapsed.as_secs_f64();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "retention: {} partitions dropped ({} files, {:.1} MiB, {} rows)",
        r.retention.partitions.len(),
        r.retention.files_removed,
        mb(r.retention.bytes_removed),
        r.retention.rows_removed
    )?;
    writeln!(
        out,
        "compaction: {} files ({:.1} MiB, {} rows) merged into {} files ({:.1} MiB) in {} partitions, {:.1} MiB/s{}",
        r.compaction.files_removed,
        mb(r.compaction.bytes_read),
        r.compaction.rows_read,
        r.compaction.files_added,
        mb(r.compaction.bytes_written),
        r.compaction.commits,
        mb(r.compaction.bytes_read) / secs.max(1e-3),
        if r.compaction.conflicts > 0 {
            format!("; {} partitions left for later (compacted concurrently)", r.compaction.conflicts)
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "vacuum: {} removed files deleted ({:.1} MiB); {} wait for the {} s grace period",
        r.vacuum.files_deleted,
        mb(r.vacuum.bytes_deleted),
        r.vacuum.files_pending,
        s.compaction.grace.as_secs()
    )?;
    writeln!(
        out,
        "files: {} -> {}; bytes: {:.1} MiB -> {:.1} MiB; took {:.2} s",
        r.files_before,
        r.files_after,
        mb(r.bytes_before),
        mb(r.bytes_after),
        secs
    )?;
    Ok(())
}

async fn run_lake(command: LakeCommand) -> Result<()> {
    let LakeCommand::Rebuild(a) = command;
    let common = Common { config: a.config.clone(), data_dir: a.data_dir.clone(), ..Common::default() };
    let s = settings(&common).map_err(|e| UsageError(e.to_string()))?;
    let root = existing_store(&s)?;
    let writer = format!("lake{}x{}", std::process::id(), Utc::now().timestamp_millis());
    let started = Instant::now();
    let r = tokio::task::spawn_blocking(move || -> Result<_> {
        let store = Store::open(&root, writer)?;
        let report = ioc_storage::delta::rebuild(&store)?;
        Ok((report, store.snapshot().version))
    })
    .await
    .context("rebuild thread")??;
    let (report, version) = r;
    writeln!(
        std::io::stdout().lock(),
        "lake: rebuilt the Delta logs of {} tables up to commit {}: {} Delta commits, {} checkpoints, in {:.2} s",
        ioc_storage::schema::tables().count(),
        version.map_or_else(|| "none".to_string(), |v| v.to_string()),
        report.commits,
        report.checkpoints,
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let filter = EnvFilter::try_from_env("IOC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(c) => run_server(c, true).await,
            Command::Serve(c) => run_server(c, false).await,
            Command::Simulate(a) => run_simulate(a).await,
            Command::Sql(a) => run_sql(a).await,
            Command::Compact(a) => run_compact(a).await,
            Command::Lake(c) => run_lake(c).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(if e.downcast_ref::<UsageError>().is_some() { 2 } else { 1 })
        }
    }
}
