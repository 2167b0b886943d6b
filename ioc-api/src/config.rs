//! Configuration: defaults, then the TOML config file, then `IOC_*` environment
//! variables and flags (clap merges those two; a flag wins over its variable).
//! Every error names the flag or key at fault.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ioc_core::event::LegacyProvinceCodes;
use ioc_query::{KpiLimits, SqlLimits};
use serde::Deserialize;
use thiserror::Error;

use crate::auth::{Role, Token, TokenError, parse_tokens};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("IOC_AUTH_TOKENS / auth_tokens: {0}")]
    Tokens(#[from] TokenError),
}

/// The config file, every key optional. Keys mirror the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub http: Option<String>,
    pub pg: Option<String>,
    pub kafka_brokers: Option<String>,
    pub kafka_topics: Option<Vec<String>>,
    pub kafka_group: Option<String>,
    pub kafka_assignment: Option<String>,
    pub catalog: Option<PathBuf>,
    pub rate: Option<u32>,
    pub body_limit_bytes: Option<usize>,
    pub dedupe_window_days: Option<u32>,
    /// `reject` or `remap` (CONTRACT.md §7.7).
    pub legacy_province_codes: Option<String>,
    pub auth_tokens: Option<String>,
    #[serde(default)]
    pub tokens: Vec<FileToken>,
    #[serde(default)]
    pub sql: FileSql,
    #[serde(default)]
    pub kpi: FileKpi,
    #[serde(default)]
    pub ws: FileWs,
    #[serde(default)]
    pub alerts: FileAlerts,
    #[serde(default)]
    pub compaction: FileCompaction,
    #[serde(default)]
    pub dashboard: FileDashboard,
    /// Days to keep per table (`dead_letters = 90`); 0 keeps forever.
    #[serde(default)]
    pub retention: BTreeMap<String, u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCompaction {
    pub target_file_mb: Option<u64>,
    pub interval_secs: Option<u64>,
    pub min_files: Option<usize>,
    pub grace_secs: Option<u64>,
}

/// The wall display (`GET /`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDashboard {
    pub title: Option<String>,
    pub near_target_points: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWs {
    pub ping_interval_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAlerts {
    pub rules: Option<PathBuf>,
    pub webhook_url: Option<String>,
    pub eval_interval_secs: Option<u64>,
    pub stale_after_secs: Option<u64>,
    pub external_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileToken {
    pub name: String,
    pub role: String,
    pub token: String,
    pub province: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSql {
    pub memory_limit_mb: Option<usize>,
    pub timeout_secs: Option<u64>,
    pub max_rows: Option<usize>,
    pub max_concurrent: Option<usize>,
    pub max_cross_join_rows: Option<u64>,
}

/// KPI answers share the SQL engine's memory, time and concurrency limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKpi {
    pub max_rows: Option<usize>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File { path: path.to_path_buf(), message: e.to_string() })?;
        toml::from_str(&text).map_err(|e| ConfigError::File { path: path.to_path_buf(), message: e.to_string() })
    }
}

/// Values given on the command line or in `IOC_*` variables (clap fills both).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub http: Option<String>,
    pub pg: Option<String>,
    pub kafka_brokers: Option<String>,
    pub kafka_topics: Option<String>,
    pub kafka_group: Option<String>,
    pub kafka_assignment: Option<String>,
    pub catalog: Option<PathBuf>,
    pub rate: Option<u32>,
    pub body_limit_bytes: Option<usize>,
    pub dedupe_window_days: Option<u32>,
    pub legacy_province_codes: Option<String>,
    pub auth_tokens: Option<String>,
    pub sql_memory_limit_mb: Option<usize>,
    pub sql_timeout_secs: Option<u64>,
    pub sql_max_rows: Option<usize>,
    pub kpi_max_rows: Option<usize>,
    pub ws_ping_interval_secs: Option<u64>,
    pub ws_timeout_secs: Option<u64>,
    pub alert_rules: Option<PathBuf>,
    pub alert_webhook_url: Option<String>,
    pub alert_eval_interval_secs: Option<u64>,
    pub alert_stale_after_secs: Option<u64>,
    pub compaction_target_file_mb: Option<u64>,
    pub compaction_interval_secs: Option<u64>,
    pub compaction_min_files: Option<usize>,
    pub compaction_grace_secs: Option<u64>,
    /// `table=days,...`, merged over the file's `[retention]` table by table.
    pub retention_days: Option<String>,
}

/// Table maintenance: compaction, retention and vacuum (see `ioc_storage::compact`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionSettings {
    pub options: ioc_storage::CompactOptions,
    /// Time between background runs in `ioc serve` and `ioc demo`.
    pub interval: Duration,
    /// Removed files stay on disk this long for readers of older snapshots.
    pub grace: Duration,
    /// Days to keep, per table; tables not listed are kept forever.
    pub retention_days: BTreeMap<String, u32>,
}

pub const DEFAULT_COMPACTION_INTERVAL_SECS: u64 = 300;
/// Dead letters are kept 90 days by default; events, and the KPI rollups built from
/// them, are kept forever unless configured.
pub const DEFAULT_RETENTION: &[(&str, u32)] = &[(ioc_storage::DEAD_LETTERS, 90)];

/// Websocket keep-alive: a ping every `ping_interval`; a client that sends no pong,
/// or does not take a message, within `timeout` is too slow and is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsSettings {
    pub ping_interval: Duration,
    pub timeout: Duration,
}

/// Where alert rules come from and where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    /// A TOML rules file; without one, one national rule per ratio KPI at its target.
    pub rules: Option<PathBuf>,
    /// An Alertmanager-compatible webhook receiver (version 4 payloads).
    pub webhook_url: Option<String>,
    pub eval_interval: Duration,
    /// With no committed event for this long, alerts are `stale` and nothing fires.
    pub stale_after: Duration,
    /// The base URL of this server as users reach it, for links in notifications.
    pub external_url: Option<String>,
}

/// What the wall display shows besides data.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardSettings {
    /// The agency's name in the header.
    pub title: String,
    /// A value this many percentage points or less below its target is "near the
    /// target" (sát ngưỡng) rather than below it.
    pub near_target_points: f64,
    /// `alerts.stale_after_secs`: with no new data for this long the page says its
    /// numbers are stale.
    pub stale_after: Duration,
}

pub const DEFAULT_DASHBOARD_TITLE: &str = "Bộ Nội vụ";
pub const DEFAULT_NEAR_TARGET_POINTS: f64 = 2.0;

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A local folder, or a bucket URL `s3://<bucket>/<prefix>` (CONTRACT.md §7.9).
    pub data_dir: PathBuf,
    /// Where the files that are appended to or rewritten in place live (the SQL audit
    /// log, the alert state and history): `--state-dir`, else the data dir when it is
    /// local, else [`DEFAULT_STATE_DIR`].
    pub state_dir: PathBuf,
    pub http: SocketAddr,
    pub pg: SocketAddr,
    pub kafka_brokers: Option<String>,
    pub kafka_topics: Vec<String>,
    pub kafka_group: String,
    pub kafka_assignment: ioc_ingest::kafka::Assignment,
    pub catalog: Option<PathBuf>,
    pub rate: u32,
    pub body_limit_bytes: usize,
    pub dedupe_window_days: u32,
    /// What becomes of events with a province code from before 2025-07-01.
    pub legacy_province_codes: LegacyProvinceCodes,
    pub tokens: Vec<Token>,
    pub sql: SqlLimits,
    pub kpi: KpiLimits,
    pub ws: WsSettings,
    pub alerts: AlertSettings,
    pub compaction: CompactionSettings,
    pub dashboard: DashboardSettings,
}

pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// The state dir of a server whose data dir is a bucket (CONTRACT.md §7.9).
pub const DEFAULT_STATE_DIR: &str = "./ioc-state";
pub const DEFAULT_PG: &str = "127.0.0.1:5433";
pub const DEFAULT_BODY_LIMIT: usize = 16 << 20;
pub const DEFAULT_RATE: u32 = 200;

fn addr(key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| ConfigError::Invalid { key, message: format!("`{s}` is not an address like 127.0.0.1:8080") })
}

impl Settings {
    pub fn resolve(o: Overrides, f: FileConfig, default_data_dir: &str) -> Result<Self, ConfigError> {
        let compaction = compaction_settings(&o, &f)?;
        let http = addr("--http / IOC_HTTP / http", o.http.or(f.http).as_deref().unwrap_or(DEFAULT_HTTP))?;
        let pg = addr("--pg / IOC_PG / pg", o.pg.or(f.pg).as_deref().unwrap_or(DEFAULT_PG))?;
        let mut tokens = Vec::new();
        if let Some(spec) = o.auth_tokens.or(f.auth_tokens) {
            tokens.extend(parse_tokens(&spec)?);
        }
        for t in f.tokens {
            let role = Role::parse(&t.role).ok_or_else(|| ConfigError::Invalid {
                key: "tokens.role",
                message: format!("`{}` is not one of viewer, analyst, ingest, admin", t.role),
            })?;
            tokens.push(Token::new(t.name, role, t.province, t.token)?);
        }
        let body_limit_bytes = o.body_limit_bytes.or(f.body_limit_bytes).unwrap_or(DEFAULT_BODY_LIMIT);
        if body_limit_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "--body-limit-bytes / body_limit_bytes",
                message: "must be positive".into(),
            });
        }
        let dedupe_window_days =
            o.dedupe_window_days.or(f.dedupe_window_days).unwrap_or(ioc_ingest::dedupe::DEFAULT_WINDOW_DAYS);
        if dedupe_window_days < ioc_ingest::dedupe::MIN_WINDOW_DAYS {
            return Err(ConfigError::Invalid {
                key: "--dedupe-window-days / dedupe_window_days",
                message: format!("{dedupe_window_days} is below the contract's 35 days"),
            });
        }
        let legacy = o.legacy_province_codes.or(f.legacy_province_codes);
        let legacy_province_codes = match legacy.as_deref().map(str::trim) {
            None => LegacyProvinceCodes::default(),
            Some(v) => LegacyProvinceCodes::parse(v).ok_or_else(|| ConfigError::Invalid {
                key: "--legacy-province-codes / IOC_LEGACY_PROVINCE_CODES / legacy_province_codes",
                message: format!("`{v}` is not one of reject, remap"),
            })?,
        };
        let rate = o.rate.or(f.rate).unwrap_or(DEFAULT_RATE);
        let kafka_topics: Vec<String> = match (o.kafka_topics, f.kafka_topics) {
            (Some(list), _) => list.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
            (None, Some(list)) => list,
            (None, None) => vec![ioc_ingest::kafka::DEFAULT_TOPIC.to_string()],
        };
        if kafka_topics.is_empty() {
            return Err(ConfigError::Invalid {
                key: "--kafka-topics / kafka_topics",
                message: "needs at least one topic".into(),
            });
        }
        let assignment = o.kafka_assignment.or(f.kafka_assignment).unwrap_or_else(|| "group".into());
        let kafka_assignment =
            ioc_ingest::kafka::Assignment::parse(&assignment).ok_or_else(|| ConfigError::Invalid {
                key: "--kafka-assignment / IOC_KAFKA_ASSIGNMENT / kafka_assignment",
                message: format!("`{assignment}` is not one of group, all"),
            })?;
        let kafka_group =
            o.kafka_group.or(f.kafka_group).unwrap_or_else(|| ioc_ingest::kafka::DEFAULT_GROUP.to_string());
        let defaults = SqlLimits::default();
        let sql = SqlLimits {
            memory_bytes: o.sql_memory_limit_mb.or(f.sql.memory_limit_mb).map_or(defaults.memory_bytes, |mb| mb << 20),
            timeout: o.sql_timeout_secs.or(f.sql.timeout_secs).map_or(defaults.timeout, Duration::from_secs),
            max_rows: o.sql_max_rows.or(f.sql.max_rows).unwrap_or(defaults.max_rows),
            max_concurrent: f.sql.max_concurrent.unwrap_or(defaults.max_concurrent),
            max_cross_join_rows: f.sql.max_cross_join_rows.unwrap_or(defaults.max_cross_join_rows),
        };
        if sql.memory_bytes == 0 || sql.timeout.is_zero() || sql.max_rows == 0 || sql.max_concurrent == 0 {
            return Err(ConfigError::Invalid { key: "sql", message: "SQL limits must be positive".into() });
        }
        let kpi_max_rows = o.kpi_max_rows.or(f.kpi.max_rows).unwrap_or(ioc_query::kpi::DEFAULT_KPI_MAX_ROWS);
        if kpi_max_rows == 0 {
            return Err(ConfigError::Invalid {
                key: "--kpi-max-rows / IOC_KPI_MAX_ROWS / kpi.max_rows",
                message: "must be positive".into(),
            });
        }
        let kpi = KpiLimits::from_sql(&sql, kpi_max_rows);
        let secs = |key: &'static str, v: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
            match v.unwrap_or(default) {
                0 => Err(ConfigError::Invalid { key, message: "must be at least 1 second".into() }),
                n => Ok(Duration::from_secs(n)),
            }
        };
        let ws = WsSettings {
            ping_interval: secs(
                "--ws-ping-interval-secs / IOC_WS_PING_INTERVAL_SECS / ws.ping_interval_secs",
                o.ws_ping_interval_secs.or(f.ws.ping_interval_secs),
                15,
            )?,
            timeout: secs(
                "--ws-timeout-secs / IOC_WS_TIMEOUT_SECS / ws.timeout_secs",
                o.ws_timeout_secs.or(f.ws.timeout_secs),
                45,
            )?,
        };
        let webhook_url = o.alert_webhook_url.or(f.alerts.webhook_url).filter(|u| !u.trim().is_empty());
        if let Some(url) = &webhook_url
            && !url.starts_with("http://")
        {
            return Err(ConfigError::Invalid {
                key: "--alert-webhook-url / IOC_ALERT_WEBHOOK_URL / alerts.webhook_url",
                message: format!(
                    "`{url}` is not an http:// URL (receivers are reached over plain HTTP, e.g. a local Alertmanager)"
                ),
            });
        }
        let alerts = AlertSettings {
            rules: o.alert_rules.or(f.alerts.rules),
            webhook_url,
            eval_interval: secs(
                "--alert-eval-interval-secs / IOC_ALERT_EVAL_INTERVAL_SECS / alerts.eval_interval_secs",
                o.alert_eval_interval_secs.or(f.alerts.eval_interval_secs),
                15,
            )?,
            stale_after: secs(
                "--alert-stale-after-secs / IOC_ALERT_STALE_AFTER_SECS / alerts.stale_after_secs",
                o.alert_stale_after_secs.or(f.alerts.stale_after_secs),
                3600,
            )?,
            external_url: f.alerts.external_url,
        };
        let dashboard = dashboard_settings(&f.dashboard, alerts.stale_after)?;
        let data_dir = o.data_dir.or(f.data_dir).unwrap_or_else(|| PathBuf::from(default_data_dir));
        let state_dir = o.state_dir.or(f.state_dir).unwrap_or_else(|| {
            if ioc_storage::object::is_bucket_url(&data_dir) {
                PathBuf::from(DEFAULT_STATE_DIR)
            } else {
                data_dir.clone()
            }
        });
        Ok(Self {
            data_dir,
            state_dir,
            http,
            pg,
            kafka_brokers: o.kafka_brokers.or(f.kafka_brokers).filter(|s| !s.trim().is_empty()),
            kafka_topics,
            kafka_group,
            kafka_assignment,
            catalog: o.catalog.or(f.catalog),
            rate,
            body_limit_bytes,
            dedupe_window_days,
            legacy_province_codes,
            tokens,
            sql,
            kpi,
            ws,
            alerts,
            compaction,
            dashboard,
        })
    }

    /// The contract's rule: without tokens, only loopback (HTTP and PostgreSQL).
    pub fn check_bind_safety(&self) -> Result<(), ConfigError> {
        if self.tokens.is_empty() && !self.pg.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                key: "--pg / IOC_PG / pg",
                message: format!(
                    "refusing to listen on {} without authentication; configure IOC_AUTH_TOKENS or bind to 127.0.0.1",
                    self.pg
                ),
            });
        }
        if self.tokens.is_empty() && !self.http.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                key: "--http / IOC_HTTP / http",
                message: format!(
                    "refusing to listen on {} without authentication; configure IOC_AUTH_TOKENS or bind to 127.0.0.1",
                    self.http
                ),
            });
        }
        Ok(())
    }
}

fn dashboard_settings(f: &FileDashboard, stale_after: Duration) -> Result<DashboardSettings, ConfigError> {
    let title = f.title.as_deref().map(str::trim).unwrap_or(DEFAULT_DASHBOARD_TITLE).to_string();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ConfigError::Invalid { key: "dashboard.title", message: "must be 1 to 200 characters".into() });
    }
    let near_target_points = f.near_target_points.unwrap_or(DEFAULT_NEAR_TARGET_POINTS);
    if !(0.0..=100.0).contains(&near_target_points) {
        return Err(ConfigError::Invalid {
            key: "dashboard.near_target_points",
            message: format!("{near_target_points} is not between 0 and 100 percentage points"),
        });
    }
    Ok(DashboardSettings { title, near_target_points, stale_after })
}

fn compaction_settings(o: &Overrides, f: &FileConfig) -> Result<CompactionSettings, ConfigError> {
    const TARGET: &str = "--compaction-target-file-mb / IOC_COMPACTION_TARGET_FILE_MB / compaction.target_file_mb";
    const INTERVAL: &str = "--compaction-interval-secs / IOC_COMPACTION_INTERVAL_SECS / compaction.interval_secs";
    const MIN_FILES: &str = "--compaction-min-files / IOC_COMPACTION_MIN_FILES / compaction.min_files";
    const RETENTION: &str = "--retention-days / IOC_RETENTION_DAYS / retention";
    let defaults = ioc_storage::CompactOptions::default();
    let target_mb = o.compaction_target_file_mb.or(f.compaction.target_file_mb).unwrap_or(defaults.target_bytes >> 20);
    if target_mb == 0 || target_mb > 16 << 10 {
        return Err(ConfigError::Invalid { key: TARGET, message: format!("{target_mb} is not between 1 and 16384") });
    }
    let min_files = o.compaction_min_files.or(f.compaction.min_files).unwrap_or(defaults.min_files);
    if min_files < 2 {
        return Err(ConfigError::Invalid { key: MIN_FILES, message: format!("{min_files} is below 2") });
    }
    let interval =
        o.compaction_interval_secs.or(f.compaction.interval_secs).unwrap_or(DEFAULT_COMPACTION_INTERVAL_SECS);
    if interval == 0 {
        return Err(ConfigError::Invalid { key: INTERVAL, message: "must be at least 1 second".into() });
    }
    let grace =
        o.compaction_grace_secs.or(f.compaction.grace_secs).unwrap_or(ioc_storage::compact::DEFAULT_GRACE.as_secs());
    let mut days: BTreeMap<String, u32> = DEFAULT_RETENTION.iter().map(|(t, d)| (t.to_string(), *d)).collect();
    let mut set = |table: &str, d: u32, key: &'static str| -> Result<(), ConfigError> {
        if ioc_storage::schema::schema_of(table).is_none() {
            let known: Vec<&str> = ioc_storage::schema::tables().map(|(t, _)| t).collect();
            return Err(ConfigError::Invalid {
                key,
                message: format!("`{table}` is not a table (one of {})", known.join(", ")),
            });
        }
        days.insert(table.to_string(), d);
        Ok(())
    };
    for (table, d) in &f.retention {
        set(table, *d, "retention")?;
    }
    if let Some(spec) = &o.retention_days {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let parsed = item.split_once('=').and_then(|(t, d)| Some((t.trim(), d.trim().parse::<u32>().ok()?)));
            let Some((table, d)) = parsed else {
                return Err(ConfigError::Invalid { key: RETENTION, message: format!("`{item}` is not TABLE=DAYS") });
            };
            set(table, d, RETENTION)?;
        }
    }
    // 0 means keep forever.
    days.retain(|_, d| *d > 0);
    Ok(CompactionSettings {
        options: ioc_storage::CompactOptions { target_bytes: target_mb << 20, min_files },
        interval: Duration::from_secs(interval),
        grace: Duration::from_secs(grace),
        retention_days: days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: FileConfig = toml::from_str("http = \"127.0.0.1:9000\"\nrate = 5\n[sql]\nmax_rows = 7\n").unwrap();
        let o = Overrides { http: Some("127.0.0.1:9100".into()), ..Default::default() };
        let s = Settings::resolve(o, file, "data").unwrap();
        assert_eq!(s.http.to_string(), "127.0.0.1:9100");
        assert_eq!(s.rate, 5);
        assert_eq!(s.sql.max_rows, 7);
        assert_eq!(s.body_limit_bytes, 16 << 20);
        assert_eq!(s.pg.to_string(), "127.0.0.1:5433");
    }

    #[test]
    fn errors_name_the_key() {
        let err = Settings::resolve(
            Overrides { http: Some("nope".into()), ..Default::default() },
            FileConfig::default(),
            "d",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--http") && err.contains("nope"), "{err}");
        let err = toml::from_str::<FileConfig>("htp = \"x\"").unwrap_err().to_string();
        assert!(err.contains("htp"), "{err}");
        let err = Settings::resolve(
            Overrides { dedupe_window_days: Some(10), ..Default::default() },
            FileConfig::default(),
            "d",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("dedupe_window_days"), "{err}");
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let text = include_str!("../../deploy/ioc.example.toml");
        let file: FileConfig = toml::from_str(text).unwrap();
        let s = Settings::resolve(Overrides::default(), file, "d").unwrap();
        assert_eq!(s.ws.timeout, Duration::from_secs(45));
        assert_eq!(s.alerts.stale_after, Duration::from_secs(3600));
    }

    #[test]
    fn legacy_province_codes_default_to_reject_and_a_bad_value_names_the_key() {
        let resolve = |o: Option<&str>, f: Option<&str>| {
            let o = Overrides { legacy_province_codes: o.map(str::to_string), ..Default::default() };
            let f = FileConfig { legacy_province_codes: f.map(str::to_string), ..Default::default() };
            Settings::resolve(o, f, "d").map(|s| s.legacy_province_codes)
        };
        assert_eq!(resolve(None, None).unwrap(), LegacyProvinceCodes::Reject);
        assert_eq!(resolve(None, Some("remap")).unwrap(), LegacyProvinceCodes::Remap);
        assert_eq!(resolve(Some("reject"), Some("remap")).unwrap(), LegacyProvinceCodes::Reject, "the flag wins");
        let file: FileConfig = toml::from_str("legacy_province_codes = \"remap\"").unwrap();
        assert_eq!(file.legacy_province_codes.as_deref(), Some("remap"));
        for bad in ["keep", "REMAP", ""] {
            let err = resolve(Some(bad), None).unwrap_err().to_string();
            for needle in
                ["--legacy-province-codes", "IOC_LEGACY_PROVINCE_CODES", "legacy_province_codes", "reject, remap"]
            {
                assert!(err.contains(needle), "{bad:?}: {err}");
            }
        }
    }

    #[test]
    fn compaction_and_retention_have_defaults_keys_and_checked_values() {
        let s = Settings::resolve(Overrides::default(), FileConfig::default(), "d").unwrap();
        assert_eq!(s.compaction.options.target_bytes, 128 << 20);
        assert_eq!(s.compaction.interval, Duration::from_secs(300));
        assert_eq!(s.compaction.grace, Duration::from_secs(3600));
        assert_eq!(s.compaction.retention_days, BTreeMap::from([("dead_letters".to_string(), 90)]));

        let file: FileConfig = toml::from_str(
            "[compaction]\ntarget_file_mb = 64\nmin_files = 3\n[retention]\ndossier_events = 3650\ndead_letters = 0\n",
        )
        .unwrap();
        let o = Overrides { retention_days: Some("other_events=30".into()), ..Default::default() };
        let s = Settings::resolve(o, file, "d").unwrap();
        assert_eq!((s.compaction.options.target_bytes, s.compaction.options.min_files), (64 << 20, 3));
        assert_eq!(
            s.compaction.retention_days,
            BTreeMap::from([("dossier_events".to_string(), 3650), ("other_events".to_string(), 30)]),
            "0 keeps dead letters forever"
        );

        let err = |o: Overrides, file: &str| {
            Settings::resolve(o, toml::from_str(file).unwrap(), "d").unwrap_err().to_string()
        };
        assert!(err(Overrides::default(), "[retention]\nfoo = 3").contains("retention"));
        assert!(
            err(Overrides { retention_days: Some("dead_letters".into()), ..Default::default() }, "")
                .contains("--retention-days")
        );
        assert!(
            err(Overrides { compaction_min_files: Some(1), ..Default::default() }, "").contains("compaction.min_files")
        );
        assert!(err(Overrides::default(), "[compaction]\ntarget_file_mb = 0").contains("compaction.target_file_mb"));
        let unknown = toml::from_str::<FileConfig>("[compaction]\ntarget_mb = 3").unwrap_err().to_string();
        assert!(unknown.contains("target_mb"), "{unknown}");
    }

    #[test]
    fn the_dashboard_has_a_title_a_near_target_margin_and_the_alerts_staleness() {
        let s = Settings::resolve(Overrides::default(), FileConfig::default(), "d").unwrap();
        assert_eq!(
            s.dashboard,
            DashboardSettings {
                title: "Bộ Nội vụ".into(),
                near_target_points: 2.0,
                stale_after: Duration::from_secs(3600)
            }
        );
        let file = "[dashboard]\ntitle = \"Sở Nội vụ tỉnh Bắc Ninh\"\nnear_target_points = 5\n[alerts]\nstale_after_secs = 60\n";
        let s = Settings::resolve(Overrides::default(), toml::from_str(file).unwrap(), "d").unwrap();
        assert_eq!(
            (s.dashboard.title.as_str(), s.dashboard.near_target_points, s.dashboard.stale_after),
            ("Sở Nội vụ tỉnh Bắc Ninh", 5.0, Duration::from_secs(60))
        );
        for (bad, key) in [
            ("[dashboard]\nnear_target_points = -1", "dashboard.near_target_points"),
            ("[dashboard]\ntitle = \"  \"", "dashboard.title"),
        ] {
            let err = Settings::resolve(Overrides::default(), toml::from_str(bad).unwrap(), "d").unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        assert!(toml::from_str::<FileConfig>("[dashboard]\ntitel = \"x\"").is_err());
    }

    #[test]
    fn without_tokens_only_loopback_binds_are_allowed() {
        let open = |http: &str, tokens: Option<&str>| {
            Settings::resolve(
                Overrides { http: Some(http.into()), auth_tokens: tokens.map(Into::into), ..Default::default() },
                FileConfig::default(),
                "d",
            )
            .unwrap()
            .check_bind_safety()
        };
        assert!(open("127.0.0.1:8080", None).is_ok());
        assert!(open("[::1]:8080", None).is_ok());
        assert!(open("0.0.0.0:8080", None).unwrap_err().to_string().contains("--http"));
        assert!(open("0.0.0.0:8080", Some("viewer:secret-token-1")).is_ok());
    }
}
