//! Province codes from before 2025-07-01 end to end (CONTRACT.md §7.7), against the
//! real `ioc serve`: rejected to the dead letters by default, with a reason that names
//! the code and says how to remap; with `--legacy-province-codes remap` (or
//! `IOC_LEGACY_PROVINCE_CODES`) stored under the province since that date, the codes
//! they came with kept in `province_code_original` and `commune_code_original`, counted
//! under the new province, and counted by old code in `ioc_events_remapped_total`.

mod support;

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use support::*;

/// An event of `ty` with `fields`, in `province` (and `commune`, if any).
fn event(id: &str, ty: &str, province: &str, commune: Option<&str>, fields: Value) -> Value {
    // This month (the default period), a few minutes ago.
    let month = ioc_core::time::start_of_month(Utc::now()).to_utc();
    let at = (Utc::now() - Duration::minutes(5)).max(month + Duration::seconds(1)).to_rfc3339();
    let mut e = json!({"event_id": id, "type": ty, "occurred_at": at, "source": "motcua-cu",
                       "agency_code": "000.00.00.H02", "level": "province", "province_code": province});
    if let Some(c) = commune {
        e["commune_code"] = json!(c);
        e["level"] = json!("commune");
    }
    e.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    e
}

fn received(id: &str, province: &str, commune: Option<&str>) -> Value {
    let due = (Utc::now() + Duration::days(5)).to_rfc3339();
    event(
        id,
        "dossier.received",
        province,
        commune,
        json!({"dossier_id": format!("D-{id}"), "procedure_code": "1.001612", "channel": "online",
               "service_level": "full", "due_at": due, "digitized": true, "reused_data": false,
               "authenticated": true, "synced_dvcqg": true}),
    )
}

fn report(id: &str, province: &str) -> Value {
    event(id, "report.submitted", province, None, json!({"report_id": format!("B-{id}"), "via_system": true}))
}

async fn post(server: &Server, events: &[Value]) -> Value {
    let (status, v) = server.post_ndjson(&events.iter().map(Value::to_string).collect::<Vec<_>>()).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// `online_submission_rate` (every dossier receipt) per province, this month.
async fn receipts_by_province(server: &Server) -> Vec<(String, u64)> {
    let (status, v) = server.get("/api/v1/kpis/online_submission_rate?group_by=province_code").await;
    assert_eq!(status, 200, "{v}");
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["province_code"].as_str().unwrap().to_string(), r["denominator"].as_u64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_an_old_province_code_is_a_dead_letter_that_says_how_to_remap() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    let v = post(&server, &[received("a", "02", None), report("b", "27"), received("c", "01", None)]).await;
    assert_eq!(v["accepted"], 1, "{v}");
    let rejected = v["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{v}");
    for (r, (code, then)) in rejected.iter().zip([("02", "`08` Tỉnh Tuyên Quang"), ("27", "`24` Tỉnh Bắc Ninh")])
    {
        let error = r["error"].as_str().unwrap();
        for needle in [
            format!("field `province_code`: `{code}` is a province code from before 2025-07-01"),
            format!("since then {then}"),
            "--legacy-province-codes remap".to_string(),
        ] {
            assert!(error.contains(&needle), "{needle:?} not in {error}");
        }
    }
    // The dead letters keep the reason and the raw bytes.
    let (status, v) = server.sql("SELECT error, CAST(raw AS VARCHAR) FROM dead_letters ORDER BY origin").await;
    assert_eq!(status, 200, "{v}");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    assert!(rows[0][0].as_str().unwrap().contains("`02` is a province code from before 2025-07-01"), "{v}");
    assert!(rows[0][0].as_str().unwrap().contains("IOC_LEGACY_PROVINCE_CODES=remap"), "{v}");
    assert!(rows[0][1].as_str().unwrap().contains("\"province_code\":\"02\""), "{v}");
    assert_eq!(server.metric_where("ioc_events_rejected_total", &[("reason", "legacy_province_code")]).await, 2.0);
    assert_eq!(server.metric("ioc_events_remapped_total").await, 0.0);
    assert_eq!(receipts_by_province(&server).await, [("01".to_string(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_remap_an_old_code_is_stored_and_counted_under_its_province_since_2025_keeping_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--legacy-province-codes", "remap"], &[]).await;
    let batch = [
        // Hà Giang (02) is in Tuyên Quang (08) since 2025-07-01; 00001 is a commune
        // code of before, not one of the 3,321.
        received("a", "02", Some("00001")),
        // The old Bắc Ninh (27) is in the new Bắc Ninh (24); 07210 is a commune of it.
        received("b", "27", Some("07210")),
        report("c", "02"),
        // Lào Cai kept its name, not its code: 10 → 15.
        event("d", "feedback.resolved", "10", None, json!({"feedback_id": "F", "due_at": Utc::now().to_rfc3339()})),
        // Codes in effect are stored as they are.
        received("e", "01", Some("00004")),
        // Ba Đình (00004) is in Hà Nội, not in Tuyên Quang: a contradiction.
        received("f", "02", Some("00004")),
        // Never a province code.
        received("g", "03", None),
    ];
    let v = post(&server, &batch).await;
    assert_eq!(v["accepted"], 5, "{v}");
    let errors: Vec<(u64, &str)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["error"].as_str().unwrap()))
        .collect();
    assert_eq!(errors.len(), 2, "{v}");
    assert_eq!(errors[0].0, 5);
    assert!(errors[0].1.contains("`00004` belongs to province `01`, not `08` (remapped from `02`)"), "{v}");
    assert_eq!(errors[1].0, 6);
    assert!(errors[1].1.contains("nor one of the 63 in use before"), "{v}");

    // SQL: the new codes, the originals beside them, NULL when not remapped.
    let (status, v) = server
        .sql(
            "SELECT event_id, province_code, province_code_original, commune_code, commune_code_original, level \
             FROM dossier_events ORDER BY event_id",
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["rows"],
        json!([
            ["a", "08", "02", null, "00001", "commune"],
            ["b", "24", "27", "07210", null, "commune"],
            ["e", "01", null, "00004", null, "commune"],
        ]),
        "{v}"
    );
    let (_, v) =
        server.sql("SELECT province_code, province_code_original, commune_code_original FROM other_events").await;
    assert_eq!(v["rows"], json!([["08", "02", null]]), "{v}");
    let (_, v) = server.sql("SELECT province_code, province_code_original FROM feedback_events").await;
    assert_eq!(v["rows"], json!([["15", "10"]]), "{v}");
    let (_, v) = server.sql("SELECT p.province_name FROM dossier_events d JOIN provinces p USING (province_code) WHERE d.event_id = 'a'").await;
    assert_eq!(v["rows"], json!([["Tỉnh Tuyên Quang"]]), "{v}");

    // The KPIs count them under the new province, nationally and by province, and by
    // commune with the unknown commune as none.
    let mut by_province = receipts_by_province(&server).await;
    by_province.sort();
    assert_eq!(by_province, [("01".to_string(), 1), ("08".to_string(), 1), ("24".to_string(), 1)]);
    let (_, list) = server.get("/api/v1/kpis?province_code=08").await;
    let k = |id: &str| list.as_array().unwrap().iter().find(|k| k["id"] == id).unwrap().clone();
    assert_eq!(
        (k("online_submission_rate")["denominator"].as_u64(), k("dvcqg_sync_rate")["numerator"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(k("report_online_rate")["denominator"], 1);
    let (_, list) = server.get("/api/v1/kpis?province_code=15").await;
    let on_time = list.as_array().unwrap().iter().find(|k| k["id"] == "feedback_on_time_rate").unwrap().clone();
    assert_eq!(on_time["denominator"], 1, "{on_time}");
    let (_, v) = server.get("/api/v1/kpis/online_submission_rate?group_by=commune_code&province_code=08").await;
    assert_eq!(v["rows"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!((v["rows"][0]["commune_code"].clone(), v["rows"][0]["denominator"].clone()), (Value::Null, json!(1)));
    // Questions are asked with the codes in effect: an old code is not a scope.
    let (status, v) = server.get("/api/v1/kpis?province_code=02").await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_province")), "{v}");

    // The metric counts accepted remapped events by the code they came with; a repeat
    // is a duplicate and is not counted again.
    let remapped = |old: &'static str, new: &'static str| {
        let server = &server;
        async move {
            server
                .metric_where("ioc_events_remapped_total", &[("old_province_code", old), ("province_code", new)])
                .await
        }
    };
    assert_eq!((remapped("02", "08").await, remapped("27", "24").await, remapped("10", "15").await), (2.0, 1.0, 1.0));
    let v = post(&server, &batch[..1]).await;
    assert_eq!((v["accepted"].as_u64(), v["duplicates"].as_u64()), (Some(0), Some(1)), "{v}");
    assert_eq!(server.metric("ioc_events_remapped_total").await, 4.0);
    assert_eq!(server.metric_where("ioc_events_rejected_total", &[("reason", "legacy_province_code")]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mode_comes_from_the_environment_too_and_a_bad_value_is_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[("IOC_LEGACY_PROVINCE_CODES", "remap")]).await;
    let v = post(&server, &[report("a", "64")]).await;
    assert_eq!(v["accepted"], 1, "Gia Lai 64 is remapped to 52: {v}");
    let (_, v) = server.sql("SELECT province_code, province_code_original FROM other_events").await;
    assert_eq!(v["rows"], json!([["52", "64"]]), "{v}");
    drop(server);

    let cfg = dir.path().join("ioc.toml");
    std::fs::write(&cfg, "legacy_province_codes = \"sometimes\"\n").unwrap();
    for args in [vec!["serve", "--legacy-province-codes", "keep"], vec!["serve", "--config", cfg.to_str().unwrap()]] {
        let out = std::process::Command::new(ioc_bin())
            .args(&args)
            .args(["--data-dir", dir.path().join("other").to_str().unwrap()])
            .env_remove("IOC_LEGACY_PROVINCE_CODES")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in ["--legacy-province-codes", "IOC_LEGACY_PROVINCE_CODES", "legacy_province_codes", "reject, remap"]
        {
            assert!(err.contains(needle), "{args:?}: {needle} not in {err}");
        }
    }
}
