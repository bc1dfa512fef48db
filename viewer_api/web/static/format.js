// How the pages write times left and ages (pure functions, tested under node).
import { lang } from "./i18n.js";

// The time left to a deadline, in words that cannot be read as a clock time: "剩 18 分",
// "剩 1 时 05 分", "超时 3 分". `total` is the whole time the study had (received to
// deadline): the state turns "half" (amber) at half of it, "quarter" (red) at a quarter,
// "overdue" past the deadline.
export function timeLeft(seconds, total) {
  if (typeof seconds !== "number") return { text: "", state: "none" };
  const overdue = seconds < 0;
  // time left rounds up (17:10 is "剩 18 分"), time over rounds down (3:10 is "超时 3 分")
  const exact = Math.abs(seconds) / 60;
  const minutes = Math.max(1, overdue ? Math.floor(exact) : Math.ceil(exact));
  const zh = lang() === "zh-CN";
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  let amount = zh ? `${minutes} 分` : `${minutes} min`;
  if (hours) {
    amount = zh ? `${hours} 时 ${String(rest).padStart(2, "0")} 分` : `${hours} h ${rest} min`;
  }
  let text;
  if (zh) text = overdue ? `超时 ${amount}` : `剩 ${amount}`;
  else text = overdue ? `${amount} overdue` : `${amount} left`;
  let state = "ok";
  if (overdue) state = "overdue";
  else if (total > 0 && seconds <= total / 4) state = "quarter";
  else if (total > 0 && seconds <= total / 2) state = "half";
  return { text, state };
}

// DICOM AS ("066Y", "011M", "020D", "003W") for people: "66岁", "11个月"; "66 y"
export function ageText(age) {
  const m = /^(\d{3})([YMWD])$/.exec(age || "");
  if (!m) return age || "";
  const n = Number(m[1]);
  const words =
    lang() === "zh-CN"
      ? { Y: "岁", M: "个月", W: "周", D: "天" }
      : { Y: " y", M: " mo", W: " wk", D: " d" };
  return `${n}${words[m[2]]}`;
}
