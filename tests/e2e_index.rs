//! The QĐ 766 service index end to end (CONTRACT.md §7.6): its arithmetic checked
//! against the KPI API's own values (indicator = max × min(1, value / threshold), sums,
//! measured points, ranks), and the same numbers on the websocket and in the SQL view
//! `service_index`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// Events of the current month (Vietnam time), spread over its days so far.
fn this_months_events(seed: u64, n: usize) -> Vec<ioc_core::Event> {
    let now = Utc::now();
    let month = ioc_core::time::start_of_month(now).to_utc();
    let days = (now - month).num_days().max(0);
    let end = (now - chrono::Duration::minutes(1)).max(month + chrono::Duration::seconds(1));
    let mut evs = events(seed, n, end, days);
    evs.retain(|e| e.occurred_at >= month);
    evs
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON message on a websocket.
async fn next_json(ws: &mut Ws) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

/// Checks one index row against the KPI values of its scope, as `GET /api/v1/kpis`
/// gives them.
fn check_row(row: &Value, kpis: &[Value]) -> Result<(), String> {
    let value_of = |id: &str| kpis.iter().find(|k| k["id"] == id).and_then(|k| k["value"].as_f64());
    let (mut total, mut measured) = (0.0, 0.0);
    for g in row["groups"].as_array().ok_or("no groups")? {
        let mut group = 0.0;
        let mut points = 0.0;
        for i in g["indicators"].as_array().ok_or("no indicators")? {
            let (max, threshold) = (i["max"].as_f64().unwrap(), i["threshold"].as_f64().unwrap());
            points += max;
            let want_value = i["kpi"].as_str().and_then(value_of);
            match want_value {
                None => {
                    if !i["value"].is_null() || !i["score"].is_null() {
                        return Err(format!("{}: no value, yet {i}", i["id"]));
                    }
                }
                Some(v) => {
                    let want = max * (v / threshold).min(1.0);
                    if !close(&i["value"], v) || !close(&i["score"], want) {
                        return Err(format!("{}: value {v} should score {want}: {i}", i["id"]));
                    }
                    group += want;
                    measured += max;
                }
            }
        }
        if !close(&g["score"], group) || !close(&g["max"], points) {
            return Err(format!("group {}: score {group} of {points}: {}", g["id"], g["score"]));
        }
        total += group;
    }
    if !close(&row["score"], total) || !close(&row["measured_max"], measured) {
        return Err(format!("row: score {total}, measured {measured}: {} {}", row["score"], row["measured_max"]));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_scores_the_kpi_apis_own_values_and_ranks_the_provinces() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    let evs = this_months_events(21, 4_000);
    let (status, v) = server.post_ndjson(&lines(&evs)).await;
    assert_eq!(status, 200, "{v}");

    // National.
    let (status, index) = server.get("/api/v1/index").await;
    assert_eq!(status, 200, "{index}");
    assert_eq!(index["index"], "qd766");
    let (_, kpis) = server.get("/api/v1/kpis").await;
    assert_eq!((index["from"].clone(), index["to"].clone()), (kpis[0]["from"].clone(), kpis[0]["to"].clone()));
    let rows = index["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{index}");
    assert!(rows[0].get("province_code").is_none() && rows[0].get("rank").is_none(), "{}", rows[0]);
    check_row(&rows[0], kpis.as_array().unwrap()).unwrap();
    assert!(rows[0]["measured_max"].as_f64().unwrap() > 50.0, "the simulator's events measure most of it");
    let groups: Vec<&str> = rows[0]["groups"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(groups.len(), 5, "{groups:?}");

    // By province: every province with data, best first, each against its own KPIs.
    let (status, by) = server.get("/api/v1/index?group_by=province_code").await;
    assert_eq!(status, 200, "{by}");
    let rows = by["rows"].as_array().unwrap();
    let with_data: std::collections::BTreeSet<&str> = evs.iter().filter_map(|e| e.province_code.as_deref()).collect();
    assert_eq!(rows.len(), with_data.len(), "one row per province with data");
    let mut last = f64::INFINITY;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["rank"], i + 1, "{row}");
        let score = row["score"].as_f64().unwrap();
        assert!(score <= last, "sorted by score descending");
        last = score;
        let p = row["province_code"].as_str().unwrap();
        let (_, kpis) = server.get(&format!("/api/v1/kpis?province_code={p}")).await;
        check_row(row, kpis.as_array().unwrap()).unwrap_or_else(|e| panic!("province {p}: {e}"));
    }
    // One province.
    let p = rows[2]["province_code"].as_str().unwrap();
    let (_, one) = server.get(&format!("/api/v1/index?province_code={p}&group_by=province_code")).await;
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
    assert_eq!(one["rows"][0], rows[2], "its own row, with its rank among all");

    // The SQL view, for the current month: the same numbers.
    let (status, sql) = server
        .sql("SELECT province_code, indicator_id, value, score FROM service_index WHERE province_code IS NOT NULL")
        .await;
    assert_eq!(status, 200, "{sql}");
    let from_sql: BTreeMap<(String, String), (Value, Value)> = sql["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| ((r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()), (r[2].clone(), r[3].clone())))
        .collect();
    let mut n = 0;
    for row in rows {
        let p = row["province_code"].as_str().unwrap();
        for i in row["groups"].as_array().unwrap().iter().flat_map(|g| g["indicators"].as_array().unwrap()) {
            let got = &from_sql[&(p.to_string(), i["id"].as_str().unwrap().to_string())];
            assert_eq!((&got.0, &got.1), (&i["value"], &i["score"]), "{p} {}", i["id"]);
            n += 1;
        }
    }
    assert_eq!(n, from_sql.len(), "the view has a row per province with data and indicator");

    // Errors are the contract's.
    let (status, err) = server.get("/api/v1/index?group_by=channel").await;
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("invalid_dimension")));
    let (status, err) = server.get("/api/v1/index?from=1900-01-01").await;
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("invalid_period")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_with_index_gets_the_rows_in_its_snapshot_and_their_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    assert_eq!(server.post_ndjson(&lines(&this_months_events(5, 1_500))).await.0, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let url = format!("ws://127.0.0.1:{}/api/v1/ws", server.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let sub = json!({"op": "subscribe", "kpis": ["*"], "group_by": "province_code", "index": true});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot");
    let (_, api) = server.get("/api/v1/index?group_by=province_code").await;
    let (_, national) = server.get("/api/v1/index").await;
    let shown = snapshot["index"].as_array().unwrap();
    assert_eq!(shown[0], national["rows"][0], "the nation first");
    assert_eq!(&shown[1..], api["rows"].as_array().unwrap().as_slice(), "then the provinces by rank, as the API");

    // New events change the index: its rows are pushed, and end equal to the API.
    assert_eq!(server.post_ndjson(&lines(&this_months_events(6, 500))).await.0, 200);
    let mut rows: BTreeMap<String, Value> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "index" {
            let key = m["province_code"].as_str().unwrap_or("").to_string();
            let mut row = m.clone();
            let o = row.as_object_mut().unwrap();
            o.remove("type");
            o.remove("seq");
            rows.insert(key, row);
        }
        let (_, national) = server.get("/api/v1/index").await;
        if rows.get("") == Some(&national["rows"][0]) {
            let (_, api) = server.get("/api/v1/index?group_by=province_code").await;
            for r in api["rows"].as_array().unwrap() {
                let p = r["province_code"].as_str().unwrap();
                if let Some(pushed) = rows.get(p) {
                    assert_eq!(pushed, r, "province {p}");
                }
            }
            break;
        }
        assert!(Instant::now() < deadline, "the pushed national row never matched the API: {rows:?}");
    }
}
