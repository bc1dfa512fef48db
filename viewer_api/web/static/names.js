// People's names as people write them.

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
