//! The wall-display page, embedded into the binary: no CDN, works air-gapped.
//!
//! `GET /` is `dashboards/index.html` with three things filled in: the page's
//! settings (`[dashboard]` and `alerts.stale_after_secs`), the tile-grid map of the
//! provinces (`dashboards/tile-grid.json`) and nothing else; `GET /{file}` serves the
//! stylesheet and the ES modules of `dashboards/js/` by their file name.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;
use crate::config::DashboardSettings;
use crate::error::ApiError;

const INDEX: &str = include_str!("../../dashboards/index.html");
/// The provinces' cells on the tile-grid map, derived by `dashboards/tools/derive-grid.mjs`.
pub const TILE_GRID: &str = include_str!("../../dashboards/tile-grid.json");

const JS: &str = "text/javascript; charset=utf-8";
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", "text/css; charset=utf-8", include_str!("../../dashboards/style.css")),
    ("main.js", JS, include_str!("../../dashboards/js/main.js")),
    ("api.js", JS, include_str!("../../dashboards/js/api.js")),
    ("strings.js", JS, include_str!("../../dashboards/js/strings.js")),
    ("dom.js", JS, include_str!("../../dashboards/js/dom.js")),
    ("header.js", JS, include_str!("../../dashboards/js/header.js")),
    ("tiles.js", JS, include_str!("../../dashboards/js/tiles.js")),
    ("map.js", JS, include_str!("../../dashboards/js/map.js")),
    ("ranking.js", JS, include_str!("../../dashboards/js/ranking.js")),
    ("index-panel.js", JS, include_str!("../../dashboards/js/index-panel.js")),
    ("alerts.js", JS, include_str!("../../dashboards/js/alerts.js")),
    ("throughput.js", JS, include_str!("../../dashboards/js/throughput.js")),
];

/// JSON that is safe inside a `<script>` element.
fn script_json(v: &serde_json::Value) -> String {
    serde_json::to_string(v).expect("serialises").replace("</", "<\\/")
}

/// The page with its settings and the map filled in.
pub fn page(settings: &DashboardSettings) -> String {
    let settings = json!({
        "title": settings.title,
        "near_target_points": settings.near_target_points,
        "stale_after_secs": settings.stale_after.as_secs(),
    });
    let grid: serde_json::Value = serde_json::from_str(TILE_GRID).expect("tile-grid.json is JSON");
    INDEX.replace("__SETTINGS_JSON__", &script_json(&settings)).replace("__GRID_JSON__", &script_json(&grid))
}

/// `GET /`: the page.
pub async fn index(State(state): State<AppState>) -> Response {
    let html = page(&state.dashboard);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], html).into_response()
}

/// `GET /{file}`: static assets.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, body)) => {
            ([(header::CONTENT_TYPE, *mime), (header::CACHE_CONTROL, "no-cache")], *body).into_response()
        }
        None => ApiError::not_found(format!("no asset `{file}`")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use ioc_core::AdminUnits;
    use serde_json::Value;

    use super::*;

    #[test]
    fn the_tile_grid_covers_the_34_provinces_once_each_with_north_up() {
        let grid: Value = serde_json::from_str(TILE_GRID).unwrap();
        let (cols, rows) = (grid["cols"].as_u64().unwrap(), grid["rows"].as_u64().unwrap());
        let cells = grid["provinces"].as_array().unwrap();
        let units = AdminUnits::builtin();
        let expected: BTreeSet<&str> = units.provinces().iter().map(|p| p.code.as_str()).collect();
        assert_eq!(expected.len(), 34);
        let codes: Vec<&str> = cells.iter().map(|c| c["code"].as_str().unwrap()).collect();
        assert_eq!(codes.len(), 34, "one cell per province");
        assert_eq!(codes.iter().copied().collect::<BTreeSet<_>>(), expected, "the 34 codes, once each");
        let mut taken = BTreeSet::new();
        for c in cells {
            let (row, col) = (c["row"].as_u64().unwrap(), c["col"].as_u64().unwrap());
            assert!(row < rows && col < cols, "{c} inside the grid");
            assert!(taken.insert((row, col)), "{c} has a cell of its own");
            let p = units.province(c["code"].as_str().unwrap()).unwrap();
            assert_eq!(c["short"], p.short_name.as_str());
        }
        // North stays north: a province more than a degree north of another is in a
        // row above it.
        for a in cells {
            for b in cells {
                let (pa, pb) = (
                    units.province(a["code"].as_str().unwrap()).unwrap(),
                    units.province(b["code"].as_str().unwrap()).unwrap(),
                );
                if pa.lat - pb.lat > 1.0 {
                    assert!(a["row"].as_u64() < b["row"].as_u64(), "{} is north of {}", pa.name, pb.name);
                }
            }
        }
        let islands: Vec<&str> =
            grid["islands"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(islands, ["hoang_sa", "truong_sa"]);
    }

    #[test]
    fn the_page_carries_its_settings_and_the_map_and_every_module_it_imports_is_served() {
        let html = page(&DashboardSettings {
            title: "Sở Nội vụ </script>".into(),
            near_target_points: 2.5,
            stale_after: Duration::from_secs(600),
        });
        assert!(!html.contains("__SETTINGS_JSON__") && !html.contains("__GRID_JSON__"));
        assert!(html.contains(r#""near_target_points":2.5"#) && html.contains(r#""stale_after_secs":600"#));
        assert!(html.contains(r"Sở Nội vụ <\/script>"), "no way out of the script element");
        // Every `import ... from "./x.js"` of every module is an asset.
        for (_, _, body) in ASSETS {
            for part in body.split("from \"./").skip(1) {
                let name = &part[..part.find('"').unwrap()];
                assert!(ASSETS.iter().any(|(n, _, _)| *n == name), "{name} is served");
            }
            assert!(!body.contains("http://") && !body.contains("https://") || body.contains("www.w3.org/2000/svg"));
        }
    }
}
