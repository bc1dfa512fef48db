// Patients a clinic announced before their images (call-ahead): the readers' pending urgent
// rows, shown above the worklist until the patient's first image arrives.
import { api, h } from "./api.js";
import { fmtTime, t } from "./i18n.js";

let calls = [];

export function drawCallAheads() {
  const box = document.getElementById("call-aheads");
  if (!box) return;
  box.hidden = !calls.length;
  document
    .getElementById("call-aheads-body")
    .replaceChildren(
      ...calls.map((c) =>
        h(
          "tr",
          { className: `row ${c.category}`, dataset: { id: c.id, category: c.category } },
          h(
            "td",
            {},
            h(
              "span",
              { className: `badge ${c.category === "stroke" ? "stroke" : "chest"}` },
              t(c.category),
            ),
          ),
          h("td", {}, [c.patient_name, c.patient_id].filter(Boolean).join(" · ")),
          h("td", {}, c.site),
          h("td", {}, c.onset_at ? fmtTime(c.onset_at) : "—"),
          h("td", {}, c.note),
          h("td", {}, `${c.announced_by} · ${fmtTime(c.announced_at)}`),
          h("td", {}, h("span", { className: "status-tag" }, t("awaiting_images"))),
        ),
      ),
    );
}

export async function loadCallAheads() {
  calls = await api("/api/v1/call-aheads");
  drawCallAheads();
}
