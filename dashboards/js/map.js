// The 34 provinces as a tile-grid map (dashboards/tile-grid.json, north at the top),
// coloured by the selected KPI's status in each province, with the value, and the
// Hoàng Sa and Trường Sa markers. Clicking a tile filters the board to it.
import { S, fmt } from "./strings.js";
import { svg, setText, setAttr, statusOf, SYMBOL, statusWord, kpiName } from "./dom.js";

const CW = 100; // cell width in viewBox units
const CH = 84; // cell height
const GAP = 5;

export function mountMap(container, grid, { onPick }) {
  const cols = grid.cols;
  const box = svg("svg", {
    class: "tilemap",
    viewBox: `0 0 ${cols * CW} ${grid.rows * CH}`,
    role: "group",
    "aria-label": S.mapTitle,
  });
  const cells = new Map();
  for (const p of grid.provinces) {
    const x = p.col * CW + GAP / 2;
    const y = p.row * CH + GAP / 2;
    const rect = svg("rect", { x, y, width: CW - GAP, height: CH - GAP, rx: 6, class: "cell st-none" });
    const name = svg("text", { x: x + 6, y: y + 27, class: "cell-name", text: p.short });
    // Long names are condensed to the cell's width rather than cut.
    if (p.short.length > 8) name.setAttribute("textLength", CW - GAP - 12), name.setAttribute("lengthAdjust", "spacingAndGlyphs");
    const value = svg("text", { x: x + 6, y: y + 60, class: "cell-value", text: "—" });
    const g = svg("g", { class: "prov", "data-code": p.code, tabindex: "0", role: "button" }, rect, name, value);
    g.addEventListener("click", () => onPick(p.code));
    g.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        onPick(p.code);
      }
    });
    box.append(g);
    cells.set(p.code, { g, rect, name, value, p, st: "none" });
  }
  for (const isl of grid.islands || []) {
    // In the sea east of the coast: the last column is free at their rows.
    const cx = Math.min(isl.col, cols - 1) * CW + CW / 2;
    const cy = isl.row * CH;
    const dots = [[-14, -6], [0, 4], [12, -8], [-4, -16], [16, 6]].map(([dx, dy]) =>
      svg("circle", { cx: cx + dx, cy: cy + dy, r: 4, class: "island" }));
    const label = S.islands[isl.id] || isl.name_vi;
    box.append(svg("g", { class: "islands", role: "img", "aria-label": S.lang === "en" ? isl.name_en : isl.name_vi },
      ...dots, svg("text", { x: cx, y: cy + 30, class: "island-name", "text-anchor": "middle", text: label })));
  }
  container.append(box);

  return function update(st) {
    for (const [code, c] of cells) {
      const k = st.kpi && st.value(st.kpi, code);
      const s = statusOf(k, st.settings.near_target_points);
      if (s !== c.st) {
        c.rect.classList.remove("st-" + c.st);
        c.rect.classList.add("st-" + s);
        c.st = s;
      }
      const v = k ? (k.kind === "gauge" ? fmt.int(k.value) : fmt.pct(k.value)) : "—";
      setText(c.value, s === "none" ? v : `${SYMBOL[s]} ${v}`);
      setAttr(c.g, "aria-label", `${c.p.short}: ${v}, ${statusWord(s)}`);
      setAttr(c.g, "aria-pressed", String(st.province === code));
      c.g.classList.toggle("selected", st.province === code);
      c.g.classList.toggle("dim", !!st.province && st.province !== code);
    }
    const k = st.kpi && st.value(st.kpi, "");
    box.dataset.kpi = st.kpi || "";
    if (k) setAttr(box, "aria-label", `${S.mapTitle}: ${kpiName(k)}`);
  };
}
