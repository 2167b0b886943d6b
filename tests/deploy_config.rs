//! The shipped Prometheus configuration and alert rules are valid for Prometheus
//! itself: `promtool` (Debian package `prometheus`, installed by `.ci/run`) accepts
//! them, and the rules use the gauges the server exposes.

use std::path::PathBuf;
use std::process::Command;

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
