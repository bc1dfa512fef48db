"""The clinic's side in a real headless Chromium against a real `teleread serve`: the print
view and the PDF of one report carry the same fields; the clinic page hears of its own
site's reports and critical results at once (and of nobody else's); a call-ahead makes the
patient's first instance urgent; the operations page shows what is late, who reads what,
and which township gateway is in trouble, without clipping in English.

Screenshots go to test-artifacts/browser/ (gitignored)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from teleread.demo import write_demo_studies
from tests.acceptance.conftest import Pipeline, running_pipeline
from tests.acceptance.test_browser_reading_room import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    login,
)
from tests.acceptance.test_browser_reading_room import pytestmark as BROWSER_MARKS
from tests.acceptance.test_end_to_end import storescu, wait_for
from tests.dicom_factory import make_ct, write
from tests.pdf_checks import missing_glyphs, pdf_text, qr_codes, unembedded_fonts

PUBLIC_URL = "https://county.example:8443"
pytestmark = BROWSER_MARKS  # playwright, chromium and dcmtk present

try:
    from playwright.sync_api import Browser, expect, sync_playwright
except ImportError:  # pragma: no cover - the module is skipped then
    pass


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    env = {
        "TELEREAD_API_PUBLIC_URL": PUBLIC_URL,
        # every stroke study is overdue at once: the operations page must list one
        "TELEREAD_WORKLIST_DEADLINE_STROKE_MINUTES": "0",
    }
    with running_pipeline(tmp_path_factory, env) as started:
        yield started


@pytest.fixture(scope="module")
def browser(pipeline: Pipeline) -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def demo(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo studies, written once; each test sends what it needs."""
    out = tmp_path_factory.mktemp("demo")
    studies = write_demo_studies(out, seed=5, ct_slices=4, ct_size=128, dx_size=128)
    return {
        "stroke": next(s for s in studies if s.expected_category == "stroke"),
        "dr": next(s for s in studies if s.modality in ("DX", "CR") and not s.expected_category),
    }


def arrived(pipeline: Pipeline, ae: str, study: Any, reader: httpx.Client) -> None:
    sent = storescu(pipeline, ae, Path(study.directory))
    assert sent.returncode == 0, sent.stderr

    def present() -> bool:
        r = reader.get(f"/api/v1/studies/{study.study_uid}")
        return r.status_code == 200 and r.json()["num_instances"] == len(study.files)

    wait_for(present)


def sign(reader: httpx.Client, uid: str, status: str, impression: str) -> None:
    assert reader.post(f"/api/v1/worklist/{uid}/claim").status_code == 200
    body = {"findings": "右侧基底节区见团片状高密度影。", "impression": impression}
    assert reader.put(f"/api/v1/studies/{uid}/report", json=body).status_code == 200
    r = reader.post(f"/api/v1/studies/{uid}/report/sign", json={"status": status})
    assert r.status_code == 200, r.text


# text a reader cannot see whole: an SVG label past its chart's edge, or a cell whose
# content is wider than the cell and hidden
CLIPPED_TEXT = """() => {
  const out = [];
  for (const svg of document.querySelectorAll("svg.svg-chart")) {
    const box = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll("text")) {
      const r = t.getBoundingClientRect();
      if (r.width && (r.left < box.left - 1 || r.right > box.right + 1)) out.push(t.textContent);
    }
  }
  const cells = "main.ops th, main.ops td, main.ops h3, main.ops h4, main.ops button";
  for (const el of document.querySelectorAll(cells)) {
    const hidden = getComputedStyle(el).overflowX === "hidden";
    if (hidden && el.scrollWidth > el.clientWidth + 1) out.push(el.textContent);
  }
  return out;
}"""


# the pages' own wording of triage reasons, run in the page
WORDED = """async (reasons) => {
  const { reasonText } = await import("/ui/static/reasons.js");
  return reasons.map(reasonText);
}"""


def _flat(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_print_view_and_pdf_carry_the_same_fields(
    browser: Browser, pipeline: Pipeline, demo: dict[str, Any]
) -> None:
    reader = pipeline.client("dr_li")
    stroke = demo["stroke"]
    arrived(pipeline, "CT_TS01", stroke, reader)
    sign(reader, stroke.study_uid, "preliminary", "右侧基底节区急性脑出血。")

    nurse = login(browser, pipeline, "nurse_ts01")
    nurse.wait_for_url("**/ui/clinic")
    nurse_api = pipeline.client("nurse_ts01")
    for lang in ("zh-CN", "en"):
        nurse.goto(f"{pipeline.base_url}/ui/print?study={stroke.study_uid}")
        if lang == "en":
            nurse.click("#lang-toggle")
        expect(nurse.locator("body")).to_have_attribute("data-ready", "1")
        expect(nurse.locator(".report-doc")).to_have_attribute("lang", lang)
        items = nurse.locator(".rd-item").all_inner_texts()
        headings = nurse.locator(".report-doc h1, .report-doc h2, .report-doc h3").all_inner_texts()
        nurse.screenshot(path=str(ARTIFACTS / f"clinic-print-{lang}.png"), full_page=True)

        pdf = nurse_api.get(f"/api/v1/studies/{stroke.study_uid}/report.pdf?lang={lang}")
        assert pdf.status_code == 200
        text = _flat(pdf_text(pdf.content))
        assert len(items) == 13, items  # 9 patient and study fields, 4 of the signature
        for line in items + headings:
            assert _flat(line) in text, line
        # and nothing labelled in the PDF that the page lacks
        labels = {_flat(i).split("：" if lang == "zh-CN" else ":")[0] for i in items}
        assert len(labels) == 13
        if lang == "zh-CN":
            assert "性别：男" in items or "性别：女" in items
            assert not re.search(r"\b(?:M|F)\b", " ".join(items))
            assert any(i.startswith("报告医师：李医生") for i in items)
            when = re.compile(r"报告时间：\d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d")
            assert any(when.fullmatch(i) for i in items)
        assert unembedded_fonts(pdf.content) == [] and missing_glyphs(pdf.content) == []
        assert qr_codes(pdf.content) == []  # a download makes no share link
    # a link made on purpose in the print view: shown once, listed, revoked there; the PDF
    # it opens carries it in its QR code
    nurse.click("#share-make")
    box = nurse.locator("#share-url")
    expect(box).to_have_value(re.compile(re.escape(f"{PUBLIC_URL}/api/v1/share/") + ".+"))
    url = box.input_value()
    row = nurse.locator("#share-body tr[data-state]")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-state", "active")
    anyone = pipeline.client()
    shared = anyone.get(url.removeprefix(PUBLIC_URL) + "/report.pdf")
    assert shared.status_code == 200 and qr_codes(shared.content) == [url]
    row.locator("button").click()
    expect(row).to_have_attribute("data-state", "revoked")
    assert anyone.get(url.removeprefix(PUBLIC_URL)).status_code == 410
    assert not nurse.errors, nurse.errors  # type: ignore[attr-defined]


def test_clinic_alerts_live_for_its_own_site(
    browser: Browser, pipeline: Pipeline, demo: dict[str, Any]
) -> None:
    reader = pipeline.client("dr_wang")
    dr = demo["dr"]
    arrived(pipeline, "DR_TS01", dr, reader)
    nurse = login(browser, pipeline, "nurse_ts01")
    nurse.wait_for_url("**/ui/clinic")
    other = login(browser, pipeline, "nurse_ts02")
    other.wait_for_url("**/ui/clinic")
    for page in (nurse, other):
        expect(page.locator("#live")).to_have_attribute("data-mode", "live")
    row = nurse.locator(f'#studies-body tr[data-uid="{dr.study_uid}"]')
    expect(row).to_have_attribute("data-state", "state_waiting")

    # a preliminary report: the banner within 2 s of the signature
    assert reader.post(f"/api/v1/worklist/{dr.study_uid}/claim").status_code == 200
    body = {"findings": "右肺上叶见片状高密度影。", "impression": "右肺上叶肺炎。"}
    assert reader.put(f"/api/v1/studies/{dr.study_uid}/report", json=body).status_code == 200
    r = reader.post(f"/api/v1/studies/{dr.study_uid}/report/sign", json={"status": "preliminary"})
    assert r.status_code == 200
    signed = time.monotonic()
    banner = nurse.locator(f'#alerts .alert.report[data-uid="{dr.study_uid}"]')
    expect(banner).to_be_visible(timeout=2_000)
    assert time.monotonic() - signed < 2.0
    expect(banner).to_contain_text("初步报告")
    expect(row).to_have_attribute("data-state", "preliminary")
    expect(row.locator(".status-tag").first).to_have_text("初步报告")

    # a critical result: a red banner that stays (a reload too) until acknowledged
    now = datetime.now(UTC)
    finding = "右侧大量气胸，纵隔左移"
    critical = {
        "finding": finding,
        "identified_at": (now - timedelta(minutes=1)).isoformat(),
        "communicated_to_name": "青山镇护士",
        "communicated_at": now.isoformat(),
        "method": "phone",
        "read_back_confirmed": False,
    }
    path = f"/api/v1/studies/{dr.study_uid}/report/critical-results"
    assert reader.post(path, json=critical).status_code == 201
    red = nurse.locator(f'#alerts .alert.critical[data-uid="{dr.study_uid}"]')
    expect(red).to_contain_text(finding, timeout=2_000)
    nurse.screenshot(path=str(ARTIFACTS / "clinic-alerts.png"), full_page=True)
    nurse.wait_for_timeout(1_500)
    nurse.reload()
    expect(red).to_contain_text(finding)
    red.locator("button.ack").click()
    expect(red).to_have_count(0)
    (stored,) = reader.get(path).json()
    assert stored["read_back_confirmed"] is True and stored["acknowledged_by"] == "nurse_ts01"

    # the other township heard nothing of it
    other.wait_for_timeout(500)
    expect(other.locator("#alerts .alert")).to_have_count(0)
    expect(other.locator(f'#studies-body tr[data-uid="{dr.study_uid}"]')).to_have_count(0)
    assert not nurse.errors and not other.errors  # type: ignore[attr-defined]


# what the page shows as system notifications: the browser's own Notification runs, and
# each one is also written down where the test can read it
RECORD_NOTIFICATIONS = """(() => {
  const Real = window.Notification;
  if (!Real) return;
  window.shownNotifications = [];
  window.Notification = class extends Real {
    constructor(title, options) {
      super(title, options);
      window.shownNotifications.push([title, (options || {}).body || ""]);
    }
  };
})();"""

# a date as a browser set to US English would write it whatever the page's language
US_DATE = re.compile(r"\b\d{1,2}/\d{1,2}/\d{4}\b|\b(AM|PM)\b|Dec|Jan")


def test_clinic_notifies_names_the_patient_and_dates_in_its_language(
    browser: Browser, pipeline: Pipeline, tmp_path: Path
) -> None:
    """An English-speaking browser on the Chinese clinic page: notifications allowed, a
    preliminary report shows a system notification naming the patient; the green-channel
    dialog says which patient it is about; every date on the page is written in Chinese.
    The reading page's critical-result times are typed the same way in either language."""
    nurse = login(
        browser,
        pipeline,
        "nurse_ts01",
        locale="en-US",
        permissions=["notifications"],
        init_script=RECORD_NOTIFICATIONS,
    )
    nurse.wait_for_url("**/ui/clinic")
    expect(nurse.locator("#live")).to_have_attribute("data-mode", "live")
    expect(nurse.locator("#notify-button")).to_be_hidden()  # allowed already: nothing to ask
    reader = pipeline.client("dr_wang")
    uid = generate_uid()
    ds = make_ct(
        study_uid=uid, study_description="胸部CT平扫", patient_name="孙^秀英", body_part="CHEST"
    )
    write(ds, tmp_path / "1.dcm")
    assert storescu(pipeline, "CT_TS01", tmp_path / "1.dcm").returncode == 0
    wait_for(lambda: reader.get(f"/api/v1/studies/{uid}").status_code == 200)
    nurse.reload()  # an arrival is no event: the list catches up on its 30 s refresh
    expect(nurse.locator("#live")).to_have_attribute("data-mode", "live")
    row = nurse.locator(f'#studies-body tr[data-uid="{uid}"]')
    expect(row).to_contain_text("孙秀英")

    # dates: Chinese on a Chinese page, whatever the browser's own locale
    received = row.locator("td").nth(3)
    expect(received).to_contain_text("年")
    page_text = nurse.locator("main").inner_text()
    assert not US_DATE.search(page_text), US_DATE.search(page_text)

    # the green-channel dialog names the patient and the study, and no category is chosen
    row.locator("button.flag").click()
    dialog = nurse.locator("#flag-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#flag-patient")).to_contain_text("孙秀英")
    expect(dialog.locator("#flag-patient")).to_contain_text("胸部CT平扫")
    expect(dialog.locator("#flag-patient")).to_contain_text("年")
    expect(dialog.locator("input[name=category]:checked")).to_have_count(0)
    nurse.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # a preliminary report: a system notification with the patient in it
    sign(reader, uid, "preliminary", "未见明显异常。")
    nurse.wait_for_function(
        "() => (window.shownNotifications || []).some(([t]) => t === '初步报告已出')"
    )
    shown = nurse.evaluate("window.shownNotifications")
    assert any(title == "初步报告已出" and "孙秀英" in body for title, body in shown), shown

    # the reading page's critical-result times: typed as 2026-12-06 14:30 in both languages
    doctor = login(browser, pipeline, "dr_wang", locale="en-US")
    doctor.wait_for_url("**/ui/worklist")
    doctor.goto(f"{pipeline.base_url}/ui/reading?study={uid}")
    told = doctor.locator("#cr-told")
    expect(told).to_have_value(re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$"))
    assert told.get_attribute("type") in (None, "text")
    assert not nurse.errors and not doctor.errors  # type: ignore[attr-defined]


def test_call_ahead_then_a_routine_head_ct_is_urgent_at_once(
    browser: Browser, pipeline: Pipeline, tmp_path: Path
) -> None:
    nurse = login(browser, pipeline, "nurse_ts01")
    nurse.wait_for_url("**/ui/clinic")
    worklist = login(browser, pipeline, "dr_li")
    worklist.wait_for_url("**/ui/worklist")

    # no patient named: the server's refusal, in the page's language (its code translated)
    nurse.click("#call-ahead-button")
    expect(nurse.locator("#call-dialog")).to_be_visible()
    expect(nurse.locator("#call-form input[name=ca-category]:checked")).to_have_count(0)
    nurse.check('#call-form input[value="stroke"]')
    nurse.click('#call-form button[value="ok"]')
    expect(nurse.locator("#toast")).to_have_text(
        "请填写患者ID或姓名，并选择疑似卒中或胸痛；发病时间不能晚于现在"
    )
    nurse.click("#call-ahead-button")
    nurse.fill("#ca-name", "赵六")
    nurse.fill("#ca-id", "CA-0001")
    nurse.check('#call-form input[value="stroke"]')
    nurse.fill("#ca-onset", "00:05")
    nurse.fill("#ca-note", "口角歪斜、言语不清1小时")
    nurse.click('#call-form button[value="ok"]')
    expect(nurse.locator("#call-aheads-body tr")).to_have_count(1)
    # the readers see the patient coming at once: a pending urgent row
    pending = worklist.locator("#call-aheads-body tr")
    expect(pending).to_have_count(1, timeout=5_000)
    expect(pending).to_contain_text("赵六")
    expect(pending).to_contain_text("口角歪斜、言语不清1小时")
    worklist.screenshot(path=str(ARTIFACTS / "worklist-call-ahead.png"))

    # the head CT arrives described as routine
    uid = generate_uid()
    ct_dir = tmp_path / "ct"
    for number in (1, 2, 3):
        ds = make_ct(study_uid=uid, instance_number=number, study_description="头颅CT平扫")
        ds.PatientID = "CA-0001"
        ds.PatientName = "Zhao^Liu"
        write(ds, ct_dir / f"{number}.dcm")
    first = storescu(pipeline, "CT_TS01", ct_dir / "1.dcm")
    assert first.returncode == 0, first.stderr
    api = pipeline.client("dr_li")
    detail = wait_for(
        lambda: (r := api.get(f"/api/v1/studies/{uid}")).status_code == 200 and r.json()
    )
    assert detail["num_instances"] == 1
    assert (detail["priority"], detail["category"]) == ("stat", "stroke")
    assert detail["triage_reasons"][0]["code"] == "call_ahead"
    assert detail["triage_reasons"][0]["note"] == "口角歪斜、言语不清1小时"
    row = worklist.locator(f'#worklist-body tr[data-uid="{uid}"]')
    expect(row).to_have_attribute("data-category", "stroke", timeout=5_000)
    # the reason in the reader's language
    expect(row.locator("details.reasons li").first).to_have_text(
        "急诊预告：口角歪斜、言语不清1小时"
    )
    expect(pending).to_have_count(0)
    # every reason worded from its code and parts (never the server's English), either language
    term = {"code": "term", "category": "stroke", "term": "脑梗", "found": "脑梗死"}
    sudden = {**term, "field": "ReasonForTheRequestedProcedure", "onset": "突发"}
    reasons = [{**term, "field": "StudyDescription"}, sudden, detail["triage_reasons"][0]]
    assert worklist.evaluate(WORDED, reasons) == [
        "检查描述含“脑梗死”（卒中）",
        "检查原因含“脑梗死”（卒中，突发起病）",
        "急诊预告：口角歪斜、言语不清1小时",
    ]
    worklist.click("#lang-toggle")
    assert worklist.evaluate(WORDED, reasons) == [
        "Study description: “脑梗死” (Stroke)",
        "Reason for the procedure: “脑梗死” (Stroke, onset “突发”)",
        "Call-ahead: 口角歪斜、言语不清1小时",
    ]
    assert storescu(pipeline, "CT_TS01", ct_dir).returncode == 0
    assert not nurse.errors and not worklist.errors  # type: ignore[attr-defined]


def test_operations_page_shows_trouble_without_clipping(
    browser: Browser, pipeline: Pipeline, tmp_path: Path
) -> None:
    # an overdue stroke study, unread (this server's stroke deadline is 0 minutes)
    uid = generate_uid()
    ct = make_ct(study_uid=uid, study_description="头颅CT平扫 急性脑卒中 发病2小时")
    write(ct, tmp_path / "stroke" / "1.dcm")
    assert storescu(pipeline, "CT_TS02", tmp_path / "stroke").returncode == 0
    reader = pipeline.client("dr_li")
    wait_for(lambda: reader.get(f"/api/v1/studies/{uid}").status_code == 200)
    # the look is audited within a second, in a batch (viewer_api.auditing.AuditWriter)
    wait_for(
        lambda: (
            "opened"
            in {h["hop"] for h in reader.get(f"/api/v1/studies/{uid}/timeline").json()["hops"]}
        )
    )
    # a gateway whose uploads fail, as it reports itself
    gateway = pipeline.client()
    password = "township-gateway-1"
    added = pipeline.teleread(
        "users",
        "add",
        "gw_ts02",
        "--role",
        "gateway",
        "--site",
        "TS02",
        "--password-stdin",
        stdin=password + "\n",
    )
    assert added.returncode == 0, added.stderr
    token = gateway.post("/api/v1/auth/token", data={"username": "gw_ts02", "password": password})
    gateway.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    status = {
        "pending_urgent": 2,
        "pending_routine": 17,
        "oldest_unsent_age_seconds": 1260,
        "last_error": {"error": "S3 PUT failed: connection refused", "attempts": 9},
    }
    assert gateway.post("/api/v1/gateway/status", json=status).status_code == 204

    page = login(browser, pipeline, "admin")
    page.wait_for_url("**/ui/worklist")
    page.goto(f"{pipeline.base_url}/ui/ops")
    late = page.locator(f'#late-body tr[data-uid="{uid}"]')
    expect(late).to_have_attribute("data-overdue", "1")
    expect(late).to_contain_text("卒中")
    expect(page.locator('#readers-body tr[data-username="dr_li"]')).to_contain_text("李医生")
    failing = page.locator('#gateways-body tr[data-gateway="gw_ts02"]')
    expect(failing).to_have_attribute("data-state", "failing")
    expect(failing).to_contain_text("connection refused")
    # the embedded gateway says when it sends its status: its clock against the county's
    embedded = page.locator('#gateways-body tr[data-gateway="gateway-embedded"] td.clock')
    expect(embedded).to_have_text(re.compile(r"^[+-]?\d+\.\d s$"))
    # and among the urgent studies overdue today: a reader looked (above), nobody claimed it
    overdue = page.locator(f'#overdue-urgent-body tr[data-uid="{uid}"]')
    expect(overdue).to_contain_text("阅片时限")
    expect(overdue.locator("td[data-hop]")).to_have_attribute("data-hop", "opened")
    page.screenshot(path=str(ARTIFACTS / "ops-now-zh.png"), full_page=True)

    page.click("#lang-toggle")
    expect(page.locator("#late-title")).to_have_text("Overdue and escalated now")
    page.wait_for_timeout(300)
    clipped = page.evaluate(CLIPPED_TEXT)
    assert clipped == [], clipped
    page.screenshot(path=str(ARTIFACTS / "ops-now-en.png"), full_page=True)
    assert not page.errors, page.errors  # type: ignore[attr-defined]
