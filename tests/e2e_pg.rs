//! The PostgreSQL wire protocol end to end: real `psql` (simple protocol) and
//! `tokio-postgres` (extended protocol, as JDBC drivers use) against a running
//! `ioc serve`. Answers equal the HTTP answers; authentication uses the tokens; the
//! sandbox refuses the same attacks as over HTTP; a province-scoped token sees only
//! its province through every table, view, join and subquery, over both protocols.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

const TOKENS: &str =
    "analyst:analyst-token-0001,analyst@01:hanoi-token-0001,admin:admin-token-00001,viewer:viewer-token-0001";

/// A cell as text, numbers in one canonical form (`1.0`, `1` -> `1`): psql and JSON
/// print floats differently.
fn canonical(cell: &str) -> String {
    match cell.parse::<f64>() {
        Ok(x) if !cell.starts_with('0') || cell.len() == 1 || cell.starts_with("0.") => x.to_string(),
        _ => cell.to_string(),
    }
}

fn canonical_rows(rows: Vec<String>) -> Vec<String> {
    rows.iter().map(|r| r.split('|').map(canonical).collect::<Vec<_>>().join("|")).collect()
}

/// Runs `sql` with psql; `Ok(rows as "a|b|c" lines)` or `Err(stderr)`.
fn psql(server: &Server, user: &str, password: &str, sql: &str) -> Result<Vec<String>, String> {
    let out = Command::new("psql")
        .args(["-X", "-w", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-d", "ioc"])
        .args(["-p", &server.pg_port.to_string(), "-U", user, "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql is installed (.ci/run installs postgresql-client)");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The HTTP answer to `sql` in psql's unaligned format.
async fn http_rows(server: &Server, sql: &str) -> Vec<String> {
    let (status, v) = server.sql(sql).await;
    assert_eq!(status, 200, "{sql}: {v}");
    assert_eq!(v["truncated"], Value::Bool(false), "{sql}");
    let cell = |c: &Value| match c {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(cell).collect::<Vec<_>>().join("|"))
        .collect()
}

async fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--sql-timeout-secs", "3"], &[("IOC_AUTH_TOKENS", TOKENS)])
        .await
        .with_token("admin-token-00001");
    let (status, v) = server.post_ndjson(&lines(&events(11, 3_000, chrono::Utc::now(), 3))).await;
    assert_eq!(status, 200, "{v}");
    // Something for dead_letters too.
    let (status, _) = server.post_ndjson(&["{\"not\": \"an event\"}".to_string()]).await;
    assert_eq!(status, 200);
    (dir, server)
}

/// `POST /api/v1/sql` with the Hanoi-scoped token: (first cell as a number, body).
async fn scoped_sql(server: &Server, sql: &str) -> (i64, Value) {
    let r = server
        .client
        .post(format!("{}/api/v1/sql", server.base))
        .bearer_auth("hanoi-token-0001")
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{sql}");
    let v: Value = r.json().await.unwrap();
    (v["rows"][0][0].as_i64().unwrap_or(-1), v)
}

async fn pg_client(
    server: &Server,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let config = format!("host=127.0.0.1 port={} user={user} password={password} dbname=ioc", server.pg_port);
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_answers_equal_the_http_answers() {
    let (_dir, server) = start().await;
    let queries = [
        "SELECT province_code, count(*) AS n FROM dossier_events GROUP BY province_code ORDER BY province_code",
        "SELECT a.province_name, count(*) AS n FROM document_events d \
         JOIN (SELECT DISTINCT province_code, province_name FROM admin_units) a ON a.province_code = d.province_code \
         GROUP BY a.province_name ORDER BY a.province_name",
        "SELECT kpi, day, province_code, numerator, denominator, round(value, 6) AS value, target \
         FROM kpi_daily ORDER BY kpi, day, province_code",
        "SELECT p.province_name, d.numerator, d.denominator FROM kpi_daily d JOIN provinces p USING (province_code) \
         WHERE d.kpi = 'edoc_rate' ORDER BY d.day, p.province_name",
        "SELECT count(*) FROM dead_letters",
        "SELECT a.province_name, count(*) AS n, max(d.channel) AS last_channel FROM dossier_events d \
         JOIN admin_units a ON a.commune_code = d.commune_code GROUP BY a.province_name ORDER BY a.province_name",
    ];
    for sql in queries {
        let over_pg = psql(&server, "admin", "admin-token-00001", sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let over_http = http_rows(&server, sql).await;
        assert!(!over_pg.is_empty(), "{sql} returned no rows");
        assert!(
            over_pg.len() == over_http.len(),
            "{sql}: {} rows over pg, {} over HTTP",
            over_pg.len(),
            over_http.len()
        );
        for (a, b) in canonical_rows(over_pg).iter().zip(canonical_rows(over_http)) {
            assert_eq!(*a, b, "{sql}");
        }
    }
    // Vietnamese names arrive intact.
    let names =
        psql(&server, "admin", "admin-token-00001", "SELECT province_name FROM provinces WHERE province_code = '01'");
    assert_eq!(names.unwrap(), vec!["Thành phố Hà Nội".to_string()]);
    // psql's `\d` finds a table's oid in one statement and its columns by that oid in
    // the next: each table shows its own columns, for admins and analysts.
    for (user, token) in [("admin", "admin-token-00001"), ("analyst", "analyst-token-0001")] {
        for table in ["dossier_events", "admin_units", "kpi_hourly"] {
            let described =
                psql(&server, user, token, &format!("\\d {table}")).unwrap_or_else(|e| panic!("\\d {table}: {e}"));
            let columns: Vec<&str> = described.iter().filter_map(|l| l.split('|').next()).collect();
            let (status, schema) = server.sql(&format!("SELECT * FROM {table} LIMIT 0")).await;
            assert_eq!(status, 200, "{schema}");
            let names: Vec<&str> =
                schema["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
            assert_eq!(columns, names, "{user}: \\d {table}");
        }
    }
    // kpi_daily sums the same counts as the KPI API over the same days.
    let total = psql(
        &server,
        "analyst",
        "analyst-token-0001",
        "SELECT sum(numerator), sum(denominator) FROM kpi_daily WHERE kpi = 'edoc_rate'",
    )
    .unwrap();
    let (status, v) = server.get("/api/v1/kpis/edoc_rate?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(total, vec![format!("{}|{}", v["rows"][0]["numerator"], v["rows"][0]["denominator"])]);

    // The extended protocol (prepared statements with parameters) gives the same.
    let client = pg_client(&server, "analyst", "analyst-token-0001").await.unwrap();
    let row = client
        .query_one("SELECT count(*) FROM dossier_events WHERE province_code = $1 AND channel = $2", &[&"79", &"online"])
        .await
        .unwrap();
    let http =
        server.sql_count("SELECT count(*) FROM dossier_events WHERE province_code = '79' AND channel = 'online'").await;
    assert_eq!(row.get::<_, i64>(0), http);
    // What drivers send on connect is accepted.
    client.batch_execute("SET extra_float_digits = 3; SET application_name = 'DBeaver'; BEGIN; COMMIT").await.unwrap();
    let iso = client.simple_query("SHOW TRANSACTION ISOLATION LEVEL").await.unwrap();
    assert!(
        matches!(&iso[..], [tokio_postgres::SimpleQueryMessage::RowDescription(_), tokio_postgres::SimpleQueryMessage::Row(r), ..] if r.get(0) == Some("read committed"))
    );
    // And the catalog queries clients use to list tables.
    let tables = psql(
        &server,
        "analyst",
        "analyst-token-0001",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .unwrap();
    for t in ["admin_units", "dossier_events", "kpi_daily", "kpi_hourly"] {
        assert!(tables.contains(&t.to_string()), "{t} in {tables:?}");
    }
    assert!(psql(&server, "analyst", "analyst-token-0001", "SELECT count(*) FROM pg_catalog.pg_class").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_needs_a_sql_token_whose_role_or_name_is_the_user() {
    let (_dir, server) = start().await;
    assert!(psql(&server, "analyst", "analyst-token-0001", "SELECT 1").is_ok());
    assert!(psql(&server, "analyst-1", "analyst-token-0001", "SELECT 1").is_ok(), "the token's name works too");
    for (user, password) in [
        ("analyst", "wrong-token"),
        ("admin", "analyst-token-0001"),
        ("postgres", "postgres"),
        ("viewer", "viewer-token-0001"),
    ] {
        let err = psql(&server, user, password, "SELECT 1").unwrap_err();
        assert!(err.contains("authentication failed") || err.contains("may not run SQL"), "{user}: {err}");
        assert!(!err.contains("-token-"), "errors never echo the token: {err}");
    }
    assert!(pg_client(&server, "analyst", "nope").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_refuses_attacks_over_both_pg_protocols_and_stays_up() {
    let (dir, server) = start().await;
    let client = pg_client(&server, "admin", "admin-token-00001").await.unwrap();
    for sql in SANDBOX_ATTACKS {
        let simple = psql(&server, "admin", "admin-token-00001", sql);
        assert!(simple.as_ref().is_err_and(|e| e.contains("ERROR")), "{sql}: {simple:?}");
        let extended = client.query(*sql, &[]).await;
        assert!(extended.is_err(), "{sql} over the extended protocol: {extended:?}");
        assert_eq!(psql(&server, "admin", "admin-token-00001", "SELECT 1").unwrap(), vec!["1"], "up after {sql}");
    }
    assert!(!std::path::Path::new("/tmp/ioc-copy-test.csv").exists());
    // Only the contract's tables under the data dir: nothing was written by a query.
    let tables: Vec<String> = std::fs::read_dir(dir.path().join("store/tables"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!tables.iter().any(|t| t == "t" || t == "p" || t == "v"), "{tables:?}");
    // Every statement was audited with the token's name and protocol, and admins can
    // query the audit log.
    let audit = psql(
        &server,
        "admin",
        "admin-token-00001",
        "SELECT count(*) FROM audit_log WHERE via = 'pg' AND token = 'admin-3' AND outcome <> 'ok'",
    )
    .unwrap();
    let refused: usize = audit[0].parse().unwrap();
    assert!(refused >= 2 * SANDBOX_ATTACKS.len(), "{refused} refusals audited");
    let err = psql(&server, "analyst", "analyst-token-0001", "SELECT count(*) FROM audit_log").unwrap_err();
    assert!(err.contains("audit_log"), "analysts do not see the audit log: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_province_scoped_token_sees_only_its_province_everywhere() {
    let (_dir, admin) = start().await;
    let pg = pg_client(&admin, "analyst", "hanoi-token-0001").await.unwrap();
    let leaks = [
        "SELECT count(*) FROM dossier_events WHERE province_code IS DISTINCT FROM '01'",
        "SELECT count(*) FROM document_events WHERE province_code IS DISTINCT FROM '01'",
        "SELECT count(*) FROM work_record_events WHERE province_code IS DISTINCT FROM '01'",
        "SELECT count(*) FROM other_events WHERE province_code IS DISTINCT FROM '01'",
        "SELECT count(*) FROM admin_units WHERE province_code IS DISTINCT FROM '01'",
        "SELECT count(*) FROM kpi_hourly WHERE province_code IS DISTINCT FROM '01'",
        "SELECT count(*) FROM kpi_daily WHERE province_code IS DISTINCT FROM '01'",
        "SELECT count(*) FROM provinces WHERE province_code IS DISTINCT FROM '01'",
        "SELECT count(*) FROM dead_letters",
        "SELECT count(*) FROM dossier_events d JOIN admin_units a ON a.commune_code = d.commune_code WHERE a.province_code <> '01'",
        "SELECT count(*) FROM (SELECT province_code FROM dossier_events UNION ALL SELECT province_code FROM other_events) x WHERE province_code <> '01'",
        "SELECT count(*) FROM dossier_events WHERE province_code IN (SELECT province_code FROM document_events WHERE province_code <> '01')",
        "WITH x AS (SELECT * FROM work_record_events) SELECT count(*) FROM x WHERE province_code <> '01'",
    ];
    for sql in leaks {
        assert_eq!(scoped_sql(&admin, sql).await.0, 0, "HTTP: {sql}");
        assert_eq!(pg.query_one(sql, &[]).await.unwrap().get::<_, i64>(0), 0, "pg: {sql}");
        assert_eq!(psql(&admin, "analyst", "hanoi-token-0001", sql).unwrap(), vec!["0"], "psql: {sql}");
    }
    // The same token sees all of its own province, and admins see more.
    for table in ["dossier_events", "document_events", "kpi_hourly", "admin_units"] {
        let own = admin.sql_count(&format!("SELECT count(*) FROM {table} WHERE province_code = '01'")).await;
        let all = admin.sql_count(&format!("SELECT count(*) FROM {table}")).await;
        assert!(own > 0 && all > own, "{table}: {own} of {all}");
        assert_eq!(scoped_sql(&admin, &format!("SELECT count(*) FROM {table}")).await.0, own, "{table}");
        let row = pg.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), own, "{table} over pg");
    }
    // The filter is part of the plan.
    let (_, v) = scoped_sql(&admin, "EXPLAIN SELECT event_id FROM dossier_events").await;
    assert!(v.to_string().contains("province_code = Utf8View(\\\"01\\\")"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_the_running_statement() {
    let (_dir, server) = start().await;
    let client = pg_client(&server, "analyst", "analyst-token-0001").await.unwrap();
    let cancel = client.cancel_token();
    // Runs until the 3 s time limit unless cancelled.
    let endless = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t";
    let mut running = tokio::spawn(async move {
        let result = client.simple_query(endless).await.map(|_| ());
        (client, result)
    });
    // A cancel that arrives before the statement starts finds nothing to stop, so one
    // is sent every 200 ms until the statement ends (well before its time limit).
    let (client, result) = loop {
        tokio::select! {
            done = &mut running => break done.unwrap(),
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
            }
        }
    };
    let err = result.unwrap_err();
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(db.code(), &tokio_postgres::error::SqlState::QUERY_CANCELED, "{db:?}");
    assert_eq!(db.message(), "canceling statement due to user request");
    // The connection goes on, and the statement was audited as cancelled.
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert!(matches!(
        &rows[..],
        [tokio_postgres::SimpleQueryMessage::RowDescription(_), tokio_postgres::SimpleQueryMessage::Row(_), ..]
    ));
    let audit = psql(
        &server,
        "admin",
        "admin-token-00001",
        "SELECT sql FROM audit_log WHERE via = 'pg' AND outcome = 'query_cancelled'",
    )
    .unwrap();
    assert!(audit.len() == 1 && audit[0].contains("RECURSIVE"), "{audit:?}");
}
