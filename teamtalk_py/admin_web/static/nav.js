// Moving between console pages without reloading: pages call go(path); app.js redraws.

export const BASE = "/admin/";
export const NAVIGATE = "console:navigate";

export function go(path) {
  history.pushState(null, "", path);
  window.dispatchEvent(new Event(NAVIGATE));
}
