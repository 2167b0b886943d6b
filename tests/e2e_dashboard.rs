//! The wall display in a real browser (issue 14): `ioc serve` with a month of seeded
//! events, and `dashboards/tests/dashboard.test.mjs` driving Debian's chromium through
//! playwright-core against it. The script checks the page against the API (tiles,
//! ranking, filter, a posted event, an alert, a restart, requests, console, axe) and
//! saves screenshots at 1920×1080 and 3840×2160 under target/screenshots/.
//!
//! Needs `node`, `chromium` and `npm ci` in dashboards/tests (`.ci/run` does all three).
//! When the script prints `@@restart`, this test stops the server and starts it again
//! on the same port and data directory, then answers `restarted` on its stdin.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::Utc;
use support::*;

/// The province the script filters to and pushes below its alert's threshold (0.3, far
/// below what the simulator sends, so that it fires only on the script's events).
const PROVINCE: &str = "46";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rules(dir: &Path) -> PathBuf {
    let path = dir.join("rules.toml");
    let mut text = String::new();
    for kpi in ["full_online_rate", "on_time_rate", "edoc_rate", "satisfaction_rate"] {
        text += &format!("[[rule]]\nname = \"{kpi}_national\"\nkpi = \"{kpi}\"\nseverity = \"warning\"\n\n");
    }
    text += "[[rule]]\nname = \"on_time_each\"\nkpi = \"on_time_rate\"\nscope = \"each_province\"\nmin_denominator = 20\n\n";
    text += &format!(
        "[[rule]]\nname = \"e2e_full_online_{PROVINCE}\"\nkpi = \"full_online_rate\"\nscope = \"{PROVINCE}\"\nwindow = \"today\"\nthreshold = 0.3\nseverity = \"critical\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `ioc serve` on `port` (`None`: a free one), or panics.
async fn serve(dir: &Path, rules: &Path, port: Option<u16>) -> Server {
    let rules = rules.to_str().unwrap();
    let args = ["--alert-rules", rules, "--alert-eval-interval-secs", "1"];
    match port {
        None => Server::start(dir, &args, &[]).await,
        Some(port) => Server::start_on(port, dir, &args, &[]).await,
    }
}

#[test]
fn the_wall_display_in_chromium_matches_the_api_live_and_after_a_restart() {
    let tests = repo().join("dashboards/tests");
    assert!(
        tests.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in {} first (.ci/run does)",
        tests.display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rules = rules(dir.path());
    let mut server = rt.block_on(async {
        let server = serve(&data, &rules, None).await;
        // A month of realistic events, up to a minute ago.
        let evs = events(14, 30_000, Utc::now() - chrono::Duration::minutes(1), 30);
        for chunk in lines(&evs).chunks(5_000) {
            let (status, body) = server.post_ndjson(chunk).await;
            assert_eq!(status, 200, "{body}");
        }
        let from = (Utc::now() - chrono::Duration::days(31)).to_rfc3339().replace('+', "%2B");
        let to = (Utc::now() + chrono::Duration::minutes(10)).to_rfc3339().replace('+', "%2B");
        wait_for_kpis(&server, &evs, &format!("from={from}&to={to}")).await;
        server
    });

    let shots = repo().join("target/screenshots");
    let mut node = Command::new("node")
        .arg(tests.join("dashboard.test.mjs"))
        .current_dir(&tests)
        .env("IOC_URL", &server.base)
        .env("IOC_PROVINCE", PROVINCE)
        .env("SCREENSHOTS_DIR", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut stdin = node.stdin.take().unwrap();
    let mut output = String::new();
    for line in BufReader::new(node.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // Shown live with --no-capture, and in the failure message anyway.
        let _ = writeln!(std::io::stdout(), "{line}");
        output += &line;
        output += "\n";
        if line.trim() == "@@restart" {
            let port = server.port;
            assert!(server.stop().success(), "ioc stops cleanly");
            server = rt.block_on(serve(&data, &rules, Some(port)));
            writeln!(stdin, "restarted").unwrap();
            stdin.flush().unwrap();
        }
    }
    let status = node.wait().unwrap();
    assert!(status.success(), "the browser tests failed ({status}):\n{output}");
    for size in ["1920x1080", "3840x2160"] {
        assert!(shots.join(format!("wall-{size}.png")).is_file(), "screenshot {size}");
    }
}
