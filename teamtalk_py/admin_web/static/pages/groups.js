// Groups: every group that is not dissolved; create a fixed group with members, open one
// to add or remove members, dissolve it. Members are notified by the server as TeamTalk
// clients expect (CID_GROUP_CHANGE_MEMBER_NOTIFY).

import * as api from "../api.js";
import { badge, button, clear, h, header, plural, table, toast, when } from "../dom.js";
import { confirmDialog, formDialog, userPicker } from "../forms.js";

export async function render(view) {
  const list = h("div", { class: "list" });
  const detail = h("section", { class: "card detail", id: "group-detail", hidden: true });
  let openId = null;
  view.append(header("Groups", button("New group", () => create(), "primary")), list, detail);

  async function load() {
    const groups = (await api.get("/groups")).items;
    clear(list).append(
      table(
        [
          { label: "ID", class: "num", cell: (g) => g.id },
          { label: "Name", cell: (g) => h("strong", {}, g.name) },
          { label: "Type", cell: (g) => badge(g.type, g.type === "fixed" ? "info" : "muted") },
          { label: "Members", class: "num", cell: (g) => g.member_count },
          { label: "Created", class: "muted", cell: (g) => when(g.created) },
          {
            label: "",
            class: "row-actions",
            cell: (g) => [
              button("Members", () => open(g.id), "small"),
              button("Dissolve", () => dissolve(g), "small danger"),
            ],
          },
        ],
        groups,
        {
          empty: "No groups yet.",
          rowAttrs: (g) => ({ dataset: { groupId: g.id, groupName: g.name } }),
        },
      ),
    );
  }

  async function open(id) {
    openId = id;
    const group = await api.get(`/groups/${id}`);
    const members = group.members || [];
    clear(detail).append(
      header(
        `${group.name} · ${plural(members.length, "member")}`,
        button("Add members", () => addMembers(group), "primary"),
        button("Close", () => {
          openId = null;
          detail.hidden = true;
        }, "quiet"),
      ),
      table(
        [
          { label: "ID", class: "num", cell: (m) => m.id },
          { label: "Name", cell: (m) => [m.name || `#${m.id}`, m.id === group.creator_id ? badge("creator", "info") : null] },
          { label: "Nick", cell: (m) => m.nick || "" },
          {
            label: "",
            class: "row-actions",
            cell: (m) => button("Remove", () => removeMember(group, m), "small danger"),
          },
        ],
        members,
        { empty: "No members.", rowAttrs: (m) => ({ dataset: { memberId: m.id, memberName: m.name } }) },
      ),
    );
    detail.dataset.groupId = group.id;
    detail.hidden = false;
  }

  function create() {
    const picker = userPicker();
    formDialog({
      title: "New group",
      note: "A fixed group, as TeamTalk's admin made them. The first member you pick is its creator.",
      submitLabel: "Create group",
      fields: [
        { name: "name", label: "Name", required: true, maxlength: 64 },
        { name: "member_ids", label: "Members", type: "custom", node: picker.node, value: picker.value },
      ],
      submit: async (v) => {
        if (!v.member_ids.length) throw new Error("Pick at least one member.");
        const group = await api.post("/groups", {
          name: v.name.trim(),
          member_ids: v.member_ids,
          creator_id: v.member_ids[0],
        });
        toast(`Created ${group.name} with ${group.member_count} members.`);
        await load();
        await open(group.id);
      },
    });
  }

  function addMembers(group) {
    const picker = userPicker({ exclude: (group.members || []).map((m) => m.id) });
    formDialog({
      title: `Add members to ${group.name}`,
      submitLabel: "Add",
      fields: [{ name: "user_ids", label: "Users", type: "custom", node: picker.node, value: picker.value }],
      submit: async (v) => {
        if (!v.user_ids.length) throw new Error("Pick at least one user.");
        await api.post(`/groups/${group.id}/members`, { user_ids: v.user_ids });
        toast(`Added ${v.user_ids.length} to ${group.name}.`);
        await Promise.all([load(), open(group.id)]);
      },
    });
  }

  function removeMember(group, member) {
    confirmDialog({
      title: `Remove ${member.name} from ${group.name}?`,
      message: "The group's members are told at once.",
      confirmLabel: "Remove",
      action: async () => {
        await api.del(`/groups/${group.id}/members/${member.id}`);
        toast(`${member.name} left ${group.name}.`);
        await load();
        try {
          await open(group.id);
        } catch (e) {
          if (e.status !== 404) throw e;
          detail.hidden = true; // the last member out dissolves the group
        }
      },
    });
  }

  function dissolve(group) {
    confirmDialog({
      title: `Dissolve ${group.name}?`,
      message: "Every member is removed and told; the group's history stays in the store.",
      confirmLabel: "Dissolve",
      action: async () => {
        await api.del(`/groups/${group.id}`);
        toast(`${group.name} was dissolved.`);
        if (openId === group.id) detail.hidden = true;
        await load();
      },
    });
  }

  await load();
}
