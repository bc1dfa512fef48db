// The reading page: viewer on the left, the report editor (template, sign, critical
// result, addenda) on the right.
import { api, ApiError, errorText, h, hasEndpoint, startPage, toast } from "./api.js";
import { fmtTime, t } from "./i18n.js";
import { Viewer } from "./viewer.js";

const me = startPage({ roles: ["radiologist", "admin"], onLang: () => { viewer?.drawPresets(); viewer?.updateInfo(); showState(); } });
const studyUid = new URLSearchParams(location.search).get("study");
const $ = (id) => document.getElementById(id);
let study = null;
let report = null;
let viewer = null;
const features = {};

function message(text, kind = "info") {
  const el = $("report-message");
  el.textContent = text;
  el.className = `message ${kind}`;
}

function fields() {
  return { findings: $("findings").value, impression: $("impression").value, recommendation: $("recommendation").value };
}

function showState() {
  const status = report ? report.status : study?.status;
  $("report-status").textContent = status ? t(status) : "";
  $("report-status").className = `status-tag ${status || ""}`;
  $("report-status").dataset.status = status || "";
  const signed = report && (report.status === "final" || report.status === "amended");
  const mine = study?.claimed_by === me.username;
  for (const id of ["findings", "impression", "recommendation"]) $(id).readOnly = signed || !mine;
  for (const id of ["save-draft", "sign-preliminary", "sign-final"]) $(id).disabled = signed || !mine;
  $("claim").hidden = mine || signed || study?.status === "cancelled";
  $("release").hidden = !mine;
  $("use-template").hidden = signed || !mine || !features.template;
  $("critical-box").hidden = !features.critical;
  $("addenda-box").hidden = !(signed && features.addenda);
  $("no-critical-box").hidden = !(report?.critical_result_expected && !(report?.critical_results || []).length) || signed;
  if (study) {
    const reasons = study.triage?.reasons || [];
    $("triage").hidden = !study.category && !reasons.length;
    $("triage-summary").textContent = `${study.category ? t(study.category) : "STAT"} (${reasons.length})`;
    $("triage-reasons").replaceChildren(...reasons.map((r) => h("li", {}, r)));
    $("triage").className = `triage ${study.category || ""}`;
  }
  drawCritical();
  drawAddenda();
  showReceipt(signed);
}

async function showReceipt(signed) {
  const el = $("receipt");
  el.hidden = !(signed && features.receipt);
  if (el.hidden) return;
  try {
    const r = await api(`/api/v1/studies/${encodeURIComponent(studyUid)}/report/receipt`);
    el.textContent = r.first_read_at
      ? `${t("read_receipt")}: ${r.first_read_by || ""} ${r.site || ""} · ${fmtTime(r.first_read_at)}`
      : t("not_read_yet");
    el.dataset.read = r.first_read_at ? "1" : "0";
  } catch {
    el.hidden = true;
  }
}

function drawCritical() {
  const list = $("critical-list");
  list.replaceChildren();
  for (const c of report?.critical_results || []) {
    list.append(h("li", {}, `${c.finding} — ${c.communicated_to_name} ${c.communicated_to_role} ${c.communicated_to_phone} · ${t(c.method)} · ${fmtTime(c.communicated_at)}${c.read_back_confirmed ? " · " + t("read_back") : ""}`));
  }
}

function drawAddenda() {
  const list = $("addenda-list");
  list.replaceChildren();
  for (const a of report?.addenda || []) {
    list.append(h("li", {}, h("strong", {}, `${a.author} ${fmtTime(a.created_at)}: `), a.text, h("em", {}, ` (${a.reason})`)));
  }
}

function fill(r) {
  $("findings").value = r.findings || "";
  $("impression").value = r.impression || "";
  $("recommendation").value = r.recommendation || "";
}

async function loadStudy() {
  study = await api(`/api/v1/studies/${encodeURIComponent(studyUid)}`);
  const name = study.patient_name.replaceAll("^", " ");
  $("study-title").textContent = `${name} · ${study.patient_sex} · ${study.study_description} · ${study.site}`;
  document.title = `${study.study_description} · ${t("app")}`;
}

async function loadReport() {
  try {
    report = await api(`/api/v1/studies/${encodeURIComponent(studyUid)}/report`);
    fill(report);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
    report = null;
  }
}

async function applyTemplate(onlyIfEmpty) {
  if (!features.template) return;
  const cur = fields();
  if (onlyIfEmpty && (cur.findings || cur.impression)) return;
  try {
    const tpl = await api(`/api/v1/studies/${encodeURIComponent(studyUid)}/report/template`);
    fill(tpl);
  } catch (err) {
    if (!onlyIfEmpty) toast(err.status === 404 ? t("no_template") : errorText(err));
  }
}

async function saveDraft() {
  report = await api(`/api/v1/studies/${encodeURIComponent(studyUid)}/report`, { method: "PUT", json: fields() });
  return report;
}

async function sign(status) {
  try {
    message(t("saving"));
    await saveDraft();
    const body = { status };
    const reason = $("no-critical-reason").value.trim();
    if (status === "final" && reason) body.no_critical_result_reason = reason;
    report = await api(`/api/v1/studies/${encodeURIComponent(studyUid)}/report/sign`, { method: "POST", json: body });
    await loadStudy();
    message(`${t("signed")}: ${t(report.status)}`, "ok");
  } catch (err) {
    if (err.status === 422 && status === "final") {
      message(t("critical_required"), "error");
      $("no-critical-box").hidden = false;
      if (features.critical) $("critical-box").open = true;
    } else message(errorText(err), "error");
  }
  showState();
}

function localNow() {
  const d = new Date();
  d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16);
}

async function recordCritical(e) {
  e.preventDefault();
  try {
    await api(`/api/v1/studies/${encodeURIComponent(studyUid)}/report/critical-results`, {
      method: "POST",
      json: {
        finding: $("cr-finding").value,
        identified_at: new Date($("cr-identified").value).toISOString(),
        communicated_to_name: $("cr-name").value,
        communicated_to_role: $("cr-role").value,
        communicated_to_phone: $("cr-phone").value,
        communicated_at: new Date($("cr-told").value).toISOString(),
        method: $("cr-method").value,
        read_back_confirmed: $("cr-readback").checked,
      },
    });
    toast(t("critical_recorded"));
    $("critical-form").reset();
    $("cr-identified").value = localNow();
    $("cr-told").value = localNow();
    const typed = fields();
    await loadReport();
    if (!report || !["final", "amended"].includes(report.status)) fill(typed);
    if (!report) {
      const list = await api(`/api/v1/studies/${encodeURIComponent(studyUid)}/report/critical-results`).catch(() => []);
      $("critical-list").replaceChildren(...list.map((c) => h("li", {}, `${c.finding} — ${c.communicated_to_name}`)));
      return;
    }
    showState();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

async function addAddendum(e) {
  e.preventDefault();
  try {
    report = await api(`/api/v1/studies/${encodeURIComponent(studyUid)}/report/addenda`, {
      method: "POST", json: { text: $("ad-text").value, reason: $("ad-reason").value },
    });
    $("ad-text").value = ""; $("ad-reason").value = "";
    await loadStudy();
    showState();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

async function claimIt() {
  try {
    await api(`/api/v1/worklist/${encodeURIComponent(studyUid)}/claim`, { method: "POST" });
    await loadStudy();
    await applyTemplate(true);
  } catch (err) {
    toast(err.status === 409 ? t("claimed_by_other") : errorText(err), "error");
  }
  showState();
}

async function releaseIt() {
  try {
    await api(`/api/v1/worklist/${encodeURIComponent(studyUid)}/release`, { method: "POST" });
    location.href = "/ui/worklist";
  } catch (err) {
    toast(errorText(err), "error");
  }
}

async function main() {
  if (!studyUid) { location.href = "/ui/worklist"; return; }
  const [tpl, crit, add, receipt] = await Promise.all([
    hasEndpoint("GET", "/api/v1/studies/{study_uid}/report/template"),
    hasEndpoint("POST", "/api/v1/studies/{study_uid}/report/critical-results"),
    hasEndpoint("POST", "/api/v1/studies/{study_uid}/report/addenda"),
    hasEndpoint("GET", "/api/v1/studies/{study_uid}/report/receipt"),
  ]);
  Object.assign(features, { template: tpl, critical: crit, addenda: add, receipt });
  try {
    await loadStudy();
    await loadReport();
  } catch (err) {
    message(errorText(err), "error");
    return;
  }
  $("cr-identified").value = localNow();
  $("cr-told").value = localNow();
  if (!report && study.claimed_by === me.username) await applyTemplate(true);
  showState();
  $("save-draft").addEventListener("click", async () => {
    try { await saveDraft(); message(t("saved"), "ok"); await loadStudy(); } catch (err) { message(errorText(err), "error"); }
    showState();
  });
  $("sign-preliminary").addEventListener("click", () => sign("preliminary"));
  $("sign-final").addEventListener("click", () => sign("final"));
  $("claim").addEventListener("click", claimIt);
  $("release").addEventListener("click", releaseIt);
  $("use-template").addEventListener("click", () => applyTemplate(false));
  $("critical-form").addEventListener("submit", recordCritical);
  $("addendum-form").addEventListener("submit", addAddendum);
  viewer = new Viewer($("viewer"), study);
  await viewer.start();
  $("image").focus();
}

if (me) main();
