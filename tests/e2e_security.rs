//! Security end to end: tokens and roles, the loopback rule, body limits, and the SQL
//! sandbox refusing writes, file access and runaway queries while the server stays up.

mod support;

use serde_json::json;
use support::*;

const TOKENS: &str =
    "viewer:viewer-token-0001,analyst:analyst-token-0001,ingest:ingest-token-0001,admin:admin-token-00001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_each_endpoint_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[("IOC_AUTH_TOKENS", TOKENS)]).await;
    let client = &server.client;
    let call = |method: &str, path: &str, token: Option<&str>| {
        let url = format!("{}{path}", server.base);
        let mut req = match method {
            "GET" => client.get(url),
            _ => client.post(url),
        };
        if path.ends_with("/sql") {
            req = req.json(&json!({"sql": "SELECT 1"}));
        } else if method == "POST" {
            req = req.body("");
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body)
        }
    };
    // (method, path, [no token, viewer, analyst, ingest, admin, wrong token])
    let cases: [(&str, &str, [u16; 6]); 4] = [
        ("GET", "/api/v1/kpis", [401, 200, 200, 403, 200, 401]),
        ("GET", "/api/v1/kpis/edoc_rate", [401, 200, 200, 403, 200, 401]),
        ("POST", "/api/v1/sql", [401, 403, 200, 403, 200, 401]),
        ("POST", "/api/v1/events", [401, 403, 403, 200, 200, 401]),
    ];
    let tokens = [
        None,
        Some("viewer-token-0001"),
        Some("analyst-token-0001"),
        Some("ingest-token-0001"),
        Some("admin-token-00001"),
        Some("nope-nope-nope"),
    ];
    for (method, path, expected) in cases {
        for (token, want) in tokens.iter().zip(expected) {
            let (status, body) = call(method, path, *token).await;
            assert_eq!(status, want, "{method} {path} with {token:?}: {body}");
            if status >= 400 {
                assert!(body["error"]["code"].is_string(), "{body}");
            }
        }
    }
    // Health and readiness stay open for probes, and the page (it asks for a token).
    for path in ["/healthz", "/readyz", "/"] {
        assert_eq!(client.get(format!("{}{path}", server.base)).send().await.unwrap().status(), 200, "{path}");
    }
    // Metrics show KPI values: any role's token, as Prometheus sends it (CONTRACT.md §7.2).
    for (token, want) in
        [(None, 401), (Some("nope-nope-nope"), 401), (Some("viewer-token-0001"), 200), (Some("ingest-token-0001"), 200)]
    {
        let (status, _) = call("GET", "/metrics", token).await;
        assert_eq!(status, want, "/metrics with {token:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_passes_any_printable_token_percent_encoded_in_the_websocket_url() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let token = "vw+a/b=c%d-41f7:x@y!~";
    let spec = format!("viewer:{token},admin:admin-token-00001");
    let server = Server::start(dir.path(), &[], &[("IOC_AUTH_TOKENS", &spec)]).await;
    // What `encodeURIComponent` makes of it.
    let encoded: String = percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC).to_string();
    let url = format!("ws://127.0.0.1:{}/api/v1/ws?token={encoded}", server.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("the encoded token is accepted");
    ws.send(Message::text(json!({"op": "subscribe", "kpis": ["*"], "group_by": null}).to_string())).await.unwrap();
    let first = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => break serde_json::from_str::<serde_json::Value>(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(first["type"], "snapshot", "{first}");
    // The same token, one character off, is refused.
    let url = format!("ws://127.0.0.1:{}/api/v1/ws?token={}", server.port, encoded.replace("41f7", "41f8"));
    let refused = tokio_tungstenite::connect_async(url).await.expect_err("a wrong token is refused");
    assert!(refused.to_string().contains("401"), "{refused}");
}

#[tokio::test]
async fn without_tokens_the_server_refuses_a_non_loopback_bind() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ioc_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http", &format!("0.0.0.0:{}", free_port())])
        .env_remove("IOC_AUTH_TOKENS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--http") && err.contains("IOC_AUTH_TOKENS"), "{err}");
    // Bad flags and bad config keys are exit code 2 and are named.
    let cfg = dir.path().join("ioc.toml");
    std::fs::write(&cfg, "htp = \"127.0.0.1:1\"\n").unwrap();
    let out = std::process::Command::new(ioc_bin()).args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("htp"));
    let out = std::process::Command::new(ioc_bin()).args(["serve", "--sql-max-rows", "many"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sql-max-rows"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--body-limit-bytes", "2000"], &[]).await;
    let evs = lines(&events(5, 20, chrono::Utc::now(), 1));
    let (status, v) = server.post_ndjson(&evs).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");
    let (status, v) = server.post_ndjson(&evs[..2]).await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(2)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_sandbox_refuses_writes_files_and_runaway_queries_and_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--sql-timeout-secs", "3", "--sql-max-rows", "50"], &[]).await;
    let (s, _) = server.post_ndjson(&lines(&events(3, 2_000, chrono::Utc::now(), 2))).await;
    assert_eq!(s, 200);
    for sql in SANDBOX_ATTACKS {
        let (status, v) = server.sql(sql).await;
        assert_eq!(status, 400, "{sql}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{sql}: {v}");
        let (h, _) = server.get("/healthz").await;
        assert_eq!(h, 200, "the server stays up after {sql}");
    }
    assert!(!std::path::Path::new("/tmp/ioc-copy-test.csv").exists());
    // The row cap truncates instead of failing.
    let (status, v) = server.sql("SELECT event_id FROM dossier_events").await;
    assert_eq!(status, 200);
    assert_eq!((v["rows"].as_array().unwrap().len(), v["truncated"].as_bool()), (50, Some(true)));
    // Every statement was audit-logged, with the token's name.
    let audit = std::fs::read_to_string(dir.path().join("audit/sql.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), SANDBOX_ATTACKS.len() + 1);
    assert!(audit.lines().all(|l| l.contains("\"token\":\"local\"")));
}
