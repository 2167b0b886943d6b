// The header: agency name, date and clock in Vietnam time, the period, the province
// filter, the KPI that colours the map, the connection, "Số liệu đến <as_of>" and the
// stale badge.
import { S, time, duration } from "./strings.js";
import { el, setText, setAttr, kpiName } from "./dom.js";

export function mountHeader(container, { title, onPeriod, onKpi, onClear }) {
  const h1 = el("h1", { text: title });
  const sub = el("div", { class: "subtitle", text: S.subtitle });
  const clock = el("div", { class: "clock" });
  const date = el("div", { class: "date" });
  const periods = el("div", { class: "periods control", role: "group", "aria-label": S.periodLabel });
  const periodNow = el("span", { class: "period-now" });
  const buttons = new Map();
  for (const p of ["today", "mtd", "ytd"]) {
    const b = el("button", { type: "button", "data-period": p, text: S.period[p], "aria-pressed": "false" });
    b.addEventListener("click", () => onPeriod(p));
    periods.append(b);
    buttons.set(p, b);
  }
  const select = el("select", { class: "kpi-select control", "aria-label": S.kpiSelect });
  select.addEventListener("change", () => onKpi(select.value));
  const filter = el("span", { class: "filter" });
  const clear = el("button", { type: "button", class: "clear control", text: S.clearFilter });
  clear.addEventListener("click", onClear);
  const conn = el("span", { class: "conn", role: "status" });
  const asOf = el("span", { class: "as-of" });
  const stale = el("span", { class: "stale", text: "⚠ " + S.stale, hidden: "" });
  container.append(
    el("div", { class: "brand" }, h1, sub),
    el("div", { class: "where" }, periodNow, periods, filter, clear, select),
    el("div", { class: "status-box" }, el("div", { class: "line" }, conn, stale), asOf),
    el("div", { class: "time" }, clock, date),
  );
  const tickClock = () => {
    const now = new Date();
    setText(clock, time.clock(now));
    setText(date, time.date(now));
  };
  tickClock();
  setInterval(tickClock, 1000);

  return function update(st) {
    for (const [p, b] of buttons) setAttr(b, "aria-pressed", String(st.period === p));
    setText(periodNow, S.period[st.period]);
    setText(filter, S.filterOn(st.province ? st.shortName(st.province) : S.national));
    clear.hidden = !st.province;
    if (select.options.length !== st.catalog.length) {
      select.replaceChildren(...st.catalog.map((id) => el("option", { value: id, text: kpiName(st.value(id, "") || { name_vi: id }) })));
    }
    if (select.value !== st.kpi) select.value = st.kpi || "";
    conn.className = "conn " + st.conn;
    setText(conn, (st.conn === "live" ? "● " : st.conn === "connecting" ? "◌ " : "✕ ") + S.conn[st.conn]);
    setText(asOf, st.asOf ? S.asOf(time.stamp(new Date(st.asOf))) : S.asOfNone);
    const quiet = (Date.now() - st.lastUpdate) / 1000;
    const isStale = quiet > st.settings.stale_after_secs;
    stale.hidden = !isStale;
    setAttr(stale, "title", S.staleTitle(duration(quiet)));
  };
}
