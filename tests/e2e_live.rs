//! Live pushes and alerting end to end, with real sockets against the real binary:
//! websocket snapshots and updates that equal the REST API, gap-free `seq`, a slow
//! client cut off without hurting a fast one, refused unauthenticated sockets, close
//! frames on shutdown, and an alert that goes pending, firing and resolved, notifying
//! a real webhook receiver in Alertmanager's format.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(server: &Server, query: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = format!("ws://127.0.0.1:{}/api/v1/ws{query}", server.port);
    tokio_tungstenite::connect_async(url.into_client_request().unwrap()).await.map(|(ws, _)| ws)
}

async fn subscribe(ws: &mut Ws, kpis: Value, group_by: Value) {
    let msg = json!({"op": "subscribe", "kpis": kpis, "group_by": group_by});
    ws.send(Message::text(msg.to_string())).await.unwrap();
}

/// The next JSON message (pings are answered by the client library as it reads).
async fn next_json(ws: &mut Ws, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await.expect("a websocket message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(f))) => panic!("closed by the server: {f:?}"),
            Some(Ok(_)) => continue,
            other => panic!("websocket ended: {other:?}"),
        }
    }
}

/// Events of the current month (Vietnam time), a minute ago.
fn recent_events(seed: u64, n: usize) -> Vec<ioc_core::Event> {
    let now = Utc::now();
    let month = ioc_core::time::start_of_month(now).to_utc();
    events(seed, n, (now - chrono::Duration::minutes(1)).max(month + chrono::Duration::seconds(1)), 0)
}

/// Folds `kpi` pushes (national) into `got` until it equals `GET /api/v1/kpis`,
/// checking that `seq` goes up by one each message.
async fn fold_until_rest(server: &Server, ws: &mut Ws, got: &mut BTreeMap<String, (Value, Value)>, seq: &mut u64) {
    let (_, rest) = server.get("/api/v1/kpis").await;
    let want: BTreeMap<String, (Value, Value)> = rest
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_string(), (k["numerator"].clone(), k["denominator"].clone())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while *got != want {
        assert!(Instant::now() < deadline, "pushes never matched REST:\n got {got:?}\nwant {want:?}");
        let m = next_json(ws, Duration::from_secs(20)).await;
        *seq += 1;
        assert_eq!(m["seq"].as_u64(), Some(*seq), "seq is gap-free: {m}");
        if m["type"] == "alert" {
            // Alert changes (e.g. `stale` while the store was empty) share the socket.
            continue;
        }
        assert_eq!(m["type"], "kpi", "{m}");
        assert_eq!(m["scope"], json!({}), "national only without group_by: {m}");
        assert!(m["as_of"].is_string(), "{m}");
        got.insert(m["id"].as_str().unwrap().to_string(), (m["numerator"].clone(), m["denominator"].clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_gets_a_snapshot_then_updates_equal_to_the_rest_api_with_gap_free_seq() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), &[], &[]).await;
    let mut ws = connect(&server, "").await.unwrap();
    subscribe(&mut ws, json!(["*"]), Value::Null).await;
    let snap = next_json(&mut ws, Duration::from_secs(10)).await;
    assert_eq!((snap["type"].as_str(), snap["seq"].as_u64()), (Some("snapshot"), Some(1)), "{snap}");
    assert_eq!(snap["kpis"].as_array().unwrap().len(), KPI_COUNT, "every KPI, national: {snap}");
    let mut seq = 1;

    let evs = recent_events(21, 2000);
    let (status, out) = server.post_ndjson(&lines(&evs)).await;
    assert_eq!((status, out["accepted"].as_u64()), (200, Some(2000)), "{out}");

    // Fold pushes until every national value equals the REST answer.
    // The snapshot holds every KPI; pushes then carry what changes.
    let mut got: BTreeMap<String, (Value, Value)> = snap["kpis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_string(), (k["numerator"].clone(), k["denominator"].clone())))
        .collect();
    fold_until_rest(&server, &mut ws, &mut got, &mut seq).await;
    for id in ["feedback_on_time_rate", "feedback_satisfaction_rate", "dvcqg_sync_rate"] {
        assert!(got[id].1.as_u64().unwrap() > 0, "{id} is pushed like every KPI: {:?}", got[id]);
    }
    let before = got["on_time_rate"].1.as_u64().unwrap();

    // Late events for hours already past this month correct the pushed values too.
    let now = Utc::now();
    let month = ioc_core::time::start_of_month(now).to_utc();
    let late_at = (now - chrono::Duration::days(3)).max(month + chrono::Duration::minutes(1));
    let late = events(23, 500, late_at, 0);
    assert_eq!(server.post_ndjson(&lines(&late)).await.0, 200);
    fold_until_rest(&server, &mut ws, &mut got, &mut seq).await;
    assert!(got["on_time_rate"].1.as_u64().unwrap() > before, "late events were pushed");
    assert!(got["full_online_rate"].1.as_u64().unwrap() > 0, "the workload has dossiers");

    // Resubscribe on the same socket: by province, one KPI.
    subscribe(&mut ws, json!(["full_online_rate"]), json!("province_code")).await;
    let snap = loop {
        let m = next_json(&mut ws, Duration::from_secs(10)).await;
        seq += 1;
        assert_eq!(m["seq"].as_u64(), Some(seq), "{m}");
        if m["type"] == "snapshot" {
            break m;
        }
    };
    let entries = snap["kpis"].as_array().unwrap();
    assert!(entries.iter().all(|k| k["id"] == "full_online_rate"), "{snap}");
    let (_, by_province) = server.get("/api/v1/kpis/full_online_rate?group_by=province_code").await;
    for row in by_province["rows"].as_array().unwrap() {
        let scope = json!({"province_code": row["province_code"]});
        let e = entries.iter().find(|k| k["scope"] == scope).unwrap_or_else(|| panic!("no {scope} in {snap}"));
        assert_eq!((&e["numerator"], &e["denominator"]), (&row["numerator"], &row["denominator"]), "{scope}");
    }

    // New events move province values: the pushes (folded onto the snapshot) end up
    // equal to the REST answer for every province, and carry only the subscribed KPI.
    let scope_key = |k: &Value| k["scope"]["province_code"].as_str().unwrap_or("").to_string();
    let mut got: BTreeMap<String, (Value, Value)> =
        entries.iter().map(|k| (scope_key(k), (k["numerator"].clone(), k["denominator"].clone()))).collect();
    let (status, _) = server.post_ndjson(&lines(&recent_events(22, 300))).await;
    assert_eq!(status, 200);
    let (_, by_province) = server.get("/api/v1/kpis/full_online_rate?group_by=province_code").await;
    let (_, national) = server.get("/api/v1/kpis").await;
    let mut want: BTreeMap<String, (Value, Value)> = by_province["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["province_code"].as_str().unwrap().to_string(), (r["numerator"].clone(), r["denominator"].clone())))
        .collect();
    let n = national.as_array().unwrap().iter().find(|k| k["id"] == "full_online_rate").unwrap();
    want.insert(String::new(), (n["numerator"].clone(), n["denominator"].clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while got != want {
        assert!(Instant::now() < deadline, "province pushes never matched REST:\n got {got:?}\nwant {want:?}");
        let m = next_json(&mut ws, Duration::from_secs(20)).await;
        seq += 1;
        assert_eq!(m["seq"].as_u64(), Some(seq), "{m}");
        if m["type"] == "alert" {
            continue;
        }
        assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("kpi"), Some("full_online_rate")), "{m}");
        got.insert(scope_key(&m), (m["numerator"].clone(), m["denominator"].clone()));
    }

    // Graceful shutdown closes the socket with a close frame.
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    let frame = loop {
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame on shutdown: {other:?}"),
        }
    };
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_while_a_fast_client_keeps_receiving() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--ws-ping-interval-secs", "1", "--ws-timeout-secs", "3"], &[]).await;
    let mut slow = connect(&server, "").await.unwrap();
    subscribe(&mut slow, json!(["*"]), json!("province_code")).await;
    let mut fast = connect(&server, "").await.unwrap();
    subscribe(&mut fast, json!(["*"]), json!("province_code")).await;
    assert_eq!(next_json(&mut fast, Duration::from_secs(10)).await["type"], "snapshot");

    // Keep data flowing; the fast client reads everything, the slow one nothing.
    let mut received = 0;
    let started = Instant::now();
    let mut seed = 100;
    while server.metric("ioc_ws_disconnects_total").await < 1.0 || received == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the slow client was never cut off");
        seed += 1;
        let (status, _) = server.post_ndjson(&lines(&recent_events(seed, 200))).await;
        assert_eq!(status, 200);
        let until = Instant::now() + Duration::from_millis(500);
        while let Ok(Some(Ok(m))) =
            tokio::time::timeout(until.saturating_duration_since(Instant::now()), fast.next()).await
        {
            if matches!(m, Message::Text(_)) {
                received += 1;
            }
        }
    }
    assert!(server.metric("ioc_ws_disconnects_total{reason=\"too_slow\"}").await >= 1.0);

    // The slow client, reading at last, finds a close frame with a reason.
    let frame = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => continue,
            other => panic!("the slow client was not closed with a frame: {other:?}"),
        }
    };
    let frame = frame.expect("a close frame with a code");
    assert_eq!(u16::from(frame.code), 1008);
    assert!(frame.reason.contains("too slow"), "{frame:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("ioc_ws_clients").await != 1.0 {
        assert!(Instant::now() < deadline, "the slow client's connection was never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The fast client still gets updates after the cut.
    let (status, _) = server.post_ndjson(&lines(&recent_events(999, 200))).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while next_json(&mut fast, Duration::from_secs(10)).await["type"] != "kpi" {
        assert!(Instant::now() < deadline, "the fast client got no update after the cut");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_socket_is_refused_and_a_viewer_token_is_accepted() {
    let data = tempfile::tempdir().unwrap();
    let tokens = "viewer:viewer-token-0123456789,ingest:ingest-token-0123456789";
    let server = Server::start(data.path(), &[], &[("IOC_AUTH_TOKENS", tokens)]).await;
    let status = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    };
    assert_eq!(status(connect(&server, "").await.unwrap_err()), 401);
    assert_eq!(status(connect(&server, "?token=wrong").await.unwrap_err()), 401);
    assert_eq!(status(connect(&server, "?token=ingest-token-0123456789").await.unwrap_err()), 403);
    let mut ws = connect(&server, "?token=viewer-token-0123456789").await.unwrap();
    subscribe(&mut ws, json!(["*"]), Value::Null).await;
    assert_eq!(next_json(&mut ws, Duration::from_secs(10)).await["type"], "snapshot");
    // A bad subscription is answered with an error message, and the socket stays open.
    subscribe(&mut ws, json!(["no_such_kpi"]), Value::Null).await;
    let m = next_json(&mut ws, Duration::from_secs(10)).await;
    assert_eq!((m["type"].as_str(), m["error"]["code"].as_str()), (Some("error"), Some("unknown_kpi")), "{m}");
}

/// A local Alertmanager-style receiver: every POSTed JSON body, in order.
async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

fn dossier(id: &str, online: bool) -> String {
    let now = Utc::now() - chrono::Duration::seconds(30);
    json!({
        "event_id": id, "type": "dossier.received", "occurred_at": now.to_rfc3339(),
        "source": "motcua-hanoi", "agency_code": "000.00.00.H01", "level": "province",
        "province_code": "01", "dossier_id": format!("HS-{id}"), "procedure_code": "1.001612",
        "channel": if online { "online" } else { "in_person" }, "service_level": "full",
        "due_at": (now + chrono::Duration::days(5)).to_rfc3339(),
        "digitized": true, "reused_data": false, "authenticated": online,
    })
    .to_string()
}

async fn wait_alert_state(server: &Server, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, rules) = server.get("/api/v1/alert-rules").await;
        let instance = rules[0]["instances"][0].clone();
        if instance["state"] == state {
            return instance;
        }
        assert!(Instant::now() < deadline, "alert never became {state}: {rules}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn next_webhook(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("a webhook call in time").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_province_below_target_goes_pending_then_firing_notifies_the_webhook_and_resolves() {
    let data = tempfile::tempdir().unwrap();
    let rules = data.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"hanoi_full_online\"\nkpi = \"full_online_rate\"\nscope = \"01\"\nfor = \"2s\"\nmin_denominator = 10\n",
    )
    .unwrap();
    let (hook, mut calls) = webhook_receiver().await;
    let store = data.path().join("store-dir");
    let args =
        ["--alert-rules", rules.to_str().unwrap(), "--alert-webhook-url", &hook, "--alert-eval-interval-secs", "1"];
    let mut server = Server::start(&store, &args, &[]).await;
    let mut ws = connect(&server, "").await.unwrap();
    subscribe(&mut ws, json!(["full_online_rate"]), Value::Null).await;
    assert_eq!(next_json(&mut ws, Duration::from_secs(10)).await["type"], "snapshot");

    // 5 of 20 full-online-capable dossiers were submitted online: 25% < 80%.
    let low: Vec<String> = (0..20).map(|i| dossier(&format!("low-{i}"), i < 5)).collect();
    assert_eq!(server.post_ndjson(&low).await.0, 200);
    wait_alert_state(&server, "pending").await;
    let firing = wait_alert_state(&server, "firing").await;
    assert_eq!(firing["value"].as_f64(), Some(0.25), "{firing}");
    let (_, alerts) = server.get("/api/v1/alerts").await;
    assert_eq!(alerts["active"][0]["rule"], "hanoi_full_online", "{alerts}");

    let fired = next_webhook(&mut calls).await;
    assert_eq!((fired["version"].as_str(), fired["status"].as_str()), (Some("4"), Some("firing")), "{fired}");
    let alert = &fired["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "hanoi_full_online", "{fired}");
    assert_eq!(alert["labels"]["scope"], "province:01", "{fired}");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z", "{fired}");
    server
        .assert_metrics(&["ioc_kpi_value{kpi=\"full_online_rate\",scope=\"province:01\"} 0.25", "ioc_alert_state{"])
        .await;

    // Recovery: 200 more, all online: 205 / 220 = 93% >= 80%.
    let high: Vec<String> = (0..200).map(|i| dossier(&format!("high-{i}"), true)).collect();
    assert_eq!(server.post_ndjson(&high).await.0, 200);
    wait_alert_state(&server, "resolved").await;
    let resolved = next_webhook(&mut calls).await;
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z", "{resolved}");

    // The websocket saw every change, in order (before the events: `no_data`).
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("resolved") {
        let m = next_json(&mut ws, Duration::from_secs(10)).await;
        if m["type"] == "alert" {
            assert_eq!(m["alert"]["rule"], "hanoi_full_online", "{m}");
            states.push(m["alert"]["state"].as_str().unwrap().to_string());
        }
    }
    assert!(states.ends_with(&["pending".into(), "firing".into(), "resolved".into()]), "{states:?}");

    // History survives a restart.
    server.stop();
    let server = Server::start(&store, &args, &[]).await;
    let (_, alerts) = server.get("/api/v1/alerts").await;
    let to: Vec<&str> = alerts["recent"].as_array().unwrap().iter().filter_map(|c| c["to"].as_str()).collect();
    assert!(to.starts_with(&["resolved", "firing", "pending"]), "newest first: {alerts}");
    assert!(alerts["active"].as_array().unwrap().is_empty(), "{alerts}");
}
