// The 34 provinces ranked by the selected KPI, best first (highest, or lowest for a
// KPI whose target is a maximum; ties by code), with the gap to each province's
// target and the change in rank since the end of yesterday. Rows are kept by code
// and moved, not rebuilt.
import { S, fmt } from "./strings.js";
import { el, setText, setAttr, statusOf, SYMBOL, statusWord, kpiName } from "./dom.js";

/** The order of the ranking: provinces with a value, best first, ties by code. */
export function rankOrder(rows, direction) {
  const sign = direction === "at_most" ? 1 : -1;
  return rows
    .filter((r) => r.value != null)
    .sort((a, b) => sign * (a.value - b.value) || (a.code < b.code ? -1 : a.code > b.code ? 1 : 0));
}

export function mountRanking(container, grid, { onPick }) {
  const title = el("h2", { class: "panel-title", id: "ranking-title" });
  const list = el("ol", { class: "ranking", "aria-labelledby": "ranking-title" });
  container.append(title, list);
  const rows = new Map();
  for (const p of grid.provinces) {
    const parts = {
      rank: el("span", { class: "rk" }),
      sym: el("span", { class: "sym" }),
      name: el("span", { class: "nm", text: p.short }),
      value: el("span", { class: "vl" }),
      gap: el("span", { class: "gp" }),
      move: el("span", { class: "mv" }),
    };
    const li = el("li", { "data-code": p.code },
      el("button", { type: "button", class: "rank-row" }, parts.rank, parts.sym, parts.name, parts.value, parts.gap, parts.move));
    li.firstChild.addEventListener("click", () => onPick(p.code));
    rows.set(p.code, { li, ...parts, st: "none" });
  }
  const shorts = new Map(grid.provinces.map((p) => [p.code, p.short]));

  return function update(st) {
    const nat = st.kpi && st.value(st.kpi, "");
    setText(title, nat ? `${S.rankingTitle} · ${kpiName(nat)}` : S.rankingTitle);
    const all = grid.provinces.map((p) => ({ code: p.code, k: st.value(st.kpi, p.code) }));
    const ranked = rankOrder(all.map((r) => ({ code: r.code, value: r.k && r.k.value, k: r.k })), nat && nat.direction);
    const rest = all.filter((r) => !r.k || r.k.value == null).sort((a, b) => (a.code < b.code ? -1 : 1));
    const order = [...ranked, ...rest];
    order.forEach((r, i) => {
      const row = rows.get(r.code);
      const k = r.k;
      const s = statusOf(k, st.settings.near_target_points);
      const ranked = k && k.value != null;
      if (s !== row.st) {
        row.li.classList.remove("st-" + row.st);
        row.li.classList.add("st-" + s);
        row.st = s;
      }
      setText(row.rank, ranked ? String(i + 1) : "");
      setText(row.sym, SYMBOL[s]);
      setText(row.value, !k ? "—" : k.kind === "gauge" ? fmt.int(k.value) : fmt.pct(k.value));
      setText(row.gap, !ranked ? "" : k.kind === "gauge" ? fmt.signedInt(k.value - k.target) : fmt.points((k.value - k.target) * 100));
      const before = st.rankYesterday.get(r.code);
      let move = "";
      let moveLabel = "";
      if (ranked && before != null) {
        const d = before - (i + 1);
        move = d > 0 ? `↑${d}` : d < 0 ? `↓${-d}` : "=";
        moveLabel = d > 0 ? S.rankUp(d) : d < 0 ? S.rankDown(-d) : S.rankSame;
      } else if (ranked && st.rankYesterday.size) {
        move = "•";
        moveLabel = S.rankNew;
      }
      setText(row.move, move);
      row.move.className = "mv" + (move.startsWith("↑") ? " up" : move.startsWith("↓") ? " down" : "");
      setAttr(row.li.firstChild, "aria-label",
        `${ranked ? i + 1 + ". " : ""}${shorts.get(r.code)}: ${row.value.textContent}, ${statusWord(s)}${moveLabel ? ", " + moveLabel : ""}`);
      row.li.classList.toggle("selected", st.province === r.code);
      if (list.children[i] !== row.li) list.insertBefore(row.li, list.children[i] || null);
    });
  };
}
