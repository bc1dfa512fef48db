// The JSON API with the bearer token kept in sessionStorage, and the shared page header.
import { applyI18n, setupLangToggle, t } from "./i18n.js";

const TOKEN = "teleread.token";
const ME = "teleread.me";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

export function session() {
  const token = sessionStorage.getItem(TOKEN);
  const me = JSON.parse(sessionStorage.getItem(ME) || "null");
  return token && me ? { token, ...me } : null;
}

export async function login(username, password) {
  const body = new URLSearchParams({ username, password });
  const r = await fetch("/api/v1/auth/token", { method: "POST", body });
  if (!r.ok) throw new ApiError(r.status, (await r.json().catch(() => ({}))).detail);
  const data = await r.json();
  sessionStorage.setItem(TOKEN, data.access_token);
  sessionStorage.setItem(ME, JSON.stringify({ username, role: data.role, site: data.site }));
  return data;
}

export function logout() {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(ME);
  location.href = "/ui/login";
}

export function landingFor(role) {
  if (role === "clinic") return "/ui/clinic";
  if (role === "radiologist" || role === "admin") return "/ui/worklist";
  return "/ui/login";
}

// fetch with the token; JSON in and out. 401 sends the user back to the log-in page.
export async function api(path, { method = "GET", json, raw = false, signal } = {}) {
  const s = session();
  const headers = {};
  if (s) headers.Authorization = `Bearer ${s.token}`;
  if (json !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method, headers, signal, body: json === undefined ? undefined : JSON.stringify(json),
  });
  if (r.status === 401) {
    logout();
    throw new ApiError(401, "not authenticated");
  }
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail ?? detail; } catch { /* not JSON */ }
    throw new ApiError(r.status, detail);
  }
  if (raw) return r;
  if (r.status === 204) return null;
  return r.json();
}

// Which optional endpoints exist (other parts of the server may not have them yet).
let openapi = null;
export async function hasEndpoint(method, path) {
  if (openapi === null) {
    try {
      const r = await fetch("/openapi.json");
      openapi = r.ok ? await r.json() : {};
    } catch { openapi = {}; }
  }
  const ops = (openapi.paths || {})[path];
  return Boolean(ops && ops[method.toLowerCase()]);
}

// Page start: require a session (and one of `roles`), draw the header, apply the strings.
export function startPage({ roles = null, onLang = () => {} } = {}) {
  const s = session();
  if (!s) { location.href = "/ui/login"; return null; }
  if (roles && !roles.includes(s.role)) { location.href = landingFor(s.role); return null; }
  const nav = document.getElementById("nav");
  if (nav) {
    const links = [];
    if (s.role === "radiologist" || s.role === "admin") links.push(["/ui/worklist", "worklist"]);
    if (s.role === "clinic") links.push(["/ui/clinic", "clinic"]);
    if (s.role === "admin") links.push(["/ui/ops", "ops"]);
    for (const [href, key] of links) {
      const a = document.createElement("a");
      a.href = href; a.dataset.i18n = key;
      if (location.pathname === href) a.className = "current";
      nav.append(a);
    }
  }
  const who = document.getElementById("who");
  if (who) who.textContent = `${s.username}${s.site ? " · " + s.site : ""}`;
  document.getElementById("logout")?.addEventListener("click", logout);
  setupLangToggle(onLang);
  applyI18n();
  return s;
}

export function toast(message, kind = "info") {
  let box = document.getElementById("toast");
  if (!box) {
    box = document.createElement("div");
    box.id = "toast";
    document.body.append(box);
  }
  box.textContent = message;
  box.className = `show ${kind}`;
  clearTimeout(box._timer);
  box._timer = setTimeout(() => { box.className = ""; }, 4000);
}

export function errorText(err) {
  if (err instanceof ApiError && err.status === 403) return `${t("forbidden")}: ${err.message}`;
  return `${t("error")}: ${err.message || err}`;
}

// Create an element: h("td", {className: "x"}, "text", child)
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) el[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}
