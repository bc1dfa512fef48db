// The JSON API and small DOM helpers. The browser's session cookie authenticates every
// request (HttpOnly: scripts never see it); state-changing ones also carry the session's
// CSRF token, which shell.js learns when the page starts.
import { t } from "./i18n.js";

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
let csrf = null;

export class ApiError extends Error {
  // code: the server's stable error code (viewer_api/errors.py), which pages translate
  constructor(status, detail, code = "") {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.code = code;
  }
}

export function setCsrfToken(token) {
  csrf = token;
}

export function toLogin() {
  location.href = "/ui/login";
}

export async function failure(r) {
  let detail = r.statusText;
  let code = "";
  try {
    const body = await r.json();
    detail = body.detail ?? detail;
    code = body.code ?? "";
  } catch {
    // not JSON
  }
  return new ApiError(r.status, detail, code);
}

// For this long after this page changed something (a claim, a release, a flag), its reads
// ask for a fresh answer (Cache-Control: no-cache): the API serves a worklist page it read
// up to TELEREAD_API_WORKLIST_CACHE_SECONDS ago (at most 5 s), and the API process that
// answers may not have heard of the change yet. Kept for the tab (sessionStorage), so the
// page a claim opens, or the worklist gone back to, asks fresh too. A page's first reads
// are fresh as well: loading (or reloading) a page is the user asking for what is there
// now, a study that just arrived included.
const FRESH_AFTER_CHANGE_MS = 5000;
const FRESH_AT_LOAD_MS = 2000;
const FRESH_KEY = "teleread.freshUntil";
let freshUntil = Math.max(
  Number(sessionStorage.getItem(FRESH_KEY)) || 0,
  Date.now() + FRESH_AT_LOAD_MS,
);

// fetch with the credentials; JSON in and out. 401 sends the user back to the log-in page.
export async function api(path, { method = "GET", json, raw = false, signal } = {}) {
  const headers = {};
  if (csrf && UNSAFE.has(method)) headers["X-CSRF-Token"] = csrf;
  if (!UNSAFE.has(method) && Date.now() < freshUntil) headers["Cache-Control"] = "no-cache";
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let r;
  try {
    r = await fetch(path, { method, headers, signal, body });
  } finally {
    // refused or not, the studies may have changed (another reader's claim: 409)
    if (UNSAFE.has(method)) {
      freshUntil = Date.now() + FRESH_AFTER_CHANGE_MS;
      sessionStorage.setItem(FRESH_KEY, String(freshUntil));
    }
  }
  if (r.status === 401) {
    toLogin();
    throw new ApiError(401, "not authenticated", "not_authenticated");
  }
  if (!r.ok) throw await failure(r);
  if (raw) return r;
  if (r.status === 204) return null;
  return r.json();
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
  box._timer = setTimeout(() => {
    box.className = "";
  }, 4000);
}

// the study in OHIF (served at /ohif/ when installed: the session's "ohif" capability)
export function ohifUrl(studyUid) {
  return `/ohif/viewer?StudyInstanceUIDs=${encodeURIComponent(studyUid)}`;
}

// An error in the page's language: the server's code translated (never its English
// detail), else what kind of failure it was.
export function errorText(err) {
  if (err instanceof ApiError) {
    const key = `err_${err.code}`;
    const known = t(key);
    if (known !== key) return known;
    if (err.status === 403) return t("forbidden");
    return `${t("error")} (${err.status})`;
  }
  return t(navigator.onLine === false ? "offline" : "error");
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
