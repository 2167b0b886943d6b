//! Calendar boundaries of the real binary under a fake clock: `ioc serve` runs with
//! libfaketime preloaded (Debian's `faketime` package), its clock set a few seconds
//! before Vietnam midnight at the end of November, so that wall displays connected
//! across the month rollover can be watched (CONTRACT.md §7.3).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// libfaketime, as Debian installs it (the multi-threaded variant).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The server's clock starts here (UTC), 23:59:45 in Vietnam, and then runs.
const FAKE_START: &str = "@2026-11-30 16:59:45";

async fn start_at_fake_time(dir: &Path) -> Server {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's faketime package (.ci/run does)"
    );
    let env = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME", FAKE_START),
        ("TZ", "UTC"),
        // Timers keep the real monotonic clock; only the calendar moves.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("FAKETIME_NO_CACHE", "1"),
    ];
    Server::start(dir, &[], &env).await
}

async fn subscribe(server: &Server, period: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}/api/v1/ws", server.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let msg = json!({"op": "subscribe", "kpis": ["report_online_rate"], "group_by": null, "period": period});
    ws.send(Message::text(msg.to_string())).await.unwrap();
    ws
}

/// The next snapshot or KPI message within `within`, or `None` (alert changes, which
/// the rollover also causes, are skipped).
async fn next_json(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "alert" {
                    return Some(v);
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed by the server: {f:?}"),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("websocket ended: {other:?}"),
        }
    }
}

/// (from, numerator, denominator) of `report_online_rate` in a snapshot.
fn reports_in(snapshot: &Value) -> (String, Value, Value) {
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let k = &snapshot["kpis"][0];
    assert_eq!(k["id"], "report_online_rate", "{snapshot}");
    (k["from"].as_str().unwrap_or_default().to_string(), k["numerator"].clone(), k["denominator"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn displays_connected_across_the_end_of_the_month_get_the_new_month_and_never_its_predecessors_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_at_fake_time(dir.path()).await;
    // 40 reports on the evening of 30 November, 30 of them on the reporting system.
    let lines: Vec<String> = (0..40)
        .map(|i| {
            json!({"event_id": format!("r-{i}"), "type": "report.submitted", "occurred_at": "2026-11-30T23:59:00+07:00",
                "source": "bc-hanoi", "agency_code": "000.00.00.H01", "level": "province", "province_code": "01",
                "report_id": format!("r-{i}"), "via_system": i < 30})
            .to_string()
        })
        .collect();
    let (status, v) = server.post_ndjson(&lines).await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(40)), "{v}");
    // Snapshots come from the live hub, which takes changes in every 250 ms.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut today = subscribe(&server, "today").await;
    let mut month = subscribe(&server, "mtd").await;
    let mut year = subscribe(&server, "ytd").await;
    let november = [
        (&mut today, "2026-11-30T00:00:00+07:00"),
        (&mut month, "2026-11-01T00:00:00+07:00"),
        (&mut year, "2026-01-01T00:00:00+07:00"),
    ];
    for (ws, from) in november {
        let snap = next_json(ws, Duration::from_secs(10)).await.expect("a snapshot");
        assert_eq!(reports_in(&snap), (from.to_string(), json!(30), json!(40)), "{snap}");
    }

    // Vietnam midnight: the day and the month roll over, the year does not.
    for (ws, what) in [(&mut today, "today"), (&mut month, "mtd")] {
        let snap = next_json(ws, Duration::from_secs(60)).await.unwrap_or_else(|| panic!("{what}: no new snapshot"));
        assert_eq!(
            reports_in(&snap),
            ("2026-12-01T00:00:00+07:00".to_string(), json!(0), json!(0)),
            "{what}: the new period's snapshot, without November's reports: {snap}"
        );
    }
    assert_eq!(next_json(&mut year, Duration::from_secs(1)).await, None, "the year goes on: nothing to say");

    // A display that connects after midnight sees December, and REST agrees.
    let mut late = subscribe(&server, "mtd").await;
    let snap = next_json(&mut late, Duration::from_secs(10)).await.expect("a snapshot");
    assert_eq!(reports_in(&snap), ("2026-12-01T00:00:00+07:00".to_string(), json!(0), json!(0)), "{snap}");
    let (_, kpis) = server.get("/api/v1/kpis").await;
    let rest = kpis.as_array().unwrap().iter().find(|k| k["id"] == "report_online_rate").unwrap();
    assert_eq!((rest["from"].as_str(), rest["denominator"].as_u64()), (Some("2026-12-01T00:00:00+07:00"), Some(0)));

    // A report of the new day reaches the day's and the month's displays as a value.
    let line = json!({"event_id": "d-1", "type": "report.submitted", "occurred_at": "2026-12-01T00:00:01+07:00",
        "source": "bc-hanoi", "agency_code": "000.00.00.H01", "level": "province", "province_code": "01",
        "report_id": "d-1", "via_system": true})
    .to_string();
    assert_eq!(server.post_ndjson(&[line]).await.0, 200);
    for (ws, year_total) in [(&mut today, 1), (&mut month, 1), (&mut year, 41)] {
        let m = next_json(ws, Duration::from_secs(10)).await.expect("a kpi message");
        assert_eq!((m["type"].as_str(), m["denominator"].as_u64()), (Some("kpi"), Some(year_total)), "{m}");
    }
}
