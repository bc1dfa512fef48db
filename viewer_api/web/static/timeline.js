// A study's timeline (GET /api/v1/studies/{uid}/timeline) as a strip: each hop with its
// time and the wait since the hop before; the deadlines it is held to, met or not.
import { h } from "./api.js";
import { fmtTime, lang, t } from "./i18n.js";

// a duration as the page's language writes it, seconds exact below a minute
export function fmtSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const en = lang() === "en";
  const s = Math.max(0, seconds);
  if (s < 60) {
    const text = s < 10 ? s.toFixed(1) : String(Math.round(s));
    return en ? `${text} s` : `${text}秒`;
  }
  const minutes = Math.floor(s / 60);
  if (minutes < 60) {
    const rest = Math.round(s - minutes * 60);
    return en ? `${minutes} min ${rest} s` : `${minutes}分${rest}秒`;
  }
  const hours = Math.floor(minutes / 60);
  const m = minutes % 60;
  return en ? `${hours} h ${m} min` : `${hours}小时${m}分`;
}

export function drawTimeline(list, targets, timeline) {
  list.replaceChildren(
    ...timeline.hops.map((hop) =>
      h(
        "li",
        { className: `hop clock-${hop.clock}`, dataset: { hop: hop.hop, at: hop.at } },
        h("span", { className: "hop-name" }, t(`hop_${hop.hop}`)),
        h("span", { className: "hop-at" }, fmtTime(hop.at)),
        h(
          "span",
          { className: "hop-wait" },
          hop.since_previous_seconds === null ? "" : `+${fmtSeconds(hop.since_previous_seconds)}`,
        ),
        hop.by ? h("span", { className: "hop-by muted" }, hop.by) : "",
      ),
    ),
  );
  const offset = timeline.gateway_clock_offset_seconds;
  const notes = timeline.targets.map((x) =>
    h(
      "span",
      { className: `status-tag target ${x.state}`, dataset: { target: x.target, state: x.state } },
      `${t(`target_${x.target}`)}: ${t(`tstate_${x.state}`)}` +
        (x.elapsed_seconds === null ? "" : ` (${fmtSeconds(x.elapsed_seconds)})`),
    ),
  );
  if (offset !== null && timeline.gateway_clock_corrected) {
    const signed = `${offset > 0 ? "+" : ""}${offset.toFixed(1)} s`;
    const note = `${t("clock_offset")}: ${signed} (${t("clock_corrected")})`;
    notes.push(h("span", { className: "muted small clock-note" }, note));
  }
  targets.replaceChildren(...notes);
}
