//! The lake other engines read (CONTRACT.md §7.8), checked with the real engines:
//! delta-rs (Python `deltalake`) and DuckDB over delta-rs's dataset read every table's
//! Delta log and must see exactly the rows the product's SQL sees, after ingest, after
//! `ioc compact` (merged files still on disk), after retention, at an older version
//! (time travel), after the vacuum and after `ioc lake rebuild`; a KPI summed from the
//! lake's `kpi_hourly` equals `GET /api/v1/kpis`.
//!
//! The Python comes from `IOC_TEST_PYTHON`, or the repository's `.venv/bin/python` that
//! `.ci/run` creates. Without it the test fails and says how to install it.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use chrono::{Duration, Utc};
use serde_json::Value;
use support::*;

fn ioc(args: &[&str]) -> String {
    let out = Command::new(ioc_bin()).args(args).env("IOC_LOG", "warn").env_remove("IOC_AUTH_TOKENS").output().unwrap();
    assert!(out.status.success(), "ioc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `SELECT count(*)` of every table, from the product's SQL API.
async fn sql_counts(server: &Server) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for t in lake_tables() {
        out.insert(t, server.sql_count(&format!("SELECT count(*) FROM {t}")).await as u64);
    }
    out
}

/// Every table reads the same number of rows through delta-rs and DuckDB as SQL.
fn assert_lake_equals_sql(lake: &Value, sql: &BTreeMap<&str, u64>, when: &str) {
    for (table, rows) in sql {
        let t = &lake["tables"][table];
        assert_eq!(t["rows"].as_u64(), Some(*rows), "{when}: delta-rs reads {table}: {t}");
        assert_eq!(t["duckdb_rows"].as_u64(), Some(*rows), "{when}: DuckDB over delta-rs reads {table}: {t}");
    }
}

fn versions(lake: &Value) -> Vec<(String, u64)> {
    lake_tables().iter().map(|t| (t.to_string(), lake["tables"][t]["version"].as_u64().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_readers_see_exactly_the_rows_sql_sees_through_compaction_retention_and_vacuum() {
    // Fail at once, before any work, when the engines are not installed.
    lake_python();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let data_arg = data.to_str().unwrap();
    let now = Utc::now();
    // Six days of events: retention below drops the oldest date partitions.
    let evs = events(31, 2_000, now - Duration::minutes(1), 6);
    let from = (now - Duration::days(8)).to_rfc3339().replace('+', "%2B");
    let to = (now + Duration::minutes(10)).to_rfc3339().replace('+', "%2B");

    let mut server = Server::start(data, &["--compaction-interval-secs", "3600"], &[]).await;
    for chunk in lines(&evs).chunks(100) {
        let mut body = chunk.to_vec();
        body.push("{\"not\": \"an event\"}".into());
        let (status, v) = server.post_ndjson(&body).await;
        assert_eq!(status, 200, "{v}");
    }

    // Right after ingest: the Delta log is up to date when the commit is acknowledged.
    let ingested = sql_counts(&server).await;
    assert_eq!(ingested["dead_letters"], 20);
    let lake = read_lake(&data.join("store"), &[], &[]);
    assert_lake_equals_sql(&lake, &ingested, "after ingest");
    let before_compaction = versions(&lake);

    // A KPI summed from the lake's kpi_hourly equals the API's, for every ratio KPI.
    let (status, kpis) = server.get(&format!("/api/v1/kpis?from={from}&to={to}")).await;
    assert_eq!(status, 200, "{kpis}");
    let mut compared = 0;
    for k in kpis.as_array().unwrap().iter().filter(|k| k["kind"] != "gauge") {
        let id = k["id"].as_str().unwrap();
        let lake_sums = &lake["kpis"][id];
        let (num, den) = (lake_sums[0].as_u64().unwrap_or(0), lake_sums[1].as_u64().unwrap_or(0));
        assert_eq!((Some(num), Some(den)), (k["numerator"].as_u64(), k["denominator"].as_u64()), "{id}: {k}");
        if den > 0 {
            let value = num as f64 / den as f64;
            assert!((k["value"].as_f64().unwrap() - value).abs() < 1e-12, "{id}: {value} vs {k}");
            compared += 1;
        }
    }
    assert!(compared >= 10, "only {compared} KPIs had data");

    // A data file no commit names (a commit in flight, or one that crashed before its
    // record): a glob would count it, a Delta reader does not.
    let live = ioc_storage::Store::open(data.join("store"), "test-reader").unwrap().snapshot();
    let one = &live.files("dossier_events")[0];
    let stray = data.join("store").join(&one.path).with_file_name("inflight-1-1.parquet");
    std::fs::copy(data.join("store").join(&one.path), &stray).unwrap();

    // `ioc compact` while the server runs; the merged files stay through the grace.
    let summary = ioc(&["compact", "--data-dir", data_arg, "--min-files", "2"]);
    assert!(summary.contains("vacuum: 0 removed files deleted"), "{summary}");
    let compacted = sql_counts(&server).await;
    let events_only = |m: &BTreeMap<&str, u64>| {
        m.iter().filter(|(t, _)| **t != "kpi_hourly").map(|(t, n)| (t.to_string(), *n)).collect::<Vec<_>>()
    };
    // (Compaction sums kpi_hourly rows of the same key: fewer rows, the same sums.)
    assert_eq!(events_only(&compacted), events_only(&ingested), "compaction changes no answer");
    let lake = read_lake(&data.join("store"), &[], &[]);
    assert_lake_equals_sql(&lake, &compacted, "after compaction");
    let dossier = &lake["tables"]["dossier_events"];
    // The glob counts the live rows, the stray file's, and again the rows of every
    // merged file still on disk (at least one: `--min-files 2`).
    assert!(
        dossier["glob_rows"].as_u64().unwrap() > compacted["dossier_events"] + one.rows,
        "a plain glob counts the merged files twice (and the stray one): {dossier}"
    );
    assert!(dossier["files"].as_u64().unwrap() < 20, "the Delta table names the compacted files: {dossier}");

    // Retention drops the oldest dates of dossier_events.
    let summary = ioc(&["compact", "--data-dir", data_arg, "--retention-days", "dossier_events=3"]);
    assert!(summary.contains("retention: ") && !summary.contains("retention: 0 partitions"), "{summary}");
    let retained = sql_counts(&server).await;
    assert!(retained["dossier_events"] < ingested["dossier_events"], "{retained:?}");
    // Time travel: each table at its version right after ingest reads what SQL read then.
    let lake = read_lake(&data.join("store"), &before_compaction, &[]);
    assert_lake_equals_sql(&lake, &retained, "after retention");
    for (table, version) in &before_compaction {
        let then = &lake["at"][format!("{table}={version}")];
        assert_eq!(then.as_u64(), Some(ingested[table.as_str()]), "{table} at version {version}");
    }
    assert!(server.stop().success());

    // The vacuum (no grace: no server runs) deletes the removed files; every current
    // version still reads whole.
    let summary = ioc(&["compact", "--data-dir", data_arg, "--grace-secs", "0"]);
    assert!(!summary.contains("vacuum: 0 removed files deleted"), "{summary}");
    std::fs::remove_file(&stray).unwrap();
    let lake = read_lake(&data.join("store"), &[], &[]);
    assert_lake_equals_sql(&lake, &retained, "after the vacuum");
    let dossier = &lake["tables"]["dossier_events"];
    assert_eq!(dossier["glob_rows"].as_u64(), Some(retained["dossier_events"]), "{dossier}");

    // `ioc lake rebuild` writes the same tables again, from the global log.
    let summary = ioc(&["lake", "rebuild", "--data-dir", data_arg]);
    assert!(summary.contains("rebuilt the Delta logs of 7 tables"), "{summary}");
    let rebuilt = read_lake(&data.join("store"), &[], &[]);
    assert_lake_equals_sql(&rebuilt, &retained, "after rebuild");
    assert_eq!(versions(&rebuilt), versions(&lake), "the rebuilt logs have the same versions");

    // A restarted server goes on from the Delta logs on disk.
    let server = Server::start(data, &["--compaction-interval-secs", "3600"], &[]).await;
    let more = events(32, 300, now - Duration::minutes(1), 1);
    let (status, v) = server.post_ndjson(&lines(&more)).await;
    assert_eq!(status, 200, "{v}");
    let after_restart = sql_counts(&server).await;
    assert_lake_equals_sql(
        &read_lake(&data.join("store"), &[], &[]),
        &after_restart,
        "after a restart and more events",
    );
}
