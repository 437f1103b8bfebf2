// Nodes: the services this process hosts and the msg nodes of the rest of the cluster,
// with their state, links, load and version.

import * as api from "../api.js";
import { badge, clear, h, header, table } from "../dom.js";
import { STATE_KIND } from "./dashboard.js";

const POLL_MS = 5000;

function pairs(object, render) {
  const entries = Object.entries(object || {});
  if (!entries.length) return "—";
  return h("ul", { class: "pairs" }, entries.map(([k, v]) => h("li", {}, h("span", {}, k.replaceAll("_", " ")), render(v))));
}

const LINK_KIND = { up: "ok", connected: "ok", degraded: "warn", down: "bad" };

export async function render(view) {
  const list = h("div", { class: "list" });
  const updated = h("span", { class: "updated" });
  view.append(header("Nodes", updated), list);

  async function load() {
    const nodes = (await api.get("/nodes")).items;
    clear(list).append(
      table(
        [
          { label: "Service", cell: (n) => h("strong", {}, n.service) },
          { label: "Node", cell: (n) => n.node || "—" },
          { label: "State", cell: (n) => badge(n.state, STATE_KIND[n.state] || "bad") },
          { label: "Where", cell: (n) => (n.local ? "this process" : "another process") },
          { label: "Load", cell: (n) => pairs(n.load, (v) => h("strong", {}, v === null ? "—" : String(v))) },
          { label: "Links", cell: (n) => pairs(n.links, (v) => badge(String(v), LINK_KIND[v] || "warn")) },
          { label: "Version", cell: (n) => n.version || "—" },
        ],
        nodes,
        {
          empty: "No nodes reported.",
          rowAttrs: (n) => ({ dataset: { service: n.service, state: n.state } }),
        },
      ),
    );
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  await load();
  const timer = setInterval(() => load().catch((e) => {
    updated.textContent = `Not updated: ${e.message}`;
  }), POLL_MS);
  return () => clearInterval(timer);
}
