// Triage reasons in the page's language. The server words a reason for its log and API
// ("StudyDescription: '卒中' (stroke: 卒中)", "call-ahead: <note>", "set by dr_li: <why>");
// the pages show them in the reader's language, and an unknown form as it came.
import { t } from "./i18n.js";

const MATCH = /^(\w+): '(.*)' \((\w+): (.*)\)$/;
const PREFIXED = /^(call-ahead|set by ([^:]+)): ?(.*)$/s;

export function reasonText(reason) {
  const m = MATCH.exec(reason);
  if (m) {
    const [, field, found, category] = m;
    const fieldKey = `field_${field}`;
    const fieldName = t(fieldKey) === fieldKey ? field : t(fieldKey);
    return t("reason_match")
      .replace("{field}", fieldName)
      .replace("{text}", found)
      .replace("{category}", t(category));
  }
  const p = PREFIXED.exec(reason);
  if (p) {
    const head =
      p[1] === "call-ahead" ? t("reason_call_ahead") : t("reason_set_by").replace("{who}", p[2]);
    return p[3] ? `${head}${t("colon")}${p[3]}` : head;
  }
  const flag = /^explicit flag: (\w+)/.exec(reason);
  if (flag) return t("reason_explicit_flag").replace("{category}", t(flag[1]));
  const alone = /^text alone suggested (\w+)$/.exec(reason);
  if (alone) return t("reason_text_suggested").replace("{category}", t(alone[1]));
  if (reason.startsWith("priority only")) return t("reason_priority_only");
  if (reason === "urgent flag from gateway") return t("reason_gateway_flag");
  return reason;
}
