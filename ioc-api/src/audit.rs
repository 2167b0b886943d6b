//! The SQL audit log: one JSON line per statement, with the token's name (never the
//! token), how long it ran, how many rows it returned and how it ended.
//! Written to `<data-dir>/audit/sql.jsonl` and to the `audit` tracing target.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use chrono::Utc;
use ioc_query::{QueryOutput, SqlError};
use serde::Serialize;
use tracing::{info, warn};

#[derive(Debug, Serialize)]
pub struct AuditEntry<'a> {
    pub at: String,
    pub token: &'a str,
    pub via: &'a str,
    pub sql: &'a str,
    pub outcome: &'static str,
    pub rows: Option<usize>,
    pub ms: Option<u128>,
    pub error: Option<String>,
}

impl<'a> AuditEntry<'a> {
    pub fn new(token: &'a str, via: &'a str, sql: &'a str, result: &Result<QueryOutput, SqlError>) -> Self {
        let (outcome, rows, ms, error) = match result {
            Ok(o) => (if o.truncated { "truncated" } else { "ok" }, Some(o.rows), Some(o.elapsed.as_millis()), None),
            Err(e) => (e.code(), None, None, Some(e.to_string())),
        };
        Self { at: Utc::now().to_rfc3339(), token, via, sql, outcome, rows, ms, error }
    }
}

pub struct AuditLog {
    file: Mutex<File>,
}

impl AuditLog {
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("audit");
        std::fs::create_dir_all(&dir)?;
        let file = OpenOptions::new().create(true).append(true).open(dir.join("sql.jsonl"))?;
        Ok(Self { file: Mutex::new(file) })
    }

    pub fn record(&self, entry: &AuditEntry<'_>) {
        info!(target: "audit", token = entry.token, via = entry.via, outcome = entry.outcome, rows = entry.rows, ms = entry.ms.map(|m| m as u64), sql = entry.sql, "sql statement");
        let mut line = serde_json::to_vec(entry).expect("audit entry serialises");
        line.push(b'\n');
        if let Err(e) = self.file.lock().expect("audit lock").write_all(&line) {
            warn!(error = %e, "could not write the SQL audit log");
        }
    }
}
