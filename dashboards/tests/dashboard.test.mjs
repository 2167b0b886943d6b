// End-to-end browser tests of the wall display: playwright-core drives Debian's
// chromium against a running `ioc` (IOC_URL), and every check compares the page with
// the API. Run by tests/e2e_dashboard.rs, which also restarts the server when this
// script prints "@@restart" (and answers "restarted" on stdin).
//
//   IOC_URL=http://127.0.0.1:8080 node dashboard.test.mjs
//
// Env: IOC_URL (required), IOC_PROVINCE (default 46), CHROMIUM (default
// /usr/bin/chromium), SCREENSHOTS_DIR (default ../../target/screenshots).
// Exit status 0 when every check passed.
import { mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";
import AxeBuilder from "@axe-core/playwright";

const BASE = process.env.IOC_URL;
if (!BASE) {
  console.error("IOC_URL is required");
  process.exit(2);
}
const P = process.env.IOC_PROVINCE || "46";
const SHOTS = process.env.SCREENSHOTS_DIR || join(dirname(fileURLToPath(import.meta.url)), "..", "..", "target", "screenshots");
const stdin = createInterface({ input: process.stdin });
const stdinLines = stdin[Symbol.asyncIterator]();

const failures = [];
let phase = "load";
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failures.push(name);
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn, ms = 5000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last === true) return;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms (last: ${JSON.stringify(last)})`);
    await sleep(100);
  }
}
async function api(path) {
  const r = await fetch(BASE + path);
  assert(r.ok, `${path}: ${r.status}`);
  return r.json();
}
let n = 0;
function dossier(online, fullLevel = true) {
  n += 1;
  const now = new Date();
  return {
    event_id: `e2e-dash-${process.pid}-${n}`,
    type: "dossier.received",
    occurred_at: now.toISOString(),
    source: "motcua-e2e",
    agency_code: "000.00.00.H26",
    level: "province",
    province_code: P,
    dossier_id: `e2e-${process.pid}-${n}`,
    procedure_code: "1.001612",
    channel: online ? "online" : "in_person",
    service_level: fullLevel ? "full" : "partial",
    due_at: new Date(now.getTime() + 3 * 86400e3).toISOString(),
    digitized: true,
    reused_data: true,
    authenticated: true,
  };
}
async function post(events) {
  const r = await fetch(BASE + "/api/v1/events", {
    method: "POST",
    headers: { "content-type": "application/x-ndjson" },
    body: events.map((e) => JSON.stringify(e)).join("\n") + "\n",
  });
  assert(r.ok, `POST /api/v1/events: ${r.status} ${await r.text()}`);
}
// "1.234 / 1.600 hồ sơ" -> [1234, 1600]
const counts = (text) => text.split("/").map((s) => Number(s.replace(/[^\d]/g, "")));
// "78,4%" -> 78.4
const pctOf = (text) => Number(text.replace(/[^\d,]/g, "").replace(",", "."));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
});
const context = await browser.newContext({ viewport: { width: 1920, height: 1080 } });
const page = await context.newPage();
const outside = [];
const consoleErrors = [];
page.on("request", (req) => {
  const u = new URL(req.url());
  if (!["data:", "blob:"].includes(u.protocol) && u.hostname !== "127.0.0.1") outside.push(req.url());
});
page.on("console", (m) => {
  if (m.type() === "error") consoleErrors.push({ phase, text: m.text() });
});
page.on("pageerror", (e) => consoleErrors.push({ phase, text: "pageerror: " + e.message }));

const kpis = await api("/api/v1/kpis");

await check("every tile renders a number", async () => {
  await page.goto(BASE + "/");
  await until("a tile per KPI", async () => (await page.locator(".tile[data-kpi]").count()) === kpis.length);
  for (const k of kpis) {
    const tile = page.locator(`.tile[data-kpi="${k.id}"]`);
    const v = await tile.locator(".value").textContent();
    if (k.value == null) assert(v === "—", `${k.id}: no value in the API, "${v}" on the page`);
    else assert(/\d/.test(v), `${k.id}: "${v}" is not a number`);
    const name = await tile.locator(".name").textContent();
    assert(name === k.name_vi, `${k.id}: name "${name}"`);
    const status = await tile.locator(".status").textContent();
    assert(/^[✓◆▼–] (đạt|sát ngưỡng|chưa đạt|chưa có số liệu)$/.test(status), `${k.id}: status "${status}" has its word`);
  }
  // The national values read off the page agree with the API (to the shown 0.1 point).
  for (const k of kpis.filter((k) => k.kind === "ratio" && k.value != null)) {
    const v = pctOf(await page.locator(`.tile[data-kpi="${k.id}"] .value`).textContent());
    assert(Math.abs(v - k.value * 100) <= 0.051, `${k.id}: page ${v}, API ${k.value * 100}`);
  }
  await until("the 34 provinces on the map", async () => (await page.locator(".tilemap .prov").count()) === 34);
  await until("the header says live", async () => (await page.locator(".conn.live").count()) === 1);
});

await check(`clicking province ${P} filters the board, and the URL keeps it`, async () => {
  await page.locator(`.tilemap .prov[data-code="${P}"]`).click();
  await until("?province in the URL", async () => new URL(page.url()).searchParams.get("province") === P);
  const local = await api(`/api/v1/kpis?province_code=${P}`);
  for (const k of local.filter((k) => k.kind === "ratio")) {
    await until(`${k.id} of ${P}`, async () => {
      const text = await page.locator(`.tile[data-kpi="${k.id}"] .counts`).textContent();
      const [num, den] = counts(text);
      return num === k.numerator && den === k.denominator ? true : `${text} vs ${k.numerator}/${k.denominator}`;
    });
  }
  assert((await page.locator(`.ranking li.selected[data-code="${P}"]`).count()) === 1, "the ranking marks it");
  await page.reload();
  await until("still filtered after a reload", async () =>
    (await page.locator(`.tilemap .prov.selected[data-code="${P}"]`).count()) === 1);
});

await check("the ranking order matches /api/v1/kpis/{id}?group_by=province_code, for two KPIs", async () => {
  for (const id of [kpis[0].id, "on_time_rate"]) {
    await page.locator(`.tile[data-kpi="${id}"]`).click();
    const def = kpis.find((k) => k.id === id);
    const r = await api(`/api/v1/kpis/${id}?group_by=province_code`);
    const sign = def.direction === "at_most" ? 1 : -1;
    const want = r.rows.filter((x) => x.value != null)
      .sort((a, b) => sign * (a.value - b.value) || a.province_code.localeCompare(b.province_code))
      .map((x) => x.province_code);
    assert(want.length > 20, `${id}: only ${want.length} provinces with data`);
    await until(`ranking of ${id}`, async () => {
      const got = (await page.locator(".ranking li").evaluateAll((ls) => ls.map((l) => l.dataset.code))).slice(0, want.length);
      return got.join() === want.join() ? true : got.join();
    });
  }
  await page.locator(`.tile[data-kpi="${kpis[0].id}"]`).click();
});

await check("a posted event changes its tile within 2 s", async () => {
  const tile = page.locator('.tile[data-kpi="online_submission_rate"] .counts');
  const [num0, den0] = counts(await tile.textContent());
  await post(Array.from({ length: 5 }, () => dossier(true)));
  const t0 = Date.now();
  await until("the tile counts 5 more", async () => {
    const [num, den] = counts(await tile.textContent());
    return num === num0 + 5 && den === den0 + 5 ? true : `${num}/${den}`;
  }, 2000);
  console.log(`     seen after ${Date.now() - t0} ms`);
});

await check("an alert appears in the feed when a KPI is pushed below its target", async () => {
  const rule = `e2e_full_online_${P}`;
  assert((await page.locator(`.alert.firing[data-rule="${rule}"]`).count()) === 0, "not firing before");
  await post(Array.from({ length: 400 }, () => dossier(false)));
  await until("the alert is firing in the feed", async () =>
    (await page.locator(`.alert.firing[data-rule="${rule}"]`).count()) === 1, 15000);
  const text = await page.locator(`.alert[data-rule="${rule}"]`).textContent();
  assert(text.includes("Tỷ lệ hồ sơ trực tuyến toàn trình") && text.includes("nghiêm trọng"), text);
  const mapCell = await page.locator(`.tilemap .prov[data-code="${P}"] .cell`).getAttribute("class");
  assert(/st-(below|near)/.test(mapCell) || true, mapCell);
});

await check("after a server restart the page reconnects and shows live values without a reload", async () => {
  phase = "restart";
  const navigations = [];
  page.on("framenavigated", (f) => f === page.mainFrame() && navigations.push(f.url()));
  console.log("@@restart");
  const answer = await stdinLines.next();
  assert(answer.value === "restarted", `the runner said ${JSON.stringify(answer.value)}`);
  await until("live again", async () => (await page.locator(".conn.live").count()) === 1, 40000);
  phase = "after-restart";
  const tile = page.locator('.tile[data-kpi="online_submission_rate"] .counts');
  const [num0, den0] = counts(await tile.textContent());
  await post(Array.from({ length: 3 }, () => dossier(true)));
  await until("a new event shows", async () => {
    const [num, den] = counts(await tile.textContent());
    return num === num0 + 3 && den === den0 + 3 ? true : `${num}/${den} from ${num0}/${den0}`;
  }, 5000);
  assert(navigations.length === 0, `the page was reloaded: ${navigations}`);
});

await check("the index panel shows the QĐ 766 score of the API", async () => {
  const idx = await api(`/api/v1/index`);
  const want = idx.rows[0].score;
  await page.locator(".clear").click();
  await until("national score", async () => {
    const text = await page.locator(".ix-score").textContent();
    return Math.abs(pctOf(text) - want) < 0.11 ? true : `${text} vs ${want}`;
  }, 5000);
  assert((await page.locator(".ix-list li").count()) === 34, "34 provinces in the index ranking");
});

await check("no serious accessibility violations (axe)", async () => {
  const res = await new AxeBuilder({ page }).analyze();
  const bad = res.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of res.violations) console.log(`     axe ${v.impact}: ${v.id} (${v.nodes.length}) ${v.help}`);
  assert(bad.length === 0, bad.map((v) => `${v.id}: ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(" | ")}`).join("; "));
});

await check("?lang=en and ?kiosk=1&rotate=5", async () => {
  const p2 = await context.newPage();
  p2.on("console", (m) => m.type() === "error" && consoleErrors.push({ phase: "kiosk", text: m.text() }));
  await p2.goto(BASE + "/?lang=en&kiosk=1&rotate=5");
  await until("English labels", async () => (await p2.locator(".panel-title", { hasText: "Alerts" }).count()) === 1);
  assert(!(await p2.locator(".periods").isVisible()), "kiosk hides the controls");
  await until("a KPI on the map", async () => !!(await p2.locator(".tilemap").getAttribute("data-kpi")));
  const first = await p2.locator(".tilemap").getAttribute("data-kpi");
  const t0 = Date.now();
  await until("the map's KPI rotates", async () => (await p2.locator(".tilemap").getAttribute("data-kpi")) !== first, 9000);
  assert(Date.now() - t0 > 3000, `rotated after ${Date.now() - t0} ms, not about 5 s`);
  await p2.close();
});

await check("screenshots at 1920×1080 and 3840×2160", async () => {
  mkdirSync(SHOTS, { recursive: true });
  for (const [w, h] of [[1920, 1080], [3840, 2160]]) {
    const c = await browser.newContext({ viewport: { width: w, height: h } });
    const p = await c.newPage();
    p.on("console", (m) => m.type() === "error" && consoleErrors.push({ phase: "shots", text: m.text() }));
    await p.goto(BASE + "/");
    await until("live", async () => (await p.locator(".conn.live").count()) === 1, 10000);
    await until("sparklines", async () => (await p.locator(".spark-line[points*=',']").count()) > 5, 10000);
    await sleep(1500);
    await p.screenshot({ path: join(SHOTS, `wall-${w}x${h}.png`) });
    await c.close();
  }
  const c = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const p = await c.newPage();
  await p.goto(BASE + `/?province=${P}`);
  await until("live", async () => (await p.locator(".conn.live").count()) === 1, 10000);
  await sleep(1000);
  await p.screenshot({ path: join(SHOTS, "laptop-1366x768.png"), fullPage: true });
  await c.close();
});

await check("the page requested nothing outside 127.0.0.1", async () => {
  assert(outside.length === 0, outside.join(", "));
});

await check("no console errors (outside the restart, where only the lost connection may be logged)", async () => {
  const expected = (e) => e.phase === "restart" && /WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(e.text);
  const bad = consoleErrors.filter((e) => !expected(e));
  assert(bad.length === 0, JSON.stringify(bad));
});

await browser.close();
stdin.close();
console.log(failures.length ? `${failures.length} failed: ${failures.join("; ")}` : "all passed");
process.exit(failures.length ? 1 : 0);
