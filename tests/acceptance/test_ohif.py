"""OHIF served by teleread at /ohif/, in a real headless Chromium against a real `teleread
serve`: a radiologist opens OHIF, logs in through teleread's log-in page, sees the study
list with the Chinese names right (also with a study that has no Modality), opens the
stroke CT, sees an image and places a length measurement; no request fails. The worklist
and the reading page open a study in OHIF in a new tab of the same session.

Needs the OHIF build (`./dev` installs it with npm); skipped with the reason otherwise.
Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from pydicom.uid import generate_uid

from teleread.demo import write_demo_studies
from tests.acceptance.conftest import Pipeline
from tests.acceptance.test_browser_reading_room import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
)
from tests.acceptance.test_browser_reading_room import (
    pytestmark as browser_marks,
)
from tests.acceptance.test_end_to_end import storescu, wait_for
from tests.dicom_factory import make_ct, write
from viewer_api.web import ohif

try:
    from playwright.sync_api import Browser, Page, Response, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    *browser_marks,
    pytest.mark.skipif(
        not ohif.installed(ohif.default_dir()),
        reason="OHIF is not installed (./dev installs it with npm; teleread ohif install)",
    ),
]


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
    """The demo stroke CT (GB18030 王^小明) and chest-pain CTA, and a study whose images
    have no Modality."""
    out = tmp_path_factory.mktemp("demo")
    demo = write_demo_studies(out, seed=5, ct_slices=8, ct_size=256)
    stroke = next(s for s in demo if s.expected_category == "stroke")
    chest = next(s for s in demo if s.expected_category == "chest_pain")
    for study in (stroke, chest):
        sent = storescu(pipeline, "CT_TS01", study.directory)
        assert sent.returncode == 0, sent.stderr
    bare_uid, bare_series, bare_dir = generate_uid(), generate_uid(), out / "no-modality"
    for number in (1, 2):
        ds = make_ct(
            study_uid=bare_uid,
            series_uid=bare_series,
            instance_number=number,
            patient_name="赵^无设备",
            study_description="外院检查",
        )
        del ds.Modality
        write(ds, bare_dir / f"{number}.dcm")
    sent = subprocess.run(
        [
            *("storescu", "-aet", "CT_TS01", "-aec", "TELEREAD", "+sd", "+r"),
            *("127.0.0.1", str(pipeline.dicom_port), str(bare_dir)),
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
        found = {i["study_instance_uid"]: i for i in api.get("/api/v1/worklist").json()}
        return all(uid in found for uid in (stroke.study_uid, chest.study_uid, bare_uid)) and (
            found[stroke.study_uid]["num_instances"] == len(stroke.files)
        )

    wait_for(all_in)
    return {"stroke": stroke, "chest": chest, "bare": bare_uid}


def _failures(page: Page) -> list[str]:
    """Every request of ``page`` from now on that fails or answers an error."""
    failed: list[str] = []

    def on_response(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    page.on("response", on_response)
    page.on("requestfailed", lambda request: failed.append(f"failed {request.url}"))
    return failed


def _lit_fraction(png: bytes) -> float:
    """The share of pixels clearly brighter than black."""
    grey = Image.open(io.BytesIO(png)).convert("L")
    histogram = grey.histogram()
    return sum(histogram[40:]) / max(1, sum(histogram))


def test_ohif_reads_teleread_with_the_readers_log_in(
    browser: Browser, pipeline: Pipeline, studies: dict[str, Any]
) -> None:
    stroke = studies["stroke"]
    page = browser.new_page(viewport={"width": 1400, "height": 900}, locale="zh-CN")
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # not signed in: teleread's log-in page, then back to OHIF's study list
    page.goto(f"{pipeline.base_url}/ohif/")
    page.wait_for_url("**/ui/login?next=*")
    page.fill("#username", "dr_li")
    page.fill("#password", pipeline.logins["dr_li"])
    failed = _failures(page)
    page.click("#login-button")
    page.wait_for_url("**/ohif/")
    page.click("[data-cy=confirm-and-hide-button]")  # OHIF's "investigational use" notice
    for name in ("王, 小明", "赵, 无设备"):
        expect(page.get_by_text(name, exact=True)).to_be_visible()
    expect(page.get_by_text("外院检查")).to_be_visible()  # the study without a Modality
    page.screenshot(path=str(ARTIFACTS / "ohif-01-study-list.png"))

    # the stroke CT: an image is drawn, and a length can be measured on it
    page.goto(f"{pipeline.base_url}/ohif/viewer?StudyInstanceUIDs={stroke.study_uid}")
    canvas = page.locator(".cornerstone-canvas").first
    expect(canvas).to_be_visible()
    expect(page.locator("[data-cy=study-browser-thumbnail] img").first).to_be_visible()
    tour = page.get_by_text("Skip all")
    if tour.is_visible():
        tour.click()
    wait_for(lambda: _lit_fraction(canvas.screenshot()) > 0.02, timeout=TIMEOUT_MS / 1000)
    page.click("[data-cy=MeasurementTools-split-button-primary]")  # the Length tool
    box = canvas.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 40, y - 30)
    page.mouse.down()
    page.mouse.move(x, y, steps=4)
    page.mouse.move(x + 40, y + 30, steps=4)
    page.mouse.up()
    expect(page.locator(".svg-layer line[data-id$='-line']")).to_have_count(1)
    expect(page.locator(".svg-layer text").filter(has_text="mm").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ohif-02-length.png"))
    assert not failed, failed
    assert not errors, errors

    # the worklist and the reading page open a study in OHIF, in a new tab of the session
    chest = studies["chest"]
    expected = f"/ohif/viewer?StudyInstanceUIDs={chest.study_uid}"
    page.goto(f"{pipeline.base_url}/ui/worklist")
    link = page.locator(f'#worklist-body tr[data-uid="{chest.study_uid}"] a.ohif')
    expect(link).to_have_attribute("href", expected)
    page.goto(f"{pipeline.base_url}/ui/reading?study={chest.study_uid}")
    expect(page.locator("#open-ohif")).to_have_attribute("href", expected)
    with page.context.expect_page() as opened:
        page.click("#open-ohif")
    viewer = opened.value
    viewer.wait_for_url("**/ohif/viewer?*")
    expect(viewer.locator(".cornerstone-canvas").first).to_be_visible(timeout=TIMEOUT_MS)
