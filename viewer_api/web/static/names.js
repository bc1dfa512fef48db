// People's names (and sex) as people write them.
import { t } from "./i18n.js";

// A DICOM person name: the ideographic group if there is one, CJK components joined
// without spaces (王小明), others with a space (Wang Xiaoming).
export function personName(pn) {
  const groups = (pn || "").split("=");
  const chosen = [groups[1], groups[0], groups[2]].find((g) => g && g.replace(/[\^ ]/g, ""));
  if (!chosen) return "";
  const parts = chosen
    .split("^")
    .map((p) => p.trim())
    .filter(Boolean);
  const cjk = parts.every((p) => [...p].every((ch) => ch.codePointAt(0) > 0x2e80 || ch === " "));
  return parts.join(cjk ? "" : " ");
}

// DICOM's patient sex (M/F/O) in the page's language: 男/女 or Male/Female.
export function sexText(code) {
  const key = { M: "sex_m", F: "sex_f", O: "sex_o" }[(code || "").trim().toUpperCase().slice(0, 1)];
  return key ? t(key) : "";
}
