//! Citizen feedback and the national-portal flag end to end (CONTRACT.md §7.5), against
//! the real `ioc serve`: `feedback.received` / `feedback.resolved` in `feedback_events`,
//! the optional `satisfied` and `synced_dvcqg` as NULL when absent, and the KPIs
//! `feedback_on_time_rate`, `feedback_satisfaction_rate` and `dvcqg_sync_rate` equal to
//! the contract's definitions computed here, without the catalog.

mod support;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use support::*;

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

fn envelope(id: &str, ty: &str, at: DateTime<Utc>) -> Value {
    json!({"event_id": id, "type": ty, "occurred_at": ts(at), "source": "pakn-hanoi",
           "agency_code": "000.00.00.H01", "level": "commune", "province_code": "01", "commune_code": "00004"})
}

fn with(mut v: Value, fields: Value) -> Value {
    v.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    v
}

fn period(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let enc = |t: DateTime<Utc>| ts(t).replace('+', "%2B").replace(':', "%3A");
    format!("from={}&to={}", enc(from), enc(to))
}

fn kpi<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array().unwrap().iter().find(|k| k["id"] == id).unwrap_or_else(|| panic!("no {id} in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_and_the_portal_flag_are_stored_with_nulls_and_their_kpis_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    let now = Utc::now();
    // Hand-made events ten days ago, alone in their hour range; simulated ones after.
    let t0 = now - Duration::days(10);
    let due = ts(t0 + Duration::minutes(30));
    let mut made = Vec::new();
    for (i, channel) in ["online", "in_person", "phone", "post"].iter().enumerate() {
        let e = envelope(&format!("hc-fr{i}"), "feedback.received", t0 + Duration::minutes(i as i64));
        made.push(with(e, json!({"feedback_id": format!("F{i}"), "channel": channel, "due_at": due})));
    }
    // (minutes after t0, satisfied): on time up to minute 30; `satisfied` absent, null,
    // true or false.
    let resolutions: [(i64, Value); 5] =
        [(10, json!(true)), (20, json!(false)), (40, Value::Null), (25, json!("absent")), (50, json!(true))];
    for (i, (at, satisfied)) in resolutions.iter().enumerate() {
        let e = envelope(&format!("hc-fs{i}"), "feedback.resolved", t0 + Duration::minutes(*at));
        let mut e = with(e, json!({"feedback_id": format!("F{i}"), "due_at": due}));
        if *satisfied != json!("absent") {
            e["satisfied"] = satisfied.clone();
        }
        made.push(e);
    }
    let flags = [json!(true), json!(false), json!("absent"), Value::Null, json!(true)];
    for (i, flag) in flags.iter().enumerate() {
        let e = envelope(&format!("hc-dr{i}"), "dossier.received", t0 + Duration::minutes(i as i64));
        let mut e = with(
            e,
            json!({"dossier_id": format!("D{i}"), "procedure_code": "1.001612", "channel": "online",
                   "service_level": "full", "due_at": due, "digitized": true, "reused_data": false,
                   "authenticated": true}),
        );
        if *flag != json!("absent") {
            e["synced_dvcqg"] = flag.clone();
        }
        made.push(e);
    }
    // A feedback channel a dossier does not have, and values of the wrong type.
    let bad = [
        with(envelope("bad-1", "feedback.received", t0), json!({"feedback_id": "F", "channel": "fax", "due_at": due})),
        with(
            envelope("bad-2", "feedback.resolved", t0),
            json!({"feedback_id": "F", "due_at": due, "satisfied": "yes"}),
        ),
        with(made[9].clone(), json!({"event_id": "bad-3", "synced_dvcqg": 1})),
        with(made[9].clone(), json!({"event_id": "bad-4", "channel": "phone"})),
    ];
    let texts: Vec<String> = made.iter().chain(&bad).map(Value::to_string).collect();
    let (status, v) = server.post_ndjson(&texts).await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(made.len() as u64)), "{v}");
    let errors: Vec<&str> = v["rejected"].as_array().unwrap().iter().map(|r| r["error"].as_str().unwrap()).collect();
    assert_eq!(errors.len(), 4, "{v}");
    for (error, field) in errors.iter().zip(["channel", "satisfied", "synced_dvcqg", "channel"]) {
        assert!(error.starts_with(&format!("field `{field}`")), "{error}");
    }

    // The hand-made hour: the three KPIs by their definitions, worked out by hand.
    let q = period(t0 - Duration::hours(1), t0 + Duration::hours(2));
    let (status, list) = server.get(&format!("/api/v1/kpis?{q}")).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), KPI_COUNT);
    for (id, name_vi, target, num, den) in [
        ("feedback_on_time_rate", "Tỷ lệ phản ánh, kiến nghị được xử lý đúng hạn", 1.0, 3, 5),
        ("feedback_satisfaction_rate", "Tỷ lệ hài lòng trong xử lý phản ánh, kiến nghị", 0.9, 2, 3),
        ("dvcqg_sync_rate", "Tỷ lệ hồ sơ được đồng bộ lên Cổng Dịch vụ công quốc gia", 1.0, 2, 3),
    ] {
        let k = kpi(&list, id);
        assert_eq!((k["numerator"].as_u64(), k["denominator"].as_u64()), (Some(num), Some(den)), "{k}");
        assert_eq!((k["kind"].as_str(), k["direction"].as_str()), (Some("ratio"), Some("at_least")), "{k}");
        assert_eq!((k["name_vi"].as_str(), k["target"].as_f64()), (Some(name_vi), Some(target)), "{k}");
        assert!((k["value"].as_f64().unwrap() - num as f64 / den as f64).abs() < 1e-12, "{k}");
        assert_eq!(k["status"], "below_target", "{k}");
    }
    assert_eq!(kpi(&list, "online_submission_rate")["denominator"], 5, "every receipt, with or without the flag");

    // SQL: the table and its columns, NULL where a field is absent or null.
    let (status, v) = server
        .sql(&format!(
            "SELECT event_id, type, feedback_id, channel, satisfied, due_at = TIMESTAMP '{due}' AS due, \
             province_code_original, commune_code_original \
             FROM feedback_events WHERE event_id LIKE 'hc-%' ORDER BY event_id"
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    let rows: Vec<Vec<Value>> = v["rows"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().clone()).collect();
    let expected: Vec<Vec<Value>> = ["online", "in_person", "phone", "post"]
        .iter()
        .enumerate()
        .map(|(i, c)| {
            vec![json!(format!("hc-fr{i}")), json!("feedback.received"), json!(format!("F{i}")), json!(c), Value::Null]
        })
        .chain([json!(true), json!(false), Value::Null, Value::Null, json!(true)].into_iter().enumerate().map(
            |(i, s)| {
                vec![json!(format!("hc-fs{i}")), json!("feedback.resolved"), json!(format!("F{i}")), Value::Null, s]
            },
        ))
        .map(|mut r| {
            r.extend([json!(true), Value::Null, Value::Null]);
            r
        })
        .collect();
    assert_eq!(rows, expected);
    let (_, v) = server.sql("SELECT * FROM feedback_events LIMIT 1").await;
    let columns: Vec<&str> = v["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        columns,
        [
            "event_id",
            "type",
            "occurred_at",
            "source",
            "agency_code",
            "level",
            "province_code",
            "commune_code",
            "feedback_id",
            "channel",
            "due_at",
            "satisfied",
            "province_code_original",
            "commune_code_original"
        ]
    );
    let (_, v) =
        server.sql("SELECT synced_dvcqg FROM dossier_events WHERE event_id LIKE 'hc-%' ORDER BY event_id").await;
    assert_eq!(v["rows"], json!([[true], [false], [null], [null], [true]]), "{v}");

    // Simulated traffic over the last five days, every type in its proportions: every
    // KPI equals the contract's definitions, nationally, for a province and by province.
    let evs = events(77, 4_000, now - Duration::minutes(1), 5);
    let (status, v) = server.post_ndjson(&lines(&evs)).await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(4_000)), "{v}");
    let expected = expected_counts(&evs, None);
    assert!(expected["feedback_on_time_rate"].1 > 20, "{expected:?}");
    assert!(expected["feedback_satisfaction_rate"].1 < expected["feedback_on_time_rate"].1);
    assert!(expected["dvcqg_sync_rate"].1 < expected["online_submission_rate"].1);
    let q = period(now - Duration::days(6), now + Duration::minutes(10));
    assert_kpis(&server, &evs, &q, None).await;
    assert_kpis(&server, &evs, &format!("{q}&province_code=01"), Some("01")).await;
    for id in ["feedback_on_time_rate", "feedback_satisfaction_rate", "dvcqg_sync_rate"] {
        let (status, v) = server.get(&format!("/api/v1/kpis/{id}?{q}&group_by=province_code")).await;
        assert_eq!(status, 200, "{v}");
        let rows = v["rows"].as_array().unwrap();
        assert!(rows.len() > 5, "{id}: {v}");
        for r in rows {
            let p = r["province_code"].as_str().unwrap();
            let want = expected_counts(&evs, Some(p)).get(id).copied().unwrap_or_default();
            assert_eq!((r["numerator"].as_u64().unwrap(), r["denominator"].as_u64().unwrap()), want, "{id} in {p}");
        }
    }
    let fb = |sql: &str| format!("SELECT count(*) FROM feedback_events WHERE event_id NOT LIKE 'hc-%' AND {sql}");
    let resolved = evs.iter().filter(|e| e.event_type().as_str() == "feedback.resolved").count() as i64;
    assert_eq!(server.sql_count(&fb("type = 'feedback.resolved'")).await, resolved);
    assert_eq!(
        server.sql_count(&fb("type = 'feedback.resolved' AND satisfied IS NOT NULL")).await as u64,
        expected["feedback_satisfaction_rate"].1
    );
    assert_eq!(server.sql_count(&fb("occurred_at <= due_at AND type = 'feedback.resolved'")).await as u64, {
        expected["feedback_on_time_rate"].0
    });

    // Dimensions of dossiers only stay so; the others slice feedback as any KPI.
    let (status, v) = server.get("/api/v1/kpis/feedback_on_time_rate?group_by=channel").await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_dimension")), "{v}");
    let (status, _) = server.get(&format!("/api/v1/kpis/feedback_on_time_rate?{q}&group_by=level,source")).await;
    assert_eq!(status, 200);
    // Default alert rules cover the new ratios too.
    let (_, rules) = server.get("/api/v1/alert-rules").await;
    for id in ["feedback_on_time_rate", "feedback_satisfaction_rate", "dvcqg_sync_rate"] {
        assert!(rules.as_array().unwrap().iter().any(|r| r["kpi"] == id), "no alert rule on {id}: {rules}");
    }
}
