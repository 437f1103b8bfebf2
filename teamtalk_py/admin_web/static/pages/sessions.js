// Online: every logged-in connection across the cluster (user, client type, node, since,
// address), refreshed every few seconds; kick one connection or every session of a user.

import * as api from "../api.js";
import { button, clear, h, header, plural, since, table, toast, when } from "../dom.js";
import { confirmDialog } from "../forms.js";

const POLL_MS = 3000;

export async function render(view) {
  const list = h("div", { class: "list" });
  const updated = h("span", { class: "updated" });
  view.append(header("Online", updated), list);

  async function load() {
    const sessions = (await api.get("/sessions")).items;
    const users = new Set(sessions.map((s) => s.user_id));
    clear(list).append(
      h("p", { class: "count" }, `${plural(users.size, "user")} on ${plural(sessions.length, "connection")}`),
      table(
        [
          { label: "User", cell: (s) => h("strong", {}, s.user_name || `#${s.user_id}`) },
          { label: "User ID", class: "num", cell: (s) => s.user_id },
          { label: "Client", cell: (s) => s.client_type },
          { label: "Node", cell: (s) => s.node },
          {
            label: "Since",
            cell: (s) => (s.since ? h("span", { title: when(s.since) }, since(s.since)) : "—"),
          },
          { label: "Address", cell: (s) => s.address || "—" },
          {
            label: "",
            class: "row-actions",
            cell: (s) => button("Kick", () => kick(s), "small danger"),
          },
        ],
        sessions,
        {
          empty: "Nobody is online.",
          rowAttrs: (s) => ({ dataset: { sessionId: s.id, userName: s.user_name || "" } }),
        },
      ),
    );
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  function kick(s) {
    const name = s.user_name || `user ${s.user_id}`;
    confirmDialog({
      title: `Kick ${name}?`,
      message: `Their ${s.client_type} connection ends now; they may log in again.`,
      confirmLabel: "Kick",
      action: async () => {
        await api.post(`/sessions/${encodeURIComponent(s.id)}/kick`);
        toast(`${name} (${s.client_type}) was kicked.`);
        await load();
      },
    });
  }

  await load();
  const timer = setInterval(() => {
    // A dialog open over the list keeps it still, so the row being acted on stays put.
    if (document.querySelector("dialog[open]")) return;
    load().catch((e) => {
      updated.textContent = `Not updated: ${e.message}`;
    });
  }, POLL_MS);
  return () => clearInterval(timer);
}
