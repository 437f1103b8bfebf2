// The dashboard: online now, messages per minute, store totals, node states and a live
// chart of the last ten minutes, refreshed every few seconds from GET /stats and
// GET /nodes.

import * as api from "../api.js";
import { lineChart } from "../chart.js";
import { badge, bytes, clear, h, header, number, plural } from "../dom.js";
import { go } from "../nav.js";

const POLL_MS = 5000;
const SPAN = 600;
/** Samples kept while the console is open (also across visits to other pages). */
const samples = { online: [], rate: [] };

/** `messages_today` as polled over the last minute (for the rate when the server has no figure). */
const counted = [];

/**
 * Messages stored per minute: the server's figure for the last 60 s when it gives one,
 * else the growth of `messages_today` over the last minute of polls (over the time the
 * page has been open, at first), scaled to a minute; null until there are two polls of
 * the same day.
 */
function messagesPerMinute(stats, t) {
  if (typeof stats.messages_last_minute === "number") return stats.messages_last_minute;
  const last = counted[counted.length - 1];
  if (last && stats.messages_today < last.today) counted.length = 0; // a new day
  counted.push({ t, today: stats.messages_today });
  while (counted.length > 2 && counted[1].t <= t - 60) counted.shift();
  const first = counted[0];
  if (t <= first.t) return null;
  return Math.round(((stats.messages_today - first.today) * 60) / (t - first.t));
}

function remember(series, t, v) {
  if (v === null) return;
  series.push({ t, v });
  while (series.length && series[0].t < t - SPAN) series.shift();
}

function card(label, value, detail, extra = {}) {
  return h(
    "section",
    { class: "card stat", ...extra },
    h("h2", {}, label),
    h("p", { class: "value" }, value),
    h("p", { class: "detail" }, detail),
  );
}

export const STATE_KIND = { up: "ok", degraded: "warn", down: "bad" };

function nodeList(nodes) {
  if (!nodes.length) return h("p", { class: "note" }, "No nodes reported.");
  return h(
    "ul",
    { class: "node-list" },
    nodes.map((n) =>
      h(
        "li",
        { dataset: { service: n.service } },
        h("span", { class: "node-service" }, n.service),
        h("span", { class: "node-name" }, n.node || ""),
        badge(n.state, STATE_KIND[n.state] || "bad"),
      ),
    ),
  );
}

function byClientType(online) {
  const entries = Object.entries(online.by_client_type || {});
  if (!entries.length) return h("p", { class: "note" }, "Nobody is connected.");
  return h(
    "ul",
    { class: "kv" },
    entries.map(([type, count]) => h("li", {}, h("span", {}, type), h("strong", {}, number(count)))),
  );
}

export async function render(view) {
  const updated = h("span", { class: "updated" });
  const cards = h("div", { class: "cards" });
  const charts = h("div", { class: "charts" });
  const side = h("div", { class: "side" });
  view.append(
    header("Dashboard", updated),
    cards,
    h("div", { class: "dash-grid" }, h("section", { class: "card" }, h("h2", {}, "Last 10 minutes"), charts), side),
  );

  async function refresh() {
    const [stats, nodes] = await Promise.all([api.get("/stats"), api.get("/nodes")]);
    const t = stats.time || Date.now() / 1000;
    remember(samples.online, t, stats.online.users);
    const rate = messagesPerMinute(stats, t);
    remember(samples.rate, t, rate);
    clear(cards).append(
      card("Online now", number(stats.online.users), plural(stats.online.connections, "connection"), {
        id: "stat-online",
      }),
      card("Messages per minute", rate === null ? "—" : number(rate), rate === null ? "measuring…" : "over the last minute", {
        id: "stat-rate",
      }),
      card("Messages today", number(stats.messages_today), "1:1 and group", { id: "stat-today" }),
      card(
        "Users",
        number(stats.users),
        `${number(stats.disabled_users)} disabled · ${plural(stats.admins, "admin")}`,
        { id: "stat-users" },
      ),
      card("Groups", number(stats.groups), plural(stats.departments, "department"), {
        id: "stat-groups",
      }),
      card("Stored files", number(stats.stored_files), bytes(stats.stored_bytes), {
        id: "stat-files",
      }),
    );
    clear(charts).append(
      h(
        "figure",
        {},
        h("figcaption", {}, "Online users"),
        lineChart({ samples: samples.online, now: t, span: SPAN, kind: "online", title: "Online users" }),
      ),
      h(
        "figure",
        {},
        h("figcaption", {}, "Messages per minute"),
        lineChart({ samples: samples.rate, now: t, span: SPAN, kind: "rate", title: "Messages per minute" }),
      ),
    );
    const nodesLink = h("a", { href: "/admin/nodes", class: "more" }, "All nodes →");
    nodesLink.addEventListener("click", (e) => {
      e.preventDefault();
      go("/admin/nodes");
    });
    clear(side).append(
      h("section", { class: "card", id: "node-states" }, h("h2", {}, "Node states"), nodeList(nodes.items), nodesLink),
      h("section", { class: "card" }, h("h2", {}, "Online by client"), byClientType(stats.online)),
    );
    updated.textContent = `Updated ${new Date(t * 1000).toLocaleTimeString()}`;
    updated.classList.remove("stale");
  }

  await refresh();
  const timer = setInterval(() => {
    refresh().catch((e) => {
      updated.textContent = `Not updated: ${e.message}`;
      updated.classList.add("stale");
    });
  }, POLL_MS);
  return () => clearInterval(timer);
}
