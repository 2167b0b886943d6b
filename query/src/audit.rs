//! The SQL audit log: one JSON line per statement, with the token's name (never the
//! token), the protocol, how long it ran, how many rows it returned and how it ended.
//! Written to `<data-dir>/audit/sql.jsonl` and to the `audit` tracing target, by the
//! [`SqlEngine`](crate::SqlEngine) itself, so HTTP, the PostgreSQL wire protocol and
//! `ioc sql` cannot forget it. Admins query it as the `audit_log` table.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{RecordBatch, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// One audited statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The token's name, e.g. `analyst-2`; `local` without tokens.
    pub token: String,
    /// `http`, `pg` or `cli`.
    pub via: String,
    pub sql: String,
    /// `ok`, `truncated`, or the error code (`read_only`, `query_timeout`, ...).
    pub outcome: String,
    pub rows: Option<u64>,
    pub ms: Option<u64>,
    pub error: Option<String>,
}

/// The append-only audit file.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    pub fn open(data_dir: &Path) -> std::io::Result<Arc<Self>> {
        let dir = data_dir.join("audit");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("sql.jsonl");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Arc::new(Self { path, file: Mutex::new(file) }))
    }

    pub fn record(&self, entry: &AuditEntry) {
        info!(target: "audit", token = entry.token, via = entry.via, outcome = entry.outcome, rows = entry.rows, ms = entry.ms, sql = entry.sql, "sql statement");
        let mut line = serde_json::to_vec(entry).expect("audit entry serialises");
        line.push(b'\n');
        if let Err(e) = self.file.lock().expect("audit lock").write_all(&line) {
            warn!(error = %e, "could not write the SQL audit log");
        }
    }

    /// Every entry so far, oldest first. Lines that do not parse (a torn last line
    /// after a crash) are skipped.
    pub fn entries(&self) -> std::io::Result<Vec<AuditEntry>> {
        let reader = BufReader::new(File::open(&self.path)?);
        Ok(reader.lines().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect())
    }

    pub fn schema() -> SchemaRef {
        let text = |n| Field::new(n, DataType::Utf8, true);
        Arc::new(Schema::new(vec![
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
            text("token"),
            text("via"),
            text("sql"),
            text("outcome"),
            Field::new("rows", DataType::UInt64, true),
            Field::new("ms", DataType::UInt64, true),
            text("error"),
        ]))
    }

    /// The log as one batch for the admins' `audit_log` table.
    pub fn batch(&self) -> std::io::Result<RecordBatch> {
        let entries = self.entries()?;
        let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let [mut token, mut via, mut sql, mut outcome, mut error]: [StringBuilder; 5] =
            std::array::from_fn(|_| StringBuilder::new());
        let (mut rows, mut ms) = (UInt64Builder::new(), UInt64Builder::new());
        for e in &entries {
            at.append_value(e.at.timestamp_micros());
            token.append_value(&e.token);
            via.append_value(&e.via);
            sql.append_value(&e.sql);
            outcome.append_value(&e.outcome);
            error.append_option(e.error.as_deref());
            rows.append_option(e.rows);
            ms.append_option(e.ms);
        }
        RecordBatch::try_new(
            Self::schema(),
            vec![
                Arc::new(at.finish()),
                Arc::new(token.finish()),
                Arc::new(via.finish()),
                Arc::new(sql.finish()),
                Arc::new(outcome.finish()),
                Arc::new(rows.finish()),
                Arc::new(ms.finish()),
                Arc::new(error.finish()),
            ],
        )
        .map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let entry = AuditEntry {
            at: Utc::now(),
            token: "analyst-2".into(),
            via: "pg".into(),
            sql: "SELECT 1".into(),
            outcome: "ok".into(),
            rows: Some(1),
            ms: Some(3),
            error: None,
        };
        log.record(&entry);
        log.file.lock().unwrap().write_all(b"{\"at\": \"torn").unwrap();
        assert_eq!(log.entries().unwrap(), vec![entry]);
        let batch = log.batch().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), AuditLog::schema());
    }
}
