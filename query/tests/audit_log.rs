//! The `audit_log` table streams the audit files (the rotated ones, then the current
//! one, oldest first) in batches, so a log far larger than the SQL memory limit can be
//! queried under it.

use std::io::{BufWriter, Write};

use arrow::array::{Array, AsArray, RecordBatch};
use chrono::{DateTime, Utc};
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;
use ioc_core::AdminUnits;
use ioc_query::audit::Rotation;
use ioc_query::context::admin_units_table;
use ioc_query::{AuditEntry, AuditLog, Caller, SqlEngine, SqlError, SqlLimits};
use ioc_storage::Store;

fn entry(i: usize, sql: &str) -> AuditEntry {
    AuditEntry {
        at: DateTime::<Utc>::from_timestamp(1_767_225_600 + i as i64, 0).unwrap(),
        token: format!("analyst-{}", i % 3),
        via: "http".into(),
        sql: format!("{sql} /* {i} */"),
        outcome: "ok".into(),
        rows: Some(i as u64),
        ms: Some(1),
        error: None,
    }
}

fn sql_column(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let sql = b.column_by_name("sql").unwrap().as_string::<i32>();
            (0..sql.len()).map(|i| sql.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn the_table_reads_every_file_oldest_first_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000;
    // About 150 bytes an entry: some 12 files of 256 KiB.
    let log = AuditLog::open_with(dir.path(), Rotation { max_bytes: 256 << 10, keep: 100 }).unwrap();
    for i in 0..n {
        log.record(&entry(i, "SELECT 1"));
    }
    let rotated = std::fs::read_dir(dir.path().join("audit")).unwrap().filter(|e| {
        e.as_ref().unwrap().file_name().to_string_lossy().trim_start_matches("sql.jsonl.").parse::<u32>().is_ok()
    });
    assert!(rotated.count() >= 10);

    let ctx = SessionContext::new();
    let plan = log.table().unwrap().scan(&ctx.state(), None, &[], None).await.unwrap();
    let batches = collect(plan, ctx.task_ctx()).await.unwrap();
    let sizes: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
    assert_eq!(sizes, vec![8192, 8192, n - 2 * 8192], "batches of the session's batch size");
    assert_eq!(batches[0].schema(), AuditLog::schema());
    let expected: Vec<String> = (0..n).map(|i| entry(i, "SELECT 1").sql).collect();
    assert_eq!(sql_column(&batches), expected, "every entry once, in order");

    ctx.register_table("audit_log", log.table().unwrap()).unwrap();
    let out = ctx.sql("SELECT count(*), count(DISTINCT token), sum(rows) FROM audit_log").await.unwrap();
    let row = out.collect().await.unwrap();
    let cols: Vec<i64> = (0..3)
        .map(|c| {
            arrow::compute::cast(row[0].column(c), &arrow::datatypes::DataType::Int64)
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0)
        })
        .collect();
    assert_eq!(cols, vec![n as i64, 3, (n * (n - 1) / 2) as i64]);
}

#[tokio::test]
async fn an_admin_reads_the_latest_statements_of_a_log_larger_than_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    // 48 MiB of statements of 1 KiB each, three times the 16 MiB limit.
    let audit = dir.path().join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    let mut w = BufWriter::new(std::fs::File::create(audit.join("sql.jsonl")).unwrap());
    let long = format!("SELECT {}", "x, ".repeat(340));
    let n = 48 * 1024;
    for i in 0..n {
        serde_json::to_writer(&mut w, &entry(i, &long)).unwrap();
        w.write_all(b"\n").unwrap();
    }
    w.into_inner().unwrap().sync_all().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    let store = Store::open(dir.path().join("store"), "test").unwrap();
    let limits = SqlLimits { memory_bytes: 16 << 20, ..SqlLimits::default() };
    let engine = SqlEngine::new(store, admin_units_table(&AdminUnits::builtin()), limits).with_audit(log.clone());
    let admin = Caller { token: "admin-1", via: "test", province: None, admin: true, hook: None };

    let out = engine.run(&admin, "SELECT sql FROM audit_log ORDER BY at DESC LIMIT 10").await.unwrap();
    let expected: Vec<String> = (n - 10..n).rev().map(|i| entry(i, &long).sql).collect();
    assert_eq!(sql_column(&out.batches), expected);

    // What the query itself keeps is under the limit: a sort of every statement is not.
    let err = engine.run(&admin, "SELECT sql FROM audit_log ORDER BY sql").await.unwrap_err();
    assert!(matches!(err, SqlError::Memory { .. }), "{err:?}");
    // Both statements were audited after the old ones.
    let entries = log.entries().unwrap();
    assert_eq!(entries.len(), n + 2);
    assert_eq!((entries[n].outcome.as_str(), entries[n + 1].outcome.as_str()), ("ok", "query_memory_limit"));
}
