// Alerts: active ones first (firing before pending, by severity, longest first),
// then the recently resolved, newest first; live; capped, with "+N nữa".
import { S, duration } from "./strings.js";
import { el, setText, kpiName } from "./dom.js";

const SEVERITY = { critical: 0, warning: 1, info: 2 };
const STATE = { firing: 0, pending: 1 };

export function mountAlerts(container, { max }) {
  const title = el("h2", { class: "panel-title", text: S.alertsTitle });
  const count = el("span", { class: "count" });
  title.append(" ", count);
  const list = el("ul", { class: "alerts", "aria-live": "polite" });
  const more = el("div", { class: "more" });
  container.append(title, list, more);
  const items = new Map();

  return function update(st) {
    const now = Date.now();
    const inScope = (a) => !st.province || a.scope === "province:" + st.province;
    const active = [...st.alerts.values()]
      .filter((a) => (a.state === "firing" || a.state === "pending") && inScope(a))
      .sort((a, b) =>
        (STATE[a.state] - STATE[b.state]) ||
        ((SEVERITY[a.severity] ?? 3) - (SEVERITY[b.severity] ?? 3)) ||
        (Date.parse(a.firing_since || a.since) - Date.parse(b.firing_since || b.since)));
    const resolved = [...st.alerts.values()]
      .filter((a) => a.state !== "firing" && a.state !== "pending" && a.resolved_at && inScope(a))
      .filter((a) => now - Date.parse(a.resolved_at) < 6 * 3600e3)
      .sort((a, b) => Date.parse(b.resolved_at) - Date.parse(a.resolved_at));
    const all = [...active, ...resolved];
    const cap = max;
    const shown = all.slice(0, cap);
    setText(count, active.length ? `(${active.length})` : "");
    const keep = new Set();
    shown.forEach((a, i) => {
      const key = a.rule + "|" + a.scope;
      keep.add(key);
      let it = items.get(key);
      if (!it) {
        it = { li: el("li"), sev: el("span", { class: "sev" }), what: el("span", { class: "what" }), where: el("span", { class: "where" }), when: el("span", { class: "when" }) };
        it.li.append(it.sev, el("span", { class: "body" }, it.what, it.where, it.when));
        items.set(key, it);
      }
      const live = a.state === "firing" || a.state === "pending";
      it.li.className = `alert ${live ? "sev-" + (a.severity || "info") : "resolved"} ${a.state}`;
      it.li.dataset.rule = a.rule;
      it.li.dataset.scope = a.scope;
      it.li.dataset.state = a.state;
      const sym = !live ? "✓" : a.severity === "critical" ? "■" : a.severity === "warning" ? "▲" : "●";
      const stateWord = a.state === "firing" ? S.alertFiring : a.state === "pending" ? S.alertPending : S.alertResolved;
      setText(it.sev, `${sym} ${live ? S.severity[a.severity] || a.severity || "" : stateWord}`);
      const k = st.value(a.kpi, "");
      setText(it.what, k ? kpiName(k) : a.kpi || a.rule);
      const code = a.scope && a.scope.startsWith("province:") ? a.scope.slice(9) : null;
      setText(it.where, code ? st.shortName(code) : S.national);
      const since = live ? Date.parse(a.firing_since || a.since) : Date.parse(a.resolved_at);
      const ago = duration((now - since) / 1000);
      setText(it.when, live ? `${a.state === "pending" ? S.alertPending + " · " : ""}${S.ago(ago)}` : S.resolvedAgo(ago));
      if (list.children[i] !== it.li) list.insertBefore(it.li, list.children[i] || null);
    });
    for (const [key, it] of items) {
      if (!keep.has(key)) {
        it.li.remove();
        items.delete(key);
      }
    }
    if (!all.length) {
      if (!list.querySelector(".none")) list.append(el("li", { class: "none", text: S.alertsNone }));
    } else list.querySelector(".none")?.remove();
    // What does not fit in the panel is counted in "+N nữa", never cut in half.
    let hidden = all.length - shown.length;
    const bottom = list.clientHeight;
    for (const li of list.children) {
      li.hidden = false;
      if (li.offsetTop - list.offsetTop + li.offsetHeight > bottom) {
        li.hidden = true;
        hidden += 1;
      }
    }
    setText(more, hidden > 0 ? S.more(hidden) : "");
  };
}
