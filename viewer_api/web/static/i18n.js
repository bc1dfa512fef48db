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
  final: ["正式报告", "Final"],
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
  pdf: ["PDF 报告", "PDF"],
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
  volumes: ["各站点/设备检查量", "Studies per site and modality"],
  turnaround: ["报告时长分布（到达→最终报告，分钟）", "Turnaround (arrival → final, minutes)"],
  urgent_finds: ["卒中与胸痛检出", "Stroke and chest-pain finds"],
  deadline_line: ["时限", "deadline"],
  studies: ["检查数", "Studies"],
  within_deadline: ["按时", "On time"],
  days: ["天数", "Days"],
  refresh: ["刷新", "Refresh"],
  by_day: ["每日到达量", "Arrivals per day"],
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
  offline: ["网络连接中断", "No network connection"],
  colon: ["：", ": "],
  sex_m: ["男", "Male"],
  sex_f: ["女", "Female"],
  sex_o: ["其他", "Other"],
  stat: ["急诊优先级", "STAT priority"],
  reason_match: ["{field}含“{text}”（{category}）", "{field}: “{text}” ({category})"],
  reason_call_ahead: ["急诊预告", "Call-ahead"],
  reason_set_by: ["{who} 人工标记", "Set by {who}"],
  reason_explicit_flag: ["{category}急诊标记（优先于文本）", "Flagged {category} (over the text)"],
  reason_text_suggested: ["文本提示：{category}", "The text alone suggested {category}"],
  reason_priority_only: [
    "仅申请优先级为急诊，文本未见卒中或胸痛",
    "Priority only: no stroke or chest pain in the text",
  ],
  reason_gateway_flag: ["网关急诊标记", "Urgent flag from the gateway"],
  field_StudyDescription: ["检查描述", "Study description"],
  field_RequestedProcedureDescription: ["申请检查项目", "Requested procedure"],
  field_ReasonForTheRequestedProcedure: ["检查原因", "Reason for the procedure"],
  field_AdmittingDiagnosesDescription: ["入院诊断", "Admitting diagnosis"],
  field_ProtocolName: ["扫描协议", "Protocol"],
  field_SeriesDescription: ["序列描述", "Series description"],
  field_BodyPartExamined: ["检查部位", "Body part"],
  field_RequestingService: ["申请科室", "Requesting service"],
  field_RequestedProcedurePriority: ["申请优先级", "Requested priority"],
  field_Modality: ["设备", "Modality"],
  // API errors by their stable code (viewer_api/errors.py)
  err_account_refused: ["账户不存在或已停用", "The account is unknown or disabled"],
  err_addendum_not_allowed: [
    "报告尚未签署为正式报告，不能添加补充",
    "The report is not signed final yet: no addendum",
  ],
  err_ae_title_taken: ["该 AE 名称已属于其他站点", "This AE title belongs to another site"],
  err_bad_request: ["请求有误", "The request is not valid"],
  err_call_ahead_not_allowed: [
    "只能为本院患者预告",
    "You may announce patients of your own site only",
  ],
  err_cannot_disable_self: ["不能停用自己的账户", "You cannot disable your own account"],
  err_claim_conflict: ["该检查已被他人认领", "Someone else holds this study"],
  err_conflict: ["与当前状态冲突", "This conflicts with the current state"],
  err_conflict_retry: ["同时有其他修改，请重试", "A concurrent change conflicted; try again"],
  err_critical_result_not_allowed: [
    "此检查不能记录危急值",
    "A critical result cannot be recorded here",
  ],
  err_critical_result_required: [
    "卒中/胸痛报告签署前需记录危急值或说明原因",
    "A stroke / chest-pain report needs a critical result or a reason before it is signed final",
  ],
  err_csrf_refused: ["页面已过期，请刷新后重试", "The page is out of date; reload it and try again"],
  err_database_unavailable: [
    "数据库暂时不可用，请稍后重试",
    "The database is unavailable; try again shortly",
  ],
  err_forbidden: ["无权访问", "Not allowed"],
  err_gone: ["已失效", "No longer available"],
  err_inconsistent_hierarchy: ["序列与检查不一致", "A series belongs to another study"],
  err_internal_error: ["服务器内部错误", "Internal server error"],
  err_invalid_ae_title: ["AE 名称无效", "Invalid AE title"],
  err_invalid_assignee: ["只能指派给在职的阅片医生", "Assign to an active radiologist"],
  err_invalid_call_ahead: [
    "请填写患者ID或姓名，并选择疑似卒中或胸痛；发病时间不能晚于现在",
    "Give the patient ID or name, and stroke or chest pain; the onset cannot be in the future",
  ],
  err_invalid_critical_result: [
    "危急值记录不完整或有矛盾",
    "The critical result is incomplete or inconsistent",
  ],
  err_invalid_object_key: ["对象路径无效", "Invalid object key"],
  err_invalid_parameter: ["参数无效", "A parameter is not valid"],
  err_invalid_report_input: ["报告内容不完整", "The report input is incomplete"],
  err_invalid_request: ["填写内容有误，请检查", "Some fields are missing or not valid"],
  err_invalid_role: ["角色无效", "Unknown role"],
  err_invalid_text: ["文字中含有无法保存的字符", "The text holds characters that cannot be stored"],
  err_invalid_token: ["登录已过期，请重新登录", "Your log-in has expired; log in again"],
  err_invalid_uid: ["UID 格式无效", "Not a valid DICOM UID"],
  err_method_not_allowed: ["不支持的操作", "Not supported"],
  err_misconfigured: [
    "服务器配置有误，请联系管理员",
    "The server is misconfigured; tell the administrator",
  ],
  err_no_destination: [
    "该站点未配置 DICOM 目的地",
    "No DICOM destination is configured for this site",
  ],
  err_no_report: ["暂无报告", "No report yet"],
  err_no_template: ["无适用的报告模板", "No report template fits"],
  err_not_a_radiologist: ["仅阅片医生可以操作", "Radiologists only"],
  err_not_a_reader: ["仅阅片医生和管理员可以操作", "Radiologists and admins only"],
  err_not_acceptable: ["无法提供所要求的格式", "That format cannot be served"],
  err_not_authenticated: ["请先登录", "Please log in"],
  err_not_claim_holder: ["您未认领此检查", "You do not hold this study"],
  err_not_claimable: ["该检查已取消或已出正式报告", "The study is cancelled or finally reported"],
  err_not_found: ["未找到", "Not found"],
  err_not_renderable: ["该图像无法显示", "This image cannot be shown"],
  err_object_key_mismatch: ["对象路径与 UID 不符", "The object key does not match the UIDs"],
  err_object_not_found: ["图像文件不存在", "The image file is missing"],
  err_object_unreadable: ["图像文件无法读取", "The image file cannot be read"],
  err_report_font_missing: [
    "服务器缺少报告字体，请联系管理员",
    "The server has no report font; tell the administrator",
  ],
  err_report_not_signed: ["报告尚未签署", "The report is not signed yet"],
  err_report_signed: [
    "报告已签署为正式报告，不能修改",
    "The report is signed final and cannot change",
  ],
  err_role_denied: ["您的角色无权进行此操作", "Not allowed for your role"],
  err_session_ended: ["登录已结束，请重新登录", "Your session has ended; log in again"],
  err_share_link_expired: ["链接已过期", "The link has expired"],
  err_share_link_invalid: ["链接无效", "The link is not valid"],
  err_site_exists: ["站点已存在", "The site already exists"],
  err_site_not_allowed: ["该网关不能为此站点发送", "This gateway may not send for that site"],
  err_site_required: ["基层账户需要指定站点", "Clinic accounts need a site"],
  err_storage_unavailable: [
    "影像存储暂时不可用，请稍后重试",
    "Image storage is unavailable; try again shortly",
  ],
  err_study_not_found: ["未找到该检查", "No such study"],
  err_study_site_mismatch: ["该检查属于其他站点", "This study belongs to another site"],
  err_too_large: ["内容过大", "Too large"],
  err_too_many_requests: ["尝试次数过多，请稍后再试", "Too many attempts; try again later"],
  err_unavailable: ["服务暂时不可用，请稍后重试", "The service is unavailable; try again shortly"],
  err_unknown_site: ["站点不存在", "No such site"],
  err_unsupported_media_type: ["不支持的格式", "Unsupported format"],
  err_user_exists: ["用户名已存在", "The user name is taken"],
  err_user_not_found: ["用户不存在", "No such user"],
  err_value_not_storable: ["内容过长或无法保存", "A value is too long or cannot be stored"],
  err_worklist_error: ["操作未能完成", "The operation could not be done"],
  // the clinic hears back
  state_waiting: ["待阅片", "Waiting"],
  acknowledge: ["已知晓（复述确认）", "Acknowledge (read back)"],
  acknowledged: ["已确认知晓", "Acknowledged"],
  overdue_alert: ["超时未出报告", "Overdue, no report yet"],
  deadline_at: ["时限", "Deadline"],
  dismiss: ["关闭", "Dismiss"],
  report_preliminary_in: ["初步报告已出", "Preliminary report in"],
  report_final_in: ["正式报告已出", "Final report in"],
  notify_enable: ["开启桌面通知", "Turn on notifications"],
  call_ahead: ["急诊预告", "Call ahead"],
  call_ahead_title: [
    "急诊患者预告（检查前或检查中）",
    "Announce an urgent patient (before or during the scan)",
  ],
  call_ahead_patient_hint: [
    "填写患者ID或姓名（与检查登记一致）",
    "Give the patient ID or the name, as registered for the scan",
  ],
  patient_name: ["患者姓名", "Patient name"],
  patient_id: ["患者ID", "Patient ID"],
  onset: ["发病时间", "Onset"],
  onset_clock: ["发病时间（今天，时:分）", "Symptom onset (today, HH:MM)"],
  note: ["备注", "Note"],
  announced: [
    "已预告：该患者的首幅图像将按急诊处理",
    "Announced: the patient's first image will be urgent",
  ],
  withdraw: ["撤回", "Withdraw"],
  pending_call_aheads: ["已预告的急诊患者", "Urgent patients announced"],
  announced_at: ["预告时间", "Announced"],
  announced_by: ["预告人", "Announced by"],
  awaiting_images: ["等待图像", "Awaiting images"],
  unclaimed: ["未认领", "Unclaimed"],
  late_title: ["当前超时与升级", "Overdue and escalated now"],
  nothing_late: ["暂无超时或升级的检查", "Nothing overdue or escalated"],
  now_at: ["更新于", "As of"],
  readers_title: ["阅片医生工作量（今日）", "Radiologists' workload today"],
  claimed_now: ["在读", "Claimed now"],
  read_today: ["今日已读", "Read today"],
  median_read: ["阅片时长中位数", "Median read time"],
  gateways_title: ["乡镇网关状态", "Township gateways"],
  gateway: ["网关", "Gateway"],
  last_contact: ["最近联系", "Last contact"],
  queue_urgent: ["待传（急诊）", "Queued urgent"],
  queue_routine: ["待传（常规）", "Queued routine"],
  oldest_unsent: ["最久未传", "Oldest unsent"],
  last_error: ["最近上传错误", "Last upload error"],
  gw_ok: ["正常", "OK"],
  gw_failing: ["上传失败", "Uploads failing"],
  gw_stale: ["失去联系", "No contact"],
  gw_never: ["从未报告", "Never reported"],
  never: ["从未", "never"],
  ago: ["前", "ago"],
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

// A length of time in the page's language: "3分钟", "1小时20分" / "3 min", "1 h 20 min".
export function fmtDuration(seconds) {
  const minutes = Math.max(0, Math.round(seconds / 60));
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  if (lang() === "en") return h ? `${h} h${m ? ` ${m} min` : ""}` : `${m} min`;
  return h ? `${h}小时${m ? `${m}分` : ""}` : `${m}分钟`;
}

// A moment as the page's language writes it (not the browser's): 2026年12月6日 14:05 or
// 6 Dec 2026, 14:05, as the reports print it.
export function fmtTime(iso) {
  if (!iso) return "";
  const en = lang() === "en";
  return new Date(iso).toLocaleString(en ? "en-GB" : "zh-CN", {
    year: "numeric",
    month: en ? "short" : "long",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  });
}
