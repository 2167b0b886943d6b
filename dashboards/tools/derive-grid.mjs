// Derives the tile-grid map of the 34 provinces from their coordinates in
// data/admin_units_2025.csv and writes dashboards/tile-grid.json.
//
//   node dashboards/tools/derive-grid.mjs            # rewrite the file
//   node dashboards/tools/derive-grid.mjs --check    # exit 1 if the file is not current
//
// The rule: every province has an ideal cell, its coordinates scaled to the grid
// (COLS columns over the longitudes, ROWS rows over the latitudes, north at row 0).
// Each gets a cell of its own, as near its ideal one as the order allows (placed
// north to south in the nearest free cell, then moved or swapped while that lowers
// the total squared distance). The order: a province is never in a row above one
// lying more than NORTH_MARGIN degrees further north, always in a row below one
// lying more than SOUTH_OF degrees further north, and in one row west is west. So
// north stays north and the country keeps its S shape. ioc-api's dashboard tests
// check the committed file for the same order and the 34 codes, once each.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const COLS = 6;
const ROWS = 15;
const NORTH_MARGIN = 0.3;
const SOUTH_OF = 1.0;
// Hoàng Sa (Paracel Islands) and Trường Sa (Spratly Islands), by a central latitude.
const ISLANDS = [
  { id: "hoang_sa", name_vi: "Quần đảo Hoàng Sa", name_en: "Hoang Sa (Paracel) Islands", lat: 16.5 },
  { id: "truong_sa", name_vi: "Quần đảo Trường Sa", name_en: "Truong Sa (Spratly) Islands", lat: 10.0 },
];

function provinces() {
  const lines = readFileSync(join(root, "data", "admin_units_2025.csv"), "utf8").trim().split("\n");
  const head = lines[0].split(",");
  const at = (name) => head.indexOf(name);
  const seen = new Map();
  for (const line of lines.slice(1)) {
    const f = line.split(",");
    const code = f[at("province_code")];
    if (!seen.has(code)) {
      seen.set(code, { code, short: f[at("province_short")], lat: +f[at("province_lat")], lon: +f[at("province_lon")] });
    }
  }
  return [...seen.values()];
}

// Row order: a province never sits above one lying more than NORTH_MARGIN degrees
// further north, and sits below every one lying more than SOUTH_OF degrees north.
export function allowed(a, b) {
  // a's cell versus b's cell.
  if (b.lat - a.lat > SOUTH_OF && a.row <= b.row) return false;
  if (b.lat - a.lat > NORTH_MARGIN && a.row < b.row) return false;
  if (a.row === b.row && b.lon - a.lon > 0.5 && a.col > b.col) return false;
  return true;
}

export function derive(list) {
  const lats = list.map((p) => p.lat);
  const lons = list.map((p) => p.lon);
  const [minLat, maxLat, minLon, maxLon] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
  for (const p of list) {
    p.want = { row: ((maxLat - p.lat) / (maxLat - minLat)) * (ROWS - 1), col: ((p.lon - minLon) / (maxLon - minLon)) * (COLS - 1) };
  }
  const cost = (p, row, col) => (row - p.want.row) ** 2 + (col - p.want.col) ** 2;
  const fits = (p, row, col, others) => others.every((q) => q === p || (allowed({ ...p, row, col }, q) && allowed(q, { ...p, row, col })));
  // Greedy start, north to south: the free cell nearest the ideal one that keeps the order.
  const placed = [];
  for (const p of [...list].sort((a, b) => b.lat - a.lat || a.lon - b.lon)) {
    let best = null;
    for (let row = 0; row < ROWS; row++) {
      for (let col = 0; col < COLS; col++) {
        if (placed.some((q) => q.row === row && q.col === col) || !fits(p, row, col, placed)) continue;
        const d = cost(p, row, col);
        if (!best || d < best.d) best = { row, col, d };
      }
    }
    if (!best) throw new Error(`no cell for ${p.code}`);
    Object.assign(p, { row: best.row, col: best.col });
    placed.push(p);
  }
  // Then moves and swaps that lower the total distance and keep the order, until none does.
  for (let improved = true; improved; ) {
    improved = false;
    for (const p of placed) {
      for (let row = 0; row < ROWS; row++) {
        for (let col = 0; col < COLS; col++) {
          const q = placed.find((o) => o.row === row && o.col === col);
          if (q === p) continue;
          const before = cost(p, p.row, p.col) + (q ? cost(q, q.row, q.col) : 0);
          const after = cost(p, row, col) + (q ? cost(q, p.row, p.col) : 0);
          if (after >= before - 1e-9) continue;
          const [pr, pc] = [p.row, p.col];
          Object.assign(p, { row, col });
          if (q) Object.assign(q, { row: pr, col: pc });
          const ok = placed.every((a) => placed.every((b) => a === b || allowed(a, b)));
          if (ok) improved = true;
          else {
            Object.assign(p, { row: pr, col: pc });
            if (q) Object.assign(q, { row, col });
          }
        }
      }
    }
  }
  placed.sort((a, b) => a.code.localeCompare(b.code));
  return {
    about: "Tile-grid map of the 34 provinces (since 2025-07-01), derived by dashboards/tools/derive-grid.mjs from data/admin_units_2025.csv. Row 0 is north.",
    cols: COLS,
    rows: ROWS,
    provinces: placed.map(({ code, short, row, col }) => ({ code, short, row, col })),
    // The archipelagos, east of the mainland in one more column, at the row of their
    // latitude: markers, not tiles.
    islands: ISLANDS.map(({ id, name_vi, name_en, lat }) => ({
      id,
      name_vi,
      name_en,
      row: Math.round(((maxLat - lat) / (maxLat - minLat)) * (ROWS - 1) * 10) / 10,
      col: COLS,
    })),
  };
}

const out = JSON.stringify(derive(provinces()), null, 1) + "\n";
const file = join(root, "dashboards", "tile-grid.json");
if (process.argv.includes("--check")) {
  let now = "";
  try { now = readFileSync(file, "utf8"); } catch {}
  if (now !== out) { console.error("dashboards/tile-grid.json is not what derive-grid.mjs derives; run it"); process.exit(1); }
} else {
  writeFileSync(file, out);
  const grid = JSON.parse(out);
  const cells = Array.from({ length: grid.rows }, () => Array(grid.cols).fill("   .       "));
  for (const p of grid.provinces) cells[p.row][p.col] = (p.code + " " + p.short).padEnd(11).slice(0, 11);
  console.log(cells.map((r) => r.join("|")).join("\n"));
}
