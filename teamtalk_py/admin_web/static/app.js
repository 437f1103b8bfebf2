// The console's entry point: sign-in, the page router and the top bar.
//
// Pages are plain ES modules under pages/ (no build step); each exports
// `render(view) -> cleanup?`, draws into the <main> element and may return a function
// that stops its timers when the admin leaves the page. URLs are real paths under
// /admin/ (the server answers every page URL with index.html), so reload and bookmarks
// work.

import * as api from "./api.js";
import { clear, h, toast } from "./dom.js";
import * as dashboard from "./pages/dashboard.js";
import * as departments from "./pages/departments.js";
import * as groups from "./pages/groups.js";
import * as nodes from "./pages/nodes.js";
import * as sessions from "./pages/sessions.js";
import * as users from "./pages/users.js";
import { BASE, go, NAVIGATE } from "./nav.js";

const PAGES = { "": dashboard, users, departments, groups, sessions, nodes };
const TITLES = {
  "": "Dashboard",
  users: "Users",
  departments: "Departments",
  groups: "Groups",
  sessions: "Online",
  nodes: "Nodes",
};

const view = document.getElementById("view");
const topbar = document.getElementById("topbar");
let cleanup = null;
let signedIn = null;

function pageName() {
  const rest = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : "";
  const name = rest.split("/")[0];
  return name in PAGES ? name : "";
}

function leavePage() {
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // a page's timers are gone either way
    }
  }
  cleanup = null;
}

async function show() {
  leavePage();
  const name = pageName();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === (name || "dashboard"));
    if (link.dataset.page === (name || "dashboard")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${TITLES[name]} · TeamTalk console`;
  clear(view);
  view.dataset.page = name || "dashboard";
  try {
    cleanup = (await PAGES[name].render(view)) || null;
  } catch (e) {
    if (e.status !== 401) {
      view.append(h("p", { class: "form-error" }, `Could not load this page: ${e.message}`));
    }
  }
}

function signInPage(message) {
  leavePage();
  signedIn = null;
  topbar.hidden = true;
  document.title = "Sign in · TeamTalk console";
  clear(view);
  view.dataset.page = "sign-in";
  const error = h("p", { class: "form-error", role: "alert", hidden: !message }, message || "");
  const name = h("input", { id: "sign-in-name", name: "name", required: true, autocomplete: "username" });
  const password = h("input", {
    id: "sign-in-password",
    name: "password",
    type: "password",
    required: true,
    autocomplete: "current-password",
  });
  const submit = h("button", { type: "submit", class: "primary wide" }, "Sign in");
  const form = h(
    "form",
    { class: "sign-in" },
    h("div", { class: "sign-in-logo" }, h("img", { src: `${BASE}favicon.svg`, alt: "" })),
    h("h1", {}, "TeamTalk console"),
    h(
      "p",
      { class: "note" },
      "Sign in with an account that has the admin flag. The first one is made on the server:",
      h("code", {}, "teamtalk-admin user add --name NAME --admin"),
    ),
    h("div", { class: "field" }, h("label", { for: "sign-in-name" }, "Name"), name),
    h("div", { class: "field" }, h("label", { for: "sign-in-password" }, "Password"), password),
    error,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.hidden = true;
    try {
      const session = await api.signIn(name.value.trim(), password.value);
      enter(session);
    } catch (e) {
      error.textContent =
        e.status === 401 ? "Wrong name or password, or not an admin." : e.message;
      error.hidden = false;
      password.value = "";
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  view.append(h("div", { class: "sign-in-wrap" }, form));
  name.focus();
}

function enter(session) {
  signedIn = session;
  document.getElementById("whoami").textContent = session.user.name;
  topbar.hidden = false;
  show();
}

document.getElementById("nav").addEventListener("click", (event) => {
  const link = event.target.closest("a[data-page]");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  go(link.getAttribute("href"));
});
document.querySelector(".brand").addEventListener("click", (event) => {
  event.preventDefault();
  go(BASE);
});
document.getElementById("sign-out").addEventListener("click", async () => {
  try {
    await api.signOut();
  } catch (e) {
    toast(`Sign-out failed: ${e.message}`, "error");
    return;
  }
  signInPage("You are signed out.");
});
for (const event of ["popstate", NAVIGATE]) {
  window.addEventListener(event, () => {
    if (signedIn) show();
  });
}
api.whenSignedOut(() => {
  if (signedIn) signInPage("Your session ended; sign in again.");
});

async function start() {
  try {
    const session = await api.currentSession();
    if (session) enter(session);
    else signInPage();
  } catch (e) {
    signInPage(`The server cannot be reached: ${e.message}`);
  }
}

start();
