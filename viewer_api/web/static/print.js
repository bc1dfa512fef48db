// The report as it prints: the server lays it out (the same layout as the PDF) in the
// page's language; this page shows it and offers printing, the PDF and the report's share
// links (made on purpose, shown once, revocable one by one).
import { api, errorText, h } from "./api.js";
import { fmtTime, lang, t } from "./i18n.js";
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

const links = () => `/api/v1/studies/${encodeURIComponent(uid)}/report/share-links`;

async function loadLinks() {
  try {
    const rows = await api(links());
    const body = rows.map((link) =>
      h(
        "tr",
        { dataset: { id: String(link.id), state: link.state } },
        h("td", {}, link.created_by),
        h("td", {}, fmtTime(link.created_at)),
        h("td", {}, fmtTime(link.expires_at)),
        h("td", { className: "share-state" }, t(`share_${link.state}`)),
        h(
          "td",
          {},
          link.state === "active"
            ? h("button", { type: "button", onclick: () => revoke(link.id) }, t("share_revoke"))
            : "",
        ),
      ),
    );
    $("share-body").replaceChildren(
      ...(body.length ? body : [h("tr", {}, h("td", { colSpan: 5 }, t("share_none")))]),
    );
  } catch (err) {
    $("share-body").replaceChildren(h("tr", {}, h("td", { colSpan: 5 }, errorText(err))));
  }
}

async function makeLink() {
  try {
    const link = await api(links(), { method: "POST" });
    $("share-url").value = link.url;
    $("share-new").dataset.id = String(link.id);
    $("share-new").hidden = false;
    $("share-url").select();
  } catch (err) {
    $("share-new").hidden = true;
    $("share-body").prepend(h("tr", {}, h("td", { colSpan: 5 }, errorText(err))));
    return;
  }
  await loadLinks();
}

async function revoke(id) {
  try {
    await api(`${links()}/${id}`, { method: "DELETE" });
  } catch (err) {
    $("share-body").prepend(h("tr", {}, h("td", { colSpan: 5 }, errorText(err))));
    return;
  }
  if ($("share-new").dataset.id === String(id)) $("share-new").hidden = true;
  await loadLinks();
}

async function copyLink() {
  $("share-url").select();
  try {
    await navigator.clipboard.writeText($("share-url").value);
  } catch {
    document.execCommand("copy"); // no clipboard API over plain http
  }
  $("share-copy").textContent = t("share_copied");
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
  if (me.can("share")) {
    $("share").hidden = false;
    $("share-make").addEventListener("click", makeLink);
    $("share-copy").addEventListener("click", copyLink);
    loadLinks();
  }
  await load();
}

main();
