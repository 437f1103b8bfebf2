// The admin REST API (/admin/api/v1/), the console's only way to the server.
//
// Signing in sets an HttpOnly session cookie (script never sees it) and returns a CSRF
// token, kept here in memory only. Every call that changes something repeats that token
// in the X-CSRF-Token header: a page of another site can make the browser send the
// cookie, but cannot read the token nor set the header, so it cannot change anything.

export const API = "/admin/api/v1";
const SAFE = new Set(["GET", "HEAD"]);

let csrfToken = "";
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** What to do when the server says the session is gone (401): show the sign-in page. */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!SAFE.has(method)) headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, `the server cannot be reached (${e.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, (data && data.error) || response.statusText);
    if (response.status === 401 && path !== "/session") {
      csrfToken = "";
      onSignedOut(error);
    }
    throw error;
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body = {}) => call("POST", path, body);
export const patch = (path, body) => call("PATCH", path, body);
export const del = (path) => call("DELETE", path);

/** A query string from the non-empty values of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== "" && v !== null && v !== undefined) q.set(k, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

/** The signed-in admin ({user, csrf_token, expires_at}), or null when nobody is. */
export async function currentSession() {
  try {
    const session = await get("/session");
    csrfToken = session.csrf_token;
    return session;
  } catch (e) {
    if (e.status === 401 || e.status === 404) return null;
    throw e;
  }
}

export async function signIn(name, password) {
  const session = await call("POST", "/session", { name, password });
  csrfToken = session.csrf_token;
  return session;
}

export async function signOut() {
  try {
    await del("/session");
  } finally {
    csrfToken = "";
  }
}
