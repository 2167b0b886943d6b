//! Targets end to end (CONTRACT.md §7.4) against the real `ioc serve`: every KPI comes
//! with the target of its province and year and the source of that target; a series
//! filtered by `level=` gets the level's target; `kpi_daily` over SQL shows the targets
//! the API answers; a catalog whose target names a province code not among the 34 is
//! refused at start with exit code 2, naming the key.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use support::*;

const QD1105_DIGITIZATION: &str = "QĐ 1105/QĐ-BNV: 100% hồ sơ ... thủ tục hành chính được số hóa";
const QD1105_EDOC: &str = "QĐ 1105/QĐ-BNV: 100% văn bản trao đổi ... dưới dạng điện tử";
const PLAN_24: &str = "Kế hoạch chuyển đổi số năm 2024 của Sở Nội vụ tỉnh Bắc Giang";

/// KPI id -> (target, target_source) of `GET /api/v1/kpis?{query}`.
async fn targets(server: &Server, query: &str) -> BTreeMap<String, (f64, String)> {
    let (status, v) = server.get(&format!("/api/v1/kpis?{query}")).await;
    assert_eq!(status, 200, "{query}: {v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let source = k["target_source"].as_str().unwrap_or_else(|| panic!("{query}: no target_source in {k}"));
            assert!(!source.is_empty(), "{query}: {k}");
            (k["id"].as_str().unwrap().to_string(), (k["target"].as_f64().unwrap(), source.to_string()))
        })
        .collect()
}

fn values(m: &BTreeMap<String, (f64, String)>, ids: &[&str]) -> Vec<f64> {
    ids.iter().map(|id| m[*id].0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kpi_has_the_target_of_its_province_and_year_with_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    let (y2024, y2030) = ("from=2024-03-01&to=2024-04-01", "from=2030-03-01&to=2030-04-01");
    let nation_2024 = targets(&server, y2024).await;
    let nation_2030 = targets(&server, y2030).await;
    let p24_2024 = targets(&server, &format!("{y2024}&province_code=24")).await;
    let p24_2030 = targets(&server, &format!("{y2030}&province_code=24")).await;
    let p01_2030 = targets(&server, &format!("{y2030}&province_code=01")).await;

    // The corrected national defaults, with the contract's sources.
    for m in [&nation_2024, &nation_2030, &p01_2030] {
        assert_eq!(m["digitization_rate"], (1.0, QD1105_DIGITIZATION.to_string()));
        assert_eq!(m["edoc_rate"], (1.0, QD1105_EDOC.to_string()));
    }
    let ids = [
        "full_online_rate",
        "online_work_record_rate",
        "digital_inspection_rate",
        "online_payment_rate",
        "data_reuse_rate",
        "edoc_rate",
    ];
    assert_eq!(values(&nation_2024, &ids), [0.80, 0.90, 0.50, 0.60, 0.50, 1.00]);
    // The 2030 goals, for every province without its own targets too.
    assert_eq!(values(&nation_2030, &ids), [0.80, 1.00, 0.70, 0.60, 0.50, 1.00]);
    assert_eq!(values(&p01_2030, &ids), values(&nation_2030, &ids));
    assert!(nation_2030["digital_inspection_rate"].1.contains("2030"), "{:?}", nation_2030["digital_inspection_rate"]);
    // Province 24's 2024 plan. Its work-record target is limited to level `province`,
    // which this question does not name.
    assert_eq!(values(&p24_2024, &ids), [0.70, 0.90, 0.30, 0.60, 0.50, 1.00]);
    // A province's own target beats the national one, even a newer one.
    assert_eq!(values(&p24_2030, &ids), [0.70, 1.00, 0.30, 0.60, 0.50, 1.00]);
    for id in ["full_online_rate", "digital_inspection_rate", "online_payment_rate", "data_reuse_rate", "edoc_rate"] {
        for m in [&p24_2024, &p24_2030] {
            assert!(m[id].1.starts_with(PLAN_24), "{id}: {:?}", m[id]);
        }
    }
    assert_eq!(p24_2030["online_work_record_rate"], nation_2030["online_work_record_rate"]);
    assert_eq!(p24_2024["digitization_rate"], nation_2024["digitization_rate"], "24 has no digitization target");

    // A series filtered by level is held to that level's target.
    for (query, want) in [
        (format!("{y2024}&province_code=24&level=province"), 0.95),
        (format!("{y2030}&province_code=24&level=province"), 0.95),
        (format!("{y2024}&province_code=24"), 0.90),
        (format!("{y2024}&province_code=24&level=commune"), 0.90),
        (format!("{y2030}&province_code=24&level=commune"), 1.00),
        (format!("{y2030}&level=province"), 1.00),
    ] {
        let (status, v) = server.get(&format!("/api/v1/kpis/online_work_record_rate?{query}")).await;
        assert_eq!(status, 200, "{query}: {v}");
        assert_eq!(v["target"].as_f64(), Some(want), "{query}: {v}");
        let source = v["target_source"].as_str().unwrap_or_default();
        assert_eq!(source.starts_with(PLAN_24), want == 0.95, "{query}: {v}");
    }
}

/// Simulated events moved to `at` (plus a second each) in provinces 01 and 24.
fn events_at(seed: u64, n: usize, at: DateTime<Utc>) -> Vec<String> {
    events(seed, n, Utc::now(), 1)
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut v = e.to_json();
            let o = v.as_object_mut().unwrap();
            o.insert("province_code".into(), Value::from(if i % 2 == 0 { "01" } else { "24" }));
            o.insert("level".into(), Value::from("province"));
            o.remove("commune_code");
            o.insert("occurred_at".into(), Value::from((at + Duration::seconds(i as i64)).to_rfc3339()));
            v.to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpi_daily_over_sql_shows_the_targets_the_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    // The last hour of 2023 and the first of 2024, Vietnam time: one day each.
    let lines: Vec<String> = [("2023-12-31T23:00:00+07:00", 1), ("2024-01-01T00:00:00+07:00", 2)]
        .iter()
        .flat_map(|(at, seed)| events_at(*seed, 1_500, DateTime::parse_from_rfc3339(at).unwrap().to_utc()))
        .collect();
    for chunk in lines.chunks(1_000) {
        let (status, v) = server.post_ndjson(chunk).await;
        assert_eq!((status, v["accepted"].as_u64()), (200, Some(chunk.len() as u64)), "{v}");
    }
    let sql = "SELECT DISTINCT kpi, CAST(day AS VARCHAR) AS day, province_code, target, target_source FROM kpi_daily \
               ORDER BY kpi, day, province_code";
    let (status, v) = server.sql(sql).await;
    assert_eq!(status, 200, "{v}");
    let rows = v["rows"].as_array().unwrap();
    let mut api = BTreeMap::new();
    for (day, query) in
        [("2023-12-31", "from=2023-12-01&to=2024-01-01"), ("2024-01-01", "from=2024-01-01&to=2024-02-01")]
    {
        for p in ["01", "24"] {
            api.insert((day, p), targets(&server, &format!("{query}&province_code={p}")).await);
        }
    }
    let mut seen = BTreeMap::new();
    for r in rows {
        let (kpi, day, p) = (r[0].as_str().unwrap(), r[1].as_str().unwrap(), r[2].as_str().unwrap());
        let sql_target = (r[3].as_f64().unwrap(), r[4].as_str().unwrap().to_string());
        assert_eq!(sql_target, api[&(day, p)][kpi], "{kpi} on {day} in {p}");
        seen.insert((kpi, day, p), sql_target.0);
    }
    // Every KPI of every (day, province) the events touched, and the province's own
    // targets from 2024 on among them.
    assert_eq!(seen.len(), rows.len(), "one target per KPI, day and province");
    assert_eq!(seen.get(&("digital_inspection_rate", "2023-12-31", "24")), Some(&0.50));
    assert_eq!(seen.get(&("digital_inspection_rate", "2024-01-01", "24")), Some(&0.30));
    assert_eq!(seen.get(&("digital_inspection_rate", "2024-01-01", "01")), Some(&0.50));
    assert_eq!(seen.get(&("full_online_rate", "2024-01-01", "24")), Some(&0.70));
    assert_eq!(seen.get(&("online_work_record_rate", "2024-01-01", "24")), Some(&0.90), "kpi_daily has no level");
    assert_eq!(seen.get(&("edoc_rate", "2023-12-31", "01")), Some(&1.00));
}

/// Runs `cmd` to its end. A server that starts instead of refusing its configuration
/// is killed after 30 s and fails the test.
fn output_within_30s(cmd: &mut Command) -> Output {
    let mut child = cmd.env("IOC_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{cmd:?} still runs after 30 s: the configuration was accepted");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn catalog_with_target_on(province: &str) -> String {
    format!(
        r#"
[[kpi]]
id = "edoc_rate"
name_vi = "Tỷ lệ văn bản trao đổi dưới dạng điện tử"
name_en = "Documents exchanged electronically"
event = "document.sent"
denominator = "NOT secret"
numerator = "electronic"
target = 1.00
target_source = "national"
direction = "at_least"
targets = [
  {{ province = "01", from_year = 2026, value = 0.95, source = "Hà Nội 2026" }},
  {{ province = "{province}", from_year = 2024, value = 0.9, source = "the province's plan" }},
]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_target_on_a_province_code_not_among_the_34_is_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (data, file) = (dir.path().join("data"), dir.path().join("kpis.toml"));
    // On code 24, in effect, the catalog serves its targets.
    std::fs::write(&file, catalog_with_target_on("24")).unwrap();
    let mut server = Server::start(&data, &["--catalog", file.to_str().unwrap()], &[]).await;
    let got = targets(&server, "from=2025-03-01&to=2025-04-01&province_code=24").await;
    assert_eq!(got["edoc_rate"], (0.9, "the province's plan".to_string()));
    let got = targets(&server, "from=2026-03-01&to=2026-04-01&province_code=01").await;
    assert_eq!(got["edoc_rate"], (0.95, "Hà Nội 2026".to_string()));
    assert!(server.stop().success());

    // 02 (Hà Giang) was abolished on 2025-07-01.
    std::fs::write(&file, catalog_with_target_on("02")).unwrap();
    let config = dir.path().join("ioc.toml");
    std::fs::write(&config, format!("data_dir = {:?}\ncatalog = {:?}\n", data, file)).unwrap();
    let run = |how: &str| {
        let mut cmd = Command::new(ioc_bin());
        let ports = ["--http", &format!("127.0.0.1:{}", free_port()), "--pg", &format!("127.0.0.1:{}", free_port())]
            .map(String::from);
        match how {
            "flag" => cmd.args(["serve", "--data-dir"]).arg(&data).args(ports).arg("--catalog").arg(&file),
            "env" => cmd.args(["serve", "--data-dir"]).arg(&data).args(ports),
            "config" => cmd.args(["serve", "--config"]).arg(&config).args(ports),
            _ => cmd.args(["sql", "--config"]).arg(&config).arg("SELECT 1"),
        };
        cmd.env_remove("IOC_AUTH_TOKENS").env_remove("IOC_CATALOG");
        if how == "env" {
            cmd.env("IOC_CATALOG", &file);
        }
        output_within_30s(&mut cmd)
    };
    for how in ["flag", "env", "config", "sql"] {
        let out = run(how);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{how}: {err}");
        for needle in [
            "--catalog / IOC_CATALOG / catalog",
            "kpi `edoc_rate`",
            "targets[1].province: `02` is not one of the 34 province codes",
        ] {
            assert!(err.contains(needle), "{how}: {needle:?} not in {err}");
        }
    }
}
