//! Compaction end to end: many small commits over HTTP into a running `ioc serve`,
//! `ioc compact` on its data directory while it runs, then the same answers from SQL,
//! the KPI API and dedupe, before and after a restart and after the vacuum; and the
//! background compaction of `ioc serve` itself.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};
use ioc_storage::Store;
use support::*;

/// Live data files, as a fresh reader of the log sees them.
fn live_paths(data_dir: &Path) -> BTreeSet<String> {
    let snap = Store::open(data_dir.join("store"), "test-reader").unwrap().snapshot();
    snap.files.values().flatten().map(|f| f.path.clone()).collect()
}

fn live_files(data_dir: &Path) -> usize {
    live_paths(data_dir).len()
}

/// Parquet data files on disk, live or not (not the Delta logs' checkpoints).
fn files_on_disk(data_dir: &Path) -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.ends_with(ioc_storage::delta::DELTA_LOG_DIR))
            .map(|p| if p.is_dir() { walk(&p) } else { usize::from(p.extension().is_some_and(|x| x == "parquet")) })
            .sum()
    }
    walk(&data_dir.join("store/tables"))
}

fn ioc(args: &[&str]) -> std::process::Output {
    Command::new(ioc_bin()).args(args).env("IOC_LOG", "warn").env_remove("IOC_AUTH_TOKENS").output().unwrap()
}

/// `ioc sql` on the data directory: a single number.
fn cli_count(data_dir: &Path, sql: &str) -> i64 {
    let out = ioc(&["sql", "--data-dir", data_dir.to_str().unwrap(), "--format", "json", sql]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["rows"][0][0].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioc_compact_on_a_served_store_changes_no_answer_and_merges_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let now = Utc::now();
    let evs = events(11, 3_000, now - Duration::minutes(1), 3);
    let all = lines(&evs);
    let from = (now - Duration::days(4)).to_rfc3339().replace('+', "%2B");
    let to = (now + Duration::minutes(10)).to_rfc3339().replace('+', "%2B");
    let q = format!("from={from}&to={to}");

    let mut server = Server::start(data, &["--compaction-interval-secs", "3600"], &[]).await;
    // 60 requests, one commit each, each touching several tables and dates.
    for chunk in all.chunks(50) {
        let mut body = chunk.to_vec();
        body.push("{\"not\": \"an event\"}".into());
        let (status, v) = server.post_ndjson(&body).await;
        assert_eq!(status, 200, "{v}");
    }
    let dead = "SELECT count(*) FROM dead_letters";
    let stored = server.sql_count(ALL_EVENTS).await;
    assert_eq!(stored, 3_000);
    assert_eq!(server.sql_count(dead).await, 60);
    assert_kpis(&server, &evs, &q, None).await;
    let before = live_paths(data);
    let files_before = before.len();
    assert!(files_before > 60 * 2, "many small files: {files_before}");

    // Compact while the server runs (it holds snapshots of the files being merged).
    let out = ioc(&["compact", "--data-dir", data.to_str().unwrap(), "--min-files", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains(&format!("files: {files_before} -> ")), "{summary}");
    let after = live_paths(data);
    let files_after = after.len();
    assert!(files_after * 5 < files_before, "{files_before} -> {files_after} files");
    // Merged files stay on disk through the grace period, for readers of older snapshots.
    assert_eq!(files_on_disk(data), before.union(&after).count());

    // Same answers from the running server (SQL and KPIs) and from the CLI.
    assert_eq!(server.sql_count(ALL_EVENTS).await, stored);
    assert_eq!(server.sql_count(dead).await, 60);
    assert_eq!(cli_count(data, ALL_EVENTS), stored);
    assert_kpis(&server, &evs, &q, None).await;
    assert_kpis(&server, &evs, &format!("{q}&province_code=79"), Some("79")).await;
    // The server keeps ingesting after the compaction commit, and still dedupes.
    let (_, v) = server.post_ndjson(&all[..500]).await;
    assert_eq!((v["accepted"].as_u64(), v["duplicates"].as_u64()), (Some(0), Some(500)), "{v}");
    let more = events(12, 200, now - Duration::minutes(1), 1);
    let (_, v) = server.post_ndjson(&lines(&more)).await;
    assert_eq!(v["accepted"].as_u64(), Some(200), "{v}");
    let everything: Vec<_> = evs.iter().chain(&more).cloned().collect();
    assert_kpis(&server, &everything, &q, None).await;

    // A restarted server rebuilds the same counters and dedupe index from the
    // compacted files.
    assert!(server.stop().success());
    let mut server = Server::start(data, &["--compaction-interval-secs", "3600"], &[]).await;
    assert_eq!(server.sql_count(ALL_EVENTS).await, stored + 200);
    assert_kpis(&server, &everything, &q, None).await;
    let (_, v) = server.post_ndjson(&all[2_500..]).await;
    assert_eq!((v["accepted"].as_u64(), v["duplicates"].as_u64()), (Some(0), Some(500)), "{v}");
    assert!(server.stop().success());

    // With no server running, a vacuum without grace deletes the merged files, and
    // the answers are still the same.
    let out = ioc(&["compact", "--data-dir", data.to_str().unwrap(), "--grace-secs", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(files_on_disk(data), live_files(data));
    let server = Server::start(data, &["--compaction-interval-secs", "3600"], &[]).await;
    assert_eq!(server.sql_count(ALL_EVENTS).await, stored + 200);
    assert_eq!(server.sql_count(dead).await, 60);
    assert_kpis(&server, &everything, &q, None).await;
    assert_kpis(&server, &everything, &format!("{q}&province_code=01"), Some("01")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioc_serve_compacts_in_the_background_without_changing_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let now = Utc::now();
    let evs = events(21, 1_000, now - Duration::minutes(1), 2);
    let from = (now - Duration::days(3)).to_rfc3339().replace('+', "%2B");
    let to = (now + Duration::minutes(10)).to_rfc3339().replace('+', "%2B");
    let q = format!("from={from}&to={to}");
    let server = Server::start(data, &["--compaction-interval-secs", "1", "--compaction-min-files", "2"], &[]).await;
    for chunk in lines(&evs).chunks(25) {
        let (status, v) = server.post_ndjson(chunk).await;
        assert_eq!(status, 200, "{v}");
    }
    let deadline = Instant::now() + StdDuration::from_secs(60);
    while server.metric("ioc_compaction_files_merged_total").await < 40.0 {
        assert!(Instant::now() < deadline, "no background compaction");
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    assert!(server.metric("ioc_compaction_runs_total").await >= 1.0);
    assert_eq!(server.metric("ioc_compaction_failures_total").await, 0.0);
    server
        .assert_metrics(&[
            "ioc_compaction_bytes_written_total",
            "ioc_retention_files_removed_total",
            "ioc_vacuum_files_deleted_total",
        ])
        .await;
    assert!(live_files(data) < 40 * 4);
    assert_eq!(server.sql_count(ALL_EVENTS).await, 1_000);
    assert_kpis(&server, &evs, &q, None).await;
}

#[test]
fn bad_compaction_settings_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (args, key) in [
        (vec!["compact", "--data-dir", d, "--target-file-mb", "0"], "compaction.target_file_mb"),
        (vec!["compact", "--data-dir", d, "--retention-days", "nope=3"], "--retention-days"),
        (vec!["compact", "--data-dir", d, "--min-files", "1"], "compaction.min_files"),
        (vec!["compact", "--data-dir", d], "--data-dir"),
    ] {
        let out = ioc(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(key), "{args:?}: {err}");
    }
    let config = dir.path().join("ioc.toml");
    std::fs::write(&config, "[retention]\nevents = 30\n").unwrap();
    let out = ioc(&["compact", "--data-dir", d, "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention"));
}
