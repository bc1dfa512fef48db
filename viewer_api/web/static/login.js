import { currentSession, landingFor, login } from "./shell.js";
import { errorText } from "./api.js";
import { applyI18n, setupLangToggle, t } from "./i18n.js";

// where to go once signed in: ?next= (a path of this server, e.g. /ohif/...), else the
// role's landing page
function destination(role) {
  const next = new URLSearchParams(location.search).get("next");
  if (next?.startsWith("/")) {
    const url = new URL(next, location.origin);
    if (url.origin === location.origin) return url.pathname + url.search + url.hash;
  }
  return landingFor(role);
}

applyI18n();
setupLangToggle();
document.getElementById("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = document.getElementById("login-error");
  error.textContent = "";
  try {
    const data = await login(
      document.getElementById("username").value.trim(),
      document.getElementById("password").value,
    );
    location.href = destination(data.role);
  } catch (err) {
    error.textContent = err.status === 401 ? t("login_failed") : errorText(err);
  }
});

const existing = await currentSession().catch(() => null);
if (existing) location.href = destination(existing.role);
