// The frame every signed-in page shares: who is signed in (the server's answer, with the
// features their role may use), the header (navigation, account, language, log-out).
// The session is the browser's HttpOnly cookie: a new tab is signed in as well, and
// logging out in one tab ends the session for all of them.
import { api, failure, setCsrfToken, toLogin } from "./api.js";
import { applyI18n, setupLangToggle } from "./i18n.js";

const SESSION = "/api/v1/auth/session";
const NAV = [
  ["/ui/worklist", "worklist", ["radiologist", "admin"]],
  ["/ui/clinic", "clinic", ["clinic"]],
  ["/ui/ops", "ops", ["admin"]],
];
// the other tabs of this browser hear of a log-out at once
const tabs = "BroadcastChannel" in window ? new BroadcastChannel("teleread-session") : null;

export function landingFor(role) {
  if (role === "clinic") return "/ui/clinic";
  if (role === "radiologist" || role === "admin") return "/ui/worklist";
  return "/ui/login";
}

export async function login(username, password) {
  const body = new URLSearchParams({ username, password });
  const r = await fetch(SESSION, { method: "POST", body });
  if (!r.ok) throw await failure(r);
  return r.json();
}

export async function logout() {
  try {
    await api(SESSION, { method: "DELETE" });
  } catch {
    // the session is gone already: the log-in page is where to go either way
  }
  tabs?.postMessage("logged-out");
  toLogin();
}

// The signed-in account: {username, display_name, role, site, capabilities, can(feature)},
// or null when nobody is.
export async function currentSession() {
  const r = await fetch(SESSION);
  if (r.status === 401) return null;
  if (!r.ok) throw await failure(r);
  const me = await r.json();
  setCsrfToken(me.csrf_token);
  me.can = (feature) => me.capabilities.includes(feature);
  return me;
}

function drawHeader(me) {
  const nav = document.getElementById("nav");
  if (nav) {
    for (const [href, key, roles] of NAV) {
      if (!roles.includes(me.role)) continue;
      const a = document.createElement("a");
      a.href = href;
      a.dataset.i18n = key;
      if (location.pathname === href) a.className = "current";
      nav.append(a);
    }
  }
  const who = document.getElementById("who");
  if (who) who.textContent = `${me.display_name || me.username}${me.site ? " · " + me.site : ""}`;
  document.getElementById("logout")?.addEventListener("click", logout);
}

// Page start: apply the strings, require a session (and one of `roles`), draw the header.
// Resolves to the session, or null while the browser goes to another page.
export async function startPage({ roles = null, onLang = () => {} } = {}) {
  applyI18n();
  setupLangToggle(onLang);
  const me = await currentSession();
  if (!me) {
    toLogin();
    return null;
  }
  if (roles && !roles.includes(me.role)) {
    location.href = landingFor(me.role);
    return null;
  }
  if (tabs) tabs.onmessage = (e) => e.data === "logged-out" && toLogin();
  drawHeader(me);
  applyI18n();
  return me;
}
