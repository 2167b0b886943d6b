//! The HTTP API in-process, driven through the router as a client would drive it: no
//! client-chosen value reaches a 500 or a panic, and every answer that is not a
//! success is the contract's JSON error body (CONTRACT.md §3, §7.1, §7.2).

mod support;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Datelike, FixedOffset, TimeZone, Utc};
use ioc_api::config::{FileConfig, Overrides, Settings};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tower::ServiceExt;

/// A router over a fresh data directory, with a runtime to drive it.
struct Api {
    rt: Runtime,
    router: Router,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Api {
    fn start(o: Overrides) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let o = Overrides { data_dir: Some(dir.path().to_path_buf()), ..o };
        let settings = Settings::resolve(o, FileConfig::default(), "unused").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let (state, _writer) = rt.block_on(async { ioc_api::server::build(&settings, stop_rx) }).unwrap();
        Api { router: ioc_api::app::app(state), rt, _stop: stop, _dir: dir }
    }

    /// Sends one request; the status, the content type and the body as JSON (or as a
    /// JSON string when it is not JSON).
    fn send(&self, req: Request<Body>) -> (StatusCode, String, Value) {
        let router = self.router.clone();
        self.rt.block_on(async move {
            let resp = tokio::time::timeout(Duration::from_secs(60), router.oneshot(req))
                .await
                .expect("the request was answered in time")
                .expect("the router never fails");
            let status = resp.status();
            let ctype =
                resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            (status, ctype, body)
        })
    }

    fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.send(Request::get(uri).body(Body::empty()).unwrap());
        (status, body)
    }
}

/// The contract's error body, with a non-empty code and message.
fn assert_error_body(status: StatusCode, ctype: &str, body: &Value, what: &str) {
    assert!(ctype.starts_with("application/json"), "{what}: {status} answered as {ctype:?}: {body}");
    let code = body["error"]["code"].as_str().unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!code.is_empty() && !message.is_empty(), "{what}: {status} without the JSON error body: {body}");
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// A period bound as a client may send it, with whether the contract accepts it:
/// dates and RFC 3339 times from 1970-01-01 to before 2200-01-01 in Vietnam time.
fn bound() -> impl Strategy<Value = (String, bool)> {
    let vn = FixedOffset::east_opt(7 * 3600).unwrap();
    let first = vn.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap().timestamp();
    let end = vn.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).unwrap().timestamp();
    prop_oneof![
        // Dates across and far beyond the supported years.
        (prop_oneof![1900i32..2300, -300_000i32..300_000, 1965i32..1975, 2195i32..2205], 1u32..=12, 1u32..=28)
            .prop_map(|(y, m, d)| {
                let text = if y < 0 { format!("-{:06}-{m:02}-{d:02}", -y) } else { format!("{y:04}-{m:02}-{d:02}") };
                (text, (1970..2200).contains(&y))
            }),
        // Instants around both limits and anywhere, at any offset.
        (
            prop_oneof![
                first - 90_000..first + 90_000,
                end - 90_000..end + 90_000,
                -62_000_000_000i64..250_000_000_000
            ],
            -1439i32..1440
        )
            .prop_map(move |(secs, off)| {
                let t = DateTime::<Utc>::from_timestamp(secs, 0).unwrap();
                let local = t.with_timezone(&FixedOffset::east_opt(off * 60).unwrap());
                // RFC 3339 has four-digit years only.
                let representable = (0..=9999).contains(&local.year());
                let text = local.to_rfc3339();
                (text, representable && secs >= first && secs < end)
            }),
        // Anything at all.
        any::<String>().prop_map(|s| (s, false)),
        "[0-9+:TZ.-]{0,30}".prop_map(|s| {
            let valid = ioc_core::time::parse_period_bound(&s).is_ok();
            (s, valid)
        }),
    ]
}

fn dims() -> impl Strategy<Value = Vec<&'static str>> {
    let names =
        ["province_code", "commune_code", "agency_code", "level", "source", "procedure_code", "channel", "nope", ""];
    prop::collection::vec(prop::sample::select(names.to_vec()), 0..4)
}

/// A value a client may put in a filter: codes, quotes, escapes, any text.
fn filter_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("01".to_string()),
        Just("online".to_string()),
        Just("x' OR '1'='1".to_string()),
        Just("\\' --".to_string()),
        any::<String>(),
    ]
}

#[test]
fn no_period_or_parameter_a_client_chooses_reaches_a_500() {
    let api = Api::start(Overrides::default());
    // Data in the store, so that the cube, the rollups and the edge-hour SQL all run.
    let now = Utc::now();
    let body: String = support::lines(&support::events(7, 300, now, 40)).iter().map(|l| format!("{l}\n")).collect();
    let (status, _, v) = api.send(
        Request::post("/api/v1/events").header("content-type", "application/x-ndjson").body(Body::from(body)).unwrap(),
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 300, "{v}");

    let kpis = ["edoc_rate", "full_online_rate", "overdue_open", "nope"];
    let strategy = (
        prop::option::of(bound()),
        prop::option::of(bound()),
        prop::sample::select(kpis.to_vec()),
        prop::option::of(prop::sample::select(vec!["hour", "day", "month", "week", ""])),
        dims(),
        prop::option::of((prop::sample::select(vec!["channel", "province_code", "agency_code", "x"]), filter_value())),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config { cases: 300, failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |(from, to, kpi, bucket, group_by, filter, list)| {
            let mut query = Vec::new();
            if let Some((f, _)) = &from {
                query.push(format!("from={}", enc(f)));
            }
            if let Some((t, _)) = &to {
                query.push(format!("to={}", enc(t)));
            }
            let uri = if list {
                format!("/api/v1/kpis?{}", query.join("&"))
            } else {
                if let Some(b) = bucket {
                    query.push(format!("bucket={b}"));
                }
                if !group_by.is_empty() {
                    query.push(format!("group_by={}", enc(&group_by.join(","))));
                }
                if let Some((d, v)) = &filter {
                    query.push(format!("{d}={}", enc(v)));
                }
                format!("/api/v1/kpis/{kpi}?{}", query.join("&"))
            };
            let (status, ctype, body) = api.send(Request::get(&uri).body(Body::empty()).unwrap());
            prop_assert!(!status.is_server_error(), "{uri}: {status} {body}");
            if !status.is_success() {
                assert_error_body(status, &ctype, &body, &uri);
            }
            // The period alone decides when both bounds are given and one is bad, or
            // they are out of order.
            let bad_bound = [&from, &to].into_iter().flatten().any(|(_, ok)| !ok);
            if bad_bound {
                prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}: {}", uri, body);
                prop_assert_eq!(&body["error"]["code"], "invalid_period", "{}", uri);
            } else if let (Some((f, _)), Some((t, _))) = (&from, &to) {
                let (f, t) =
                    (ioc_core::time::parse_period_bound(f).unwrap(), ioc_core::time::parse_period_bound(t).unwrap());
                if f >= t {
                    prop_assert_eq!(&body["error"]["code"], "invalid_period", "{}", uri);
                } else if list {
                    prop_assert_eq!(status, StatusCode::OK, "{}: {}", uri, body);
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_periods_the_issue_reported_are_refused_with_invalid_period() {
    let api = Api::start(Overrides::default());
    for uri in [
        "/api/v1/kpis/edoc_rate?from=1600-01-01&to=2300-01-01&group_by=agency_code",
        "/api/v1/kpis?from=-262143-01-01",
        "/api/v1/kpis?from=2200-01-01",
        "/api/v1/kpis?to=1969-12-31",
        "/api/v1/kpis?from=2026-12-01&to=2026-12-01",
        "/api/v1/kpis?from=2026-12-02&to=2026-12-01",
    ] {
        let (status, body) = api.get(uri);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_period")),
            "{uri}: {body}"
        );
    }
    let (status, body) = api.get("/api/v1/kpis/edoc_rate?from=1970-01-01&to=2199-12-31&group_by=agency_code");
    assert_eq!(status, StatusCode::OK, "the widest period is answered: {body}");
}

#[test]
fn every_rejection_unknown_route_and_wrong_method_is_the_json_error_body() {
    let api = Api::start(Overrides { body_limit_bytes: Some(1000), ..Default::default() });
    let big_sql = json!({"sql": format!("SELECT '{}'", "x".repeat(3 << 20))}).to_string();
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (Request::get("/no/such/route").body(Body::empty()).unwrap(), StatusCode::NOT_FOUND, "not_found"),
        (Request::get("/api/v1/nope").body(Body::empty()).unwrap(), StatusCode::NOT_FOUND, "not_found"),
        (
            Request::delete("/api/v1/kpis").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Request::get("/api/v1/events").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (Request::post("/metrics").body(Body::empty()).unwrap(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (
            Request::get("/api/v1/ws").body(Body::empty()).unwrap(),
            StatusCode::BAD_REQUEST,
            "websocket_upgrade_required",
        ),
        (
            Request::post("/api/v1/sql").body(Body::from(big_sql)).unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Request::post("/api/v1/events").body(Body::from("x".repeat(2000))).unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (Request::post("/api/v1/sql").body(Body::from("{not json")).unwrap(), StatusCode::BAD_REQUEST, "bad_body"),
        (
            Request::get("/api/v1/kpis?from=%FF%FE").body(Body::empty()).unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_period",
        ),
        (Request::get("/api/v1/kpis/nope").body(Body::empty()).unwrap(), StatusCode::NOT_FOUND, "not_found"),
        (Request::get("/nope.js").body(Body::empty()).unwrap(), StatusCode::NOT_FOUND, "not_found"),
    ];
    for (req, want, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (status, ctype, body) = api.send(req);
        assert_eq!(status, want, "{what}: {body}");
        assert_error_body(status, &ctype, &body, &what);
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
    }
    // A method that is not allowed still says which ones are.
    let resp =
        api.rt.block_on(api.router.clone().oneshot(Request::delete("/api/v1/kpis").body(Body::empty()).unwrap()));
    assert_eq!(resp.unwrap().headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET,HEAD"));
}

const TOKENS: &str = "viewer:viewer-token-0001,ingest@01:ingest-token-0001,analyst:vw+a/b=c%d-41f7";

#[test]
fn metrics_take_a_token_of_any_role_when_tokens_are_configured() {
    let api = Api::start(Overrides { auth_tokens: Some(TOKENS.into()), ..Default::default() });
    let metrics = |token: Option<&str>| {
        let mut req = Request::get("/metrics");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        api.send(req.body(Body::empty()).unwrap())
    };
    let (status, ctype, body) = metrics(None);
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_error_body(status, &ctype, &body, "/metrics without a token");
    assert_eq!(metrics(Some("wrong-token-0001")).0, StatusCode::UNAUTHORIZED);
    for token in ["viewer-token-0001", "ingest-token-0001", "vw+a/b=c%d-41f7"] {
        let (status, ctype, body) = metrics(Some(token));
        assert_eq!(status, StatusCode::OK, "{token}: {body}");
        assert!(ctype.starts_with("text/plain"), "{ctype}");
        assert!(body.as_str().is_some_and(|t| t.contains("ioc_commits_total")), "{body}");
    }
    // Probes stay open: they carry no data.
    assert_eq!(api.get("/healthz").0, StatusCode::OK);

    // Without tokens (loopback only), metrics are open.
    let open = Api::start(Overrides::default());
    assert_eq!(open.get("/metrics").0, StatusCode::OK);
}

#[test]
fn a_token_in_the_query_string_is_percent_decoded() {
    let api = Api::start(Overrides { auth_tokens: Some(TOKENS.into()), ..Default::default() });
    // As a browser encodes it (encodeURIComponent), and as a hand-written URL may
    // leave it: `+` is a plus, not a space, since tokens never contain spaces.
    for query in
        ["token=vw%2Ba%2Fb%3Dc%25d-41f7", "token=vw+a%2Fb%3Dc%25d-41f7", "from=2026-01-01&token=vw%2ba/b=c%25d-41f7"]
    {
        let (status, body) = api.get(&format!("/api/v1/kpis?{query}"));
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        // The websocket takes the same token; without an upgrade it gets past auth
        // and is refused for the missing upgrade only.
        let (status, body) = api.get(&format!("/api/v1/ws?{query}"));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("websocket_upgrade_required")),
            "{query}: {body}"
        );
    }
    let (status, body) = api.get("/api/v1/kpis?token=vw%2Ba%2Fb%3Dc%25d-41f8");
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{body}");
}
