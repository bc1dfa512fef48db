// The reading worklist: urgent first, deadline countdown, live updates, claim / next case.
import { api, errorText, h, ohifUrl, toast } from "./api.js";
import { ageText, timeLeft } from "./format.js";
import { fmtTime, t } from "./i18n.js";
import { startPage } from "./shell.js";
import { drawCallAheads, loadCallAheads } from "./callaheads.js";
import { sexText } from "./names.js";
import { reasonText } from "./reasons.js";

const POLL_MS = 5000;
const RECONNECT_MS = 30000; // a refused event stream is tried again after this long
const me = await startPage({ roles: ["radiologist", "admin"], onLang: () => redraw() });
let items = [];
let live = false;
let pollTimer = null;
let source = null;
let reloadPending = null;
let clocks = new Map(); // countdown cell -> its worklist item

const filters = ["site", "modality", "category", "status"];

function query() {
  const p = new URLSearchParams();
  for (const f of filters) {
    const v = document.getElementById(`f-${f}`).value;
    if (v) p.set(f, v);
  }
  const q = document.getElementById("f-q").value.trim();
  if (q) p.set("q", q);
  return p.toString();
}

async function reload() {
  try {
    const q = query();
    const fetched = Date.now();
    [items] = await Promise.all([api(`/api/v1/worklist${q ? "?" + q : ""}`), loadCallAheads()]);
    for (const item of items) {
      // the server's own "time left" makes the countdown immune to a wrong clock on this
      // computer; the whole time the study had sets the colours
      if (typeof item.time_left_seconds === "number") {
        item.localDeadline = fetched + item.time_left_seconds * 1000;
        item.window = (Date.parse(item.due_at) - Date.parse(item.received_at)) / 1000;
      }
    }
    fillSites();
    render();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

function scheduleReload() {
  clearTimeout(reloadPending);
  reloadPending = setTimeout(reload, 200);
}

function fillSites() {
  const select = document.getElementById("f-site");
  const known = new Set([...select.options].map((o) => o.value));
  for (const s of new Set(items.map((i) => i.site))) {
    if (!known.has(s)) select.append(h("option", { value: s }, s));
  }
}

// the countdown cell's text, state and seconds, now
function countdown(item, now = Date.now()) {
  if (item.localDeadline === undefined) return { text: "", state: "none", seconds: "" };
  const seconds = Math.round((item.localDeadline - now) / 1000);
  return { ...timeLeft(seconds, item.window), seconds };
}

function badge(item) {
  if (item.category === "stroke") return h("span", { className: "badge stroke" }, t("stroke"));
  if (item.category === "chest_pain") {
    return h("span", { className: "badge chest" }, t("chest_pain"));
  }
  if (item.priority === "stat") return h("span", { className: "badge stat" }, t("stat_badge"));
  return h("span", { className: "badge routine" }, t("routine"));
}

// the report state, and a flag when a corrected re-send replaced images after the report
function statusCell(item) {
  const cell = h("td", {}, h("span", { className: `status-tag ${item.status}` }, t(item.status)));
  if (item.updated_after_report_at) {
    const when = fmtTime(item.updated_after_report_at);
    const title = t("updated_after_report").replace("{time}", when);
    cell.append(h("span", { className: "updated-after-report", title }, ` ${t("updated_flag")}`));
  }
  return cell;
}

function render() {
  clocks = new Map();
  const body = document.getElementById("worklist-body");
  body.replaceChildren();
  document.getElementById("empty").hidden = items.length > 0;
  for (const item of items) {
    const mine = item.claimed_by === me.username;
    const reasons = item.triage_reasons || [];
    const cat = badge(item);
    const catCell = h("td", {}, cat);
    if (item.escalation_level > 0) {
      const mark = ` ⚠${item.escalation_level}`;
      catCell.append(h("span", { className: "escalated", title: t("escalated") }, mark));
    }
    if (reasons.length) {
      cat.title = reasons.map(reasonText).join("\n");
      catCell.append(
        h(
          "details",
          { className: "reasons" },
          h("summary", {}, "…"),
          h(
            "ul",
            {},
            reasons.map((r) => h("li", {}, reasonText(r))),
          ),
        ),
      );
    }
    const actions = h("td", { className: "actions" });
    const button = (className, label, onclick) =>
      h("button", { type: "button", className, onclick }, t(label));
    if (!item.claimed_by) {
      actions.append(button("claim", "open", () => claim(item, true)));
    } else if (mine) {
      actions.append(
        button("open", "open", () => openStudy(item)),
        button("release", "release", () => release(item)),
      );
    } else {
      actions.append(button("view", "open", () => openStudy(item)));
    }
    if (me.can("ohif")) {
      const href = ohifUrl(item.study_instance_uid);
      actions.append(h("a", { className: "button ohif", href, target: "_blank" }, "OHIF"));
    }
    if (me.can("assign")) actions.append(button("assign", "assign", () => assign(item)));
    if (me.can("cancel")) actions.append(button("cancel", "cancel", () => cancel(item)));
    const reader = h("td", { className: "reader" });
    if (item.claimed_by) {
      const holder = item.claimed_by_name || item.claimed_by;
      reader.append(`${holder}${mine ? ` (${t("reader_me")})` : ""}`);
    } else if (item.claim_expired_by) {
      // a claim that ran out stays visible to every reader until someone takes the study
      const when = fmtTime(item.claim_expired_at);
      const whose = item.claim_expired_by_name || item.claim_expired_by;
      const text = `${t("claim_expired_by")}: ${whose} · ${when}`;
      reader.append(h("span", { className: "claim-expired" }, text));
    }
    const row = h("tr", {
      className: `row ${item.category || item.priority}${mine ? " mine" : ""}`,
      dataset: {
        uid: item.study_instance_uid,
        category: item.category || "",
        priority: item.priority,
      },
    });
    const who = [sexText(item.patient_sex), ageText(item.patient_age)].filter(Boolean);
    const patient = h(
      "td",
      { className: "patient" },
      h("div", { className: "name" }, item.patient_name),
      h("div", { className: "muted small" }, [...who, item.patient_id].filter(Boolean).join(" · ")),
    );
    const description = h(
      "td",
      {},
      item.study_description,
      item.body_part ? h("div", { className: "muted small" }, item.body_part) : null,
    );
    const clock = h("td", { className: "countdown" });
    clocks.set(clock, item);
    row.append(
      catCell,
      patient,
      h("td", { className: "accession" }, item.accession_number),
      description,
      h("td", {}, item.site),
      h("td", {}, item.modality),
      h("td", { className: "num" }, item.num_instances),
      h("td", {}, fmtTime(item.received_at)),
      clock,
      statusCell(item),
      reader,
      actions,
    );
    body.append(row);
  }
  tick();
}

// every countdown, now: its words, its colour (data-state) and the seconds left (data-left)
function tick() {
  for (const [cell, item] of clocks) {
    const left = countdown(item);
    cell.textContent = item.due === "final" ? `${t("final_due")} ${left.text}` : left.text;
    cell.dataset.due = item.due || "";
    cell.dataset.state = left.state;
    cell.dataset.left = String(left.seconds);
  }
}

function openStudy(item) {
  location.href = `/ui/reading?study=${encodeURIComponent(item.study_instance_uid)}`;
}

async function claim(item, open) {
  try {
    await api(`/api/v1/worklist/${item.study_instance_uid}/claim`, { method: "POST" });
    if (open) openStudy(item);
    else reload();
  } catch (err) {
    toast(err.status === 409 ? t("claimed_by_other") : errorText(err), "error");
    reload();
  }
}

async function release(item) {
  try {
    await api(`/api/v1/worklist/${item.study_instance_uid}/release`, { method: "POST" });
  } catch (err) {
    toast(errorText(err), "error");
  }
  reload();
}

// The admin's dialog: hand a study to a radiologist (picked from the active readers), or
// cancel it; a reason either way (required to cancel).
let readers = null;

async function adminDialog(item, action) {
  const dialog = document.getElementById("admin-dialog");
  const who = document.getElementById("admin-who");
  const reason = document.getElementById("admin-reason");
  if (action === "assign" && readers === null) {
    const users = await api("/api/v1/users");
    readers = users.filter((u) => u.is_active && u.role === "radiologist");
  }
  document.getElementById("admin-title").textContent = t(`${action}_title`);
  const what = [item.patient_name, item.study_description, item.site].filter(Boolean);
  document.getElementById("admin-study").textContent = what.join(" · ");
  document.getElementById("admin-who-box").hidden = action !== "assign";
  who.required = action === "assign";
  who.replaceChildren(
    ...(readers || []).map((u) => {
      const label = u.display_name ? `${u.display_name} (${u.username})` : u.username;
      return h("option", { value: u.username, selected: u.username === item.claimed_by }, label);
    }),
  );
  reason.value = "";
  reason.required = action === "cancel";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    const url = `/api/v1/worklist/${item.study_instance_uid}/${action}`;
    const text = reason.value.trim();
    const json =
      action === "assign" ? { username: who.value, reason: text || null } : { reason: text };
    try {
      await api(url, { method: "POST", json });
    } catch (err) {
      toast(errorText(err), "error");
    }
    reload();
  };
  dialog.returnValue = "";
  dialog.showModal();
}

function assign(item) {
  adminDialog(item, "assign").catch((err) => toast(errorText(err), "error"));
}

function cancel(item) {
  adminDialog(item, "cancel").catch((err) => toast(errorText(err), "error"));
}

async function nextCase() {
  try {
    const item = await api("/api/v1/worklist/next", { method: "POST" });
    if (item) openStudy(item);
    else toast(t("nothing_waiting"));
  } catch (err) {
    toast(errorText(err), "error");
  }
}

function drawLive() {
  const el = document.getElementById("live");
  el.textContent = live ? `● ${t("live")}` : `○ ${t("polling")}`;
  el.className = `live ${live ? "on" : "off"}`;
  el.dataset.mode = live ? "live" : "polling";
}

function redraw() {
  render();
  drawLive();
}

function setLive(on) {
  live = on;
  drawLive();
  clearInterval(pollTimer);
  // with the stream, a slow safety poll; without it, every 5 s
  pollTimer = setInterval(reload, on ? 30000 : POLL_MS);
}

async function connectEvents() {
  setLive(false);
  if (!me.can("events")) return;
  try {
    source = new EventSource("/api/v1/events");
  } catch {
    return;
  }
  source.onopen = () => setLive(true);
  source.onmessage = scheduleReload;
  for (const kind of [
    "study_new",
    "study_urgent",
    "study_escalated",
    "study_claimed",
    "study_released",
    "report_signed",
    "report_amended",
    "study_flagged",
    "study_cancelled",
    "study_assigned",
    "escalation",
    "critical_result",
    "call_ahead",
    "study_updated_after_report",
  ]) {
    source.addEventListener(kind, scheduleReload);
  }
  source.onerror = () => {
    // EventSource retries by itself; while it is down, poll
    if (source.readyState === EventSource.CLOSED) {
      // refused (429: this account has as many streams open as it may; 503: the server
      // is busy or restarting): poll meanwhile, and try the stream again a little later
      source = null;
      setLive(false);
      setTimeout(connectEvents, RECONNECT_MS);
    } else if (live) setLive(false);
  };
}

if (me) {
  for (const f of filters) document.getElementById(`f-${f}`).addEventListener("change", reload);
  let typing = null;
  document.getElementById("f-q").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(reload, 250);
  });
  document.getElementById("next-case").addEventListener("click", nextCase);
  reload();
  setInterval(tick, 1000);
  connectEvents();
}
