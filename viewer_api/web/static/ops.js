// The operations picture (admin): held images to decide, volumes, turnaround against the
// deadline, urgent finds.
import { api, errorText, h, toast } from "./api.js";
import { fmtDuration, t } from "./i18n.js";
import { startPage } from "./shell.js";
import { dayColumns, histogram, stackedBars } from "./charts.js";
import { drawNow, loadNow } from "./opsnow.js";
import { drawTurnaround, drawWeekly, loadTurnaround, loadWeekly } from "./turnaround.js";

const me = await startPage({
  roles: ["admin"],
  onLang: () => {
    drawNow();
    drawTurnaround();
    drawWeekly();
    draw();
  },
});
let stats = null;
let conflicts = [];
const CAT_COLOURS = { stroke: "#dc2626", chest_pain: "#ea580c", routine: "#2563eb" };

async function reload() {
  try {
    await loadNow();
    await loadTurnaround();
    await loadWeekly();
    [stats, conflicts] = await Promise.all([
      api(`/api/v1/stats?days=${document.getElementById("days").value}`),
      api("/api/v1/ingest-conflicts"),
    ]);
    draw();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

async function resolve(id, resolution) {
  try {
    await api(`/api/v1/ingest-conflicts/${id}/resolve`, { method: "POST", json: { resolution } });
    toast(t("conflict_resolved"));
    await reload();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

function drawConflicts() {
  const body = document.getElementById("conflicts-body");
  if (!conflicts.length) {
    const empty = h("td", { colSpan: 7, className: "muted" }, t("no_conflicts"));
    body.replaceChildren(h("tr", {}, empty));
    return;
  }
  body.replaceChildren(
    ...conflicts.map((c) =>
      h(
        "tr",
        { dataset: { id: String(c.id), kind: c.kind, sop: c.sop_instance_uid } },
        h("td", {}, t(c.kind)),
        h("td", {}, `${c.site} (${c.calling_ae})`),
        h("td", { className: c.category || "" }, c.category ? t(c.category) : t("routine")),
        h("td", {}, `${c.patient_name} ${c.patient_id}`),
        h(
          "td",
          {},
          `${c.existing_site ?? ""}: ${c.existing_patient_name} ${c.existing_patient_id}`,
        ),
        h("td", {}, new Date(c.held_at).toLocaleString()),
        h(
          "td",
          {},
          ...["separate_study", "discard"].map((resolution) =>
            h(
              "button",
              { type: "button", className: resolution, onclick: () => resolve(c.id, resolution) },
              t(resolution),
            ),
          ),
        ),
      ),
    ),
  );
}

function draw() {
  if (!stats) return;
  drawConflicts();
  document.getElementById("ops-total").textContent = `${t("total")}: ${stats.total_studies}`;
  const cards = document.getElementById("urgent-cards");
  cards.replaceChildren(
    ...stats.urgent.map((u) =>
      h(
        "div",
        { className: `card ${u.category}`, dataset: { category: u.category } },
        h("h4", {}, t(u.category)),
        h("p", { className: "big" }, u.studies),
        h("p", {}, `${t("final")}: ${u.final}`),
        u.critical_results === null
          ? ""
          : h("p", {}, `${t("critical_results")}: ${u.critical_results}`),
      ),
    ),
  );

  const sites = [...new Set(stats.volumes.map((v) => v.site))];
  const modalities = [...new Set(stats.volumes.map((v) => v.modality))];
  const rows = sites.map((site) => ({
    label: site,
    parts: Object.fromEntries(
      stats.volumes.filter((v) => v.site === site).map((v) => [v.modality, v.count]),
    ),
  }));
  document
    .getElementById("chart-volumes")
    .replaceChildren(stackedBars(rows, modalities, { title: t("volumes") }));

  document.getElementById("chart-turnaround").replaceChildren(
    ...stats.turnaround.map((ta) => {
      const box = h("div", { className: "turnaround", dataset: { category: ta.category } });
      box.append(
        histogram(ta.histogram, ta.deadline_minutes, {
          title: `${t(ta.category)} (n=${ta.count})`,
          colour: CAT_COLOURS[ta.category],
          deadlineLabel: t("deadline_line"),
          deadlineText: (minutes) => fmtDuration(minutes * 60),
        }),
      );
      box.append(
        h(
          "p",
          { className: "small" },
          [
            `${t("p50")}: ${ta.p50_minutes ?? "–"} ${t("minutes")}`,
            `${t("p90")}: ${ta.p90_minutes ?? "–"} ${t("minutes")}`,
            `${t("within_deadline")}: ${ta.within_deadline}/${ta.count}`,
          ].join(" · "),
        ),
      );
      return box;
    }),
  );
  document.getElementById("chart-days").replaceChildren(
    dayColumns(stats.by_day, ["stroke", "chest_pain", "routine"], {
      title: t("by_day"),
      colours: [CAT_COLOURS.stroke, CAT_COLOURS.chest_pain, CAT_COLOURS.routine],
      labels: [t("stroke"), t("chest_pain"), t("routine")],
    }),
  );
}

if (me) {
  document.getElementById("refresh").addEventListener("click", reload);
  document.getElementById("days").addEventListener("change", reload);
  const shown = () => loadTurnaround().catch((err) => toast(errorText(err), "error"));
  document.getElementById("ta-window").addEventListener("change", shown);
  reload();
}
