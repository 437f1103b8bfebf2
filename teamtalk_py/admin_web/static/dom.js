// Small DOM helpers for the console. Every piece of text is set with textContent (never
// innerHTML), so names and nicknames typed by users can never become markup, and nothing
// here needs an inline script or style (the Content-Security-Policy forbids both).

const SVG_NS = "http://www.w3.org/2000/svg";

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function setAttributes(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key === "value" && "value" in node) {
      node.value = value;
    } else if (key === "checked" || key === "selected" || key === "disabled") {
      node[key] = Boolean(value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

/** An HTML element: h("button", {class: "primary", onClick: f}, "Save"). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attrs);
  append(node, children);
  return node;
}

/** An SVG element (the dashboard's chart). */
export function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attrs);
  append(node, children);
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

/** A short message in the corner that goes away by itself. */
export function toast(message, kind = "ok") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast ${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/** A page heading with actions on the right. */
export function header(title, ...actions) {
  return h("div", { class: "page-head" }, h("h1", {}, title), h("div", { class: "actions" }, actions));
}

/** A table: columns are {label, cell(row) -> node|text, class?}. */
export function table(columns, rows, { empty = "Nothing here yet.", rowAttrs = () => ({}), id } = {}) {
  const head = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.class }, c.label))));
  const body = h(
    "tbody",
    {},
    rows.length
      ? rows.map((row) =>
          h("tr", rowAttrs(row), columns.map((c) => h("td", { class: c.class }, c.cell(row)))),
        )
      : h("tr", {}, h("td", { class: "empty", colspan: columns.length }, empty)),
  );
  return h("div", { class: "table-wrap" }, h("table", { id }, head, body));
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind}` }, text);
}

export function button(label, onClick, kind = "") {
  return h("button", { type: "button", class: kind, onClick }, label);
}

const TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** A Unix time as local date and time ("" when unknown). */
export function when(seconds) {
  return seconds ? TIME.format(new Date(seconds * 1000)) : "";
}

const DAY = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

/** A Unix time as a local date ("" when unknown). */
export function day(seconds) {
  return seconds ? DAY.format(new Date(seconds * 1000)) : "";
}

/** "3 min ago" style, for session start times. */
export function since(seconds, now = Date.now() / 1000) {
  if (!seconds) return "";
  const d = Math.max(0, now - seconds);
  if (d < 60) return "just now";
  if (d < 3600) return `${Math.floor(d / 60)} min ago`;
  if (d < 86400) return `${Math.floor(d / 3600)} h ago`;
  return `${Math.floor(d / 86400)} d ago`;
}

export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n || 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function number(n) {
  return new Intl.NumberFormat().format(n || 0);
}

/** "1 user", "3 users". */
export function plural(n, word) {
  return `${number(n)} ${word}${n === 1 ? "" : "s"}`;
}

/** Calls fn at most once per `ms` of quiet (the users page's search box). */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
