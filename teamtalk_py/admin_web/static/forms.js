// Dialogs: a form that stays open and says what the server refused, a confirmation, and
// a user picker (search by name, pick several) for group members.

import * as api from "./api.js";
import { button, clear, h } from "./dom.js";

function field(spec) {
  const id = `f-${spec.name}`;
  let input;
  if (spec.type === "select") {
    input = h(
      "select",
      { id, name: spec.name },
      spec.options.map(([value, label]) =>
        h("option", { value, selected: String(value) === String(spec.value ?? "") }, label),
      ),
    );
  } else if (spec.type === "checkbox") {
    input = h("input", { id, name: spec.name, type: "checkbox", checked: spec.value });
    return h("label", { class: "check" }, input, spec.label);
  } else if (spec.type === "custom") {
    return h("div", { class: "field" }, h("span", { class: "label" }, spec.label), spec.node);
  } else {
    input = h("input", {
      id,
      name: spec.name,
      type: spec.type || "text",
      value: spec.value ?? "",
      required: spec.required,
      autocomplete: spec.autocomplete || "off",
      minlength: spec.minlength,
      maxlength: spec.maxlength,
      min: spec.min,
      placeholder: spec.placeholder,
    });
  }
  return h("div", { class: "field" }, h("label", { for: id }, spec.label), input);
}

function values(form, fields) {
  const out = {};
  for (const spec of fields) {
    if (spec.type === "custom") {
      out[spec.name] = spec.value();
      continue;
    }
    const input = form.elements[spec.name];
    if (spec.type === "checkbox") out[spec.name] = input.checked;
    else if (spec.type === "number" || spec.numeric) out[spec.name] = Number(input.value);
    else out[spec.name] = input.value;
  }
  return out;
}

/**
 * A modal form. `submit(values)` runs the API call; the dialog closes when it succeeds
 * and shows the server's error (and stays open) when it does not.
 */
export function formDialog({ title, fields, submitLabel = "Save", submit, note, danger = false }) {
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const save = h("button", { type: "submit", class: danger ? "danger" : "primary" }, submitLabel);
  const form = h(
    "form",
    { method: "dialog", class: "dialog-form" },
    h("h2", {}, title),
    note ? h("p", { class: "note" }, note) : null,
    fields.map(field),
    error,
    h("div", { class: "dialog-actions" }, button("Cancel", () => close(), "quiet"), save),
  );
  const dialog = h("dialog", { class: "modal", "aria-label": title }, form);
  const close = () => {
    dialog.close();
    dialog.remove();
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    save.disabled = true;
    try {
      await submit(values(form, fields));
      close();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      save.disabled = false;
    }
  });
  dialog.addEventListener("cancel", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  const first = form.querySelector("input:not([type=checkbox]), select");
  if (first) first.focus();
  return dialog;
}

/** Ask before something that cannot be undone; `action()` runs on "yes". */
export function confirmDialog({ title, message, confirmLabel, action, danger = true }) {
  return formDialog({
    title,
    note: message,
    fields: [],
    submitLabel: confirmLabel,
    submit: action,
    danger,
  });
}

/**
 * Search users by name and pick several: {node, value()} for formDialog's "custom" field.
 * `exclude` are ids not offered (a group's current members).
 */
export function userPicker({ exclude = [] } = {}) {
  const chosen = new Map();
  const chips = h("div", { class: "chips" });
  const results = h("ul", { class: "picker-results" });
  const search = h("input", {
    type: "search",
    placeholder: "Search users by name or nick",
    "aria-label": "Search users",
    autocomplete: "off",
  });
  const skip = new Set(exclude);

  function renderChips() {
    clear(chips);
    for (const [id, user] of chosen) {
      chips.append(
        h(
          "span",
          { class: "chip", dataset: { userId: id } },
          user.nick ? `${user.nick} (${user.name})` : user.name,
          h(
            "button",
            {
              type: "button",
              class: "chip-remove",
              "aria-label": `Remove ${user.name}`,
              onClick: () => {
                chosen.delete(id);
                renderChips();
              },
            },
            "×",
          ),
        ),
      );
    }
  }

  let latest = 0;
  async function find() {
    const mine = ++latest;
    const page = await api.get(`/users${api.query({ q: search.value.trim(), limit: 8 })}`);
    if (mine !== latest) return;
    clear(results);
    for (const user of page.items) {
      if (skip.has(user.id)) continue;
      results.append(
        h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: "pick",
              dataset: { userName: user.name },
              onClick: () => {
                chosen.set(user.id, user);
                renderChips();
              },
            },
            user.nick && user.nick !== user.name ? `${user.name} · ${user.nick}` : user.name,
          ),
        ),
      );
    }
  }
  search.addEventListener("input", () => find().catch(() => {}));
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") e.preventDefault();
  });
  find().catch(() => {});
  return {
    node: h("div", { class: "picker" }, search, results, chips),
    value: () => [...chosen.keys()],
  };
}
