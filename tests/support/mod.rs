//! Shared helpers for the end-to-end tests: spawn the real `ioc` binary on a free
//! loopback port with its own data directory, talk to it over HTTP, stop or kill it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ioc_core::AdminUnits;
use ioc_core::event::{Body, Channel, Event, ServiceLevel};
use ioc_ingest::Simulator;
use serde_json::Value;

pub fn ioc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ioc")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `ioc serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
    pub token: Option<String>,
}

impl Server {
    pub async fn start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut cmd = Command::new(ioc_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--http")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env_remove("IOC_AUTH_TOKENS")
            .env("IOC_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn ioc");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            data_dir: data_dir.to_path_buf(),
            client: reqwest::Client::new(),
            token: None,
        };
        server.wait_healthy().await;
        server
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.client.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "ioc did not become healthy on {}", self.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// POSTs NDJSON; returns (status, JSON body).
    pub async fn post_ndjson(&self, lines: &[String]) -> (u16, Value) {
        let body = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        let r = self
            .auth(self.client.post(format!("{}/api/v1/events", self.base)))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.auth(self.client.get(format!("{}{path}", self.base))).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn sql(&self, sql: &str) -> (u16, Value) {
        let r = self
            .auth(self.client.post(format!("{}/api/v1/sql", self.base)))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A single number from a SQL query.
    pub async fn sql_count(&self, sql: &str) -> i64 {
        let (status, v) = self.sql(sql).await;
        assert_eq!(status, 200, "{sql}: {v}");
        v["rows"][0][0].as_i64().unwrap_or_else(|| panic!("{sql}: {v}"))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seeded realistic events whose times spread over the `days` before `end`.
pub fn events(seed: u64, n: usize, end: DateTime<Utc>, days: i64) -> Vec<Event> {
    let mut sim = Simulator::new(Arc::new(AdminUnits::builtin()), seed);
    let span = days * 24 * 3600;
    (0..n)
        .map(|i| {
            let back = span - (i as i64 * span / n.max(1) as i64);
            sim.next_event(end - chrono::Duration::seconds(back))
        })
        .collect()
}

pub fn lines(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.to_json().to_string()).collect()
}

/// The contract's KPI definitions (CONTRACT.md §2), written independently of the
/// shipped catalog: (numerator, denominator) per KPI id.
pub fn expected_counts(events: &[Event], province: Option<&str>) -> BTreeMap<&'static str, (u64, u64)> {
    let mut m: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut add = |id: &'static str, den: bool, num: bool| {
        let e = m.entry(id).or_default();
        if den {
            e.1 += 1;
            if num {
                e.0 += 1;
            }
        }
    };
    for e in events {
        if province.is_some() && e.province_code.as_deref() != province {
            continue;
        }
        match &e.body {
            Body::DossierReceived { channel, service_level, digitized, reused_data, authenticated, .. } => {
                let online = *channel == Channel::Online;
                add("full_online_rate", *service_level == ServiceLevel::Full, online);
                add("online_submission_rate", true, online);
                add("digitization_rate", true, *digitized);
                add("data_reuse_rate", true, *reused_data);
                add("eid_auth_rate", online, *authenticated);
            }
            Body::DossierResolved { due_at, result_electronic, .. } => {
                add("on_time_rate", true, e.occurred_at <= *due_at);
                add("e_result_rate", true, *result_electronic);
            }
            Body::DossierPaid { online, .. } => add("online_payment_rate", true, *online),
            Body::DossierRated { satisfied, .. } => add("satisfaction_rate", true, *satisfied),
            Body::DocumentSent { electronic, signed, secret, .. } => {
                add("edoc_rate", !secret, *electronic);
                add("signed_edoc_rate", *electronic && !secret, *signed);
            }
            Body::WorkRecordClosed { online, secret, .. } => add("online_work_record_rate", !secret, *online),
            Body::InspectionCompleted { digital, .. } => add("digital_inspection_rate", true, *digital),
            Body::ReportSubmitted { via_system, .. } => add("report_online_rate", true, *via_system),
            Body::DossierClosed { .. } => {}
        }
    }
    m
}

/// Asserts that `GET /api/v1/kpis` over a period equals the independent expectations.
pub async fn assert_kpis(server: &Server, events: &[Event], query: &str, province: Option<&str>) {
    let expected = expected_counts(events, province);
    let (status, v) = server.get(&format!("/api/v1/kpis?{query}")).await;
    assert_eq!(status, 200, "{v}");
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 15, "14 ratios and the overdue gauge");
    let mut checked = 0;
    for k in list {
        let id = k["id"].as_str().unwrap();
        if k["kind"] == "gauge" {
            continue;
        }
        let (num, den) = expected.get(id).copied().unwrap_or_default();
        assert_eq!((k["numerator"].as_u64(), k["denominator"].as_u64()), (Some(num), Some(den)), "{id}: {k}");
        if den == 0 {
            assert_eq!(k["value"], Value::Null, "{id}");
            assert_eq!(k["status"], "no_data", "{id}");
        } else {
            let value = k["value"].as_f64().unwrap();
            assert!((value - num as f64 / den as f64).abs() < 1e-12, "{id}: {value}");
            let target = k["target"].as_f64().unwrap();
            assert_eq!(k["status"], if value >= target { "ok" } else { "below_target" }, "{id}");
        }
        checked += 1;
    }
    assert_eq!(checked, 14);
}
