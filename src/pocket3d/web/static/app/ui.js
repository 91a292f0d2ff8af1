// Small DOM helpers: h() builds elements, showError() puts an API error next to what caused it.

/** h("button", {class: "x", onclick}, "text", child…): attributes starting with "on" become listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An error box: the API's message, its hint and request id (or any Error's message). */
export function errorBox(error) {
  return h("div", { class: "error", role: "alert" },
    h("strong", {}, error.message || String(error)),
    error.hint ? h("div", { class: "hint" }, error.hint) : null,
    error.code && error.requestId ? h("div", { class: "meta" }, `${error.code} · request ${error.requestId}`) : null);
}

/** Show `error` in `slot` (an element next to what caused it); null clears it. */
export function showError(slot, error) {
  if (!error) { fill(slot); return; }
  fill(slot, errorBox(error));
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

export function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${Math.round(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export const FEATURE_NAMES = {
  mesh_generation: "Mesh", texture_generation: "Texture", segmentation: "Segmentation", auto_rigging: "Rigging",
};
