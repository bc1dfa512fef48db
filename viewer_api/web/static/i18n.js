// Strings of the pages, Simplified Chinese by default, English on request: one line per
// key, [Chinese, English]. Markup names a string with data-i18n="key" (its text) or
// data-i18n-placeholder / data-i18n-title.
const STRINGS = {
  app: ["远程影像阅片", "Teleradiology reading room"],
  login: ["登录", "Log in"],
  logout: ["退出", "Log out"],
  username: ["用户名", "User name"],
  password: ["密码", "Password"],
  login_failed: ["用户名或密码错误", "Wrong user name or password"],
  lang_toggle: ["English", "中文"],
  worklist: ["工作列表", "Worklist"],
  clinic: ["本院检查", "Our studies"],
  ops: ["运营统计", "Operations"],
  next_case: ["下一例", "Next case"],
  claim: ["认领", "Claim"],
  release: ["释放", "Release"],
  open: ["阅片", "Read"],
  site: ["站点", "Site"],
  modality: ["设备", "Modality"],
  category: ["类别", "Category"],
  status: ["状态", "Status"],
  all: ["全部", "All"],
  patient: ["患者", "Patient"],
  description: ["检查描述", "Description"],
  received: ["到达时间", "Arrived"],
  deadline: ["剩余时间", "Time left"],
  reader: ["阅片医生", "Reader"],
  instances: ["图像数", "Images"],
  stroke: ["卒中", "Stroke"],
  chest_pain: ["胸痛", "Chest pain"],
  routine: ["常规", "Routine"],
  overdue: ["已超时", "Overdue"],
  live: ["实时", "live"],
  polling: ["轮询", "polling"],
  nothing_waiting: ["暂无待读检查", "Nothing is waiting"],
  receiving: ["接收中", "Receiving"],
  ready: ["待读", "Ready"],
  claimed: ["已认领", "Claimed"],
  draft: ["草稿", "Draft"],
  preliminary: ["初步报告", "Preliminary"],
  final: ["最终报告", "Final"],
  amended: ["已修订", "Amended"],
  cancelled: ["已取消", "Cancelled"],
  findings: ["影像所见", "Findings"],
  impression: ["诊断意见", "Impression"],
  recommendation: ["建议", "Recommendation"],
  save_draft: ["保存草稿", "Save draft"],
  sign_preliminary: ["签署初步报告", "Sign preliminary"],
  sign_final: ["签署最终报告", "Sign final"],
  saved: ["已保存", "Saved"],
  signed: ["已签署", "Signed"],
  template: ["套用模板", "Use template"],
  no_template: ["无模板", "No template"],
  critical_result: ["危急值", "Critical result"],
  critical_finding: ["危急值内容", "Finding"],
  identified_at: ["发现时间", "Identified at"],
  told_name: ["通知对象", "Told to (name)"],
  told_role: ["职务", "Role"],
  told_phone: ["电话", "Phone"],
  told_at: ["通知时间", "Told at"],
  method: ["通知方式", "How"],
  phone: ["电话", "Phone"],
  in_person: ["当面", "In person"],
  message: ["短信/消息", "Message"],
  other: ["其他", "Other"],
  read_back: ["已复述确认", "Read-back confirmed"],
  record_critical: ["记录危急值", "Record critical result"],
  critical_recorded: ["危急值已记录", "Critical result recorded"],
  no_critical_reason: ["未记录危急值的原因", "Reason for no critical result"],
  critical_required: [
    "卒中/胸痛报告签署前需记录危急值或说明原因",
    "A stroke / chest-pain report needs a critical result or a reason before it is signed final",
  ],
  addendum: ["补充报告", "Addendum"],
  addendum_reason: ["补充原因", "Reason"],
  add_addendum: ["添加补充", "Add addendum"],
  slice: ["层面", "Slice"],
  window: ["窗位/窗宽", "Window C/W"],
  presets: ["预设", "Presets"],
  brain: ["脑窗", "Brain"],
  stroke_w: ["卒中窗", "Stroke"],
  subdural: ["硬膜下窗", "Subdural"],
  lung: ["肺窗", "Lung"],
  mediastinum: ["纵隔窗", "Mediastinum"],
  bone: ["骨窗", "Bone"],
  reset: ["默认", "Default"],
  loading: ["加载中…", "Loading…"],
  cannot_decode: [
    "无法在浏览器解码，改用服务器渲染",
    "Cannot decode in the browser; using server rendering",
  ],
  no_image: ["无图像", "No image"],
  reports: ["报告", "Reports"],
  print: ["打印", "Print"],
  print_view: ["打印视图", "Print view"],
  state_received: ["已接收", "Received"],
  state_reading: ["阅片中", "Being read"],
  state_reported: ["已出报告", "Reported"],
  green_channel: ["绿色通道", "Green channel"],
  flag_stroke: ["疑似卒中", "Suspected stroke"],
  flag_chest: ["疑似胸痛", "Suspected chest pain"],
  reason: ["原因", "Reason"],
  submit: ["提交", "Submit"],
  flagged: ["已标记为急诊", "Flagged as urgent"],
  not_available: ["此功能暂不可用", "Not available on this server"],
  signed_by: ["签署医生", "Signed by"],
  signed_at: ["签署时间", "Signed at"],
  hospital: ["县医学影像中心", "County Imaging Centre"],
  report_title: ["医学影像诊断报告", "Diagnostic Imaging Report"],
  volumes: ["各站点/设备检查量", "Studies per site and modality"],
  turnaround: ["报告时长分布（到达→最终报告，分钟）", "Turnaround (arrival → final, minutes)"],
  urgent_finds: ["卒中与胸痛检出", "Stroke and chest-pain finds"],
  deadline_line: ["时限", "deadline"],
  studies: ["检查数", "Studies"],
  within_deadline: ["按时", "On time"],
  days: ["天数", "Days"],
  refresh: ["刷新", "Refresh"],
  by_day: ["每日到达量", "Arrivals per day"],
  ingest_conflicts: ["待处理的冲突图像", "Held images (conflicts)"],
  ingest_conflicts_hint: [
    "这些图像的检查号属于其他站点，或患者与所属检查不符：未进入工作列表，等待处理。",
    "Their study UID belongs to another site, or their patient differs from their " +
      "study's: on no worklist until decided.",
  ],
  no_conflicts: ["没有待处理的冲突", "No conflicts to decide"],
  conflict_kind: ["冲突类型", "Conflict"],
  conflict_existing: ["已有检查", "Existing study"],
  study_other_site: ["检查号属于其他站点", "Study UID of another site"],
  series_other_study: ["序列属于其他检查", "Series of another study"],
  patient_mismatch: ["患者与检查不符", "Another patient"],
  separate_study: ["另建检查", "File as separate study"],
  discard: ["不予归档", "Discard"],
  conflict_resolved: ["已处理", "Decided"],
  error: ["出错了", "Something went wrong"],
  forbidden: ["无权访问", "Not allowed"],
  back: ["返回", "Back"],
  critical_results: ["危急值记录", "Critical results"],
  sex: ["性别", "Sex"],
  accession: ["检查号", "Accession"],
  study_date: ["检查日期", "Study date"],
  series: ["序列", "Series"],
  drag_hint: ["拖动调窗，滚轮/方向键翻层", "Drag to window, wheel / arrow keys to scroll"],
  saving: ["保存中…", "Saving…"],
  reader_me: ["我", "me"],
  claimed_by_other: ["已被他人认领", "Claimed by someone else"],
  filters: ["筛选", "Filters"],
  total: ["合计", "Total"],
  minutes: ["分钟", "min"],
  p50: ["中位数", "Median"],
  p90: ["90百分位", "90th percentile"],
  read_receipt: ["已读回执", "Read receipt"],
  not_read_yet: ["本院尚未查阅", "Not opened by the clinic yet"],
  escalated: ["已升级提醒", "Escalated"],
  assign: ["指派", "Assign"],
  assign_to: ["指派给（用户名）", "Assign to (user name)"],
  cancel: ["取消检查", "Cancel study"],
  cancel_reason: ["取消原因", "Reason for cancelling"],
  title_reading: ["阅片", "Reading"],
  title_print: ["报告", "Report"],
};

export const LANGS = ["zh-CN", "en"];
const KEY = "teleread.lang";

export function lang() {
  const saved = localStorage.getItem(KEY);
  return LANGS.includes(saved) ? saved : "zh-CN";
}

export function t(key) {
  const pair = STRINGS[key];
  return pair ? pair[LANGS.indexOf(lang())] : key;
}

export function applyI18n(root = document) {
  document.documentElement.lang = lang();
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  const title = document.body?.dataset.title;
  if (title) document.title = `${t(title)} · ${t("app")}`;
}

// The toggle button: switch language, re-apply static strings, let the page redraw.
export function setupLangToggle(onChange = () => {}) {
  const button = document.getElementById("lang-toggle");
  if (!button) return;
  button.addEventListener("click", () => {
    localStorage.setItem(KEY, lang() === "zh-CN" ? "en" : "zh-CN");
    applyI18n();
    onChange();
  });
}

export function fmtTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(lang() === "en" ? "en-GB" : "zh-CN", { hour12: false });
}
