import { currentSession, landingFor, login } from "./shell.js";
import { errorText } from "./api.js";
import { applyI18n, setupLangToggle, t } from "./i18n.js";

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
    location.href = landingFor(data.role);
  } catch (err) {
    error.textContent = err.status === 401 ? t("login_failed") : errorText(err);
  }
});

const existing = await currentSession().catch(() => null);
if (existing) location.href = landingFor(existing.role);
