// The clinic page: what the county says back, live. Alerts for this site (a report
// available, a critical result to read back, a study overdue), browser notifications where
// allowed, the site's studies with their real report state, its reports, the green-channel
// flag of a study already sent and the call-ahead of a patient not scanned yet.
import { api, errorText, h, toast } from "./api.js";
import { fmtTime, lang, t } from "./i18n.js";
import { personName } from "./names.js";
import { startPage } from "./shell.js";
import { drawTimeline } from "./timeline.js";

const me = await startPage({ roles: ["clinic", "admin"], onLang: () => render() });
const $ = (id) => document.getElementById(id);
let studies = [];
let reports = [];
let alerts = { critical: [], overdue: [] };
let callAheads = [];
const notices = new Map(); // study uid -> {status, at}: reports that arrived while open
let source = null;

// study status -> what the clinic is told
const STATE = {
  receiving: "state_waiting",
  ready: "state_waiting",
  claimed: "state_reading",
  draft: "state_reading",
  preliminary: "preliminary",
  final: "final",
  amended: "amended",
  cancelled: "cancelled",
};
const REPORTED = new Set(["preliminary", "final", "amended"]);

const printLink = (uid, cls = "button") =>
  h("a", { href: `/ui/print?study=${encodeURIComponent(uid)}`, className: cls }, t("print_view"));

async function reload() {
  try {
    const [open, final, amended, rep, al, calls] = await Promise.all([
      api("/api/v1/worklist?limit=200"),
      api("/api/v1/worklist?status=final&limit=200"),
      api("/api/v1/worklist?status=amended&limit=200"),
      api("/api/v1/reports?limit=200"),
      api("/api/v1/clinic/alerts"),
      api("/api/v1/call-aheads"),
    ]);
    const seen = new Map();
    for (const item of [...open, ...final, ...amended]) seen.set(item.study_instance_uid, item);
    studies = [...seen.values()].sort(
      (a, b) => Date.parse(b.received_at) - Date.parse(a.received_at),
    );
    reports = rep;
    alerts = al;
    callAheads = calls;
    render();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

function studyOf(uid) {
  return studies.find((s) => s.study_instance_uid === uid);
}

function describe(s) {
  if (!s) return "";
  return [personName(s.patient_name), s.study_description].filter(Boolean).join(" · ");
}

// --- alerts ------------------------------------------------------------------------------
function renderAlerts() {
  const box = $("alerts");
  box.replaceChildren();
  for (const c of alerts.critical) {
    const ack = h("button", { type: "button", className: "primary ack" }, t("acknowledge"));
    ack.addEventListener("click", () => acknowledge(c, ack));
    box.append(
      h(
        "div",
        {
          className: "alert critical",
          role: "alert",
          dataset: { id: c.id, uid: c.study_instance_uid },
        },
        h("strong", {}, `${t("critical_result")}${t("colon")}`),
        h("span", { className: "finding" }, c.finding),
        h("span", { className: "who" }, `${personName(c.patient_name)} · ${c.study_description}`),
        h("span", { className: "when" }, `${c.recorded_by} · ${fmtTime(c.communicated_at)}`),
        ack,
      ),
    );
  }
  for (const o of alerts.overdue) {
    box.append(
      h(
        "div",
        { className: "alert overdue", dataset: { uid: o.study_instance_uid } },
        h("strong", {}, `${t("overdue_alert")}${t("colon")}`),
        h("span", {}, `${personName(o.patient_name)} · ${o.study_description}`),
        h("span", { className: "when" }, `${t("deadline_at")} ${fmtTime(o.deadline_at)}`),
      ),
    );
  }
  for (const [uid, n] of notices) {
    const close = h("button", { type: "button", className: "link" }, t("dismiss"));
    close.addEventListener("click", () => {
      notices.delete(uid);
      renderAlerts();
    });
    box.append(
      h(
        "div",
        { className: "alert report", dataset: { uid, status: n.status } },
        h(
          "strong",
          {},
          `${t(n.status === "preliminary" ? "report_preliminary_in" : "report_final_in")}` +
            t("colon"),
        ),
        h("span", {}, describe(studyOf(uid))),
        printLink(uid),
        close,
      ),
    );
  }
}

async function acknowledge(c, button) {
  button.disabled = true;
  try {
    const study = encodeURIComponent(c.study_instance_uid);
    const path = `/api/v1/studies/${study}/report/critical-results/${c.id}/acknowledge`;
    await api(path, { method: "POST" });
    alerts.critical = alerts.critical.filter((x) => x.id !== c.id);
    renderAlerts();
    toast(t("acknowledged"));
  } catch (err) {
    button.disabled = false;
    toast(errorText(err), "error");
  }
}

function notify(title, body) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    new Notification(title, { body, lang: lang() });
  } catch {
    // some browsers only notify from a service worker: the banner is there anyway
  }
}

function setupNotifications() {
  const button = $("notify-button");
  if (!("Notification" in window) || Notification.permission !== "default") {
    button.hidden = true;
    return;
  }
  button.hidden = false;
  button.addEventListener("click", async () => {
    await Notification.requestPermission();
    button.hidden = Notification.permission !== "default";
  });
}

async function onEvent(kind, event) {
  const data = JSON.parse(event.data || "{}");
  const uid = data.study_uid;
  await reload();
  const what = describe(studyOf(uid));
  if (kind === "report_signed" || kind === "report_amended") {
    const status = data.payload?.status || "final";
    notices.set(uid, { status, at: Date.now() });
    renderAlerts();
    notify(t(status === "preliminary" ? "report_preliminary_in" : "report_final_in"), what);
  } else if (kind === "critical_result") {
    notify(t("critical_result"), what);
  } else if (kind === "study_overdue") {
    notify(t("overdue_alert"), what);
  }
}

function setLive(on) {
  const el = $("live");
  el.textContent = on ? `● ${t("live")}` : `○ ${t("polling")}`;
  el.className = `live ${on ? "on" : "off"}`;
  el.dataset.mode = on ? "live" : "polling";
}

function connectEvents() {
  setLive(false);
  if (!me.can("events")) return;
  source = new EventSource("/api/v1/events"); // the session cookie is the credential
  source.onopen = () => setLive(true);
  source.onerror = () => setLive(false);
  for (const kind of [
    "report_signed",
    "report_amended",
    "critical_result",
    "critical_result_acknowledged",
    "study_overdue",
    "study_urgent",
    "call_ahead",
  ]) {
    source.addEventListener(kind, (e) => onEvent(kind, e));
  }
}

// --- a study's timeline, under its row (open ones stay open through a re-render) ---------
const openTimelines = new Set();

async function showTimeline(uid, row) {
  const list = h("ol", { className: "timeline-hops" });
  const targets = h("p", { className: "targets" });
  const detail = h(
    "tr",
    { className: "timeline-row", dataset: { uid } },
    h("td", { colSpan: 7 }, h("div", { className: "timeline" }, list, targets)),
  );
  row.after(detail);
  try {
    drawTimeline(list, targets, await api(`/api/v1/studies/${encodeURIComponent(uid)}/timeline`));
  } catch (err) {
    targets.textContent = errorText(err);
  }
}

function toggleTimeline(uid, row) {
  const open = row.nextElementSibling?.classList.contains("timeline-row");
  if (open) {
    row.nextElementSibling.remove();
    openTimelines.delete(uid);
  } else {
    openTimelines.add(uid);
    showTimeline(uid, row);
  }
}

// --- lists -------------------------------------------------------------------------------
function render() {
  setLive(source !== null && source.readyState === EventSource.OPEN);
  renderAlerts();
  const critical = new Set(alerts.critical.map((c) => c.study_instance_uid));
  const overdue = new Set(alerts.overdue.map((o) => o.study_instance_uid));
  const body = $("studies-body");
  body.replaceChildren();
  for (const s of studies) {
    const state = STATE[s.status] || s.status;
    const actions = h("td", { className: "actions" });
    if (REPORTED.has(s.status)) actions.append(printLink(s.study_instance_uid));
    if (!REPORTED.has(s.status) && s.priority !== "stat" && s.status !== "cancelled") {
      const b = h("button", { type: "button", className: "flag" }, t("green_channel"));
      b.addEventListener("click", () => flag(s));
      b.disabled = !me.can("flag");
      actions.append(b);
    }
    const timelineButton = h("button", { type: "button", className: "timeline" }, t("timeline"));
    actions.append(timelineButton);
    const tags = [h("span", { className: `status-tag ${state}` }, t(state))];
    if (overdue.has(s.study_instance_uid))
      tags.push(h("span", { className: "status-tag overdue" }, t("overdue")));
    if (critical.has(s.study_instance_uid))
      tags.push(h("span", { className: "status-tag critical" }, t("critical_result")));
    body.append(
      h(
        "tr",
        {
          className: `row ${s.category || s.priority}`,
          dataset: {
            uid: s.study_instance_uid,
            state,
            status: s.status,
            category: s.category || "",
          },
        },
        h("td", {}, personName(s.patient_name)),
        h("td", {}, s.study_description),
        h("td", {}, s.modality),
        h("td", {}, fmtTime(s.received_at)),
        h("td", { className: "state" }, tags),
        h(
          "td",
          {},
          s.category
            ? h(
                "span",
                { className: `badge ${s.category === "stroke" ? "stroke" : "chest"}` },
                t(s.category),
              )
            : "",
        ),
        actions,
      ),
    );
    const row = body.lastElementChild;
    timelineButton.addEventListener("click", () => toggleTimeline(s.study_instance_uid, row));
    if (openTimelines.has(s.study_instance_uid)) showTimeline(s.study_instance_uid, row);
  }
  const byUid = new Map(studies.map((s) => [s.study_instance_uid, s]));
  const rbody = $("reports-body");
  rbody.replaceChildren();
  for (const r of reports) {
    const s = byUid.get(r.study_instance_uid);
    rbody.append(
      h(
        "tr",
        { className: "row", dataset: { uid: r.study_instance_uid, status: r.status } },
        h("td", {}, s ? personName(s.patient_name) : ""),
        h("td", {}, s ? s.study_description : ""),
        h("td", {}, h("span", { className: `status-tag ${r.status}` }, t(r.status))),
        h("td", { className: "impression" }, r.impression),
        h("td", {}, r.signed_by_name || ""),
        h("td", {}, fmtTime(r.signed_at)),
        h("td", {}, printLink(r.study_instance_uid, "button print-link")),
      ),
    );
  }
  const cbody = $("call-aheads-body");
  cbody.replaceChildren();
  $("call-aheads").hidden = !callAheads.length;
  for (const c of callAheads) {
    const cancel = h("button", { type: "button", className: "link" }, t("withdraw"));
    cancel.addEventListener("click", () => withdraw(c));
    cbody.append(
      h(
        "tr",
        { className: `row ${c.category}`, dataset: { id: c.id } },
        h("td", {}, c.patient_name),
        h("td", {}, c.patient_id),
        h(
          "td",
          {},
          h(
            "span",
            { className: `badge ${c.category === "stroke" ? "stroke" : "chest"}` },
            t(c.category),
          ),
        ),
        h("td", {}, c.onset_at ? fmtTime(c.onset_at) : ""),
        h("td", {}, c.note),
        h("td", {}, fmtTime(c.announced_at)),
        h("td", {}, cancel),
      ),
    );
  }
}

// --- green channel for a study already sent -----------------------------------------------
function flag(study) {
  const dialog = $("flag-dialog");
  const form = $("flag-form");
  form.reset(); // no category chosen: the nurse says which
  $("flag-patient").replaceChildren(
    h("strong", {}, personName(study.patient_name) || "—"),
    h(
      "span",
      {},
      ` · ${study.study_description || ""} · ${study.modality} · ${fmtTime(study.received_at)}`,
    ),
  );
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    const category = form.querySelector("input[name=category]:checked")?.value;
    try {
      await api(`/api/v1/studies/${encodeURIComponent(study.study_instance_uid)}/flag`, {
        method: "POST",
        json: { category, reason: $("flag-reason").value },
      });
      toast(t("flagged"));
      reload();
    } catch (err) {
      toast(errorText(err), "error");
    }
  };
  dialog.showModal();
}

// --- call-ahead: a patient on the way, not scanned yet --------------------------------------
export function onsetFromClock(text, now = new Date()) {
  // "14:30" today (yesterday when that is still to come) as an ISO time with its offset
  const m = /^([01]?\d|2[0-3])[:：]([0-5]\d)$/.exec(text.trim());
  if (!m) return null;
  const when = new Date(now);
  when.setHours(Number(m[1]), Number(m[2]), 0, 0);
  if (when > now) when.setDate(when.getDate() - 1);
  return when.toISOString();
}

function callAhead() {
  const dialog = $("call-dialog");
  const form = $("call-form");
  form.reset();
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    const onsetText = $("ca-onset").value.trim();
    const onset = onsetText ? onsetFromClock(onsetText) : null;
    try {
      await api("/api/v1/call-aheads", {
        method: "POST",
        json: {
          patient_name: $("ca-name").value,
          patient_id: $("ca-id").value,
          category: form.querySelector("input[name=ca-category]:checked")?.value,
          onset_at: onset,
          note: $("ca-note").value,
        },
      });
      toast(t("announced"));
      reload();
    } catch (err) {
      toast(errorText(err), "error");
    }
  };
  dialog.showModal();
}

async function withdraw(c) {
  try {
    await api(`/api/v1/call-aheads/${c.id}/cancel`, { method: "POST" });
    reload();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

if (me) {
  $("call-ahead-button").addEventListener("click", callAhead);
  setupNotifications();
  await reload();
  connectEvents();
  setInterval(reload, 30000);
}
