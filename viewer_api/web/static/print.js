// A clean printable report (what the township files), with the PDF when the server has it.
import { api, errorText, h } from "./api.js";
import { fmtTime, t } from "./i18n.js";
import { startPage } from "./shell.js";

const uid = new URLSearchParams(location.search).get("study");
const $ = (id) => document.getElementById(id);
let study = null;
let report = null;

function render() {
  if (!study || !report) return;
  $("p-site").textContent = study.site;
  const st = $("p-status");
  st.textContent = t(report.status);
  st.className = `p-status ${report.status}`;
  const meta = [
    ["patient", study.patient_name.replaceAll("^", " ")],
    ["sex", study.patient_sex],
    ["accession", study.accession_number],
    ["study_date", study.study_date],
    ["modality", study.modality],
    ["description", study.study_description],
  ];
  $("p-meta").replaceChildren(
    ...[0, 2, 4].map((i) =>
      h(
        "tr",
        {},
        h("th", {}, t(meta[i][0])),
        h("td", {}, meta[i][1]),
        h("th", {}, t(meta[i + 1][0])),
        h("td", {}, meta[i + 1][1]),
      ),
    ),
  );
  $("p-findings").textContent = report.findings;
  $("p-impression").textContent = report.impression;
  $("p-recommendation").textContent = report.recommendation;
  $("p-rec-box").hidden = !report.recommendation;
  const crit = report.critical_results || [];
  $("p-critical").hidden = !crit.length;
  $("p-critical-body").replaceChildren(
    ...crit.map((c) =>
      h(
        "p",
        {},
        [
          `${c.finding} — ${t("told_name")}: ${c.communicated_to_name}`,
          ` ${c.communicated_to_role} ${c.communicated_to_phone}; `,
          `${t("told_at")}: ${fmtTime(c.communicated_at)}; ${t(c.method)}`,
          c.read_back_confirmed ? "; " + t("read_back") : "",
        ].join(""),
      ),
    ),
  );
  const add = report.addenda || [];
  $("p-addenda").hidden = !add.length;
  $("p-addenda-body").replaceChildren(
    ...add.map((a) => h("p", {}, `${fmtTime(a.created_at)} ${a.author}: ${a.text} (${a.reason})`)),
  );
  const signedBy = `${t("signed_by")}: ${report.signed_by || ""}`;
  $("p-sign").textContent = `${signedBy}    ${t("signed_at")}: ${fmtTime(report.signed_at)}`;
}

async function main() {
  const me = await startPage({ onLang: render });
  if (!me) return;
  if (me.role !== "clinic") $("back").href = "/ui/worklist";
  $("print-button").addEventListener("click", () => window.print());
  try {
    [study, report] = await Promise.all([
      api(`/api/v1/studies/${encodeURIComponent(uid)}`),
      api(`/api/v1/studies/${encodeURIComponent(uid)}/report`),
    ]);
  } catch (err) {
    $("report").replaceChildren(h("p", { className: "error" }, errorText(err)));
    return;
  }
  render();
  document.body.dataset.ready = "1";
  if (me.can("pdf")) {
    const b = $("pdf-button");
    b.hidden = false;
    b.addEventListener("click", async () => {
      const r = await api(`/api/v1/studies/${encodeURIComponent(uid)}/report.pdf`, { raw: true });
      window.open(URL.createObjectURL(await r.blob()), "_blank");
    });
  }
}

main();
