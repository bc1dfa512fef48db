// The operations page's "now": studies past their deadline or escalated, each radiologist's
// workload today, each township gateway's health.
import { api, h } from "./api.js";
import { fmtDuration, fmtTime, t } from "./i18n.js";
import { personName } from "./names.js";

const $ = (id) => document.getElementById(id);

function cell(text, className = "") {
  return h("td", { className }, text ?? "—");
}

function drawLate(late) {
  $("late-empty").hidden = late.length > 0;
  $("late-body").replaceChildren(
    ...late.map((s) => {
      const flags = [];
      if (s.overdue) flags.push(h("span", { className: "status-tag overdue" }, t("overdue")));
      if (s.escalation_level > 0)
        flags.push(
          h(
            "span",
            { className: "status-tag escalated" },
            `${t("escalated")} ${s.escalation_level}`,
          ),
        );
      return h(
        "tr",
        {
          className: `row ${s.category || s.priority}`,
          dataset: {
            uid: s.study_instance_uid,
            overdue: s.overdue ? "1" : "0",
            category: s.category || "",
          },
        },
        cell(s.site),
        cell(personName(s.patient_name)),
        cell(s.study_description),
        cell(s.category ? t(s.category) : t("routine")),
        cell(fmtTime(s.received_at)),
        cell(fmtTime(s.deadline_at)),
        cell(t(s.status)),
        h("td", {}, flags),
        cell(s.claimed_by || t("unclaimed")),
      );
    }),
  );
}

function drawReaders(readers) {
  $("readers-body").replaceChildren(
    ...readers.map((r) =>
      h(
        "tr",
        { className: "row", dataset: { username: r.username } },
        cell(r.display_name),
        cell(r.claimed_now, "num claimed"),
        cell(r.read_today, "num read"),
        cell(
          r.median_read_minutes === null ? "—" : fmtDuration(r.median_read_minutes * 60),
          "num median",
        ),
      ),
    ),
  );
}

function drawGateways(gateways, now) {
  $("gateways-body").replaceChildren(
    ...gateways.map((g) => {
      const failing = Boolean(g.last_error);
      const state =
        g.last_contact === null ? "never" : g.stale ? "stale" : failing ? "failing" : "ok";
      const since = g.last_contact ? (Date.parse(now) - Date.parse(g.last_contact)) / 1000 : null;
      return h(
        "tr",
        { className: `row gw-${state}`, dataset: { gateway: g.gateway, state } },
        cell(g.sites.join(", ")),
        cell(g.gateway),
        h("td", {}, h("span", { className: `status-tag gw-${state}` }, t(`gw_${state}`))),
        cell(since === null ? t("never") : t("ago").replace("{time}", fmtDuration(since))),
        cell(g.pending_urgent, "num"),
        cell(g.pending_routine, "num"),
        cell(
          g.oldest_unsent_age_seconds === null ? "—" : fmtDuration(g.oldest_unsent_age_seconds),
          "num",
        ),
        cell(
          g.clock_offset_seconds === null
            ? "—"
            : `${g.clock_offset_seconds > 0 ? "+" : ""}${g.clock_offset_seconds.toFixed(1)} s`,
          "num clock",
        ),
        h(
          "td",
          { className: "error-text" },
          g.last_error ? `${g.last_error} (×${g.last_error_attempts})` : "—",
        ),
      );
    }),
  );
}

let data = null;

export function drawNow() {
  if (!data) return;
  drawLate(data.late);
  drawReaders(data.readers);
  drawGateways(data.gateways, data.at);
  $("now-at").textContent = fmtTime(data.at);
}

export async function loadNow() {
  data = await api("/api/v1/ops/now");
  drawNow();
}
