// Wall display: polls /api/v1/kpis every 2 s and renders one card per KPI.
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

async function refresh() {
  const q = select.value ? `?province_code=${encodeURIComponent(select.value)}` : "";
  const headers = {};
  const token = localStorage.getItem("ioc_token");
  if (token) headers.Authorization = "Bearer " + token;
  try {
    const r = await fetch("/api/v1/kpis" + q, { headers, cache: "no-store" });
    if (r.status === 401) {
      loginForm.hidden = false;
      setConnected(false);
      return;
    }
    if (!r.ok) throw new Error(String(r.status));
    loginForm.hidden = true;
    render(await r.json());
    setConnected(true);
  } catch (_) {
    setConnected(false); // keep showing the last data
  }
}

loginForm.addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem("ioc_token", document.getElementById("token").value);
  refresh();
});
select.addEventListener("change", refresh);
refresh();
setInterval(refresh, 2000);
