//! The server on an S3-compatible bucket (CONTRACT.md §7.9), end to end: the real
//! `ioc` binary with `--data-dir s3://...` against a real SeaweedFS started here,
//! SIGKILLed while it ingests and restarted (nothing acknowledged lost, nothing
//! twice), a second writer on the same bucket taking the same events (each stored
//! once), `ioc compact` with its vacuum on the bucket, and delta-rs and DuckDB reading
//! the Delta tables from the bucket with exactly the rows SQL counts. The audit log
//! and the alert state live in `--state-dir`, on local disk.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{Duration, Utc};
use support::seaweed::SeaweedFs;
use support::*;

/// `SELECT count(*)` of every table, from the product's SQL API.
async fn sql_counts(server: &Server) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for t in lake_tables() {
        out.insert(t, server.sql_count(&format!("SELECT count(*) FROM {t}")).await as u64);
    }
    out
}

fn env_of(weed: &SeaweedFs) -> Vec<(&'static str, String)> {
    weed.env()
}

async fn start(weed: &SeaweedFs, url: &str, state: &Path) -> Server {
    let env = env_of(weed);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(Path::new(url), &["--state-dir", state.to_str().unwrap()], &env).await
}

/// Posts every batch; returns (accepted, duplicates).
async fn post_all(server: &Server, batches: &[Vec<String>]) -> (u64, u64) {
    let (mut accepted, mut duplicates) = (0, 0);
    for b in batches {
        let (status, v) = server.post_ndjson(b).await;
        assert_eq!(status, 200, "{v}");
        accepted += v["accepted"].as_u64().unwrap();
        duplicates += v["duplicates"].as_u64().unwrap();
    }
    (accepted, duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_a_bucket_survives_sigkill_a_second_writer_and_compaction() {
    let weed = SeaweedFs::start("ioc");
    let url = weed.url("site");
    let (state_a, state_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let now = Utc::now();
    let evs = events(11, 3_000, now - Duration::minutes(1), 5);
    let all = lines(&evs);
    let batches: Vec<Vec<String>> = all.chunks(100).map(<[String]>::to_vec).collect();
    let from = (now - Duration::days(6)).to_rfc3339().replace('+', "%2B");
    let to = (now + Duration::minutes(10)).to_rfc3339().replace('+', "%2B");
    let q = format!("from={from}&to={to}");

    // SIGKILL part-way through a stream of commits.
    let mut server = start(&weed, &url, state_a.path()).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let poster = {
        let (client, url, acked, batches) =
            (server.client.clone(), format!("{}/api/v1/events", server.base), acked.clone(), batches.clone());
        tokio::spawn(async move {
            for b in batches {
                let body = b.iter().map(|l| format!("{l}\n")).collect::<String>();
                match client.post(&url).body(body).send().await {
                    Ok(r) if r.status().is_success() => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 8 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill9();
    poster.await.unwrap();
    let acked = acked.load(Ordering::SeqCst);
    assert!(acked >= 8 && acked < batches.len(), "the kill landed mid-stream ({acked} batches acknowledged)");

    // Restarted on the bucket: every acknowledged batch is there, once.
    let server = start(&weed, &url, state_a.path()).await;
    let stored = server.sql_count(ALL_EVENTS).await as usize;
    assert!(stored >= acked * 100 && stored <= all.len(), "{stored} stored, {acked} batches acknowledged");

    // A second writer on the same bucket; both take every event again, at once.
    let second = start(&weed, &url, state_b.path()).await;
    let ((a_acc, a_dup), (b_acc, b_dup)) = tokio::join!(post_all(&server, &batches), post_all(&second, &batches));
    assert_eq!(a_acc + b_acc, (all.len() - stored) as u64, "each missing event accepted by exactly one writer");
    assert_eq!(a_acc + a_dup + b_acc + b_dup, 2 * all.len() as u64);
    for s in [&server, &second] {
        assert_eq!(s.sql_count(ALL_EVENTS).await as usize, all.len(), "every event once, seen from {}", s.base);
        assert_eq!(
            s.sql_count("SELECT count(DISTINCT event_id) FROM dossier_events").await,
            s.sql_count("SELECT count(*) FROM dossier_events").await
        );
    }
    assert_eq!(sql_counts(&server).await, sql_counts(&second).await);
    // The live counters of both count each event once, the other writer's included.
    assert_kpis(&server, &evs, &q, None).await;
    assert_kpis(&second, &evs, &q, None).await;
    // The files that are appended to stay local, in the state dirs.
    assert!(state_a.path().join("audit/sql.jsonl").is_file());
    assert!(state_b.path().join("audit/sql.jsonl").is_file());
    drop(second);
    let before = sql_counts(&server).await;
    drop(server);

    // Compaction and its vacuum on the bucket change no count, for SQL or for delta-rs.
    let env = env_of(&weed);
    let out = Command::new(ioc_bin())
        .args(["compact", "--data-dir", &url, "--min-files", "2", "--grace-secs", "0"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("IOC_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "ioc compact: {}", String::from_utf8_lossy(&out.stderr));
    let server = start(&weed, &url, state_a.path()).await;
    let after = sql_counts(&server).await;
    // (Compaction sums kpi_hourly rows of the same key: fewer rows, the same sums.)
    let events_only = |m: &BTreeMap<&'static str, u64>| {
        m.iter().filter(|(t, _)| **t != "kpi_hourly").map(|(t, n)| (*t, *n)).collect::<Vec<_>>()
    };
    assert_eq!(events_only(&after), events_only(&before), "compaction keeps every row");
    let lake = read_lake(Path::new(&format!("{url}/store")), &[], &env);
    for (table, rows) in &after {
        let t = &lake["tables"][table];
        assert_eq!(t["rows"].as_u64(), Some(*rows), "delta-rs reads {table} from the bucket: {t}");
        assert_eq!(t["duckdb_rows"].as_u64(), Some(*rows), "DuckDB over delta-rs reads {table}: {t}");
    }
    assert_kpis(&server, &evs, &q, None).await;
    let (_, v) = server.post_ndjson(&all[..300]).await;
    assert_eq!((v["accepted"].as_u64(), v["duplicates"].as_u64()), (Some(0), Some(300)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_on_existing_data_say_when_a_bucket_holds_none() {
    let weed = SeaweedFs::start("ioc");
    let out = Command::new(ioc_bin())
        .args(["sql", "--data-dir", &weed.url("nothing-here"), "SELECT 1"])
        .envs(env_of(&weed).iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no IOC data in s3://ioc/nothing-here"), "{err}");
}
