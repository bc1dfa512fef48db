"""The report renderers as pure functions: PDF text, FHIR validity and status mapping,
the Basic Text SR against dicom3tools' dciodvfy, the share-page rendering."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydicom import dcmread
from pydicom.uid import JPEGLSLossless
from pypdf import PdfReader

from tests.dicom_factory import make_ct, part10_bytes
from tests.pdf_checks import missing_glyphs, pdf_text, qr_codes, unembedded_fonts
from viewer_api.outputs.content import AddendumNote, CriticalNote, ReportContent, readable_name
from viewer_api.outputs.fhir import SeriesSummary, diagnostic_report
from viewer_api.outputs.fonts import MISSING, ReportFontMissing, report_font
from viewer_api.outputs.html import render_html
from viewer_api.outputs.images import NotRenderable, render_png
from viewer_api.outputs.layout import Lang, document
from viewer_api.outputs.pdf import ShareLink, render_pdf
from viewer_api.outputs.qr import qr_matrix
from viewer_api.outputs.settings import OutputSettings
from viewer_api.outputs.sr import ImageRef, make_report_sr, sop_uid_for, sr_bytes
from worklist.errors import InvalidDestination
from worklist.sr_sends import Destination

SIGNED = datetime(2026, 11, 25, 2, 30, tzinfo=UTC)
IMPRESSION = "左侧大脑中动脉供血区急性脑梗死，建议CT血管成像。"
SECRET = "unit-test-secret-0123456789-abcdefghijkl"
DCIODVFY = shutil.which("dciodvfy")


def _content(status: str = "final", **kw: object) -> ReportContent:
    ct = make_ct()
    base = ReportContent(
        hospital="某某县人民医院",
        centre="远程影像诊断中心",
        site_code="TS01",
        site_name="一号乡镇卫生院",
        study_uid=ct.StudyInstanceUID,
        patient_name="王小明",
        patient_name_dicom="王^小明",
        patient_id="P001",
        patient_sex="M",
        patient_birth_date="19600101",
        patient_age="066Y",
        study_description="头颅CT平扫 急性脑卒中",
        study_date="20261125",
        study_time="100000",
        modality="CT",
        accession="A001",
        status=status,
        findings="左侧基底节区见片状低密度影，边界欠清。\n中线结构居中。",
        impression=IMPRESSION,
        recommendation="建议复查。",
        signer_username="dr_li",
        signer_name="李医生",
        signer_title="主治医师",
        signed_at=SIGNED,
        content_sha256="ab" * 32,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


SHARE = ShareLink("https://county.example/api/v1/share/abc.def", SIGNED + timedelta(days=7))


def _pdf(content: ReportContent, lang: Lang = "zh-CN", share: ShareLink | None = SHARE) -> bytes:
    return render_pdf(document(content, lang), font=report_font(), share=share)


def _pdf_text(data: bytes) -> str:
    reader = PdfReader(BytesIO(data))
    return "".join(page.extract_text() for page in reader.pages)


def _flat(text: str) -> str:
    """Without white space: lines wrap anywhere in a PDF."""
    return re.sub(r"\s+", "", text)


def test_readable_names() -> None:
    assert readable_name("王^小明") == "王小明"
    assert readable_name("Wang^Xiaoming=王^小明") == "王小明"
    assert readable_name("Wang^Xiaoming=王^小明=wang^xiaoming") == "王小明"
    assert readable_name("Wang^Xiaoming==wang^xiaoming") == "Wang Xiaoming"
    assert readable_name("WANG^XIAOMING") == "WANG XIAOMING"
    assert readable_name("") == ""


@pytest.mark.parametrize(
    ("status", "word"),
    [("preliminary", "初步报告"), ("final", "正式报告"), ("amended", "已修订报告")],
)
def test_pdf_has_chinese_impression_and_status(status: str, word: str) -> None:
    content = _content(status)
    pdf = _pdf(content)
    assert pdf.startswith(b"%PDF-")
    text = _pdf_text(pdf)
    flat = _flat(text)
    assert IMPRESSION in flat
    assert word in text
    for field in ("某某县人民医院", "远程影像诊断中心", "姓名：王小明", "性别：男", "年龄：66岁"):
        assert field in flat
    for field in ("患者ID：P001", "检查号：A001", "检查时间：2026年11月25日10:00"):
        assert field in flat
    assert "报告医师：李医生" in flat and "职称：主治医师" in flat
    assert "报告时间：2026年11月25日10:30" in flat  # 02:30 UTC at UTC+8
    assert content.content_sha256 in flat
    assert "dr_li" not in flat and "PRELIMINARY" not in flat  # one language, display names
    if status == "preliminary":  # the watermark and the footer, besides the status line
        assert flat.count(word) >= 3


def test_pdf_embeds_its_font_and_has_every_glyph() -> None:
    pdf = _pdf(_content("preliminary"))
    assert unembedded_fonts(pdf) == []
    assert missing_glyphs(pdf) == []
    assert "某某县人民医院 · 远程影像诊断中心 · 初步报告" in pdf_text(pdf)  # the footer, "·" too
    assert qr_codes(pdf) == [SHARE.url]


def test_the_glyph_check_sees_a_missing_glyph() -> None:
    """The check itself: a character the font lacks is found (and printed as MISSING)."""
    font = report_font()
    rare = "\U0002a6b6"  # CJK extension B: not in the report font
    assert not font.has(rare)
    pdf = _pdf(_content(findings=f"罕见字{rare}"))
    assert missing_glyphs(pdf) == []  # replaced, so still drawn with a real glyph
    assert f"罕见字{MISSING}" in pdf_text(pdf)
    from reportlab.pdfgen import canvas

    raw = BytesIO()
    page = canvas.Canvas(raw, initialFontName=font.name)
    page.setFont(font.name, 12)
    page.drawString(50, 700, f"县{rare}")
    page.save()
    assert missing_glyphs(raw.getvalue()) != []


def test_missing_font_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportFontMissing, match="fonts-wqy-microhei"):
        report_font(str(tmp_path / "none.ttc"))


def test_english_layout_is_english_throughout() -> None:
    content = _content("preliminary")
    flat = _flat(_pdf_text(_pdf(content, "en")))
    for field in ("Sex: Male", "Age: 66y", "Examined: 25 Nov 2026 10:00", "Radiologist: 李医生"):
        assert _flat(field) in flat
    assert _flat("Reported: 25 Nov 2026 10:30") in flat and "Preliminaryreport" in flat
    for chinese_label in ("性别", "年龄", "报告医师", "初步报告"):
        assert chinese_label not in flat


def test_html_and_pdf_carry_the_same_fields() -> None:
    content = _content(
        "amended",
        critical_results=(
            CriticalNote(
                "急性脑梗死", "张护士", "急诊护士", "13800000000", SIGNED, "phone", True, "李医生"
            ),
        ),
        addenda=(AddendumNote("补充。", "复阅", "王医生", SIGNED + timedelta(hours=1), "cd" * 32),),
    )
    doc = document(content)
    html = render_html(doc)
    flat = _flat(_pdf_text(_pdf(content)))
    for item in doc.items():
        assert f'data-key="{item.key}"' in html
        assert _flat(doc.line(item)) in flat
    for section in (*doc.sections, *doc.critical, *doc.addenda):
        assert section.heading in html and _flat(section.heading) in flat
        for text in section.paragraphs:
            assert _flat(text) in flat


def test_pdf_prints_critical_results_and_addenda() -> None:
    content = _content(
        "amended",
        critical_results=(
            CriticalNote(
                finding="急性脑梗死",
                to_name="张护士",
                to_role="急诊护士",
                to_phone="13800000000",
                communicated_at=SIGNED - timedelta(minutes=5),
                method="phone",
                read_back_confirmed=True,
                recorded_by="李医生",
            ),
        ),
        addenda=(
            AddendumNote(
                text="补充：右侧额叶陈旧性梗死灶。",
                reason="复阅",
                author="王医生",
                created_at=SIGNED + timedelta(hours=1),
                sha256="cd" * 32,
            ),
        ),
    )
    flat = _pdf_text(_pdf(content)).replace("\n", "")
    assert "危急值通报" in flat and "张护士" in flat and "已复述确认" in flat
    assert "补充：右侧额叶陈旧性梗死灶。" in flat


def test_qr_matrix_is_square() -> None:
    matrix = qr_matrix("https://county.example/api/v1/share/" + "x" * 120)
    assert len(matrix) == len(matrix[0]) >= 21
    assert any(any(row) for row in matrix)


@pytest.mark.parametrize(
    ("status", "fhir_status"),
    [("preliminary", "preliminary"), ("final", "final"), ("amended", "amended")],
)
def test_fhir_validates_and_maps_status(status: str, fhir_status: str) -> None:
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    content = _content(status)
    series = [
        SeriesSummary(uid="1.2.3.4", modality="CT", number=1, description="轴位", num_instances=3)
    ]
    resource = diagnostic_report(
        content, document(content), series=series, pdf_url="https://x/report.pdf"
    )
    model = DiagnosticReport.model_validate(resource)
    assert model.status == fhir_status
    assert model.conclusion == IMPRESSION
    coding = model.code.coding[0]
    assert (coding.system, coding.code) == ("http://loinc.org", "18748-4")
    assert model.imagingStudy[0].reference == "#imagingstudy"
    study = next(r for r in resource["contained"] if r["resourceType"] == "ImagingStudy")
    assert study["identifier"][0] == {
        "system": "urn:dicom:uid",
        "value": f"urn:oid:{content.study_uid}",
    }
    assert resource["effectiveDateTime"] == "2026-11-25T10:00:00+08:00"
    assert resource["issued"] == "2026-11-25T02:30:00Z"
    text = base64.b64decode(resource["presentedForm"][0]["data"]).decode()
    assert IMPRESSION in text


def _dciodvfy(path: Path) -> str:
    assert DCIODVFY is not None
    done = subprocess.run(
        [DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout + done.stderr


@pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools' dciodvfy not installed")
@pytest.mark.parametrize("status", ["preliminary", "final", "amended"])
def test_sr_passes_dciodvfy(status: str, tmp_path: Path) -> None:
    ct = make_ct()
    content = _content(
        status,
        study_uid=ct.StudyInstanceUID,
        addenda=(AddendumNote("补充。", "复阅", "王医生", SIGNED + timedelta(hours=1), "cd" * 32),)
        if status == "amended"
        else (),
    )
    ds = make_report_sr(
        content,
        header=ct,
        images=[ImageRef(ct.SeriesInstanceUID, ct.SOPClassUID, ct.SOPInstanceUID)],
        predecessor=ImageRef("1.2.3.9", "1.2.840.10008.5.1.4.1.1.88.11", "1.2.3.9.1")
        if status == "amended"
        else None,
    )
    path = tmp_path / "sr.dcm"
    path.write_bytes(sr_bytes(ds))
    report = _dciodvfy(path)
    assert "Error" not in report, report
    back = dcmread(path)
    assert back.Modality == "SR" and back.PatientName == ct.PatientName
    assert back.StudyInstanceUID == ct.StudyInstanceUID
    final = status != "preliminary"
    assert back.VerificationFlag == ("VERIFIED" if final else "UNVERIFIED")
    assert back.CompletionFlag == ("COMPLETE" if final else "PARTIAL")
    assert ("VerifyingObserverSequence" in back) == final
    texts = [item.ContentSequence[0].TextValue for item in back.ContentSequence[1:3]]
    assert texts[1] == IMPRESSION


def test_sr_is_deterministic_per_version() -> None:
    ct = make_ct()
    content = _content(study_uid=ct.StudyInstanceUID)
    first = sr_bytes(make_report_sr(content, header=ct))
    assert first == sr_bytes(make_report_sr(content, header=ct))
    amended = replace(
        content,
        status="amended",
        addenda=(AddendumNote("补充。", "复阅", "王医生", SIGNED, "cd" * 32),),
    )
    assert sop_uid_for(ct.StudyInstanceUID, amended.version_sha256) != sop_uid_for(
        ct.StudyInstanceUID, content.version_sha256
    )


def test_pdf_without_a_share_link_has_no_qr_code() -> None:
    pdf = _pdf(_content("final"), share=None)
    flat = _pdf_text(pdf).replace("\n", "")
    assert IMPRESSION in flat and "扫码" not in flat and "/share/" not in flat
    assert qr_codes(pdf) == []


def test_render_png_uses_the_file_window() -> None:
    from PIL import Image

    png = render_png(part10_bytes(make_ct()), max_edge=32)
    image = Image.open(BytesIO(png))
    assert image.size == (32, 32) and image.mode == "L"
    with pytest.raises(NotRenderable):
        render_png(b"not dicom")


def test_render_png_takes_the_first_frame_and_decodes_jpegls() -> None:
    ct = make_ct(rows=128, cols=128)
    single = render_png(part10_bytes(ct))
    ct.NumberOfFrames = 2
    ct.PixelData = ct.PixelData + bytes(len(ct.PixelData))  # a black second frame
    assert render_png(part10_bytes(ct)) == single
    ct.compress(JPEGLSLossless, generate_instance_uid=False)  # as a modality may send it
    assert render_png(part10_bytes(ct)) == single


def test_sr_destinations_are_checked() -> None:
    assert str(Destination.parse(" PACS_TS01@10.1.2.3:104 ")) == "PACS_TS01@10.1.2.3:104"
    for bad in ("PACS@host", "@host:104", "A" * 17 + "@h:104", "P@h:0", "P@h:70000", "P\\Q@h:1"):
        with pytest.raises(InvalidDestination):
            Destination.parse(bad)
    with pytest.raises(ValidationError):
        OutputSettings(share_ttl_seconds=0)
