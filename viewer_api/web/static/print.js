// The report as it prints: the server lays it out (the same layout as the PDF) in the
// page's language; this page shows it and offers printing and the PDF.
import { api, errorText, h } from "./api.js";
import { lang } from "./i18n.js";
import { startPage } from "./shell.js";

const uid = new URLSearchParams(location.search).get("study");
const $ = (id) => document.getElementById(id);
const path = (name) => `/api/v1/studies/${encodeURIComponent(uid)}/${name}?lang=${lang()}`;

async function load() {
  delete document.body.dataset.ready;
  try {
    const r = await api(path("report.html"), { raw: true });
    // the server's fragment: every value escaped, no scripts or styles of its own
    $("report").innerHTML = await r.text();
    document.body.dataset.ready = "1";
  } catch (err) {
    $("report").replaceChildren(h("p", { className: "error" }, errorText(err)));
  }
}

async function openPdf() {
  try {
    const r = await api(path("report.pdf"), { raw: true });
    window.open(URL.createObjectURL(await r.blob()), "_blank");
  } catch (err) {
    $("report").prepend(h("p", { className: "error no-print" }, errorText(err)));
  }
}

async function main() {
  const me = await startPage({ onLang: load });
  if (!me) return;
  if (me.role !== "clinic") $("back").href = "/ui/worklist";
  $("print-button").addEventListener("click", () => window.print());
  if (me.can("pdf")) {
    $("pdf-button").hidden = false;
    $("pdf-button").addEventListener("click", openPdf);
  }
  await load();
}

main();
