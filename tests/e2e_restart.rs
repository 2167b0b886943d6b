//! Crash safety end to end: SIGKILL the real server while it ingests, restart it on the
//! same data, and check that nothing acknowledged was lost, nothing was counted twice,
//! and the live counters were rebuilt exactly.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{Duration, Utc};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_then_restart_loses_nothing_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let evs = events(7, 4_000, now - Duration::minutes(1), 10);
    let all = lines(&evs);
    let from = (now - Duration::days(11)).to_rfc3339().replace('+', "%2B");
    let to = (now + Duration::minutes(10)).to_rfc3339().replace('+', "%2B");
    let q = format!("from={from}&to={to}");

    // Post batches concurrently and SIGKILL the server part-way through.
    let mut server = Server::start(dir.path(), &[], &[]).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let batches: Vec<Vec<String>> = all.chunks(100).map(<[String]>::to_vec).collect();
    let poster = {
        let client = server.client.clone();
        let url = format!("{}/api/v1/events", server.base);
        let acked = acked.clone();
        let batches = batches.clone();
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
    while acked.load(Ordering::SeqCst) < 15 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill9();
    poster.await.unwrap();
    let acked = acked.load(Ordering::SeqCst);
    assert!(acked >= 15 && acked < batches.len(), "the kill landed mid-stream ({acked} batches acknowledged)");

    // After restart: every acknowledged batch is there, once.
    let server = Server::start(dir.path(), &[], &[]).await;
    let stored = server.sql_count(ALL_EVENTS).await;
    assert!(stored as usize >= acked * 100, "acknowledged events lost: {stored} stored, {acked} batches acked");
    assert!(stored as usize <= all.len());

    // The producer re-sends everything: the unstored part is accepted, the rest is
    // recognised as duplicates, and the totals come out exact.
    let mut accepted = 0;
    let mut duplicates = 0;
    for b in &batches {
        let (status, v) = server.post_ndjson(b).await;
        assert_eq!(status, 200, "{v}");
        accepted += v["accepted"].as_u64().unwrap();
        duplicates += v["duplicates"].as_u64().unwrap();
    }
    assert_eq!(duplicates, stored as u64);
    assert_eq!(accepted + duplicates, all.len() as u64);
    assert_kpis(&server, &evs, &q, None).await;

    // A clean restart rebuilds the same counters, and everything is a duplicate now.
    drop(server);
    let server = Server::start(dir.path(), &[], &[]).await;
    assert_kpis(&server, &evs, &q, None).await;
    assert_kpis(&server, &evs, &format!("{q}&province_code=79"), Some("79")).await;
    let (_, v) = server.post_ndjson(&all[..500]).await;
    assert_eq!((v["accepted"].as_u64(), v["duplicates"].as_u64()), (Some(0), Some(500)), "{v}");

    // A clean stop writes a snapshot of the KPI state; the next start loads it instead
    // of rebuilding. New events after it, then a SIGKILL: the start after that loads the
    // same snapshot and folds the newer commits in from their files, exactly.
    let mut server = server;
    assert!(server.stop().success());
    let snapshots = || -> usize {
        std::fs::read_dir(dir.path().join("kpi-state"))
            .map(|d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".kpistate")).count())
            .unwrap_or(0)
    };
    assert_eq!(snapshots(), 1, "a snapshot of the KPI state after a clean stop");
    let mut server = Server::start(dir.path(), &[], &[]).await;
    assert!(
        server.metric_where("ioc_kpi_startup_seconds", &[("from", "snapshot")]).await > 0.0,
        "started from the snapshot"
    );
    assert_kpis(&server, &evs, &q, None).await;
    let newer = events(8, 1_000, now, 1);
    for b in lines(&newer).chunks(100) {
        let (status, v) = server.post_ndjson(b).await;
        assert_eq!((status, v["accepted"].as_u64()), (200, Some(100)), "{v}");
    }
    server.kill9();
    let server = Server::start(dir.path(), &[], &[]).await;
    assert!(
        server.metric_where("ioc_kpi_startup_seconds", &[("from", "snapshot")]).await > 0.0,
        "started from the snapshot"
    );
    let both: Vec<_> = evs.iter().chain(&newer).cloned().collect();
    assert_kpis(&server, &both, &q, None).await;
    assert_kpis(&server, &both, &format!("{q}&province_code=79"), Some("79")).await;

    // A damaged snapshot is not used: the state is rebuilt, and as exact. (The clean
    // stop writes the snapshot of the newest version, which is damaged too.)
    let mut server = server;
    assert!(server.stop().success());
    assert_eq!(snapshots(), 2, "the newest two are kept");
    for e in std::fs::read_dir(dir.path().join("kpi-state")).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    }
    let mut server = Server::start(dir.path(), &[], &[]).await;
    assert!(server.metric_where("ioc_kpi_startup_seconds", &[("from", "rebuild")]).await > 0.0, "rebuilt");
    assert_kpis(&server, &both, &q, None).await;
    // Its clean stop replaces the damaged file of the same version with a good one.
    assert!(server.stop().success());
    let server = Server::start(dir.path(), &[], &[]).await;
    assert!(server.metric_where("ioc_kpi_startup_seconds", &[("from", "snapshot")]).await > 0.0, "from the snapshot");
    assert_kpis(&server, &both, &q, None).await;
}
