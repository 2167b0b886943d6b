// The wall display: state, URL, data loading, and the panels, redrawn in place once
// per animation frame at most. Live values come from the websocket (a snapshot, then
// pushed changes); the 30-day sparklines, yesterday's values and ranks and the alerts
// list from REST.
import { S } from "./strings.js";
import { get, Live, setToken } from "./api.js";
import { mountHeader } from "./header.js";
import { mountTiles } from "./tiles.js";
import { mountMap } from "./map.js";
import { mountRanking, rankOrder } from "./ranking.js";
import { mountIndex } from "./index-panel.js";
import { mountAlerts } from "./alerts.js";
import { mountThroughput } from "./throughput.js";

const json = (id) => JSON.parse(document.getElementById(id).textContent);
const settings = json("settings");
const grid = json("grid");
const url = new URLSearchParams(location.search);
const kiosk = url.get("kiosk") === "1";
const rotate = Math.max(5, Number(url.get("rotate")) || 60);
const shorts = new Map(grid.provinces.map((p) => [p.code, p.short]));
const DAY = 86400e3;
const VN = 7 * 3600e3;

document.documentElement.lang = S.lang;
document.title = `${settings.title} — ${S.subtitle}`;
document.body.classList.toggle("kiosk", kiosk);

const st = {
  settings,
  province: shorts.has(url.get("province")) ? url.get("province") : "",
  period: ["today", "mtd", "ytd"].includes(url.get("period")) ? url.get("period") : "mtd",
  kpi: url.get("kpi") || "",
  catalog: [], // KPI ids in catalog order
  kpis: new Map(), // "id|scope" -> value; scope "" is the nation
  index: new Map(), // scope -> index row
  indexOn: true,
  alerts: new Map(), // "rule|scope" -> alert
  throughput: null,
  minutes: new Map(), // scope -> whole minutes
  sparks: new Map(), // "id|scope" -> daily rows
  yesterday: new Map(), // id -> value at the end of yesterday, in the board's scope
  rankYesterday: new Map(), // code -> rank at the end of yesterday, selected KPI
  from: null,
  asOf: null,
  lastUpdate: Date.now(),
  conn: "connecting",
  value: (id, scope) => st.kpis.get(id + "|" + (scope || "")),
  shortName: (code) => shorts.get(code) || code,
};

// Panels.
const $ = (id) => document.getElementById(id);
const panels = [
  mountHeader($("header"), {
    title: settings.title,
    onPeriod: (p) => {
      st.period = p;
      keepUrl();
      live.subscribe();
      draw();
    },
    onKpi: (id) => selectKpi(id),
    onClear: () => pick(""),
  }),
  mountTiles($("tiles"), { onSelect: (id) => selectKpi(id) }),
  mountMap($("map"), grid, { onPick: (c) => pick(c === st.province ? "" : c) }),
  mountRanking($("ranking"), grid, { onPick: (c) => pick(c === st.province ? "" : c) }),
  mountIndex($("index"), grid, { onPick: (c) => pick(c === st.province ? "" : c) }),
  mountAlerts($("alerts"), { max: 40 }),
  mountThroughput($("throughput")),
];

let queued = false;
function draw() {
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => {
    queued = false;
    for (const p of panels) p(st);
  });
}

function keepUrl() {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of [["province", st.province], ["period", st.period === "mtd" ? "" : st.period], ["kpi", kiosk ? "" : st.kpi]]) {
    if (v) q.set(k, v);
    else q.delete(k);
  }
  const s = q.toString();
  history.replaceState(null, "", location.pathname + (s ? "?" + s : ""));
}

function pick(code) {
  st.province = code;
  keepUrl();
  loadSide();
  draw();
}

function selectKpi(id) {
  if (!st.catalog.includes(id)) return;
  if (st.kpi !== id) st.rankYesterday = new Map();
  st.kpi = id;
  keepUrl();
  loadRanks();
  draw();
}

// Live values.
const scopeOf = (s) => (s && s.province_code) || "";
const live = new Live({
  subscription: () => ({ kpis: ["*"], group_by: "province_code", period: st.period, index: st.indexOn, throughput: true }),
  onState: (s) => {
    st.conn = s;
    draw();
  },
  onMessage: (m) => {
    if (m.type === "snapshot") snapshot(m);
    else if (m.type === "kpi") kpi(m);
    else if (m.type === "index") indexRow(m);
    else if (m.type === "throughput") throughput(m);
    else if (m.type === "alert") alert(m.alert);
    else if (m.type === "error" && m.error && m.error.code === "no_index") {
      st.indexOn = false;
      live.subscribe();
    }
    draw();
  },
});

function snapshot(m) {
  const fresh = new Map();
  const order = [];
  for (const k of m.kpis) {
    const scope = scopeOf(k.scope);
    if (!scope && !order.includes(k.id)) order.push(k.id);
    fresh.set(k.id + "|" + scope, { ...k, scope });
  }
  st.kpis = fresh;
  st.catalog = order;
  if (!st.catalog.includes(st.kpi)) st.kpi = order[0] || "";
  const newFrom = m.kpis.length ? m.kpis[0].from : null;
  const changed = newFrom !== st.from;
  st.from = newFrom;
  st.asOf = m.as_of || st.asOf;
  st.lastUpdate = Date.now();
  st.index = new Map();
  for (const r of m.index || []) st.index.set(r.province_code || "", r);
  if (m.throughput) throughput(m.throughput);
  if (changed || !st.sparks.size) loadSide();
  loadAlerts();
}

function kpi(m) {
  const scope = scopeOf(m.scope);
  const key = m.id + "|" + scope;
  let k = st.kpis.get(key);
  if (!k) {
    // A province's first value of the period: its static fields are the nation's.
    const nat = st.kpis.get(m.id + "|");
    if (!nat) return;
    k = { ...nat, scope };
    st.kpis.set(key, k);
  }
  for (const f of ["value", "numerator", "denominator", "target", "status"]) if (f in m) k[f] = m[f];
  if (m.as_of) st.asOf = m.as_of;
  else st.asOf = new Date().toISOString();
  st.lastUpdate = Date.now();
}

function indexRow(m) {
  const { type, seq, ...row } = m;
  st.index.set(row.province_code || (row.scope && row.scope.province_code) || "", row);
}

function throughput(t) {
  st.throughput = t;
  if (t.minutes) st.minutes.set("", t.minutes);
  for (const [code, p] of Object.entries(t.provinces || {})) if (p.minutes) st.minutes.set(code, p.minutes);
}

function alert(a) {
  if (!a || !a.rule) return;
  const key = a.rule + "|" + a.scope;
  const before = st.alerts.get(key);
  const live = a.state === "firing" || a.state === "pending";
  const next = { ...before, ...a };
  if (!live && before && (before.state === "firing" || before.state === "pending")) next.resolved_at = a.at || a.since || new Date().toISOString();
  st.alerts.set(key, next);
}

async function loadAlerts() {
  const r = await get("alerts");
  if (!r) return;
  const fresh = new Map();
  for (const a of r.active || []) fresh.set(a.rule + "|" + (typeof a.scope === "string" ? a.scope : a.scope), a);
  for (const c of r.recent || []) {
    const key = c.rule + "|" + c.scope;
    const to = c.to || c.state;
    if (!fresh.has(key) && to && to !== "firing" && to !== "pending" && (c.from === "firing" || c.from === undefined)) {
      fresh.set(key, { rule: c.rule, kpi: c.kpi, severity: c.severity, scope: c.scope, state: to, resolved_at: c.at || c.since, value: c.value });
    }
  }
  st.alerts = fresh;
  draw();
}

// The end of yesterday (Vietnam midnight today) and the period's start.
function midnight() {
  return new Date(Math.floor((Date.now() + VN) / DAY) * DAY - VN);
}
function untilYesterday() {
  const end = midnight();
  let from = st.from ? new Date(st.from) : new Date(end - DAY);
  if (from >= end) from = new Date(end - DAY);
  return { from: from.toISOString(), to: end.toISOString() };
}

async function loadSide() {
  const province = st.province;
  const ids = [...st.catalog];
  const end = midnight();
  const from = new Date(end - 29 * DAY).toISOString();
  const to = new Date(+end + DAY).toISOString();
  const y = untilYesterday();
  const [list] = await Promise.all([
    get("kpis", { ...y, province_code: province }),
    ...ids.map(async (id) => {
      const r = await get("kpis/" + id, { bucket: "day", from, to, province_code: province });
      if (r) st.sparks.set(id + "|" + province, r.rows);
    }),
  ]);
  if (province === st.province && list) st.yesterday = new Map(list.map((k) => [k.id, k.value]));
  loadRanks();
  draw();
}

async function loadRanks() {
  const id = st.kpi;
  const nat = st.value(id, "");
  if (!nat) return;
  const r = await get("kpis/" + id, { ...untilYesterday(), group_by: "province_code" });
  if (!r || id !== st.kpi) return;
  const order = rankOrder(r.rows.map((x) => ({ code: x.province_code, value: x.value })), nat.direction);
  st.rankYesterday = new Map(order.map((x, i) => [x.code, i + 1]));
  draw();
}

// Sign-in for a server with tokens: shown when the websocket cannot open at all.
const login = $("login");
login.querySelector("label span").textContent = S.tokenLabel;
login.querySelector("button").textContent = S.tokenSubmit;
login.addEventListener("submit", (e) => {
  e.preventDefault();
  setToken(login.querySelector("input").value);
  login.hidden = true;
  live.reset();
});
setInterval(() => {
  login.hidden = live.everOpened || st.conn === "live" || kiosk;
}, 3000);

// Kiosk: cycle the KPI that colours the map and the ranking.
if (kiosk && url.get("rotate")) {
  setInterval(() => {
    if (!st.catalog.length) return;
    const i = st.catalog.indexOf(st.kpi);
    selectKpi(st.catalog[(i + 1) % st.catalog.length]);
  }, rotate * 1000);
}

// Slow refreshes: sparklines and yesterday every 10 minutes, alerts every 30 s (the
// websocket brings their changes; this keeps ages and the resolved list honest), and
// a redraw every 5 s for the ages and the stale badge.
setInterval(loadSide, 600e3);
setInterval(loadAlerts, 30e3);
setInterval(draw, 5e3);

live.connect();
draw();
