// The reading worklist: urgent first, deadline countdown, live updates, claim / next case.
import { api, errorText, h, toast } from "./api.js";
import { fmtTime, t } from "./i18n.js";
import { startPage } from "./shell.js";

const POLL_MS = 5000;
const RECONNECT_MS = 30000; // a refused event stream is tried again after this long
const me = await startPage({ roles: ["radiologist", "admin"], onLang: () => render() });
let items = [];
let live = false;
let pollTimer = null;
let source = null;
let reloadPending = null;

const filters = ["site", "modality", "category", "status"];

function query() {
  const p = new URLSearchParams();
  for (const f of filters) {
    const v = document.getElementById(`f-${f}`).value;
    if (v) p.set(f, v);
  }
  return p.toString();
}

async function reload() {
  try {
    const q = query();
    const fetched = Date.now();
    items = await api(`/api/v1/worklist${q ? "?" + q : ""}`);
    for (const item of items) {
      // the server's own "time left" (when it sends one) makes the countdown immune to a
      // wrong clock on this computer
      item.localDeadline =
        typeof item.time_left_seconds === "number"
          ? new Date(fetched + item.time_left_seconds * 1000).toISOString()
          : item.deadline_at;
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

export function timeLeft(deadlineIso, now = Date.now()) {
  if (!deadlineIso) return { text: "", overdue: false, seconds: null };
  const seconds = Math.round((Date.parse(deadlineIso) - now) / 1000);
  const abs = Math.abs(seconds);
  const hh = Math.floor(abs / 3600);
  const mm = Math.floor((abs % 3600) / 60);
  const ss = abs % 60;
  const pad = (n) => String(n).padStart(2, "0");
  const text = (hh ? `${hh}:${pad(mm)}` : `${mm}`) + `:${pad(ss)}`;
  return { text: seconds < 0 ? `${t("overdue")} ${text}` : text, overdue: seconds < 0, seconds };
}

function badge(item) {
  if (item.category === "stroke") return h("span", { className: "badge stroke" }, t("stroke"));
  if (item.category === "chest_pain") {
    return h("span", { className: "badge chest" }, t("chest_pain"));
  }
  if (item.priority === "stat") return h("span", { className: "badge stat" }, "STAT");
  return h("span", { className: "badge routine" }, t("routine"));
}

function render() {
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
      cat.title = reasons.join("\n");
      catCell.append(
        h(
          "details",
          { className: "reasons" },
          h("summary", {}, "…"),
          h(
            "ul",
            {},
            reasons.map((r) => h("li", {}, r)),
          ),
        ),
      );
    }
    const left = timeLeft(item.localDeadline);
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
    if (me.can("assign")) actions.append(button("assign", "assign", () => assign(item)));
    if (me.can("cancel")) actions.append(button("cancel", "cancel", () => cancel(item)));
    const reader = item.claimed_by ? `${item.claimed_by}${mine ? ` (${t("reader_me")})` : ""}` : "";
    const row = h("tr", {
      className: `row ${item.category || item.priority}${mine ? " mine" : ""}`,
      dataset: {
        uid: item.study_instance_uid,
        category: item.category || "",
        priority: item.priority,
      },
    });
    row.append(
      catCell,
      h("td", {}, item.patient_name.replaceAll("^", " ")),
      h("td", {}, item.study_description),
      h("td", {}, item.site),
      h("td", {}, item.modality),
      h("td", { className: "num" }, item.num_instances),
      h("td", {}, fmtTime(item.received_at)),
      h(
        "td",
        {
          className: `countdown${left.overdue ? " overdue" : ""}`,
          dataset: { deadline: item.localDeadline || "" },
        },
        left.text,
      ),
      h("td", {}, h("span", { className: `status-tag ${item.status}` }, t(item.status))),
      h("td", {}, reader),
      actions,
    );
    body.append(row);
  }
}

function tick() {
  for (const cell of document.querySelectorAll("td.countdown")) {
    const left = timeLeft(cell.dataset.deadline);
    cell.textContent = left.text;
    cell.classList.toggle("overdue", left.overdue);
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

async function assign(item) {
  const username = prompt(t("assign_to"));
  if (!username) return;
  try {
    const url = `/api/v1/worklist/${item.study_instance_uid}/assign`;
    await api(url, { method: "POST", json: { username } });
  } catch (err) {
    toast(errorText(err), "error");
  }
  reload();
}

async function cancel(item) {
  const reason = prompt(t("cancel_reason"));
  if (!reason) return;
  try {
    const url = `/api/v1/worklist/${item.study_instance_uid}/cancel`;
    await api(url, { method: "POST", json: { reason } });
  } catch (err) {
    toast(errorText(err), "error");
  }
  reload();
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

function setLive(on) {
  live = on;
  const el = document.getElementById("live");
  el.textContent = on ? `● ${t("live")}` : `○ ${t("polling")}`;
  el.className = `live ${on ? "on" : "off"}`;
  el.dataset.mode = on ? "live" : "polling";
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
  document.getElementById("next-case").addEventListener("click", nextCase);
  reload();
  setInterval(tick, 1000);
  connectEvents();
}
