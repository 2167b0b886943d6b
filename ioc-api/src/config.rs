//! Configuration: defaults, then the TOML config file, then `IOC_*` environment
//! variables and flags (clap merges those two; a flag wins over its variable).
//! Every error names the flag or key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ioc_query::SqlLimits;
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
    pub auth_tokens: Option<String>,
    #[serde(default)]
    pub tokens: Vec<FileToken>,
    #[serde(default)]
    pub sql: FileSql,
    #[serde(default)]
    pub ws: FileWs,
    #[serde(default)]
    pub alerts: FileAlerts,
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
    pub auth_tokens: Option<String>,
    pub sql_memory_limit_mb: Option<usize>,
    pub sql_timeout_secs: Option<u64>,
    pub sql_max_rows: Option<usize>,
    pub ws_ping_interval_secs: Option<u64>,
    pub ws_timeout_secs: Option<u64>,
    pub alert_rules: Option<PathBuf>,
    pub alert_webhook_url: Option<String>,
    pub alert_eval_interval_secs: Option<u64>,
    pub alert_stale_after_secs: Option<u64>,
}

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

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
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
    pub tokens: Vec<Token>,
    pub sql: SqlLimits,
    pub ws: WsSettings,
    pub alerts: AlertSettings,
}

pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
pub const DEFAULT_PG: &str = "127.0.0.1:5433";
pub const DEFAULT_BODY_LIMIT: usize = 16 << 20;
pub const DEFAULT_RATE: u32 = 200;

fn addr(key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| ConfigError::Invalid { key, message: format!("`{s}` is not an address like 127.0.0.1:8080") })
}

impl Settings {
    pub fn resolve(o: Overrides, f: FileConfig, default_data_dir: &str) -> Result<Self, ConfigError> {
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
        Ok(Self {
            data_dir: o.data_dir.or(f.data_dir).unwrap_or_else(|| PathBuf::from(default_data_dir)),
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
            tokens,
            sql,
            ws,
            alerts,
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
