//! What `deploy/` ships is valid for the tools that read it, and names only what the
//! server exposes:
//! - `promtool` (Debian `prometheus`) accepts both Prometheus configs, the alert rules
//!   and every query of the Grafana dashboard (as recording rules); `amtool` (Debian
//!   `prometheus-alertmanager`) accepts the Alertmanager config;
//! - `tests/deploy/check_deploy.py` (PyYAML and `helm` from PyPI, in the `.venv` that
//!   `.ci/run` makes) parses every YAML and JSON file, checks the compose site's shape,
//!   lints and renders the Helm chart and checks its objects;
//! - a live `ioc serve`, with a real Kafka broker (tansu), the chart's rendered
//!   `ioc.toml` and some traffic, shows on `/metrics` every metric the dashboard and the
//!   rules use.
//!
//! Docker and Kubernetes cannot run on the CI machines, so images and pods are not
//! started here.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use support::*;

fn prometheus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is not installed: apt-get install prometheus (see .ci/run)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_shipped_prometheus_config_and_alert_rules() {
    // As installed: the shipped files, unchanged, beside the token file an operator
    // writes (`ioc-token`, which promtool requires to exist).
    let site = tempfile::tempdir().unwrap();
    for f in ["prometheus.yml", "ioc-alerts.yml"] {
        std::fs::copy(prometheus_dir().join(f), site.path().join(f)).unwrap();
    }
    std::fs::write(site.path().join("ioc-token"), "viewer-token-for-prometheus\n").unwrap();
    let config = promtool(site.path(), &["check", "config", "prometheus.yml"]);
    assert!(config.contains("SUCCESS"), "{config}");
    let shipped = std::fs::read_to_string(prometheus_dir().join("prometheus.yml")).unwrap();
    assert!(shipped.contains("credentials_file: ioc-token"), "Prometheus sends a token to /metrics");
    let rules = promtool(site.path(), &["check", "rules", "ioc-alerts.yml"]);
    assert!(rules.contains("SUCCESS") && rules.contains("rules found"), "{rules}");
    let text = std::fs::read_to_string(prometheus_dir().join("ioc-alerts.yml")).unwrap();
    for gauge in ["ioc_kpi_value", "ioc_kpi_target", "ioc_alert_state"] {
        assert!(text.contains(gauge), "the rules use {gauge}");
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// A program of the tests' virtualenv: its `python`, or `helm` beside it.
fn venv_bin(name: &str) -> PathBuf {
    let python = test_python();
    let bin = if name == "python" { python } else { python.with_file_name(name) };
    assert!(
        bin.exists(),
        "{} is missing: run `python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt` (as .ci/run does)",
        bin.display()
    );
    bin
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the checker; returns its report and the folder with the rendered `ioc.toml`
/// and the dashboard's recording rules.
fn check_deploy() -> (Value, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let report = run_ok(
        Command::new(venv_bin("python"))
            .arg(repo_root().join("tests/deploy/check_deploy.py"))
            .arg(repo_root())
            .arg(venv_bin("helm"))
            .arg(out.path()),
    );
    (serde_json::from_str(report.trim()).expect("the checker prints JSON"), out)
}

#[test]
fn compose_alertmanager_and_dashboard_queries_are_valid_for_their_tools() {
    let (report, out) = check_deploy();
    assert!(report["dashboard_queries"].as_u64().unwrap() >= 10, "{report}");
    // The compose site's Prometheus, as mounted: its config beside the shared rules.
    let site = tempfile::tempdir().unwrap();
    std::fs::copy(repo_root().join("deploy/compose/prometheus/prometheus.yml"), site.path().join("prometheus.yml"))
        .unwrap();
    std::fs::copy(prometheus_dir().join("ioc-alerts.yml"), site.path().join("ioc-alerts.yml")).unwrap();
    std::fs::write(site.path().join("ioc-token"), "viewer-token-for-prometheus\n").unwrap();
    let config = promtool(site.path(), &["check", "config", "prometheus.yml"]);
    assert!(config.contains("SUCCESS"), "{config}");
    // Every dashboard query parses as PromQL.
    let rules = promtool(out.path(), &["check", "rules", "dashboard-rules.yml"]);
    assert!(rules.contains("SUCCESS"), "{rules}");
    let am = run_ok(
        Command::new("amtool")
            .args(["check-config"])
            .arg(repo_root().join("deploy/compose/alertmanager/alertmanager.yml")),
    );
    assert!(am.contains("SUCCESS"), "{am}");
}

async fn ws_open_and_close(server: &Server) {
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://127.0.0.1:{}/api/v1/ws", server.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
    ws.send(Message::text(r#"{"op":"subscribe","kpis":["online_submission_rate"]}"#)).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_rules_use_is_on_a_live_servers_metrics() {
    let (report, out) = check_deploy();
    let names: Vec<String> =
        report["metrics"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert!(names.len() >= 12, "{report}");

    let broker = Broker::start(&["ioc.events", "ioc.dead_letters"]).await;
    let data = tempfile::tempdir().unwrap();
    let config = out.path().join("ioc.toml");
    let server = Server::start(
        data.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--kafka-brokers",
            &broker.brokers(),
            "--alert-eval-interval-secs",
            "1",
            "--compaction-interval-secs",
            "1",
            "--compaction-min-files",
            "2",
        ],
        &[],
    )
    .await;
    // Traffic of every kind the dashboard shows: Kafka and HTTP events, a repeat, a
    // rejected message, queries, a websocket that comes and goes.
    let evs = events(7, 400, chrono::Utc::now(), 3);
    let mut msgs: Vec<(String, Vec<u8>)> =
        lines(&evs).into_iter().enumerate().map(|(i, l)| (i.to_string(), l.into_bytes())).collect();
    msgs.push(("bad".into(), b"{not json".to_vec()));
    produce(&producer(&broker.brokers()), "ioc.events", &msgs).await;
    let (status, _) = server.post_ndjson(&lines(&evs[..10])).await;
    assert_eq!(status, 200, "a repeat over HTTP is accepted (and counted as a duplicate)");
    let more = events(8, 50, chrono::Utc::now(), 1);
    for chunk in more.chunks(10) {
        let (status, _) = server.post_ndjson(&lines(chunk)).await;
        assert_eq!(status, 200);
    }
    wait_for_count(&server, "SELECT count(*) FROM dead_letters", 1, 120).await;
    for path in ["/api/v1/kpis", "/api/v1/kpis/online_submission_rate", "/api/v1/index"] {
        assert_eq!(server.get(path).await.0, 200, "{path}");
    }
    assert_eq!(server.sql("SELECT count(*) FROM dossier_events").await.0, 200);
    ws_open_and_close(&server).await;

    // Every name is exposed once the server has seen that traffic (a labelled series
    // appears with its first observation; the last to come are the Kafka lag from
    // librdkafka's statistics and the alert states of the first evaluation).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = server.metrics_text().await;
        let missing: Vec<&String> = names.iter().filter(|n| !text.lines().any(|l| exposes(l, n))).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard or the rules use metrics the server does not expose: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(broker);
}

/// Whether a line of the text format is a sample of `name` (a histogram's `_bucket`).
fn exposes(line: &str, name: &str) -> bool {
    let sample = line.split([' ', '{']).next().unwrap_or("");
    sample == name || sample == format!("{name}_bucket")
}
