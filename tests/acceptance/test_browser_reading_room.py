"""The web reading room in a real headless Chromium (Debian's `chromium`, driven by
Playwright) against a real `teleread serve`: a radiologist logs in, sees the stroke CT on
top, reads it in the viewer (scrolls, windows), records the critical result and signs; the
township's nurse sees the report and prints it; the admin sees the operations charts.

Screenshots go to test-artifacts/browser/ (gitignored)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import RLELossless, generate_uid

from teleread.demo import write_demo_studies
from tests.acceptance.conftest import Pipeline
from tests.acceptance.test_end_to_end import storescu, wait_for
from tests.dicom_factory import make_ct, write

CHROMIUM = os.environ.get("TELEREAD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
TIMEOUT_MS = 15_000

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(sync_playwright is None, reason="playwright (PyPI) is not installed"),
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)),
        reason=f"chromium not found at {CHROMIUM} (apt-get install -y chromium)",
    ),
]


@pytest.fixture(scope="module")
def browser(pipeline: Pipeline) -> Iterator[Browser]:
    """Closed before the server stops (it depends on ``pipeline``), so no open event stream
    holds up the server's graceful shutdown."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def studies(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo stroke CT and a routine DR, sent by storescu (the DR first, so the stroke
    CT is the newer arrival and must still come first)."""
    out = tmp_path_factory.mktemp("demo")
    demo = write_demo_studies(out, seed=11, ct_slices=10, ct_size=256, dx_size=256)
    stroke = next(s for s in demo if s.expected_category == "stroke")
    dr = next(s for s in demo if s.modality in ("DX", "CR") and s.expected_category is None)
    for ae, study in (("DR_TS01", dr), ("CT_TS01", stroke)):
        sent = storescu(pipeline, ae, study.directory)
        assert sent.returncode == 0, sent.stderr
    # a routine RLE-compressed CT from the other site: the browser cannot decode it, the
    # server's DICOMweb /rendered draws it
    rle_dir = out / "rle"
    rle_uid, rle_series = generate_uid(), generate_uid()
    for number in (1, 2, 3):
        ds = make_ct(
            study_uid=rle_uid,
            series_uid=rle_series,
            instance_number=number,
            study_description="腹部CT平扫",
            series_description="腹部 5mm",
        )
        ds.compress(RLELossless)
        write(ds, rle_dir / f"{number}.dcm")
    sent = subprocess.run(
        [
            *("storescu", "-xr", "-aet", "CT_TS02", "-aec", "TELEREAD", "+sd", "+r"),
            *("127.0.0.1", str(pipeline.dicom_port), str(rle_dir)),
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    api = pipeline.client("dr_wang")

    def all_in() -> bool:
        detail = api.get(f"/api/v1/studies/{stroke.study_uid}")
        dr_in = api.get(f"/api/v1/studies/{dr.study_uid}")
        return (
            detail.status_code == 200
            and detail.json()["num_instances"] == len(stroke.files)
            and dr_in.status_code == 200
        )

    wait_for(all_in)
    return {"stroke": stroke, "dr": dr, "rle": rle_uid}


def login(
    browser: Browser,
    pipeline: Pipeline,
    username: str,
    *,
    locale: str = "zh-CN",
    permissions: list[str] | None = None,
    init_script: str | None = None,
) -> Page:
    """A fresh browser context (``locale`` is the browser's, not the page's language) logged
    in as ``username``; ``init_script`` runs in every page it opens."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, locale=locale, permissions=permissions or []
    )
    if init_script is not None:
        context.add_init_script(init_script)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{pipeline.base_url}/")
    page.fill("#username", username)
    page.fill("#password", pipeline.logins[username])
    page.click("#login-button")
    return page


def canvas_spread(page: Page) -> float:
    """The standard deviation of the canvas's grey values (0 for a blank canvas)."""
    value: float = page.evaluate(
        """() => {
          const c = document.getElementById("image");
          const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
          let n = 0, s = 0, s2 = 0;
          for (let i = 0; i < d.length; i += 4 * 7) { n++; s += d[i]; s2 += d[i] * d[i]; }
          return Math.sqrt(Math.max(0, s2 / n - (s / n) ** 2));
        }"""
    )
    return value


def test_radiologist_reads_and_signs_then_clinic_prints(
    browser: Browser, pipeline: Pipeline, studies: dict[str, Any]
) -> None:
    stroke, dr = studies["stroke"], studies["dr"]

    # --- worklist: the stroke CT on top, red, with its reasons and a running deadline
    page = login(browser, pipeline, "dr_li")
    page.wait_for_url("**/ui/worklist")
    rows = page.locator("#worklist-body tr")
    expect(page.locator(f'#worklist-body tr[data-uid="{dr.study_uid}"]')).to_be_visible()
    first = rows.first
    expect(first).to_have_attribute("data-uid", stroke.study_uid)
    expect(first).to_have_attribute("data-category", "stroke")
    expect(first.locator(".badge.stroke")).to_have_text("卒中")
    assert first.locator(".badge").get_attribute("title"), "triage reasons on hover"
    countdown = first.locator("td.countdown")
    text = countdown.inner_text()
    assert re.fullmatch(r"剩 (20|1\d) 分", text), text  # a 20-minute stroke deadline
    assert countdown.get_attribute("data-state") == "ok"
    before = countdown.get_attribute("data-left") or ""
    # the deadline countdown ticks: wait for the change (a fixed wait flakes under load)
    expect(countdown).not_to_have_attribute("data-left", before, timeout=15_000)
    # the patient: name as read (no caret, no space), sex, age, ID; the accession number
    expect(first.locator("td.patient .name")).to_have_text("王小明")
    expect(first.locator("td.patient")).to_contain_text("男")
    expect(first.locator("td.patient")).to_contain_text("岁")
    accession = first.locator("td.accession").inner_text()
    assert accession
    patient_id = first.locator("td.patient .muted").inner_text().split(" · ")[-1]
    assert re.fullmatch(r"P\d+", patient_id), patient_id
    # search by name finds the stroke patient (and the other site's namesake), by patient ID
    # or accession number only the stroke study (each search changes the row count, so
    # each is waited for)
    for key, count in ((patient_id, 1), ("王小明", 2), (accession, 1)):
        page.fill("#f-q", key)
        expect(rows).to_have_count(count)
        expect(page.locator(f'#worklist-body tr[data-uid="{stroke.study_uid}"]')).to_be_visible()
    expect(page.locator(f'#worklist-body tr[data-uid="{dr.study_uid}"]')).to_have_count(0)
    page.fill("#f-q", "")
    expect(page.locator(f'#worklist-body tr[data-uid="{dr.study_uid}"]')).to_be_visible()
    assert page.locator("#live").get_attribute("data-mode") in ("live", "polling")
    page.screenshot(path=str(ARTIFACTS / "01-worklist.png"))

    # English on request, and back
    page.click("#lang-toggle")
    expect(page.locator("#next-case")).to_have_text("Next case")
    page.click("#lang-toggle")
    expect(page.locator("#next-case")).to_have_text("下一例")

    # --- the viewer: open (claims), scroll with keys and wheel, window presets
    first.locator("button.claim").click()
    page.wait_for_url("**/ui/reading?study=*")
    index = page.locator("#slice-index")
    expect(index).to_have_attribute("data-index", "1")
    expect(index).to_have_attribute("data-count", str(len(stroke.files)))
    expect(page.locator("#image")).to_have_attribute("data-drawn", stroke_sop(page))
    assert canvas_spread(page) > 5, "the canvas shows an image"
    page.locator("#image").focus()
    page.keyboard.press("ArrowDown")
    expect(index).to_have_attribute("data-index", "2")
    page.keyboard.press("ArrowDown")
    expect(index).to_have_attribute("data-index", "3")
    page.locator("#image").hover()
    page.mouse.wheel(0, 120)
    expect(index).to_have_attribute("data-index", "4")
    page.keyboard.press("End")
    expect(index).to_have_attribute("data-index", str(len(stroke.files)))
    page.keyboard.press("Home")
    expect(index).to_have_attribute("data-index", "1")
    page.keyboard.press("ArrowDown")
    expect(index).to_have_attribute("data-index", "2")
    brain = canvas_spread(page)
    page.click('#presets button[data-preset="subdural"]')
    expect(page.locator("#wl-info")).to_contain_text("75 / 215")
    page.click('#presets button[data-preset="brain"]')
    expect(page.locator("#wl-info")).to_contain_text("40 / 80")
    assert canvas_spread(page) > 5 and brain > 5
    expect(page.locator(".thumb")).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS / "02-viewer.png"))

    # --- the report: write, record the critical result, sign final
    impression = "右侧基底节区急性脑出血，约12ml，建议神经外科会诊。"
    page.fill("#findings", "右侧基底节区见团片状高密度影，周围见低密度水肿带。中线结构居中。")
    page.fill("#impression", impression)
    page.click("#save-draft")
    expect(page.locator("#report-status")).to_have_attribute("data-status", "draft")
    if page.locator("#critical-box").is_visible():
        page.locator("#critical-box summary").click()
        page.fill("#cr-finding", "急性脑出血")
        page.fill("#cr-name", "张医生")
        page.fill("#cr-role", "急诊科医师")
        page.fill("#cr-phone", "13800000000")
        page.check("#cr-readback")
        page.click("#critical-form button[type=submit]")
        expect(page.locator("#critical-list li")).to_have_count(1)
    page.click("#sign-final")
    expect(page.locator("#report-status")).to_have_attribute("data-status", "final")
    expect(page.locator("#impression")).to_have_js_property("readOnly", True)
    # the study's timeline: its path so far, up to the signature, against its deadlines
    page.locator("#timeline-box summary").click()
    expect(page.locator('#timeline li[data-hop="final_signed"]')).to_be_visible()
    for hop in ("received_first", "listed", "flagged_urgent", "claimed"):
        expect(page.locator(f'#timeline li[data-hop="{hop}"]')).to_have_count(1)
    stroke_target = page.locator('#timeline-targets [data-target="stroke_read_45min"]')
    expect(stroke_target).to_have_attribute("data-state", "met")
    page.screenshot(path=str(ARTIFACTS / "03-signed.png"))
    assert not page.errors, page.errors  # type: ignore[attr-defined]

    # --- the township's nurse: the study is "reported", the report is on top, printable
    nurse = login(browser, pipeline, "nurse_ts01")
    nurse.wait_for_url("**/ui/clinic")
    row = nurse.locator(f'#studies-body tr[data-uid="{stroke.study_uid}"]')
    expect(row).to_have_attribute("data-state", "final")
    # the study's timeline under its row: the clinic sees the path of its own patient
    row.locator("button.timeline").click()
    detail = nurse.locator(f'#studies-body tr.timeline-row[data-uid="{stroke.study_uid}"]')
    expect(detail.locator('li[data-hop="final_signed"]')).to_be_visible()
    expect(nurse.locator(f'#studies-body tr[data-uid="{dr.study_uid}"]')).to_be_visible()
    first_report = nurse.locator("#reports-body tr").first
    expect(first_report).to_have_attribute("data-uid", stroke.study_uid)
    expect(first_report.locator(".impression")).to_have_text(impression)
    nurse.screenshot(path=str(ARTIFACTS / "04-clinic.png"))
    first_report.locator("a.print-link").click()
    nurse.wait_for_url("**/ui/print?study=*")
    expect(nurse.locator('.rd-section[data-key="impression"] .rd-text')).to_have_text(impression)
    expect(nurse.locator(".rd-status")).to_have_text("正式报告")
    expect(nurse.locator(".rd-sign")).to_contain_text("李医生")
    nurse.emulate_media(media="print")
    expect(nurse.locator("#print-button")).to_be_hidden()
    nurse.screenshot(path=str(ARTIFACTS / "05-print.png"), full_page=True)
    nurse.pdf(path=str(ARTIFACTS / "05-print.pdf"))
    assert not nurse.errors, nurse.errors  # type: ignore[attr-defined]

    # the radiologist sees the clinic's read receipt (when the server records them)
    paths = page.evaluate("async () => (await (await fetch('/openapi.json')).json()).paths")
    if "/api/v1/studies/{study_uid}/report/receipt" in paths:
        page.reload()
        expect(page.locator("#receipt")).to_have_attribute("data-read", "1")
        expect(page.locator("#receipt")).to_contain_text("nurse_ts01")
    page.locator("#timeline-box summary").click()
    expect(page.locator('#timeline li[data-hop="clinic_opened"]')).to_contain_text("nurse_ts01")

    # green channel: the nurse flags the routine DR as suspected chest pain; a reader's
    # open worklist shows it as urgent without a reload (event stream, or the 5 s poll)
    watcher = login(browser, pipeline, "dr_wang")
    watcher.wait_for_url("**/ui/worklist")
    dr_row = watcher.locator(f'#worklist-body tr[data-uid="{dr.study_uid}"]')
    expect(dr_row).to_have_attribute("data-category", "")
    nurse.emulate_media(media="screen")
    nurse.goto(f"{pipeline.base_url}/ui/clinic")
    nurse.locator(f'#studies-body tr[data-uid="{dr.study_uid}"] button.flag').click()
    nurse.check('#flag-form input[value="chest_pain"]')
    nurse.fill("#flag-reason", "胸痛2小时，心电图ST段抬高")
    nurse.click('#flag-form button[value="ok"]')
    expect(nurse.locator(f'#studies-body tr[data-uid="{dr.study_uid}"]')).to_have_attribute(
        "data-category", "chest_pain"
    )
    expect(dr_row).to_have_attribute("data-category", "chest_pain", timeout=10_000)
    expect(dr_row.locator(".badge.chest")).to_be_visible()
    watcher.screenshot(path=str(ARTIFACTS / "07-flagged.png"))

    # another site's nurse sees nothing of it
    other = login(browser, pipeline, "nurse_ts02")
    other.wait_for_url("**/ui/clinic")
    other.wait_for_load_state("networkidle")
    expect(other.locator(f'#studies-body tr[data-uid="{stroke.study_uid}"]')).to_have_count(0)
    expect(other.locator("#reports-body tr")).to_have_count(0)


def test_admin_sees_the_operations_charts(
    browser: Browser, pipeline: Pipeline, studies: dict[str, Any], tmp_path: Path
) -> None:
    # TS02's CT reusing the stroke study's UID: held, and listed on the ops page to decide
    squat = make_ct(study_uid=studies["stroke"].study_uid, patient_id="TS02-0007")
    squat_dir = tmp_path / "squat"
    write(squat, squat_dir / "1.dcm")
    sent = storescu(pipeline, "CT_TS02", squat_dir)
    assert sent.returncode == 0, sent.stderr
    admin_api = pipeline.client("admin")
    wait_for(lambda: admin_api.get("/api/v1/ingest-conflicts").json())

    page = login(browser, pipeline, "admin")
    page.wait_for_url("**/ui/worklist")
    page.click('#nav a[href="/ui/ops"]')
    page.wait_for_url("**/ui/ops")
    held = page.locator(f'#conflicts-body tr[data-sop="{squat.SOPInstanceUID}"]')
    expect(held).to_be_visible()
    expect(held).to_contain_text("TS02-0007")
    held.locator("button.discard").click()
    expect(held).to_have_count(0)
    assert admin_api.get("/api/v1/ingest-conflicts").json() == []
    expect(page.locator("#chart-volumes svg rect").first).to_be_visible()
    expect(page.locator("#chart-turnaround .turnaround")).to_have_count(3)
    expect(page.locator('.card[data-category="stroke"] .big')).to_have_text("1")
    expect(page.locator("#chart-days svg rect").first).to_be_visible()
    # turnaround hop by hop: the stroke CT came in today, from the gateway to the worklist
    listed = page.locator('#ta-body td[data-category="stroke"][data-stage="gateway_to_listed"]')
    expect(listed).to_have_attribute("data-count", "1")
    assert float(listed.get_attribute("data-p95") or "nan") >= 0
    expect(page.locator("#ta-head th.stroke")).to_contain_text("p95")
    page.select_option("#ta-window", "7d")
    expect(listed).to_have_attribute("data-count", "1")
    # per site and week: TS01's stroke CT apart from the routine studies, the urgent
    # studies' read deadline kept (decided once read, or once overdue)
    week = page.locator('#tw-body tr[data-site="TS01"][data-category="stroke"]')
    expect(week).to_have_count(1)
    scan = week.locator('td[data-stage="scan_to_listed"]')
    expect(scan).to_have_attribute("data-count", "1")
    expect(scan).to_have_attribute("data-p90", re.compile(r"\d"))
    expect(week.locator("td.urgent")).to_have_attribute("data-within", re.compile(r"^[01]$"))
    expect(page.locator('#tw-body tr[data-site="TS02"][data-category="routine"]')).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS / "06-ops.png"), full_page=True)
    assert not page.errors, page.errors  # type: ignore[attr-defined]

    # a radiologist is sent away from the ops page (and the API refuses it)
    reader = login(browser, pipeline, "dr_wang")
    reader.wait_for_url("**/ui/worklist")
    reader.goto(f"{pipeline.base_url}/ui/ops")
    reader.wait_for_url("**/ui/worklist")


def test_the_viewer_zooms_pans_and_shows_values_orientation_and_presets(
    browser: Browser, pipeline: Pipeline, studies: dict[str, Any]
) -> None:
    page = login(browser, pipeline, "dr_wang")
    page.wait_for_url("**/ui/worklist")
    page.goto(f"{pipeline.base_url}/ui/reading?study={studies['stroke'].study_uid}")
    image = page.locator("#image")
    expect(image).to_have_attribute("data-drawn", re.compile(r"\d"))

    # orientation from Image Orientation (Patient) of an axial slice, text in the corners
    sides = {side: page.locator(f"#orient-{side}") for side in ("left", "right", "top", "bottom")}
    for side, letter in {"left": "R", "right": "L", "top": "A", "bottom": "P"}.items():
        expect(sides[side]).to_have_text(letter)
    expect(page.locator("#corner-tl")).to_contain_text("ID P")
    expect(page.locator("#corner-bl-text")).to_contain_text("层厚 5")
    expect(page.locator("#corner-bl-text")).to_contain_text("位置")
    expect(page.locator("#corner-tr")).to_contain_text("CT S")

    # the value under the cursor, in HU: brain in the middle of the head
    box = image.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    probe = page.locator("#probe")
    expect(probe).to_contain_text("HU")
    assert -20 < float(probe.get_attribute("data-value") or "nan") < 80

    # head CT presets (no lung window), the active one highlighted
    presets = page.locator("#presets button")
    expect(presets).to_have_count(5)
    expect(page.locator('#presets button[data-preset="lung"]')).to_have_count(0)
    expect(page.locator('#presets button[data-preset="default"]')).to_have_class(
        re.compile("active")
    )
    page.click('#presets button[data-preset="subdural"]')
    expect(page.locator('#presets button[data-preset="subdural"]')).to_have_class(
        re.compile("active")
    )
    expect(page.locator("#presets button.active")).to_have_count(1)

    # zoom, pan, fit
    fitted = image.screenshot()
    image.focus()
    page.keyboard.press("+")
    page.keyboard.press("+")
    expect(image).to_have_attribute("data-zoom", "1.56")
    expect(page.locator("#zoom-info")).to_contain_text("156%")
    assert image.screenshot() != fitted
    before = image.get_attribute("data-center") or ""
    page.click('#tools button[data-tool="pan"]')
    expect(page.locator('#tools button[data-tool="pan"]')).to_have_class(re.compile("active"))
    page.mouse.move(box["x"] + 200, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 300, box["y"] + 250, steps=4)
    page.mouse.up()
    after = image.get_attribute("data-center") or ""
    assert float(after.split(",")[0]) < float(before.split(",")[0]), (before, after)
    page.screenshot(path=str(ARTIFACTS / "09-viewer-zoomed.png"))
    page.keyboard.press("f")
    expect(image).to_have_attribute("data-zoom", "1.00")

    # a stable layout: the report panel grows, the viewer stays where it is
    page.locator("#critical-box summary").click()
    page.evaluate(
        """() => document.getElementById("report-panel").append(
          Object.assign(document.createElement("p"), {textContent: "补充\\n".repeat(200),
          className: "pre"}))"""
    )
    assert image.bounding_box() == box
    assert page.evaluate("() => window.scrollY") == 0

    # a radiograph: its own window only, no slice counter, letters from Patient Orientation
    page.goto(f"{pipeline.base_url}/ui/reading?study={studies['dr'].study_uid}")
    expect(image).to_have_attribute("data-drawn", re.compile(r"\d"))
    for side, letter in {"left": "R", "right": "L", "top": "H", "bottom": "F"}.items():
        expect(sides[side]).to_have_text(letter)
    expect(presets).to_have_count(1)
    expect(page.locator("#slice-index")).to_have_text("")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(probe).to_contain_text("像素值")
    page.screenshot(path=str(ARTIFACTS / "10-viewer-radiograph.png"))
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_compressed_images_are_drawn_by_the_server(
    browser: Browser, pipeline: Pipeline, studies: dict[str, Any]
) -> None:
    api = pipeline.client("dr_wang")
    wait_for(lambda: api.get(f"/api/v1/studies/{studies['rle']}").json().get("num_instances") == 3)
    page = login(browser, pipeline, "dr_wang")
    page.wait_for_url("**/ui/worklist")
    page.goto(f"{pipeline.base_url}/ui/reading?study={studies['rle']}")
    paths = page.evaluate("async () => (await (await fetch('/openapi.json')).json()).paths")
    if not any(p.startswith("/dicomweb/") and p.endswith("/rendered") for p in paths):
        pytest.skip("this server has no DICOMweb /rendered yet")
    expect(page.locator("#viewer-note")).to_have_text("无法在浏览器解码，改用服务器渲染")
    expect(page.locator("#slice-index")).to_have_attribute("data-count", "3")
    assert page.locator("#image").get_attribute("data-drawn")
    assert canvas_spread(page) > 5
    page.keyboard.press("ArrowDown")
    expect(page.locator("#slice-index")).to_have_attribute("data-index", "2")
    page.screenshot(path=str(ARTIFACTS / "08-rendered.png"))
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def stroke_sop(page: Page) -> str:
    """The SOP instance UID the viewer shows first (the series' first instance)."""
    uid = page.evaluate("() => new URLSearchParams(location.search).get('study')")
    value: str = page.evaluate(
        """async (uid) => {
          const r = await fetch(`/api/v1/studies/${uid}`);
          return (await r.json()).series[0].sop_instance_uids[0];
        }""",
        uid,
    )
    return value


def test_a_release_is_on_the_worklist_at_once(
    browser: Browser, pipeline: Pipeline, studies: dict[str, Any]
) -> None:
    """The API keeps a worklist page for a second, and ``serve`` answers from two worker
    processes: the pages' reads right after the user's own change (here a release) ask for
    a fresh answer (``Cache-Control: no-cache``, ``api.js``), so the study shows as free at
    once, whichever process answers."""
    uid = studies["dr"].study_uid
    assert pipeline.client("dr_li").post(f"/api/v1/worklist/{uid}/claim").status_code == 200
    page = login(browser, pipeline, "dr_li")
    page.wait_for_url("**/ui/worklist")
    row = page.locator(f'#worklist-body tr[data-uid="{uid}"]')
    expect(row.locator("button.release")).to_be_visible()
    asked: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            asked.append(r.headers.get("cache-control"))
            if "/api/v1/worklist" in r.url and r.method == "GET"
            else None
        ),
    )
    row.locator("button.release").click()
    expect(row.locator("button.claim")).to_be_visible()
    assert "no-cache" in asked, asked
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()
