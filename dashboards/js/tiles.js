// KPI tiles: name, value, status (colour + symbol + word), target and gap, a bullet
// graph with the target mark, numerator / denominator with the unit, a 30-day
// sparkline and the change since the end of yesterday. Built once per KPI, then
// updated in place.
import { S, fmt } from "./strings.js";
import { el, svg, setText, setAttr, statusOf, SYMBOL, statusWord, kpiName } from "./dom.js";

const W = 200; // bullet and sparkline viewBox width
const tiles = new Map(); // id -> parts

function build(id, onSelect) {
  const name = el("h2", { class: "name" });
  const value = el("span", { class: "value" });
  const status = el("span", { class: "status" });
  const track = svg("rect", { x: 0, y: 2, width: W, height: 12, rx: 1, class: "track" });
  const bar = svg("rect", { x: 0, y: 4, width: 0, height: 8, class: "bar" });
  const mark = svg("rect", { x: 0, y: 0, width: 2.5, height: 16, class: "mark" });
  const bullet = svg("svg", { class: "bullet", viewBox: `0 0 ${W} 16`, preserveAspectRatio: "none", "aria-hidden": "true" }, track, bar, mark);
  const target = el("div", { class: "target" });
  const gap = el("div", { class: "gap" });
  const counts = el("div", { class: "counts" });
  const line = svg("polyline", { class: "spark-line", points: "", "vector-effect": "non-scaling-stroke" });
  const tmark = svg("line", { class: "spark-target", x1: 0, x2: W, y1: 0, y2: 0, "vector-effect": "non-scaling-stroke" });
  const spark = svg("svg", { class: "spark", viewBox: `0 0 ${W} 40`, preserveAspectRatio: "none", "aria-hidden": "true" }, tmark, line);
  const delta = el("div", { class: "delta" });
  const root = el(
    "div",
    { class: "tile", "data-kpi": id, tabindex: "0", role: "button", "aria-pressed": "false" },
    name,
    el("div", { class: "row1" }, value, status),
    bullet,
    target,
    gap,
    counts,
    el("div", { class: "foot" }, spark, delta),
  );
  root.addEventListener("click", () => onSelect(id));
  root.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      onSelect(id);
    }
  });
  return { root, name, value, status, bar, mark, target, gap, counts, line, tmark, delta, lastStatus: "" };
}

/** Mounts the tile grid in `container`; returns its update function. */
export function mountTiles(container, { onSelect }) {
  const summary = el("section", { class: "tile summary", "aria-live": "polite" });
  return function update(st) {
    // A province without data in the period yet: the nation's entry, without a value.
    const view = (id) => {
      const nat = st.value(id, "");
      if (!st.province) return nat;
      return st.value(id, st.province) || (nat && { ...nat, value: null, numerator: 0, denominator: nat.kind === "gauge" ? null : 0 });
    };
    const kpis = st.catalog.map(view).filter(Boolean);
    let ok = 0;
    let measured = 0;
    for (const k of kpis) {
      let t = tiles.get(k.id);
      if (!t) {
        t = build(k.id, onSelect);
        tiles.set(k.id, t);
        container.insertBefore(t.root, summary.parentNode === container ? summary : null);
      }
      const s = statusOf(k, st.settings.near_target_points);
      if (s !== "none") measured += 1;
      if (s === "ok") ok += 1;
      fill(t, k, s, st);
    }
    if (summary.parentNode !== container) container.append(summary);
    const key = `${ok}/${measured}`;
    if (summary.dataset.key === key) return;
    summary.dataset.key = key;
    summary.replaceChildren(
      el("div", { class: "summary-big", text: S.summary(ok, measured) }),
      el("ul", { class: "legend" }, ...["ok", "near", "below", "none"].map((s) =>
        el("li", { class: "st-" + s }, el("span", { class: "sym", text: SYMBOL[s] }), " " + statusWord(s)))),
      el("div", { class: "legend-note", text: S.lang === "en"
        ? `near target: at most ${fmt.one(st.settings.near_target_points)} pp below`
        : `sát ngưỡng: thấp hơn mục tiêu không quá ${fmt.one(st.settings.near_target_points)} điểm %` }),
    );
  };
}

function fill(t, k, s, st) {
  const gauge = k.kind === "gauge";
  const sign = k.direction === "at_most" ? "≤" : "≥";
  setText(t.name, kpiName(k));
  t.root.title = kpiName(k);
  setText(t.value, gauge ? fmt.int(k.value) : fmt.pct(k.value));
  setText(t.status, `${SYMBOL[s]} ${statusWord(s)}`);
  if (t.lastStatus !== s) {
    t.root.classList.remove("st-" + t.lastStatus);
    t.root.classList.add("st-" + s);
    t.lastStatus = s;
  }
  setAttr(t.root, "aria-pressed", String(st.kpi === k.id));
  t.root.classList.toggle("selected", st.kpi === k.id);
  setText(t.target, S.target(sign, gauge ? fmt.int(k.target) : fmt.pct(k.target)));
  if (k.value == null) setText(t.gap, "");
  else if (gauge) setText(t.gap, S.gapCount(fmt.signedInt(k.value - k.target)));
  else setText(t.gap, S.gapPoints(fmt.points((k.value - k.target) * 100)));
  const unit = S.units[k.id] || "";
  setText(t.counts, gauge ? `${fmt.int(k.numerator)} ${unit}` : `${fmt.int(k.numerator)} / ${fmt.int(k.denominator)} ${unit}`);

  // Bullet: ratios on 0..100%, counts on 0..max(value, target) × 1.25.
  const scale = gauge ? Math.max(k.value || 0, k.target || 0, 1) * 1.25 : 1;
  const x = (v) => Math.max(0, Math.min(W, ((v || 0) / scale) * W));
  setAttr(t.bar, "width", x(k.value).toFixed(1));
  setAttr(t.mark, "x", Math.min(W - 2.5, x(k.target)).toFixed(1));

  // Sparkline of the daily values, with the target as a dashed line.
  const series = st.sparks.get(k.id + "|" + st.province);
  if (series && series.length) {
    const vals = series.map((r) => r.value).filter((v) => v != null);
    const lo = Math.min(...vals, k.target);
    const hi = Math.max(...vals, k.target);
    const span = hi - lo || 1;
    const y = (v) => (38 - ((v - lo) / span) * 36).toFixed(1);
    const n = series.length;
    const pts = series
      .map((r, i) => (r.value == null ? null : `${((i / Math.max(1, n - 1)) * W).toFixed(1)},${y(r.value)}`))
      .filter(Boolean)
      .join(" ");
    setAttr(t.line, "points", pts);
    setAttr(t.tmark, "y1", y(k.target));
    setAttr(t.tmark, "y2", y(k.target));
  }
  const before = st.yesterday.get(k.id);
  if (k.value == null) setText(t.delta, "");
  else if (before == null) setText(t.delta, S.sinceYesterdayNone);
  else if (gauge) setText(t.delta, S.sinceYesterday(fmt.signedInt(k.value - before)));
  else setText(t.delta, S.sinceYesterday(fmt.points((k.value - before) * 100) + (S.lang === "en" ? " pp" : " điểm %")));
}
