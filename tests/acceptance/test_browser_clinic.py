"""The clinic's side in a real headless Chromium against a real `teleread serve`: the print
view and the PDF of one report carry the same fields.

Screenshots go to test-artifacts/browser/ (gitignored)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

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
from tests.pdf_checks import missing_glyphs, pdf_text, qr_codes, unembedded_fonts

PUBLIC_URL = "https://county.example:8443"
pytestmark = BROWSER_MARKS  # playwright, chromium and dcmtk present

try:
    from playwright.sync_api import Browser, expect, sync_playwright
except ImportError:  # pragma: no cover - the module is skipped then
    pass


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(tmp_path_factory, {"TELEREAD_API_PUBLIC_URL": PUBLIC_URL}) as started:
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
        (qr,) = qr_codes(pdf.content)
        assert qr.startswith(f"{PUBLIC_URL}/api/v1/share/")
    assert not nurse.errors, nurse.errors  # type: ignore[attr-defined]
