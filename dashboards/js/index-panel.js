// The QĐ 766 service index (CONTRACT.md §7.6): the score of the nation (or of the
// province the board is filtered to), its group scores against their maxima, and the
// provinces ranked by score.
import { S, fmt } from "./strings.js";
import { el, setText, setAttr } from "./dom.js";

export function mountIndex(container, grid, { onPick }) {
  const title = el("h2", { class: "panel-title", text: S.indexTitle });
  const score = el("span", { class: "ix-score" });
  const of = el("span", { class: "ix-of" });
  const rank = el("span", { class: "ix-rank" });
  const groups = el("ul", { class: "ix-groups" });
  const list = el("ol", { class: "ix-list", "aria-label": S.indexTitle });
  container.append(title, el("div", { class: "ix-head" }, score, of, rank), groups, list);
  const groupRows = new Map();
  const items = new Map();
  const shorts = new Map(grid.provinces.map((p) => [p.code, p.short]));

  return function update(st) {
    container.hidden = !st.indexOn;
    const row = st.index.get(st.province || "");
    const provinces = [...st.index.entries()].filter(([c]) => c).map(([, r]) => r);
    provinces.sort((a, b) => (a.rank ?? 1e9) - (b.rank ?? 1e9));
    if (!row) {
      setText(score, "—");
      setText(of, S.indexNone);
      setText(rank, "");
    } else {
      setText(score, fmt.one(row.score));
      setText(of, S.indexOf(fmt.one(row.measured_max)));
      setText(rank, row.rank ? S.indexRank(row.rank, provinces.length) : "");
      for (const g of row.groups || []) {
        let r = groupRows.get(g.id);
        if (!r) {
          const fillBar = el("span", { class: "ix-fill" });
          r = { li: el("li"), name: el("span", { class: "ix-gname" }), val: el("span", { class: "ix-gval" }), fillBar };
          r.li.append(r.name, el("span", { class: "ix-bar", "aria-hidden": "true" }, fillBar), r.val);
          groups.append(r.li);
          groupRows.set(g.id, r);
        }
        setText(r.name, g.name_vi);
        setText(r.val, `${fmt.one(g.score)}/${fmt.one(g.max)}`);
        r.fillBar.style.width = `${g.max ? Math.min(100, (100 * g.score) / g.max) : 0}%`;
      }
    }
    provinces.forEach((r, i) => {
      const code = r.province_code;
      let it = items.get(code);
      if (!it) {
        const rk = el("span", { class: "rk" });
        const sc = el("span", { class: "sc" });
        const b = el("button", { type: "button" }, rk, el("span", { class: "nm", text: shorts.get(code) || code }), sc);
        b.addEventListener("click", () => onPick(code));
        it = { li: el("li", { "data-code": code }, b), rk, sc, b };
        items.set(code, it);
      }
      setText(it.rk, String(r.rank ?? i + 1));
      setText(it.sc, fmt.one(r.score));
      setAttr(it.b, "aria-label", `${r.rank ?? i + 1}. ${shorts.get(code) || code}: ${fmt.one(r.score)}`);
      it.li.classList.toggle("selected", st.province === code);
      if (list.children[i] !== it.li) list.insertBefore(it.li, list.children[i] || null);
    });
  };
}
