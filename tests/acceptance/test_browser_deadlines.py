"""Deadlines and the case, in a real headless Chromium against a real `teleread serve` with
a short claim lease: the holder is warned before the claim runs out and extends it; a
template's choices must be made before signing; another radiologist may not record a
critical result on the case; the collapsed box counts them; the patient's prior study opens
beside the current one with its report; the admin assigns with a dialog and a reason."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.uid import generate_uid

from tests.acceptance.conftest import Pipeline, running_pipeline
from tests.acceptance.test_browser_reading_room import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    login,
)
from tests.acceptance.test_browser_reading_room import pytestmark as browser_marks
from tests.acceptance.test_end_to_end import wait_for
from tests.dicom_factory import make_ct, write

try:
    from playwright.sync_api import Browser, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = browser_marks


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    # a claim warns its holder two minutes before it runs out: with this lease, at once
    env = {"TELEREAD_WORKLIST_CLAIM_LEASE_SECONDS": "125"}
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
    """A patient's stroke head CT today and a head CT of theirs from before."""
    out = tmp_path_factory.mktemp("cases")
    uids = {}
    for name, description, date in (
        ("prior", "头颅CT平扫 复查", "20250301"),
        ("stroke", "头颅CT平扫 急性脑卒中", "20261125"),
    ):
        study, series = generate_uid(), generate_uid()
        for number in (1, 2):
            ds = make_ct(
                study,
                series_uid=series,
                instance_number=number,
                study_description=description,
                patient_id="P-0815",
                StudyDate=date,
            )
            write(ds, out / name / f"{number}.dcm")
        sent = subprocess.run(
            [
                *("storescu", "-aet", "CT_TS01", "-aec", "TELEREAD", "+sd", "+r"),
                *("127.0.0.1", str(pipeline.dicom_port), str(out / name)),
            ],
            env={**os.environ, "TCP_NODELAY": "1"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        uids[name] = study
    api = pipeline.client("dr_wang")
    wait_for(lambda: all(api.get(f"/api/v1/studies/{u}").status_code == 200 for u in uids.values()))
    return uids


def test_the_case_in_the_reading_room(
    browser: Browser, pipeline: Pipeline, studies: dict[str, Any]
) -> None:
    stroke = studies["stroke"]
    page = login(browser, pipeline, "dr_li")
    page.wait_for_url("**/ui/worklist")
    page.goto(f"{pipeline.base_url}/ui/reading?study={stroke}")
    page.wait_for_selector("body[data-ready]")
    page.click("#claim")
    expect(page.locator("#findings")).to_have_value(re.compile(r"\[未见/可见\]"))

    # the holder is warned before the claim runs out, and extends it
    banner = page.locator("#claim-banner")
    expect(banner).to_be_visible(timeout=30_000)
    expect(banner).to_contain_text("即将过期")
    page.click("#renew-claim")
    expect(banner).to_be_hidden()

    # a template's choices are made before signing
    page.click("#sign-preliminary")
    message = page.locator("#report-message")
    expect(message).to_contain_text("未选定")
    expect(message).to_contain_text("findings line 1: [未见/可见]")
    expect(page.locator("#report-status")).not_to_have_attribute("data-status", "preliminary")

    # another radiologist may not record a critical result on dr_li's case
    other = login(browser, pipeline, "dr_wang")
    other.wait_for_url("**/ui/worklist")
    other.goto(f"{pipeline.base_url}/ui/reading?study={stroke}")
    other.wait_for_selector("body[data-ready]")
    record_critical(other)
    expect(other.locator("#toast")).to_contain_text("李医生")  # whose case, by display name
    expect(other.locator("#critical-summary")).to_have_attribute("data-count", "0")

    # dr_li does; the collapsed box counts it and says its state
    record_critical(page)
    summary = page.locator("#critical-summary")
    expect(summary).to_have_attribute("data-count", "1")
    expect(summary).to_contain_text("危急值 (1)")
    expect(summary).to_contain_text("张医生")
    page.locator("#critical-box summary").click()  # collapse it again
    page.fill("#findings", "脑实质内可见高密度出血灶。")
    page.fill("#impression", "右侧基底节区脑出血。")
    page.click("#sign-preliminary")
    expect(page.locator("#report-status")).to_have_attribute("data-status", "preliminary")

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
    assert not page.errors, page.errors  # type: ignore[attr-defined]

    # the admin hands the study to dr_wang with the dialog: a picker and a reason
    admin = login(browser, pipeline, "admin")
    admin.wait_for_url("**/ui/worklist")
    admin.locator(f'#worklist-body tr[data-uid="{stroke}"] button.assign').click()
    dialog = admin.locator("#admin-dialog")
    expect(dialog).to_be_visible()
    admin.select_option("#admin-who", "dr_wang")
    admin.fill("#admin-reason", "dr_li 下班")
    admin.click("#admin-ok")
    row = admin.locator(f'#worklist-body tr[data-uid="{stroke}"]')
    expect(row.locator("td.reader")).to_contain_text("王医生")  # the display name
    admin.screenshot(path=str(ARTIFACTS / "12-assigned.png"))


def record_critical(page: Any) -> None:
    box = page.locator("#critical-box")
    if box.get_attribute("open") is None:
        page.locator("#critical-box summary").click()
    page.fill("#cr-finding", "右侧基底节区急性脑出血")
    page.fill("#cr-name", "张医生")
    page.check("#cr-readback")
    page.click("#critical-form button[type=submit]")
