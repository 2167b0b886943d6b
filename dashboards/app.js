// Wall display: live over the websocket (/api/v1/ws): a snapshot, then pushed changes.
// One card per KPI, and a strip of firing alerts.
// Server strings are only ever set with textContent. No external resources.
"use strict";

const grid = document.getElementById("grid");
const select = document.getElementById("province");
const conn = document.getElementById("conn");
const loginForm = document.getElementById("login");

// A token from ?token= is remembered; it is never shown or logged.
const params = new URLSearchParams(location.search);
if (params.get("token")) localStorage.setItem("ioc_token", params.get("token"));

for (const p of JSON.parse(document.getElementById("provinces").textContent)) {
  const o = document.createElement("option");
  o.value = p.code;
  o.textContent = p.name;
  select.append(o);
}
select.value = params.get("province_code") || "";

const pct = new Intl.NumberFormat("vi-VN", { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 });
const int = new Intl.NumberFormat("vi-VN");
const clock = new Intl.DateTimeFormat("vi-VN", { timeZone: "Asia/Ho_Chi_Minh", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function card(k) {
  const c = el("section", "card " + k.status);
  c.append(el("h2", "", k.name_vi));
  const sign = k.direction === "at_most" ? "≤" : "≥";
  if (k.kind === "gauge") {
    c.append(el("div", "value", k.value === null ? "—" : int.format(k.value)));
    c.append(el("div", "target", `Mục tiêu ${sign} ${int.format(k.target)}`));
  } else {
    c.append(el("div", "value", k.value === null ? "—" : pct.format(k.value)));
    c.append(el("div", "target", `Mục tiêu ${sign} ${pct.format(k.target)}`));
    c.append(el("div", "counts", `${int.format(k.numerator)} / ${int.format(k.denominator)}`));
    const bar = el("div", "bar");
    const fill = el("div", "fill");
    fill.style.width = `${Math.min(100, (k.value || 0) * 100)}%`;
    const mark = el("div", "mark");
    mark.style.left = `${Math.min(100, k.target * 100)}%`;
    bar.append(fill, mark);
    c.append(bar);
  }
  const label = { ok: "Đạt mục tiêu", below_target: "Dưới mục tiêu", no_data: "Chưa có dữ liệu" }[k.status];
  c.append(el("div", "status", label));
  return c;
}

function render(kpis) {
  grid.replaceChildren(...kpis.map(card));
  const withData = kpis.filter((k) => k.status !== "no_data");
  const ok = withData.filter((k) => k.status === "ok").length;
  document.getElementById("summary").textContent = `${ok}/${withData.length} chỉ tiêu đạt mục tiêu`;
  document.getElementById("updated").textContent = "Cập nhật lúc " + clock.format(new Date());
}

function setConnected(on) {
  conn.className = "conn " + (on ? "on" : "off");
  conn.textContent = on ? "Trực tuyến" : "Mất kết nối";
}

// Live values by "id|scope" (scope "" = national, else the province code), from the
// websocket's snapshot and then its `kpi` messages.
let values = new Map();
const alerts = new Map();
const scopeOf = (s) => (s && s.province_code) || "";

function status(k) {
  if (k.value === null || k.value === undefined) return "no_data";
  const ok = k.direction === "at_most" ? k.value <= k.target : k.value >= k.target;
  return ok ? "ok" : "below_target";
}

function show() {
  const scope = select.value;
  const kpis = [...values.values()].filter((k) => k.scope === scope);
  render(kpis.map((k) => ({ ...k, status: status(k) })));
  const list = document.getElementById("alerts");
  const firing = [...alerts.values()].filter((a) => a.state === "firing" && (!scope || a.scope === "province:" + scope));
  const name = (a) => (values.get(a.kpi + "|" + scope) || values.get(a.kpi + "|") || { name_vi: a.kpi }).name_vi;
  const where = (a) => (a.scope === "national" ? "Toàn quốc" : select.querySelector(`option[value="${a.scope.slice(9)}"]`)?.textContent || a.scope);
  list.replaceChildren(...firing.map((a) => el("li", "", `${name(a)} · ${where(a)}`)));
  list.hidden = firing.length === 0;
}

function token() {
  return localStorage.getItem("ioc_token");
}

async function loadAlerts() {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  try {
    const r = await fetch("/api/v1/alerts", { headers, cache: "no-store" });
    if (!r.ok) return;
    alerts.clear();
    for (const a of (await r.json()).active) alerts.set(a.rule + "|" + a.scope, a);
    show();
  } catch (_) {
    /* the websocket keeps them current */
  }
}

let socket = null;
let retry = 1000;

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = token() ? "?token=" + encodeURIComponent(token()) : "";
  socket = new WebSocket(`${proto}//${location.host}/api/v1/ws${q}`);
  socket.onopen = () => {
    retry = 1000;
    loginForm.hidden = true;
    subscribe();
    loadAlerts();
  };
  socket.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "snapshot") {
      values = new Map(m.kpis.map((k) => [k.id + "|" + scopeOf(k.scope), { ...k, scope: scopeOf(k.scope) }]));
      // A province-scoped token gets its province only: show it.
      if (!select.value && m.kpis.length && m.kpis.every((k) => scopeOf(k.scope))) {
        select.value = scopeOf(m.kpis[0].scope);
      }
      setConnected(true);
    } else if (m.type === "kpi") {
      const key = m.id + "|" + scopeOf(m.scope);
      const k = values.get(key);
      if (k) Object.assign(k, { value: m.value, numerator: m.numerator, denominator: m.denominator });
      else return; // a province not in the snapshot yet: the next snapshot brings it
    } else if (m.type === "alert") {
      alerts.set(m.alert.rule + "|" + m.alert.scope, m.alert);
    }
    show();
  };
  socket.onclose = () => {
    setConnected(false);
    // Refused before opening: most likely a missing or wrong token.
    if (!values.size) loginForm.hidden = false;
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 15000);
  };
}

function subscribe() {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ op: "subscribe", kpis: ["*"], group_by: select.value ? "province_code" : null }));
  }
}

loginForm.addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem("ioc_token", document.getElementById("token").value);
  if (socket) socket.close();
});
select.addEventListener("change", () => {
  subscribe();
  show();
});
connect();
