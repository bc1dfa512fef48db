// The clinic page: the site's studies and their state, its reports newest first, and the
// "green channel" flag for a just-sent urgent patient.
import { api, errorText, h, toast } from "./api.js";
import { fmtTime, t } from "./i18n.js";
import { startPage } from "./shell.js";

const me = await startPage({ roles: ["clinic", "admin"], onLang: () => render() });
let studies = [];
let reports = [];
let canFlag = false;

const STATE = {
  receiving: "state_received",
  ready: "state_received",
  claimed: "state_reading",
  draft: "state_reading",
  preliminary: "state_reading",
  final: "state_reported",
  amended: "state_reported",
  cancelled: "cancelled",
};

async function reload() {
  try {
    const lists = await Promise.all([
      api("/api/v1/worklist?limit=200"),
      api("/api/v1/worklist?status=final&limit=200"),
      api("/api/v1/worklist?status=amended&limit=200"),
    ]);
    const seen = new Map();
    for (const item of lists.flat()) seen.set(item.study_instance_uid, item);
    studies = [...seen.values()].sort(
      (a, b) => Date.parse(b.received_at) - Date.parse(a.received_at),
    );
    reports = await api("/api/v1/reports?limit=200");
    render();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

function render() {
  const byUid = new Map(studies.map((s) => [s.study_instance_uid, s]));
  const body = document.getElementById("studies-body");
  body.replaceChildren();
  for (const s of studies) {
    const state = STATE[s.status] || s.status;
    const actions = h("td", { className: "actions" });
    const reported = state === "state_reported";
    if (reported)
      actions.append(
        h(
          "a",
          {
            href: `/ui/print?study=${encodeURIComponent(s.study_instance_uid)}`,
            className: "button",
          },
          t("print_view"),
        ),
      );
    if (!reported && s.priority !== "stat" && s.status !== "cancelled") {
      const b = h(
        "button",
        { type: "button", className: "flag", onclick: () => flag(s) },
        t("green_channel"),
      );
      b.disabled = !canFlag;
      if (!canFlag) b.title = t("not_available");
      actions.append(b);
    }
    body.append(
      h(
        "tr",
        {
          className: `row ${s.category || s.priority}`,
          dataset: { uid: s.study_instance_uid, state, category: s.category || "" },
        },
        h("td", {}, s.patient_name.replaceAll("^", " ")),
        h("td", {}, s.study_description),
        h("td", {}, s.modality),
        h("td", {}, fmtTime(s.received_at)),
        h("td", {}, h("span", { className: `status-tag ${state}` }, t(state))),
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
  }
  const rbody = document.getElementById("reports-body");
  rbody.replaceChildren();
  for (const r of reports) {
    const s = byUid.get(r.study_instance_uid);
    rbody.append(
      h(
        "tr",
        { className: "row", dataset: { uid: r.study_instance_uid, status: r.status } },
        h("td", {}, s ? s.patient_name.replaceAll("^", " ") : ""),
        h("td", {}, s ? s.study_description : r.study_instance_uid),
        h("td", {}, h("span", { className: `status-tag ${r.status}` }, t(r.status))),
        h("td", { className: "impression" }, r.impression),
        h("td", {}, fmtTime(r.signed_at)),
        h(
          "td",
          {},
          h(
            "a",
            {
              href: `/ui/print?study=${encodeURIComponent(r.study_instance_uid)}`,
              className: "button print-link",
            },
            t("print_view"),
          ),
        ),
      ),
    );
  }
}

function flag(study) {
  const dialog = document.getElementById("flag-dialog");
  const form = document.getElementById("flag-form");
  document.getElementById("flag-reason").value = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    const category = form.querySelector("input[name=category]:checked").value;
    try {
      await api(`/api/v1/studies/${encodeURIComponent(study.study_instance_uid)}/flag`, {
        method: "POST",
        json: { category, reason: document.getElementById("flag-reason").value },
      });
      toast(t("flagged"));
      reload();
    } catch (err) {
      toast(errorText(err), "error");
    }
  };
  dialog.showModal();
}

if (me) {
  canFlag = me.can("flag");
  await reload();
  setInterval(reload, 15000);
}
