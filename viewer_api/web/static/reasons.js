// Triage reasons in the page's language, worded from each reason's code and parts
// (worklist.triage.Reason: category, family, term, found, field, onset, by, note), never from the
// server's English. A reason in words only (an older row's) shows as it came.
import { t } from "./i18n.js";

function fieldName(field) {
  const key = `field_${field}`;
  return t(key) === key ? field : t(key);
}

function fill(template, parts) {
  return template.replace(/\{(\w+)\}/g, (_, name) => parts[name] ?? "");
}

export function reasonText(reason) {
  if (typeof reason === "string") return reason;
  const category = reason.category ? t(reason.category) : "";
  const withNote = (head) => (reason.note ? `${head}${t("colon")}${reason.note}` : head);
  switch (reason.code) {
    case "term":
    case "code":
    case "stat_order":
    case "urgent_order": {
      const onset = reason.code === "term" && reason.onset ? "_onset" : "";
      return fill(t(`reason_${reason.code}${onset}`), {
        field: fieldName(reason.field),
        found: reason.found,
        category: reason.code === "stat_order" ? t("stat") : category,
        onset: reason.onset,
      });
    }
    case "explicit_flag":
    case "text_suggested":
      return fill(t(`reason_${reason.code}`), { category });
    case "priority_only":
    case "kept_stat":
    case "gateway_flag":
      return t(`reason_${reason.code}`);
    case "charset":
      return t("reason_charset");
    case "call_ahead":
      return withNote(t("reason_call_ahead"));
    case "set_by":
      return withNote(fill(t("reason_set_by"), { who: reason.by }));
    default:
      return reason.note || reason.text || "";
  }
}
