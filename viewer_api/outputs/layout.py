"""The one layout of a printed report: what it says, in which order, in one language.

``document(content, lang)`` words a signed report (``ReportContent``) as a
``ReportDocument``: the letterhead, the patient and study block, the report sections, the
critical-result calls, the addenda and the signature, each line a label and a value. Every
rendering walks the same document: the web page and the print view
(``viewer_api.outputs.html``), the PDF (``viewer_api.outputs.pdf``) and the plain text of
FHIR's ``presentedForm``. A field added here shows up in all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from viewer_api.outputs.content import CriticalNote, ReportContent
from worklist.models import REPORT_PRELIMINARY

Lang = Literal["zh-CN", "en"]
LANGS: tuple[Lang, ...] = ("zh-CN", "en")
DEFAULT_LANG: Lang = "zh-CN"
NONE = "—"

# every word a report prints, per language
WORDS: dict[Lang, dict[str, str]] = {
    "zh-CN": {
        "title": "医学影像诊断报告",
        "preliminary": "初步报告",
        "final": "正式报告",
        "amended": "已修订报告",
        "patient_name": "姓名",
        "sex": "性别",
        "age": "年龄",
        "patient_id": "患者ID",
        "accession": "检查号",
        "modality": "检查类型",
        "exam": "检查项目",
        "site": "送检单位",
        "exam_time": "检查时间",
        "findings": "影像所见",
        "impression": "诊断意见",
        "recommendation": "建议",
        "critical": "危急值通报",
        "told": "通知",
        "read_back": "已复述确认",
        "no_read_back": "未复述确认",
        "recorded_by": "记录人",
        "addenda": "补充报告",
        "reason": "原因",
        "signer": "报告医师",
        "signer_title": "职称",
        "report_time": "报告时间",
        "checksum": "校验码",
        "study_uid": "检查实例UID",
        "share": "扫码查看影像与报告",
        "share_until": "有效期至",
        "empty": "（无）",
        "M": "男",
        "F": "女",
        "O": "其他",
        "phone": "电话",
        "in_person": "当面",
        "message": "消息",
        "other": "其他方式",
        "Y": "岁",
        "Mo": "个月",
        "W": "周",
        "D": "天",
    },
    "en": {
        "title": "Diagnostic Imaging Report",
        "preliminary": "Preliminary report",
        "final": "Final report",
        "amended": "Amended report",
        "patient_name": "Name",
        "sex": "Sex",
        "age": "Age",
        "patient_id": "Patient ID",
        "accession": "Accession no.",
        "modality": "Modality",
        "exam": "Examination",
        "site": "Referring site",
        "exam_time": "Examined",
        "findings": "Findings",
        "impression": "Impression",
        "recommendation": "Recommendation",
        "critical": "Critical result call",
        "told": "Told",
        "read_back": "read back",
        "no_read_back": "not read back",
        "recorded_by": "recorded by",
        "addenda": "Addenda",
        "reason": "Reason",
        "signer": "Radiologist",
        "signer_title": "Title",
        "report_time": "Reported",
        "checksum": "Checksum",
        "study_uid": "Study UID",
        "share": "Scan to see the images and report",
        "share_until": "valid until",
        "empty": "(none)",
        "M": "Male",
        "F": "Female",
        "O": "Other",
        "phone": "phone",
        "in_person": "in person",
        "message": "message",
        "other": "other",
        "Y": "y",
        "Mo": "mo",
        "W": "wk",
        "D": "d",
    },
}
# separators and brackets that differ between the languages
PUNCT: dict[Lang, dict[str, str]] = {
    "zh-CN": {
        "colon": "：",
        "comma": "，",
        "semi": "；",
        "open": "（",
        "close": "）",
        "tag": "【{}】",
    },
    "en": {"colon": ": ", "comma": ", ", "semi": "; ", "open": " (", "close": ")", "tag": " [{}]"},
}
MONTHS_EN = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


@dataclass(frozen=True)
class Item:
    """One labelled value: ``label`` + colon + ``value``."""

    key: str
    label: str
    value: str


@dataclass(frozen=True)
class Section:
    """A heading and its paragraphs (findings, impression, a critical call, an addendum)."""

    key: str
    heading: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class ReportDocument:
    lang: Lang
    hospital: str
    centre: str
    site_name: str
    title: str
    status: str  # preliminary | final | amended
    status_label: str
    patient: tuple[Item, ...]  # the patient and study block, in print order
    sections: tuple[Section, ...]  # findings, impression, recommendation
    critical: tuple[Section, ...]  # one per critical-result call
    addenda: tuple[Section, ...]
    signature: tuple[Item, ...]
    footer: str
    colon: str
    words: dict[str, str]

    @property
    def watermark(self) -> str | None:
        """Printed across every page of a preliminary report."""
        return self.status_label if self.status == REPORT_PRELIMINARY else None

    def line(self, item: Item) -> str:
        return f"{item.label}{self.colon}{item.value}"

    def items(self) -> tuple[Item, ...]:
        """Every labelled field of the report, in print order."""
        return self.patient + self.signature

    def share_caption(self, expires_at: datetime, offset_hours: int) -> str:
        """The words under a share link's QR code."""
        caption = self.words["share"]
        until = format_time(expires_at, self.lang, offset_hours)
        punct = PUNCT[self.lang]
        return f"{caption}{punct['open']}{self.words['share_until']} {until}{punct['close']}"


def normalise_lang(value: str | None) -> Lang:
    """``zh-CN`` unless ``value`` names English (``en``, ``en-GB``, ...)."""
    return "en" if value and value.lower().startswith("en") else DEFAULT_LANG


def format_time(when: datetime, lang: Lang, offset_hours: int) -> str:
    """A moment in the display time zone, to the minute, as the language writes dates."""
    local = when.astimezone(timezone(timedelta(hours=offset_hours)))
    if lang == "en":
        return f"{local.day} {MONTHS_EN[local.month - 1]} {local.year} {local:%H:%M}"
    return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"


def format_dicom_datetime(date: str, time: str, lang: Lang) -> str:
    """DICOM DA (+ TM) as the language writes it; the site's local time, as recorded."""
    if not (len(date) == 8 and date.isdigit()):
        return date
    year, month, day = int(date[:4]), int(date[4:6]), int(date[6:])
    digits = time.split(".")[0]
    clock = f" {digits[:2]}:{digits[2:4]}" if len(digits) >= 4 and digits.isdigit() else ""
    if lang == "en":
        if not 1 <= month <= 12:
            return date
        return f"{day} {MONTHS_EN[month - 1]} {year}{clock}"
    return f"{year}年{month}月{day}日{clock}"


def age_text(content: ReportContent, words: dict[str, str]) -> str:
    """The age the images give ("066Y" -> "66岁"), else from the birth and study dates."""
    age = content.patient_age.strip()
    units = {"Y": "Y", "M": "Mo", "W": "W", "D": "D"}
    if len(age) == 4 and age[:3].isdigit() and age[3] in units:
        return f"{int(age[:3])}{words[units[age[3]]]}"
    birth, study = content.patient_birth_date, content.study_date
    if len(birth) == 8 and birth.isdigit() and len(study) == 8 and study.isdigit():
        years = int(study[:4]) - int(birth[:4]) - (study[4:] < birth[4:])
        if 0 <= years < 150:
            return f"{years}{words['Y']}"
    return age


def _critical(note: CriticalNote, lang: Lang, words: dict[str, str], offset: int) -> Section:
    p = PUNCT[lang]
    extra = p["comma"].join(x for x in (note.to_role, note.to_phone) if x)
    receiver = f"{note.to_name}{p['open']}{extra}{p['close']}" if extra else note.to_name
    read_back = words["read_back"] if note.read_back_confirmed else words["no_read_back"]
    call = p["comma"].join(
        (
            f"{words['told']}{p['colon']}{receiver}",
            words.get(note.method, note.method),
            format_time(note.communicated_at, lang, offset),
            read_back,
        )
    )
    return Section(
        key="critical",
        heading=words["critical"],
        paragraphs=(note.finding, f"{call}{p['semi']}{words['recorded_by']} {note.recorded_by}"),
    )


def document(content: ReportContent, lang: Lang = DEFAULT_LANG) -> ReportDocument:
    """The report ``content`` laid out in ``lang``."""
    words = WORDS[lang]
    p = PUNCT[lang]
    offset = content.display_offset_hours
    status_label = words.get(content.status, content.status)

    def item(key: str, value: str) -> Item:
        return Item(key, words[key], value or NONE)

    patient = (
        item("patient_name", content.patient_name),
        item("sex", words.get(content.patient_sex.upper()[:1], content.patient_sex)),
        item("age", age_text(content, words)),
        item("patient_id", content.patient_id),
        item("accession", content.accession),
        item("modality", content.modality),
        item("exam", content.study_description),
        item("exam_time", format_dicom_datetime(content.study_date, content.study_time, lang)),
        item("site", content.site_name),
    )
    sections = [
        Section("findings", words["findings"], (content.findings or words["empty"],)),
        Section("impression", words["impression"], (content.impression or words["empty"],)),
    ]
    if content.recommendation.strip():
        sections.append(
            Section("recommendation", words["recommendation"], (content.recommendation,))
        )
    addenda = tuple(
        Section(
            key="addendum",
            heading=f"{words['addenda']} {n}",
            paragraphs=(
                note.text,
                f"{words['reason']}{p['colon']}{note.reason}{p['semi']}{note.author}"
                f"{p['comma']}{format_time(note.created_at, lang, offset)}",
            ),
        )
        for n, note in enumerate(content.addenda, start=1)
    )
    signature = (
        item("signer", content.signer_name),
        item("signer_title", content.signer_title),
        item("report_time", format_time(content.signed_at, lang, offset)),
        item("checksum", content.content_sha256),
    )
    return ReportDocument(
        lang=lang,
        hospital=content.hospital,
        centre=content.centre,
        site_name=content.site_name,
        title=words["title"],
        status=content.status,
        status_label=status_label,
        patient=patient,
        sections=tuple(sections),
        critical=tuple(_critical(n, lang, words, offset) for n in content.critical_results),
        addenda=addenda,
        signature=signature,
        footer=" · ".join(x for x in (content.hospital, content.centre, status_label) if x),
        colon=p["colon"],
        words=words,
    )


def plain_text(doc: ReportDocument) -> str:
    """The document as plain text (FHIR's ``presentedForm``)."""
    tag = PUNCT[doc.lang]["tag"].format(doc.status_label)
    lines = [doc.hospital, doc.centre, f"{doc.title}{tag}", ""]
    lines += [doc.line(i) for i in doc.patient]
    for section in (*doc.sections, *doc.critical, *doc.addenda):
        lines += ["", f"{section.heading}{doc.colon}", *section.paragraphs]
    lines += ["", *(doc.line(i) for i in doc.signature)]
    return "\n".join(lines)


__all__ = [
    "DEFAULT_LANG",
    "LANGS",
    "WORDS",
    "Item",
    "Lang",
    "ReportDocument",
    "Section",
    "document",
    "format_dicom_datetime",
    "format_time",
    "normalise_lang",
    "plain_text",
]
