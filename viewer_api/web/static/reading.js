// The reading page: viewer on the left, the report editor (template, sign, critical
// result, addenda) on the right.
import { api, ApiError, errorText, h, ohifUrl, toast } from "./api.js";
import { personName, sexText } from "./names.js";
import { reasonText } from "./reasons.js";
import { fmtTime, t } from "./i18n.js";
import { startPage } from "./shell.js";
import { drawTimeline } from "./timeline.js";
import { Viewer } from "./viewer.js";

const studyUid = new URLSearchParams(location.search).get("study");
const $ = (id) => document.getElementById(id);
const reportUrl = (suffix = "") =>
  `/api/v1/studies/${encodeURIComponent(studyUid)}/report${suffix}`;
let study = null;
let report = null;
let criticals = [];
let viewer = null;
let timeline = null; // the study's path so far (GET .../timeline)
const me = await startPage({ roles: ["radiologist", "admin"], onLang: relabel });

function relabel() {
  viewer?.relabel();
  showTitle();
  showState();
  showTimeline();
}

function message(text, kind = "info") {
  const el = $("report-message");
  el.textContent = text;
  el.className = `message ${kind}`;
}

function fields() {
  return {
    findings: $("findings").value,
    impression: $("impression").value,
    recommendation: $("recommendation").value,
  };
}

function showState() {
  const status = report ? report.status : study?.status;
  $("report-status").textContent = status ? t(status) : "";
  $("report-status").className = `status-tag ${status || ""}`;
  $("report-status").dataset.status = status || "";
  const signed = report && (report.status === "final" || report.status === "amended");
  const mine = study?.claimed_by === me.username;
  for (const id of ["findings", "impression", "recommendation"]) $(id).readOnly = signed || !mine;
  for (const id of ["save-draft", "sign-preliminary", "sign-final"])
    $(id).disabled = signed || !mine;
  $("claim").hidden = mine || signed || study?.status === "cancelled";
  $("release").hidden = !mine;
  $("use-template").hidden = signed || !mine || !me.can("template");
  $("critical-box").hidden = !me.can("critical");
  $("addenda-box").hidden = !(signed && me.can("addenda"));
  const noCritical = report?.critical_result_expected && !(report?.critical_results || []).length;
  $("no-critical-box").hidden = !noCritical || signed;
  if (study) {
    const reasons = study.triage?.reasons || [];
    $("triage").hidden = !study.category && !reasons.length;
    const label = study.category ? t(study.category) : t("stat_badge");
    $("triage-summary").textContent = `${label} (${reasons.length})`;
    $("triage-reasons").replaceChildren(...reasons.map((r) => h("li", {}, reasonText(r))));
    $("triage").className = `triage ${study.category || ""}`;
  }
  // a corrected re-send replaced an image after the report was signed: the report stays,
  // the reader is told to look again
  const updated = study?.updated_after_report_at;
  $("updated-banner").hidden = !updated;
  $("updated-banner").textContent = updated
    ? t("updated_after_report").replace("{time}", fmtTime(updated))
    : "";
  drawCritical();
  drawAddenda();
  showReceipt(signed);
}

async function showReceipt(signed) {
  const el = $("receipt");
  el.hidden = !(signed && me.can("receipt"));
  if (el.hidden) return;
  try {
    const r = await api(reportUrl("/receipt"));
    const by = `${r.first_read_by || ""} ${r.site || ""}`;
    el.textContent = r.first_read_at
      ? `${t("read_receipt")}: ${by} · ${fmtTime(r.first_read_at)}`
      : t("not_read_yet");
    el.dataset.read = r.first_read_at ? "1" : "0";
  } catch {
    el.hidden = true;
  }
}

// the case's critical results, and the box's summary: how many, and the latest one's state
function drawCritical() {
  const list = $("critical-list");
  list.replaceChildren();
  for (const c of criticals) {
    const who = [c.communicated_to_name, c.communicated_to_role, c.communicated_to_phone];
    const told = who.filter(Boolean).join(" ");
    const readBack = c.read_back_confirmed ? ` · ${t("read_back")}` : "";
    const when = fmtTime(c.communicated_at);
    list.append(h("li", {}, `${c.finding} — ${told} · ${t(c.method)} · ${when}${readBack}`));
  }
  const summary = $("critical-summary");
  summary.dataset.count = String(criticals.length);
  const latest = criticals.at(-1);
  if (!latest) {
    summary.textContent = `${t("critical_result")} · ${t("none_recorded")}`;
    return;
  }
  const state = latest.read_back_confirmed ? t("read_back") : t("not_read_back");
  summary.textContent =
    `${t("critical_result")} (${criticals.length}) · ${t("latest")}: ` +
    `${latest.communicated_to_name} · ${t(latest.method)} · ` +
    `${fmtTime(latest.communicated_at)} · ${state}`;
}

async function loadCritical() {
  if (!me.can("critical")) return;
  criticals =
    report?.critical_results ?? (await api(reportUrl("/critical-results")).catch(() => []));
}

function drawAddenda() {
  const list = $("addenda-list");
  list.replaceChildren();
  for (const a of report?.addenda || []) {
    const by = h("strong", {}, `${a.author_name} ${fmtTime(a.created_at)}${t("colon")}`);
    list.append(h("li", {}, by, a.text, h("em", {}, ` (${a.reason})`)));
  }
}

function fill(r) {
  $("findings").value = r.findings || "";
  $("impression").value = r.impression || "";
  $("recommendation").value = r.recommendation || "";
}

function showTitle() {
  if (!study) return;
  const name = personName(study.patient_name);
  const parts = [name, sexText(study.patient_sex), study.study_description, study.site];
  $("study-title").textContent = parts.join(" · ");
  document.title = `${study.study_description} · ${t("app")}`;
}

function showTimeline() {
  if (timeline) drawTimeline($("timeline"), $("timeline-targets"), timeline);
}

async function loadStudy() {
  study = await api(`/api/v1/studies/${encodeURIComponent(studyUid)}`);
  showTitle();
  // the study's path so far; a page without it still reads and signs
  api(`/api/v1/studies/${encodeURIComponent(studyUid)}/timeline`)
    .then((found) => {
      timeline = found;
      showTimeline();
    })
    .catch(() => {});
}

async function loadReport() {
  try {
    report = await api(reportUrl());
    fill(report);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
    report = null;
  }
  await loadCritical();
}

async function applyTemplate(onlyIfEmpty) {
  if (!me.can("template")) return;
  const cur = fields();
  if (onlyIfEmpty && (cur.findings || cur.impression)) return;
  try {
    const tpl = await api(reportUrl("/template"));
    fill(tpl);
  } catch (err) {
    if (!onlyIfEmpty) toast(err.status === 404 ? t("no_template") : errorText(err));
  }
}

async function saveDraft() {
  report = await api(reportUrl(), { method: "PUT", json: fields() });
  return report;
}

async function sign(status) {
  try {
    message(t("saving"));
    await saveDraft();
    const body = { status };
    const reason = $("no-critical-reason").value.trim();
    if (status === "final" && reason) body.no_critical_result_reason = reason;
    report = await api(reportUrl("/sign"), { method: "POST", json: body });
    await loadStudy();
    message(`${t("signed")}: ${t(report.status)}`, "ok");
  } catch (err) {
    if (err.code === "unresolved_choices") {
      message(`${t("unresolved_choices")} ${err.message.replace(/^[^:]*: /, "")}`, "error");
    } else if (err.code === "critical_result_required") {
      message(t("critical_required"), "error");
      $("no-critical-box").hidden = false;
      if (me.can("critical")) $("critical-box").open = true;
    } else message(errorText(err), "error");
  }
  showState();
}

// Times typed as 2026-12-06 14:30 (local): the same in either language, unlike a
// datetime-local picker, which follows the browser's locale rather than the page's
function localNow() {
  const d = new Date();
  d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16).replace("T", " ");
}

function typedTime(id) {
  return new Date($(id).value.trim().replace(" ", "T")).toISOString();
}

async function recordCritical(e) {
  e.preventDefault();
  try {
    await api(reportUrl("/critical-results"), {
      method: "POST",
      json: {
        finding: $("cr-finding").value,
        identified_at: typedTime("cr-identified"),
        communicated_to_name: $("cr-name").value,
        communicated_to_role: $("cr-role").value,
        communicated_to_phone: $("cr-phone").value,
        communicated_at: typedTime("cr-told"),
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
    showState();
  } catch (err) {
    // another radiologist's case: say whose, as people know them
    const holder = study?.claimed_by_name || study?.claimed_by;
    const whose = err.code === "not_the_case_reader" && holder ? `${t("colon")}${holder}` : "";
    toast(`${errorText(err)}${whose}`, "error");
  }
}

async function addAddendum(e) {
  e.preventDefault();
  try {
    report = await api(reportUrl("/addenda"), {
      method: "POST",
      json: { text: $("ad-text").value, reason: $("ad-reason").value },
    });
    $("ad-text").value = "";
    $("ad-reason").value = "";
    await loadStudy();
    showState();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

// The claim's warnings: the server tells the holder two minutes before the lease runs out
// (claim_expiring) and when it ran out (study_released, "lease expired"); the page says so
// at the top of the report panel, with a button that extends the claim. A corrected re-send
// of a signed study (study_updated_after_report) shows its banner at once, to any reader.
function banner(text, kind) {
  $("claim-banner-text").textContent = text;
  $("claim-banner").className = `banner ${kind}`;
  $("claim-banner").hidden = !text;
  $("renew-claim").hidden = kind !== "warning";
}

function expiringBanner(secondsLeft) {
  const minutes = Math.max(1, Math.round(secondsLeft / 60));
  banner(t("claim_expiring").replace("{m}", minutes), "warning");
}

// The same banners from the claim as the server keeps it, for a page opened (or reloaded)
// after the event: warned and not renewed since, or run out while this reader held it.
function claimBanner() {
  if (study?.claimed_by === me.username && study.claim_warned_at && study.claim_expires_at) {
    expiringBanner((Date.parse(study.claim_expires_at) - Date.now()) / 1000);
  } else if (!study?.claimed_by && study?.claim_expired_by === me.username) {
    banner(t("claim_expired"), "expired");
  }
}

function watchStudy() {
  if (!me.can("events")) return;
  const events = new EventSource("/api/v1/events");
  const mine = (e) => {
    const event = JSON.parse(e.data);
    return event.study_uid === studyUid && event.payload.by === me.username ? event : null;
  };
  events.addEventListener("claim_expiring", (e) => {
    const event = mine(e);
    if (!event) return;
    expiringBanner(event.payload.seconds_left);
  });
  events.addEventListener("study_released", async (e) => {
    const event = mine(e);
    if (!event || event.payload.reason !== "lease expired") return;
    banner(t("claim_expired"), "expired");
    await loadStudy();
    showState();
  });
  events.addEventListener("study_updated_after_report", async (e) => {
    if (JSON.parse(e.data).study_uid !== studyUid) return;
    await loadStudy();
    showState();
  });
}

async function renewIt() {
  try {
    await api(`/api/v1/worklist/${encodeURIComponent(studyUid)}/renew`, { method: "POST" });
    banner("", "");
    await loadStudy();
  } catch (err) {
    toast(errorText(err), "error");
  }
  showState();
}

// The patient's prior studies: listed in the report panel; one opens beside the current
// study (a second viewer pane) and its signed report shows above the editor.
let priorViewer = null;

async function loadPriors() {
  let priors;
  try {
    priors = await api(`/api/v1/studies/${encodeURIComponent(studyUid)}/priors`);
  } catch {
    return;
  }
  $("priors-box").hidden = false;
  $("priors-summary").textContent = priors.length
    ? `${t("priors")} (${priors.length})`
    : `${t("priors")} · ${t("no_priors")}`;
  $("priors-box").open = priors.length > 0;
  $("priors-list").replaceChildren(
    ...priors.map((p) => {
      const when = p.study_date ? formatDa(p.study_date) : fmtTime(p.received_at);
      const what = `${when} · ${p.modality} · ${p.study_description} · ${p.site}`;
      const state = p.report ? t(p.report.status) : t(p.status);
      const open = h("button", { type: "button", className: "compare" }, t("compare"));
      open.addEventListener("click", () => showPrior(p));
      return h("li", { dataset: { uid: p.study_instance_uid } }, `${what} · ${state} `, open);
    }),
  );
}

async function showPrior(prior) {
  closePrior();
  const detail = await api(`/api/v1/studies/${encodeURIComponent(prior.study_instance_uid)}`);
  const pane = $("viewer").cloneNode(true);
  for (const el of [pane, ...pane.querySelectorAll("[id]")]) el.removeAttribute("id");
  pane.classList.add("prior");
  pane.dataset.uid = prior.study_instance_uid;
  pane.querySelector('[data-v="study-title"]').textContent =
    `${t("priors")}: ${prior.study_date ? formatDa(prior.study_date) : ""} ` +
    `${prior.study_description} · ${prior.site}`;
  pane.querySelector(".viewer-top a")?.remove();
  const close = pane.querySelector('[data-v="close"]');
  close.hidden = false;
  close.addEventListener("click", closePrior);
  $("viewer").after(pane);
  document.querySelector("main.reading").classList.add("comparing");
  priorViewer = new Viewer(pane, detail);
  await priorViewer.start();
  const box = $("prior-report");
  box.hidden = false;
  $("prior-report-title").textContent = `${t("prior_report")} · ${prior.study_description}`;
  $("prior-report-text").textContent = prior.report
    ? [
        `${t("findings")}：${prior.report.findings}`,
        `${t("impression")}：${prior.report.impression}`,
        `${t("signed_by")}：${prior.report.signed_by || ""} ${fmtTime(prior.report.signed_at)}`,
      ].join("\n")
    : t("not_reported");
}

function closePrior() {
  document.querySelector("section.viewer.prior")?.remove();
  document.querySelector("main.reading").classList.remove("comparing");
  $("prior-report").hidden = true;
  priorViewer = null;
}

// "20261125" -> "2026-11-25"
function formatDa(da) {
  return /^\d{8}$/.test(da) ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6)}` : da;
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
  if (!studyUid) {
    location.href = "/ui/worklist";
    return;
  }
  try {
    await loadStudy();
    await loadReport();
  } catch (err) {
    message(errorText(err), "error");
    return;
  }
  $("cr-identified").value = localNow();
  $("cr-told").value = localNow();
  if (me.can("ohif")) {
    $("open-ohif").href = ohifUrl(studyUid);
    $("open-ohif").hidden = false;
  }
  if (!report && study.claimed_by === me.username) await applyTemplate(true);
  claimBanner();
  showState();
  $("save-draft").addEventListener("click", async () => {
    try {
      await saveDraft();
      message(t("saved"), "ok");
      await loadStudy();
    } catch (err) {
      message(errorText(err), "error");
    }
    showState();
  });
  $("sign-preliminary").addEventListener("click", () => sign("preliminary"));
  $("sign-final").addEventListener("click", () => sign("final"));
  $("claim").addEventListener("click", claimIt);
  $("release").addEventListener("click", releaseIt);
  $("use-template").addEventListener("click", () => applyTemplate(false));
  $("critical-form").addEventListener("submit", recordCritical);
  $("addendum-form").addEventListener("submit", addAddendum);
  $("renew-claim").addEventListener("click", renewIt);
  watchStudy();
  viewer = new Viewer($("viewer"), study);
  loadPriors();
  document.body.dataset.ready = "1";
  await viewer.start();
  $("image").focus();
}

if (me) main();
