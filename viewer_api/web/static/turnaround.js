// The operations page's turnaround hop by hop: per category, each timeline stage's p50 /
// p90 / p95 over today or the last 7 days, and the urgent studies overdue now; per site and
// week the headline stages' p50 / p90 by category and the reading deadlines kept.
import { api, h } from "./api.js";
import { fmtTime, t } from "./i18n.js";
import { fmtSeconds } from "./timeline.js";

const $ = (id) => document.getElementById(id);
let data = null;
let weekly = null;

function stageCell(category, figures) {
  const text =
    figures.count === 0
      ? "—"
      : `${fmtSeconds(figures.p50_seconds)} · ${fmtSeconds(figures.p90_seconds)} · ` +
        `${fmtSeconds(figures.p95_seconds)} (n=${figures.count})`;
  return h(
    "td",
    {
      className: `num ${category}`,
      dataset: {
        category,
        stage: figures.stage,
        count: String(figures.count),
        p50: figures.p50_seconds ?? "",
        p90: figures.p90_seconds ?? "",
        p95: figures.p95_seconds ?? "",
      },
    },
    text,
  );
}

export function drawTurnaround() {
  if (!data) return;
  const categories = data.categories;
  $("ta-count").textContent = `${t("total")}: ${data.studies}`;
  $("ta-head").replaceChildren(
    h(
      "tr",
      {},
      h("th", {}, t("stage")),
      ...categories.map((c) =>
        h("th", { className: c.category }, `${t(c.category)} (${c.studies}) p50 · p90 · p95`),
      ),
    ),
  );
  const stages = categories[0]?.stages.map((s) => s.stage) ?? [];
  $("ta-body").replaceChildren(
    ...stages.map((stage) =>
      h(
        "tr",
        { dataset: { stage } },
        h("td", {}, t(`stage_${stage}`)),
        ...categories.map((c) =>
          stageCell(
            c.category,
            c.stages.find((s) => s.stage === stage),
          ),
        ),
      ),
    ),
  );
  const overdue = data.overdue_urgent;
  $("overdue-urgent-empty").hidden = overdue.length > 0;
  $("overdue-urgent-body").replaceChildren(
    ...overdue.map((o) =>
      h(
        "tr",
        { className: `row ${o.category || "stat"}`, dataset: { uid: o.study_instance_uid } },
        h("td", {}, o.site),
        h("td", {}, o.category ? t(o.category) : t("stat_badge")),
        h("td", {}, fmtTime(o.listed_at)),
        h("td", { dataset: { hop: o.waiting_after } }, t(`hop_${o.waiting_after}`)),
        h("td", {}, o.targets.map((x) => t(`target_${x}`)).join(", ")),
      ),
    ),
  );
}

export async function loadTurnaround() {
  const window = $("ta-window").value;
  data = await api(`/api/v1/ops/turnaround?window=${encodeURIComponent(window)}`);
  drawTurnaround();
}

function share(d) {
  if (!d.decided) return "—";
  return `${d.within}/${d.decided} (${Math.round(d.share * 100)}%)`;
}

function shareCell(d, props) {
  const dataset = { within: String(d.within), decided: String(d.decided) };
  return h("td", { dataset, ...props }, share(d));
}

export function drawWeekly() {
  if (!weekly) return;
  $("tw-head").replaceChildren(
    h(
      "tr",
      {},
      h("th", {}, t("site")),
      h("th", {}, t("week_of")),
      h("th", {}, t("urgent_on_time")),
      h("th", {}, t("category")),
      h("th", {}, t("studies")),
      ...weekly.stages.map((stage) => h("th", {}, `${t(`stage_${stage}`)} p50 · p90`)),
      h("th", {}, t("within_deadline")),
    ),
  );
  const rows = [];
  for (const row of weekly.rows) {
    const shown = row.categories.filter((c) => c.studies > 0);
    shown.forEach((c, i) => {
      const lead = i
        ? []
        : [
            h("td", { rowSpan: shown.length }, row.site),
            h("td", { rowSpan: shown.length }, row.week_start.slice(0, 10)),
            shareCell(row.urgent, { rowSpan: shown.length, className: "num urgent" }),
          ];
      rows.push(
        h(
          "tr",
          {
            className: `row ${c.category}`,
            dataset: { site: row.site, week: row.week_start.slice(0, 10), category: c.category },
          },
          ...lead,
          h("td", { className: c.category }, t(c.category)),
          h("td", { className: "num" }, String(c.studies)),
          ...c.stages.map((s) =>
            h(
              "td",
              {
                className: "num",
                dataset: {
                  stage: s.stage,
                  count: String(s.count),
                  p50: s.p50_seconds ?? "",
                  p90: s.p90_seconds ?? "",
                },
              },
              s.count === 0
                ? "—"
                : `${fmtSeconds(s.p50_seconds)} · ${fmtSeconds(s.p90_seconds)} (n=${s.count})`,
            ),
          ),
          shareCell(c.deadline, { className: "num deadline" }),
        ),
      );
    });
  }
  $("tw-empty").hidden = rows.length > 0;
  $("tw-body").replaceChildren(...rows);
}

export async function loadWeekly() {
  weekly = await api("/api/v1/ops/turnaround/weekly?weeks=4");
  drawWeekly();
}
