// The operations picture (admin): volumes, turnaround against the deadline, urgent finds.
import { api, errorText, h, toast } from "./api.js";
import { fmtDuration, t } from "./i18n.js";
import { startPage } from "./shell.js";
import { dayColumns, histogram, stackedBars } from "./charts.js";
import { drawNow, loadNow } from "./opsnow.js";

const me = await startPage({
  roles: ["admin"],
  onLang: () => {
    drawNow();
    draw();
  },
});
let stats = null;
const CAT_COLOURS = { stroke: "#dc2626", chest_pain: "#ea580c", routine: "#2563eb" };

async function reload() {
  try {
    await loadNow();
    stats = await api(`/api/v1/stats?days=${document.getElementById("days").value}`);
    draw();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

function draw() {
  if (!stats) return;
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
  reload();
}
