"""Deadlines and the case, in a real headless Chromium against a real `teleread serve` with
a short claim lease and a two-minute stroke deadline: the holder is warned before the claim
runs out and extends it; a template's choices must be made before signing; another
radiologist may not record a critical result on the case, and the page says why; the
collapsed box counts them; the patient's prior study opens beside the current one with its
report; a preliminary report stops the stroke study's clock and its escalation while an
unread stroke study turns amber and escalates; a corrected re-send of the signed study
shows its banner on the open page; the admin assigns with a dialog and a reason, and a
session without the optional features polls and sees it. Sessions: a new tab is signed in,
logging out ends every tab."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from tests.acceptance.conftest import Pipeline, running_pipeline
from tests.acceptance.test_browser_reading_room import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    login,
)
from tests.acceptance.test_browser_reading_room import pytestmark as browser_marks
from tests.acceptance.test_end_to_end import storescu, wait_for
from tests.dicom_factory import make_ct, write

try:
    from playwright.sync_api import Browser, Page, Route, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = browser_marks

STROKE_MINUTES = 2
# the countdown's colours (app.css) by state: amber from half the time, red from a quarter
COLOURS = {
    "half": "rgb(254, 243, 199)",
    "quarter": "rgb(220, 38, 38)",
    "overdue": "rgb(127, 29, 29)",
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    # a claim warns its holder two minutes before it runs out: with this lease, at once; an
    # unread stroke study escalates at half its deadline, one minute after it arrived
    env = {
        "TELEREAD_WORKLIST_CLAIM_LEASE_SECONDS": "125",
        "TELEREAD_WORKLIST_DEADLINE_STROKE_MINUTES": str(STROKE_MINUTES),
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
def studies(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A patient's stroke head CT today and a head CT of theirs from before; then another
    patient's stroke CT that nobody reads (sent last, so its deadline is the later one)."""
    out = tmp_path_factory.mktemp("cases")
    uids: dict[str, Any] = {}
    for name, description, date, patient in (
        ("prior", "头颅CT平扫 复查", "20250301", "P-0815"),
        ("stroke", "头颅CT平扫 急性脑卒中", "20261125", "P-0815"),
        ("waiting", "头颅CT平扫 急性脑卒中", "20261125", "P-0999"),
    ):
        study, series = generate_uid(), generate_uid()
        for number in (1, 2):
            ds = make_ct(
                study,
                series_uid=series,
                instance_number=number,
                study_description=description,
                patient_id=patient,
                StudyDate=date,
            )
            write(ds, out / name / f"{number}.dcm")
            if (name, number) == ("stroke", 1):
                uids["stroke_slice"] = ds  # re-sent corrected by the test
        sent = storescu(pipeline, "CT_TS01", out / name)
        assert sent.returncode == 0, sent.stderr
        uids[name] = study
    api = pipeline.client("dr_wang")
    wait_for(
        lambda: all(
            api.get(f"/api/v1/studies/{uids[k]}").status_code == 200
            for k in ("prior", "stroke", "waiting")
        )
    )
    return uids


def test_the_case_in_the_reading_room(
    browser: Browser, pipeline: Pipeline, studies: dict[str, Any], tmp_path: Path
) -> None:
    stroke, waiting = studies["stroke"], studies["waiting"]
    page = login(browser, pipeline, "dr_li")
    page.wait_for_url("**/ui/worklist")
    page.goto(f"{pipeline.base_url}/ui/reading?study={stroke}")
    page.wait_for_selector("body[data-ready]")
    page.click("#claim")
    expect(page.locator("#findings")).to_have_value(re.compile(r"\[未见/可见\]"))

    # the holder is warned before the claim runs out; the warning outlives a reload (the
    # page reads it off the study, not only off the event); the holder extends the claim
    banner = page.locator("#claim-banner")
    expect(banner).to_be_visible(timeout=30_000)
    expect(banner).to_contain_text("即将过期")
    page.reload()
    page.wait_for_selector("body[data-ready]")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("即将过期")
    page.click("#renew-claim")
    expect(banner).to_be_hidden()
    page.reload()
    page.wait_for_selector("body[data-ready]")
    expect(banner).to_be_hidden()

    # a template's choices are made before signing: the page lists the places left
    page.click("#sign-preliminary")
    message = page.locator("#report-message")
    expect(message).to_contain_text("未选定")
    expect(message).to_contain_text("findings line 1: [未见/可见]")
    expect(message).to_contain_text("impression line 1: [未见/可见]")
    expect(page.locator("#report-status")).not_to_have_attribute("data-status", "preliminary")

    # another radiologist may not record a critical result on dr_li's case: the page says
    # why (the server's 403) and whose case it is
    other = login(browser, pipeline, "dr_wang")
    other.wait_for_url("**/ui/worklist")
    other.goto(f"{pipeline.base_url}/ui/reading?study={stroke}")
    other.wait_for_selector("body[data-ready]")
    record_critical(other)
    refused = other.locator("#toast")
    expect(refused).to_contain_text("仅认领者或报告作者可记录危急值")
    expect(refused).to_contain_text("李医生")  # by display name
    expect(other.locator("#critical-summary")).to_have_attribute("data-count", "0")

    # dr_wang's session: a cookie scripts cannot read; a new tab of the same browser is
    # signed in (no token in its URL); logging out ends every tab at once
    (cookie,) = other.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert other.evaluate("() => document.cookie") == "", "scripts cannot read the session"
    tab = other.context.new_page()
    tab.goto(f"{pipeline.base_url}/ui/reading?study={studies['prior']}")
    expect(tab.locator("#who")).to_have_text("王医生")  # the display name
    expect(tab.locator("#slice-index")).to_have_attribute("data-count", "2")
    assert "token" not in tab.url
    other.click("#logout")
    other.wait_for_url("**/ui/login")
    tab.wait_for_url("**/ui/login")  # told at once, not at its next request
    again = other.context.new_page()
    again.goto(f"{pipeline.base_url}/ui/worklist")
    again.wait_for_url("**/ui/login")
    assert not other.errors, other.errors  # type: ignore[attr-defined]
    other.context.close()

    # dr_li does; the collapsed box counts it and says its state
    record_critical(page)
    summary = page.locator("#critical-summary")
    expect(summary).to_have_attribute("data-count", "1")
    expect(summary).to_contain_text("危急值 (1)")
    expect(summary).to_contain_text("张医生")
    page.locator("#critical-box summary").click()  # collapse it again

    # the patient's prior study, beside this one, with its report above the editor
    priors = page.locator("#priors-list li")
    expect(priors).to_have_count(1)
    expect(priors.first).to_have_attribute("data-uid", studies["prior"])
    priors.first.locator("button.compare").click()
    pane = page.locator("section.viewer.prior")
    expect(pane.locator('[data-v="image"]')).to_have_attribute("data-drawn", re.compile(r"\d"))
    expect(page.locator("#prior-report")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "11-prior-beside.png"))
    pane.locator('[data-v="close"]').click()
    expect(pane).to_have_count(0)

    # the preliminary report answers the stroke study: its read target is met
    findings = "脑实质内可见高密度出血灶。"
    page.fill("#findings", findings)
    page.fill("#impression", "右侧基底节区脑出血。")
    page.click("#sign-preliminary")
    expect(page.locator("#report-status")).to_have_attribute("data-status", "preliminary")
    read = page.locator('#timeline-targets [data-target="stroke_read_45min"]')
    expect(read).to_have_attribute("data-state", "met")

    # the modality re-sends a slice with the patient's name corrected: the open page says
    # at once that the images changed after the report, and the report stays as signed
    corrected = studies["stroke_slice"]
    corrected.PatientName = "王^晓明"
    write(corrected, tmp_path / "resend" / "1.dcm")
    sent = storescu(pipeline, "CT_TS01", tmp_path / "resend")
    assert sent.returncode == 0, sent.stderr
    updated = page.locator("#updated-banner")
    expect(updated).to_be_visible(timeout=30_000)
    expect(updated).to_contain_text("更正重传")
    expect(page.locator("#study-title")).to_contain_text("王晓明")
    expect(page.locator("#findings")).to_have_value(findings)
    page.screenshot(path=str(ARTIFACTS / "13-updated-after-report.png"))
    assert not page.errors, page.errors  # type: ignore[attr-defined]

    # dr_li hands the case back: on the worklist it is due final, not late
    page.click("#release")
    page.wait_for_url("**/ui/worklist")
    row = page.locator(f'#worklist-body tr[data-uid="{stroke}"]')
    expect(row.locator(".status-tag")).to_have_attribute("class", re.compile("preliminary"))
    clock = row.locator("td.countdown")
    expect(clock).to_have_attribute("data-due", "final")
    expect(clock).to_have_text(re.compile(r"^终审 剩 2[34] 时 \d\d 分$"))
    expect(clock).to_have_attribute("data-state", "ok")
    # and it is flagged as updated after its report
    expect(row.locator(".updated-after-report")).to_contain_text("影像已更新")

    # a session that offers none of the optional features (no event stream, no admin
    # tools): its worklist polls every 5 s and hides what it cannot do
    bare = featureless(browser, pipeline, "admin")
    expect(bare.locator("#live")).to_have_attribute("data-mode", "polling")
    watched = bare.locator(f'#worklist-body tr[data-uid="{studies["prior"]}"]')
    expect(watched).to_be_visible()
    expect(watched.locator("button.assign")).to_have_count(0)

    # the admin hands the prior to dr_wang with the dialog: a picker and a reason; the
    # polling page sees it at its next poll
    admin = login(browser, pipeline, "admin")
    admin.wait_for_url("**/ui/worklist")
    admin.locator(f'#worklist-body tr[data-uid="{studies["prior"]}"] button.assign').click()
    dialog = admin.locator("#admin-dialog")
    expect(dialog).to_be_visible()
    admin.select_option("#admin-who", "dr_wang")
    admin.fill("#admin-reason", "dr_li 下班")
    admin.click("#admin-ok")
    assigned = admin.locator(f'#worklist-body tr[data-uid="{studies["prior"]}"]')
    expect(assigned.locator("td.reader")).to_contain_text("王医生")  # the display name
    admin.screenshot(path=str(ARTIFACTS / "12-assigned.png"))
    admin.context.close()
    expect(watched.locator("td.reader")).to_contain_text("王医生", timeout=TIMEOUT_MS)
    bare.context.close()

    # the stroke study nobody reads escalates at half its deadline and turns amber (red
    # from a quarter); the read one, unclaimed and as far past its half, does not
    late = page.locator(f'#worklist-body tr[data-uid="{waiting}"]')
    expect(late.locator(".escalated")).to_contain_text("⚠", timeout=STROKE_MINUTES * 60_000)
    late_clock = late.locator("td.countdown")
    expect(late_clock).to_have_text(re.compile(r"^(剩|超时) \d 分$"))
    # the state and the colour it is drawn in, read together (the state moves on by itself)
    state, colour = late_clock.evaluate(
        "cell => [cell.dataset.state, getComputedStyle(cell).backgroundColor]"
    )
    assert state in COLOURS and colour == COLOURS[state], (state, colour)
    expect(row.locator(".escalated")).to_have_count(0)
    expect(clock).to_have_attribute("data-state", "ok")
    page.screenshot(path=str(ARTIFACTS / "14-deadlines.png"))
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def featureless(browser: Browser, pipeline: Pipeline, username: str) -> Page:
    """``username``'s worklist in a session whose capabilities are all taken away."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})

    def without_features(route: Route) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "capabilities": []})

    context.route("**/api/v1/auth/session", without_features)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{pipeline.base_url}/ui/login")
    page.fill("#username", username)
    page.fill("#password", pipeline.logins[username])
    page.click("#login-button")
    page.wait_for_url("**/ui/worklist")
    return page


def record_critical(page: Any) -> None:
    box = page.locator("#critical-box")
    if box.get_attribute("open") is None:
        page.locator("#critical-box summary").click()
    page.fill("#cr-finding", "右侧基底节区急性脑出血")
    page.fill("#cr-name", "张医生")
    page.check("#cr-readback")
    page.click("#critical-form button[type=submit]")
