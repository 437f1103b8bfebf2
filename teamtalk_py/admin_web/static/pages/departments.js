// Departments: the company tree with member counts; create, rename or move, delete an
// empty one. Clients see changes at their next directory sync, as in TeamTalk.

import * as api from "../api.js";
import { button, clear, h, header, table, toast } from "../dom.js";
import { confirmDialog, formDialog } from "../forms.js";
import { go } from "../nav.js";

/** Departments in tree order, each with its depth (parents before children). */
export function treeOrder(departments) {
  const children = new Map();
  const ids = new Set(departments.map((d) => d.id));
  for (const d of departments) {
    const parent = ids.has(d.parent_id) ? d.parent_id : 0;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(d);
  }
  const out = [];
  const seen = new Set();
  const walk = (parent, depth) => {
    const kids = (children.get(parent) || []).sort(
      (a, b) => b.priority - a.priority || a.name.localeCompare(b.name),
    );
    for (const d of kids) {
      if (seen.has(d.id)) continue;
      seen.add(d.id);
      out.push({ ...d, depth });
      walk(d.id, depth + 1);
    }
  };
  walk(0, 0);
  for (const d of departments) if (!seen.has(d.id)) out.push({ ...d, depth: 0 });
  return out;
}

export async function render(view) {
  const list = h("div", { class: "list" });
  let departments = [];
  view.append(header("Departments", button("New department", () => edit(null), "primary")), list);

  async function load() {
    departments = (await api.get("/departments")).items;
    const byId = new Map(departments.map((d) => [d.id, d]));
    clear(list).append(
      table(
        [
          { label: "ID", class: "num", cell: (d) => d.id },
          {
            label: "Name",
            cell: (d) => h("span", { class: `tree depth-${Math.min(d.depth, 6)}` }, d.name),
          },
          { label: "Parent", cell: (d) => (byId.get(d.parent_id) || {}).name || "—" },
          { label: "Priority", class: "num", cell: (d) => d.priority },
          {
            label: "Members",
            class: "num",
            cell: (d) => {
              const link = h("a", { href: `/admin/users?department_id=${d.id}` }, String(d.member_count));
              link.addEventListener("click", (e) => {
                e.preventDefault();
                go(`/admin/users?department_id=${d.id}`);
              });
              return link;
            },
          },
          {
            label: "",
            class: "row-actions",
            cell: (d) => [
              button("Edit", () => edit(d), "small"),
              Object.assign(button("Delete", () => remove(d), "small danger"), {
                disabled: d.member_count > 0,
                title: d.member_count > 0 ? "Move or delete its members first" : "",
              }),
            ],
          },
        ],
        treeOrder(departments),
        {
          empty: "No departments yet. Users need one to appear in clients' directories.",
          rowAttrs: (d) => ({ dataset: { departmentId: d.id, departmentName: d.name } }),
        },
      ),
    );
  }

  function edit(d) {
    const parents = [["0", "None (top level)"]].concat(
      departments.filter((x) => !d || x.id !== d.id).map((x) => [String(x.id), x.name]),
    );
    formDialog({
      title: d ? `Edit ${d.name}` : "New department",
      submitLabel: d ? "Save" : "Create department",
      fields: [
        { name: "name", label: "Name", value: d ? d.name : "", required: true, maxlength: 64 },
        { name: "parent_id", label: "Parent", type: "select", options: parents, value: d ? d.parent_id : 0, numeric: true },
        { name: "priority", label: "Priority (higher first)", type: "number", value: d ? d.priority : 0, min: 0 },
      ],
      submit: async (v) => {
        const body = { name: v.name.trim(), parent_id: v.parent_id, priority: v.priority };
        if (d) {
          await api.patch(`/departments/${d.id}`, body);
          toast(`Saved ${body.name}.`);
        } else {
          const created = await api.post("/departments", body);
          toast(`Created ${created.name} (id ${created.id}).`);
        }
        await load();
      },
    });
  }

  function remove(d) {
    confirmDialog({
      title: `Delete ${d.name}?`,
      message: "Only an empty department can be deleted.",
      confirmLabel: "Delete",
      action: async () => {
        await api.del(`/departments/${d.id}`);
        toast(`${d.name} was deleted.`);
        await load();
      },
    });
  }

  await load();
}
