// Small DOM and SVG helpers, and the board's status rule. Server strings are only
// ever set as text, never as HTML.
import { S } from "./strings.js";

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

const NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

/** Sets text only when it changed (no needless layout work). */
export function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

export function setAttr(e, name, value) {
  if (e.getAttribute(name) !== String(value)) e.setAttribute(name, value);
}

/**
 * ok | near | below | none. "near" (sát ngưỡng): below the target by at most
 * `nearPoints` percentage points (ratios only; a count is on target or not).
 */
export function statusOf(k, nearPoints) {
  if (!k || k.value == null) return "none";
  const atMost = k.direction === "at_most";
  const ok = atMost ? k.value <= k.target : k.value >= k.target;
  if (ok) return "ok";
  if (k.kind !== "gauge" && Math.abs(k.value - k.target) * 100 <= nearPoints + 1e-9) return "near";
  return "below";
}

export const SYMBOL = { ok: "✓", near: "◆", below: "▼", none: "–" };

export function statusWord(st) {
  return S.status[st];
}

/** The KPI's name in the label language. */
export function kpiName(k) {
  return (S.lang === "en" && k.name_en) || k.name_vi;
}
