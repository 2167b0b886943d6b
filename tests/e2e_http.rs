//! End to end over HTTP against the real `ioc serve`: validation, dedupe, dead letters,
//! every KPI against independently computed expectations, slices, SQL and CLI.

mod support;

use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_validated_deduplicated_and_every_kpi_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    let now = Utc::now();
    let evs = events(42, 3_000, now - Duration::minutes(1), 20);
    let all = lines(&evs);

    // Batches as NDJSON, with repeats inside a batch and across batches, and invalid
    // records mixed in. Expected: each unique valid event accepted exactly once.
    let invalid = [
        "{\"event_id\":\"bad-1\"}".to_string(),
        "not json at all".to_string(),
        json!({"event_id": "bad-3", "type": "dossier.received", "occurred_at": (now + Duration::hours(1)).to_rfc3339(),
               "source": "s", "agency_code": "a", "level": "central"})
        .to_string(),
        "[1,2,3]".to_string(),
    ];
    let mut accepted = 0;
    let mut duplicates = 0;
    let mut rejected = 0;
    for (i, chunk) in all.chunks(500).enumerate() {
        let mut batch: Vec<String> = chunk.to_vec();
        batch.extend(chunk.iter().take(25).cloned()); // repeats inside the batch
        if i > 0 {
            batch.extend(all[..10].iter().cloned()); // repeats of an earlier batch
        }
        batch.insert(3, invalid[i % invalid.len()].clone());
        let (status, v) = server.post_ndjson(&batch).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["accepted"], chunk.len(), "{v}");
        assert_eq!(v["duplicates"], 25 + if i > 0 { 10 } else { 0 });
        let rej = v["rejected"].as_array().unwrap();
        assert_eq!(rej.len(), 1);
        assert_eq!(rej[0]["index"], 3, "the index of the bad record in its batch");
        assert!(!rej[0]["error"].as_str().unwrap().is_empty());
        accepted += v["accepted"].as_u64().unwrap();
        duplicates += v["duplicates"].as_u64().unwrap();
        rejected += 1;
    }
    assert_eq!(accepted, 3_000);
    assert!(duplicates > 0);

    // A JSON array works too, and reports indexes within the array.
    let extra = events(43, 20, now - Duration::minutes(1), 1);
    let mut arr: Vec<Value> = extra.iter().map(|e| e.to_json()).collect();
    arr.push(json!(17));
    let r = server.client.post(format!("{}/api/v1/events", server.base)).json(&arr).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["accepted"].as_u64(), v["rejected"][0]["index"].as_u64()), (Some(20), Some(20)), "{v}");
    rejected += 1;
    let mut evs = evs;
    evs.extend(extra);

    // Every KPI over the whole period, and for one province, equals the contract's
    // definitions computed here without the catalog.
    let from = (now - Duration::days(21)).to_rfc3339();
    let to = (now + Duration::minutes(10)).to_rfc3339();
    let q = format!("from={}&to={}", urlenc(&from), urlenc(&to));
    assert_kpis(&server, &evs, &q, None).await;
    assert_kpis(&server, &evs, &format!("{q}&province_code=01"), Some("01")).await;

    // Slices: group by province sums to the total, and a filter equals its group.
    let (status, v) = server.get(&format!("/api/v1/kpis/online_submission_rate?{q}&group_by=province_code")).await;
    assert_eq!(status, 200, "{v}");
    let rows = v["rows"].as_array().unwrap();
    let total = expected_counts(&evs, None)["online_submission_rate"];
    let sum: (u64, u64) = rows
        .iter()
        .fold((0, 0), |a, r| (a.0 + r["numerator"].as_u64().unwrap(), a.1 + r["denominator"].as_u64().unwrap()));
    assert_eq!(sum, total);
    for r in rows {
        let p = r["province_code"].as_str().unwrap();
        assert_eq!(
            (r["numerator"].as_u64().unwrap(), r["denominator"].as_u64().unwrap()),
            expected_counts(&evs, Some(p))["online_submission_rate"],
            "province {p}"
        );
    }
    // Day buckets are Vietnam days and sum to the total.
    let (_, v) = server.get(&format!("/api/v1/kpis/on_time_rate?{q}&bucket=day")).await;
    let days = v["rows"].as_array().unwrap();
    assert!(days.len() >= 20, "{v}");
    assert!(days.iter().all(|r| r["bucket"].as_str().unwrap().ends_with("T00:00:00+07:00")));
    let den: u64 = days.iter().map(|r| r["denominator"].as_u64().unwrap()).sum();
    assert_eq!(den, expected_counts(&evs, None)["on_time_rate"].1);

    // Errors: unknown KPI 404, unknown dimension 400, dossier-only dimension on a
    // document KPI 400, bad period 400, all in the error shape.
    for (path, status) in [
        ("/api/v1/kpis/no_such_kpi", 404),
        ("/api/v1/kpis/edoc_rate?group_by=colour", 400),
        ("/api/v1/kpis/edoc_rate?channel=online", 400),
        ("/api/v1/kpis/edoc_rate?bucket=week", 400),
        ("/api/v1/kpis?from=yesterday", 400),
        ("/api/v1/kpis?from=2026-02-01&to=2026-01-01", 400),
    ] {
        let (s, v) = server.get(path).await;
        assert_eq!(s, status, "{path}: {v}");
        assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{path}: {v}");
    }

    // SQL sees each accepted event exactly once, and the dead letters.
    let n = server.sql_count(ALL_EVENTS).await;
    assert_eq!(n as usize, evs.len());
    let distinct = server.sql_count("SELECT count(DISTINCT event_id) FROM dossier_events").await;
    assert_eq!(distinct, server.sql_count("SELECT count(*) FROM dossier_events").await);
    assert_eq!(server.sql_count("SELECT count(*) FROM dead_letters").await, rejected as i64);
    let (_, v) = server.sql("SELECT origin, error FROM dead_letters ORDER BY origin").await;
    assert!(v["rows"].as_array().unwrap().iter().all(|r| r[0].as_str().unwrap().starts_with("http:")), "{v}");
    // admin_units joins give Vietnamese names.
    let (status, v) = server
        .sql("SELECT a.province_name, count(*) FROM dossier_events d JOIN (SELECT DISTINCT province_code, province_name FROM admin_units) a ON a.province_code = d.province_code GROUP BY 1 ORDER BY 2 DESC LIMIT 1")
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["rows"][0][0].as_str().unwrap().contains(' '), "{v}");
    // CSV output.
    let r = server
        .client
        .post(format!("{}/api/v1/sql", server.base))
        .header("accept", "text/csv")
        .json(&json!({"sql": "SELECT type, count(*) AS n FROM other_events GROUP BY type ORDER BY type"}))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = r.text().await.unwrap();
    assert!(text.starts_with("type,n\n"), "{text}");

    // Metrics report what happened.
    server
        .assert_metrics(&[
            "ioc_events_ingested_total",
            "ioc_events_duplicate_total",
            "ioc_events_rejected_total",
            "ioc_commit_duration_seconds_bucket",
            "ioc_storage_bytes",
        ])
        .await;
    let (status, v) = server.get("/readyz").await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ready")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_open_counts_open_dossiers_past_due_until_they_are_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    let t = |mins: i64| (Utc::now() + Duration::minutes(mins)).to_rfc3339();
    let received = |id: &str, due: String| {
        json!({"event_id": format!("r-{id}"), "type": "dossier.received", "occurred_at": t(-120), "source": "s",
               "agency_code": "a", "level": "province", "province_code": "01", "dossier_id": id,
               "procedure_code": "1.001612", "channel": "online", "service_level": "full", "due_at": due,
               "digitized": true, "reused_data": true, "authenticated": true})
        .to_string()
    };
    let (s, _) = server.post_ndjson(&[received("A", t(-60)), received("B", t(-30)), received("C", t(600))]).await;
    assert_eq!(s, 200);
    let overdue = |v: &Value| v.as_array().unwrap().iter().find(|k| k["id"] == "overdue_open").unwrap().clone();
    let (_, v) = server.get("/api/v1/kpis").await;
    let g = overdue(&v);
    assert_eq!(
        (g["value"].as_f64(), g["status"].as_str(), g["kind"].as_str()),
        (Some(2.0), Some("below_target"), Some("gauge")),
        "{g}"
    );
    let resolved = json!({"event_id": "x-A", "type": "dossier.resolved", "occurred_at": t(-1), "source": "s",
        "agency_code": "a", "level": "province", "province_code": "01", "dossier_id": "A",
        "procedure_code": "1.001612", "due_at": t(-60), "result_electronic": true});
    let closed = json!({"event_id": "x-B", "type": "dossier.closed", "occurred_at": t(-1), "source": "s",
        "agency_code": "a", "level": "province", "province_code": "01", "dossier_id": "B", "reason": "withdrawn"});
    server.post_ndjson(&[resolved.to_string(), closed.to_string()]).await;
    let (_, v) = server.get("/api/v1/kpis").await;
    assert_eq!(overdue(&v)["value"].as_f64(), Some(0.0));
    assert_eq!(overdue(&v)["status"], "ok");
    let (_, v) = server.get("/api/v1/kpis/overdue_open?group_by=province_code").await;
    assert_eq!(v["rows"], json!([]), "no overdue dossier, no row: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_simulates_reproducibly_and_queries_stored_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| {
        let path = dir.path().join(name);
        let st = std::process::Command::new(ioc_bin())
            .args([
                "simulate",
                "--rate",
                "200",
                "--duration",
                "2",
                "--seed",
                "9",
                "--start",
                "2026-01-05T08:00:00+07:00",
                "--out",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read_to_string(path).unwrap()
    };
    let a = out("a.ndjson");
    assert_eq!(a, out("b.ndjson"), "the same seed gives the same events");
    assert_eq!(a.lines().count(), 400);
    let types: BTreeSet<String> =
        a.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].as_str().unwrap().to_string()).collect();
    assert!(types.len() >= 5, "{types:?}");

    // Ingest the file through `simulate --http`-equivalent posting, then `ioc sql`.
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[], &[]).await;
    let (s, v) = server.post_ndjson(&a.lines().map(String::from).collect::<Vec<_>>()).await;
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(400)), "{v}");
    assert!(server.stop().success(), "SIGTERM gives a clean exit");
    let out = std::process::Command::new(ioc_bin())
        .args(["sql", "--data-dir"])
        .arg(&data)
        .arg(ALL_EVENTS.replace("count(*)", "count(*) AS n"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("| 400 |"), "{table}");
    let bad = std::process::Command::new(ioc_bin())
        .args(["sql", "--data-dir"])
        .arg(&data)
        .arg("DROP TABLE x")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("read-only"));
}

fn urlenc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
