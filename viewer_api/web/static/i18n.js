// Strings of the pages, Simplified Chinese by default, English on request.
// Markup names a string with data-i18n="key" (text) or data-i18n-placeholder / -title.
const STRINGS = {
  "zh-CN": {
    app: "远程影像阅片", login: "登录", logout: "退出", username: "用户名", password: "密码",
    login_failed: "用户名或密码错误", lang_toggle: "English", worklist: "工作列表",
    clinic: "本院检查", ops: "运营统计", next_case: "下一例", claim: "认领", release: "释放",
    open: "阅片", site: "站点", modality: "设备", category: "类别", status: "状态", all: "全部",
    patient: "患者", description: "检查描述", received: "到达时间", deadline: "剩余时间",
    reader: "阅片医生", instances: "图像数", stroke: "卒中", chest_pain: "胸痛",
    routine: "常规", overdue: "已超时", live: "实时", polling: "轮询", nothing_waiting: "暂无待读检查",
    receiving: "接收中", ready: "待读", claimed: "已认领", draft: "草稿",
    preliminary: "初步报告", final: "最终报告", amended: "已修订", cancelled: "已取消",
    findings: "影像所见", impression: "诊断意见", recommendation: "建议",
    save_draft: "保存草稿", sign_preliminary: "签署初步报告", sign_final: "签署最终报告",
    saved: "已保存", signed: "已签署", template: "套用模板", no_template: "无模板",
    critical_result: "危急值", critical_finding: "危急值内容", identified_at: "发现时间",
    told_name: "通知对象", told_role: "职务", told_phone: "电话", told_at: "通知时间",
    method: "通知方式", phone: "电话", in_person: "当面", message: "短信/消息", other: "其他",
    read_back: "已复述确认", record_critical: "记录危急值", critical_recorded: "危急值已记录",
    no_critical_reason: "未记录危急值的原因", critical_required: "卒中/胸痛报告签署前需记录危急值或说明原因",
    addendum: "补充报告", addendum_reason: "补充原因", add_addendum: "添加补充",
    slice: "层面", window: "窗位/窗宽", presets: "预设", brain: "脑窗", stroke_w: "卒中窗",
    subdural: "硬膜下窗", lung: "肺窗", mediastinum: "纵隔窗", bone: "骨窗", reset: "默认",
    loading: "加载中…", cannot_decode: "无法在浏览器解码，改用服务器渲染", no_image: "无图像",
    reports: "报告", print: "打印", print_view: "打印视图", state_received: "已接收",
    state_reading: "阅片中", state_reported: "已出报告", green_channel: "绿色通道",
    flag_stroke: "疑似卒中", flag_chest: "疑似胸痛", reason: "原因", submit: "提交",
    flagged: "已标记为急诊", not_available: "此功能暂不可用", signed_by: "签署医生",
    signed_at: "签署时间", hospital: "县医学影像中心", report_title: "医学影像诊断报告",
    volumes: "各站点/设备检查量", turnaround: "报告时长分布（到达→最终报告，分钟）",
    urgent_finds: "卒中与胸痛检出", deadline_line: "时限", studies: "检查数",
    within_deadline: "按时", days: "天数", refresh: "刷新", by_day: "每日到达量",
    error: "出错了", forbidden: "无权访问", back: "返回", critical_results: "危急值记录",
    sex: "性别", accession: "检查号", study_date: "检查日期", series: "序列",
    drag_hint: "拖动调窗，滚轮/方向键翻层", saving: "保存中…", reader_me: "我",
    claimed_by_other: "已被他人认领", filters: "筛选", total: "合计", minutes: "分钟",
    p50: "中位数", p90: "90百分位", read_receipt: "已读回执", not_read_yet: "本院尚未查阅",
    escalated: "已升级提醒", assign: "指派", assign_to: "指派给（用户名）", cancel: "取消检查",
    cancel_reason: "取消原因",
  },
  en: {
    app: "Teleradiology reading room", login: "Log in", logout: "Log out", username: "User name",
    password: "Password", login_failed: "Wrong user name or password", lang_toggle: "中文",
    worklist: "Worklist", clinic: "Our studies", ops: "Operations", next_case: "Next case",
    claim: "Claim", release: "Release", open: "Read", site: "Site", modality: "Modality",
    category: "Category", status: "Status", all: "All", patient: "Patient",
    description: "Description", received: "Arrived", deadline: "Time left", reader: "Reader",
    instances: "Images", stroke: "Stroke", chest_pain: "Chest pain", routine: "Routine",
    overdue: "Overdue", live: "live", polling: "polling", nothing_waiting: "Nothing is waiting",
    receiving: "Receiving", ready: "Ready", claimed: "Claimed", draft: "Draft",
    preliminary: "Preliminary", final: "Final", amended: "Amended", cancelled: "Cancelled",
    findings: "Findings", impression: "Impression", recommendation: "Recommendation",
    save_draft: "Save draft", sign_preliminary: "Sign preliminary", sign_final: "Sign final",
    saved: "Saved", signed: "Signed", template: "Use template", no_template: "No template",
    critical_result: "Critical result", critical_finding: "Finding", identified_at: "Identified at",
    told_name: "Told to (name)", told_role: "Role", told_phone: "Phone", told_at: "Told at",
    method: "How", phone: "Phone", in_person: "In person", message: "Message", other: "Other",
    read_back: "Read-back confirmed", record_critical: "Record critical result",
    critical_recorded: "Critical result recorded", no_critical_reason: "Reason for no critical result",
    critical_required: "A stroke / chest-pain report needs a critical result or a reason before it is signed final",
    addendum: "Addendum", addendum_reason: "Reason", add_addendum: "Add addendum",
    slice: "Slice", window: "Window C/W", presets: "Presets", brain: "Brain", stroke_w: "Stroke",
    subdural: "Subdural", lung: "Lung", mediastinum: "Mediastinum", bone: "Bone", reset: "Default",
    loading: "Loading…", cannot_decode: "Cannot decode in the browser; using server rendering",
    no_image: "No image", reports: "Reports", print: "Print", print_view: "Print view",
    state_received: "Received", state_reading: "Being read", state_reported: "Reported",
    green_channel: "Green channel", flag_stroke: "Suspected stroke", flag_chest: "Suspected chest pain",
    reason: "Reason", submit: "Submit", flagged: "Flagged as urgent",
    not_available: "Not available on this server", signed_by: "Signed by", signed_at: "Signed at",
    hospital: "County Imaging Centre", report_title: "Diagnostic Imaging Report",
    volumes: "Studies per site and modality", turnaround: "Turnaround (arrival → final, minutes)",
    urgent_finds: "Stroke and chest-pain finds", deadline_line: "deadline", studies: "Studies",
    within_deadline: "On time", days: "Days", refresh: "Refresh", by_day: "Arrivals per day",
    error: "Something went wrong", forbidden: "Not allowed", back: "Back",
    critical_results: "Critical results", sex: "Sex", accession: "Accession",
    study_date: "Study date", series: "Series", drag_hint: "Drag to window, wheel / arrow keys to scroll",
    saving: "Saving…", reader_me: "me", claimed_by_other: "Claimed by someone else",
    filters: "Filters", total: "Total", minutes: "min", p50: "Median", p90: "90th percentile",
    read_receipt: "Read receipt", not_read_yet: "Not opened by the clinic yet",
    escalated: "Escalated", assign: "Assign", assign_to: "Assign to (user name)",
    cancel: "Cancel study", cancel_reason: "Reason for cancelling",
  },
};

const KEY = "teleread.lang";

export function lang() {
  const saved = localStorage.getItem(KEY);
  return saved in STRINGS ? saved : "zh-CN";
}

export function t(key) {
  return STRINGS[lang()][key] ?? STRINGS.en[key] ?? key;
}

export function applyI18n(root = document) {
  document.documentElement.lang = lang();
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]"))
    el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
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

export const LANGS = Object.keys(STRINGS);
