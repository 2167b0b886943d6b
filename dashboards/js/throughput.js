// Throughput: events per minute by source family (one-stop portals, VDXP, public
// services, others) over the moving minute, and the last 30 whole minutes as a
// stacked column chart. From the websocket's `throughput` messages.
import { S, fmt } from "./strings.js";
import { el, svg, setText, setAttr } from "./dom.js";

export const FAMILIES = ["motcua", "vdxp", "dvc", "other"];
const W = 300;
const H = 80;

export function mountThroughput(container) {
  const title = el("h2", { class: "panel-title", text: S.throughputTitle });
  const total = el("span", { class: "tp-total" });
  const unit = el("span", { class: "tp-unit", text: S.perMinute });
  const list = el("ul", { class: "tp-list" });
  const rows = new Map();
  for (const f of FAMILIES) {
    const fillBar = el("span", { class: "tp-fill fam-" + f });
    const n = el("span", { class: "tp-n" });
    const li = el("li", { "data-family": f },
      el("span", { class: "tp-name" }, el("span", { class: "swatch fam-" + f, "aria-hidden": "true" }), S.families[f]),
      el("span", { class: "tp-bar", "aria-hidden": "true" }, fillBar), n);
    list.append(li);
    rows.set(f, { fillBar, n });
  }
  const chart = svg("svg", { class: "tp-chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "aria-hidden": "true" });
  container.append(title, el("div", { class: "tp-head" }, total, " ", unit), list, chart);
  const cols = [];

  return function update(st) {
    const t = st.throughput;
    const scope = t && (st.province ? t.provinces && t.provinces[st.province] : t);
    const per = (scope && scope.per_minute) || {};
    const sum = FAMILIES.reduce((s, f) => s + (per[f] || 0), 0);
    setText(total, fmt.int(sum));
    const top = Math.max(1, ...FAMILIES.map((f) => per[f] || 0));
    for (const f of FAMILIES) {
      const r = rows.get(f);
      setText(r.n, fmt.int(per[f] || 0));
      r.fillBar.style.width = `${(100 * (per[f] || 0)) / top}%`;
    }
    const minutes = st.minutes.get(st.province || "") || [];
    const peak = Math.max(1, ...minutes.map((m) => FAMILIES.reduce((s, f) => s + (m[f] || 0), 0)));
    const bw = W / Math.max(30, minutes.length);
    minutes.forEach((m, i) => {
      if (!cols[i]) {
        cols[i] = FAMILIES.map((f) => svg("rect", { class: "fam-" + f }));
        chart.append(...cols[i]);
      }
      let y = H;
      FAMILIES.forEach((f, j) => {
        const h = ((m[f] || 0) / peak) * (H - 2);
        y -= h;
        const r = cols[i][j];
        setAttr(r, "x", (i * bw + bw * 0.1).toFixed(1));
        setAttr(r, "width", (bw * 0.8).toFixed(1));
        setAttr(r, "y", y.toFixed(1));
        setAttr(r, "height", h.toFixed(1));
      });
    });
  };
}
