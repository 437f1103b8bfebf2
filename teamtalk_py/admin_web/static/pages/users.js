// Users: search and page through the directory, create, edit the profile, reset the
// password, disable or enable, kick every session, delete.

import * as api from "../api.js";
import { badge, button, clear, day, debounce, h, header, plural, table, toast, when } from "../dom.js";
import { confirmDialog, formDialog } from "../forms.js";

const PAGE = 25;
const SEX = [
  ["0", "Not given"],
  ["1", "Male"],
  ["2", "Female"],
];

function departmentOptions(departments, none = "No department") {
  return [["0", none], ...departments.map((d) => [String(d.id), d.name])];
}

export async function render(view) {
  // The filters start from the URL (the departments page links to ?department_id=N).
  const params = new URLSearchParams(location.search);
  const state = {
    q: params.get("q") || "",
    department_id: params.get("department_id") || "",
    status: params.get("status") || "",
    offset: 0,
  };
  let departments = [];
  const list = h("div", { class: "list" });
  const pager = h("div", { class: "pager" });
  const search = h("input", {
    type: "search",
    id: "user-search",
    placeholder: "Search name, nick, e-mail or phone",
    "aria-label": "Search users",
    autocomplete: "off",
  });
  const departmentFilter = h("select", { id: "user-department", "aria-label": "Department" });
  const statusFilter = h(
    "select",
    { id: "user-status", "aria-label": "Status" },
    h("option", { value: "" }, "Any status"),
    h("option", { value: "active" }, "Active"),
    h("option", { value: "disabled" }, "Disabled"),
  );

  view.append(
    header("Users", button("New user", () => createUser(), "primary")),
    h("div", { class: "toolbar" }, search, departmentFilter, statusFilter),
    list,
    pager,
  );

  async function loadDepartments() {
    departments = (await api.get("/departments")).items;
    const chosen = departmentFilter.value;
    clear(departmentFilter).append(
      h("option", { value: "" }, "Any department"),
      ...departments.map((d) => h("option", { value: String(d.id) }, d.name)),
    );
    departmentFilter.value = chosen;
  }

  function departmentName(id) {
    const d = departments.find((x) => x.id === id);
    return d ? d.name : id ? `#${id}` : "—";
  }

  // Only the latest request draws: typing fast must not leave an older answer on screen.
  let latest = 0;
  async function load() {
    const mine = ++latest;
    const [page, sessions] = await Promise.all([
      api.get(`/users${api.query({ ...state, limit: PAGE })}`),
      api.get("/sessions"),
    ]);
    if (mine !== latest) return;
    const online = new Set(sessions.items.map((s) => s.user_id));
    clear(list).append(
      h("p", { class: "count" }, plural(page.total, "user")),
      userTable(page.items, online),
    );
    const last = Math.min(page.total, state.offset + page.items.length);
    clear(pager).append(
      button("← Previous", () => turn(-PAGE), "quiet"),
      h("span", {}, page.total ? `${state.offset + 1}–${last} of ${page.total}` : ""),
      button("Next →", () => turn(PAGE), "quiet"),
    );
    pager.firstChild.disabled = state.offset === 0;
    pager.lastChild.disabled = last >= page.total;
  }

  function turn(delta) {
    state.offset = Math.max(0, state.offset + delta);
    load().catch(fail);
  }

  function fail(e) {
    toast(e.message, "error");
  }

  function userTable(users, online) {
    return table(
      [
        { label: "ID", class: "num", cell: (u) => u.id },
        {
          label: "Name",
          class: "nowrap",
          cell: (u) => [h("strong", {}, u.name), u.admin ? badge("admin", "info") : null],
        },
        { label: "Nick", cell: (u) => u.nick },
        { label: "Department", cell: (u) => departmentName(u.department_id) },
        { label: "E-mail", cell: (u) => u.email || "" },
        {
          label: "Status",
          class: "status nowrap",
          cell: (u) => [
            u.disabled ? badge("disabled", "bad") : badge("active", "ok"),
            online.has(u.id) ? badge("online", "live") : null,
          ],
        },
        { label: "Created", class: "muted nowrap", cell: (u) => h("span", { title: when(u.created) }, day(u.created)) },
        {
          label: "",
          class: "row-actions",
          cell: (u) => [
            button("Edit", () => editUser(u), "small"),
            button("Reset password", () => resetPassword(u), "small"),
            u.disabled
              ? button("Enable", () => setDisabled(u, false), "small")
              : button("Disable", () => setDisabled(u, true), "small warn"),
            button("Kick", () => kick(u), "small"),
            button("Delete", () => remove(u), "small danger"),
          ],
        },
      ],
      users,
      {
        id: "users-table",
        empty: "No users match.",
        rowAttrs: (u) => ({ dataset: { userId: u.id, userName: u.name } }),
      },
    );
  }

  function createUser() {
    formDialog({
      title: "New user",
      submitLabel: "Create user",
      fields: [
        { name: "name", label: "Login name", required: true, maxlength: 64 },
        { name: "nick", label: "Display name", maxlength: 64 },
        { name: "password", label: "Password", type: "password", required: true, autocomplete: "new-password" },
        { name: "department_id", label: "Department", type: "select", options: departmentOptions(departments), value: departments[0] ? departments[0].id : "0", numeric: true },
        { name: "email", label: "E-mail", type: "email" },
        { name: "phone", label: "Phone" },
        { name: "admin", label: "Can sign in to this console", type: "checkbox" },
      ],
      submit: async (v) => {
        const body = { name: v.name.trim(), password: v.password, nick: v.nick.trim() || v.name.trim(), department_id: v.department_id, admin: v.admin };
        if (v.email) body.email = v.email;
        if (v.phone) body.phone = v.phone;
        const user = await api.post("/users", body);
        toast(`Created ${user.name} (id ${user.id}).`);
        await load();
      },
    });
  }

  function editUser(u) {
    formDialog({
      title: `Edit ${u.name}`,
      fields: [
        { name: "nick", label: "Display name", value: u.nick, maxlength: 64 },
        { name: "department_id", label: "Department", type: "select", options: departmentOptions(departments), value: u.department_id, numeric: true },
        { name: "email", label: "E-mail", type: "email", value: u.email },
        { name: "phone", label: "Phone", value: u.phone },
        { name: "sex", label: "Sex", type: "select", options: SEX, value: u.sex, numeric: true },
        { name: "sign_info", label: "Signature", value: u.sign_info },
        { name: "admin", label: "Can sign in to this console", type: "checkbox", value: u.admin },
      ],
      submit: async (v) => {
        const changes = {};
        for (const [key, value] of Object.entries(v)) {
          if (value !== u[key]) changes[key] = value;
        }
        if (!Object.keys(changes).length) return;
        await api.patch(`/users/${u.id}`, changes);
        toast(`Saved ${u.name}.`);
        await load();
      },
    });
  }

  function resetPassword(u) {
    formDialog({
      title: `Reset the password of ${u.name}`,
      note: "Their sessions end; they sign in again with the new password.",
      submitLabel: "Set password",
      fields: [
        { name: "password", label: "New password", type: "password", required: true, autocomplete: "new-password" },
        { name: "again", label: "Repeat it", type: "password", required: true, autocomplete: "new-password" },
      ],
      submit: async (v) => {
        if (v.password !== v.again) throw new Error("The two passwords differ.");
        await api.patch(`/users/${u.id}`, { password: v.password });
        toast(`New password set for ${u.name}.`);
      },
    });
  }

  function setDisabled(u, disabled) {
    const run = async () => {
      await api.patch(`/users/${u.id}`, { disabled });
      toast(disabled ? `${u.name} is disabled and signed out.` : `${u.name} may log in again.`);
      await load();
    };
    if (!disabled) {
      run().catch(fail);
      return;
    }
    confirmDialog({
      title: `Disable ${u.name}?`,
      message: "They are signed out everywhere and cannot log in until enabled again.",
      confirmLabel: "Disable",
      action: run,
    });
  }

  function kick(u) {
    confirmDialog({
      title: `Kick ${u.name}?`,
      message: "Every session of this user ends now; they may log in again.",
      confirmLabel: "Kick",
      action: async () => {
        await api.post(`/users/${u.id}/kick`);
        toast(`${u.name} was kicked.`);
        await load();
      },
    });
  }

  function remove(u) {
    confirmDialog({
      title: `Delete ${u.name}?`,
      message: "TeamTalk marks the user as gone: they leave the directory and cannot log in. Their messages stay.",
      confirmLabel: "Delete",
      action: async () => {
        await api.del(`/users/${u.id}`);
        toast(`${u.name} was deleted.`);
        await load();
      },
    });
  }

  const reload = () => {
    state.q = search.value.trim();
    state.offset = 0;
    load().catch(fail);
  };
  search.addEventListener("input", debounce(reload, 250));
  departmentFilter.addEventListener("change", () => {
    state.department_id = departmentFilter.value;
    reload();
  });
  statusFilter.addEventListener("change", () => {
    state.status = statusFilter.value;
    reload();
  });

  await loadDepartments();
  search.value = state.q;
  departmentFilter.value = state.department_id;
  statusFilter.value = state.status;
  await load();
}
