"""A first, minimal triage; the triage issue replaces the internals, not this API."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydicom.dataset import Dataset

Category = Literal["stroke", "chest_pain"]
Priority = Literal["stat", "routine"]

TRIAGE_KEYWORDS: tuple[str, ...] = (
    "StudyDescription",
    "RequestedProcedureDescription",
    "ReasonForTheRequestedProcedure",
    "AdmittingDiagnosesDescription",
    "ProtocolName",
    "SeriesDescription",
    "BodyPartExamined",
    "RequestingService",
    "RequestedProcedurePriority",
    "Modality",
)


@dataclass(frozen=True, slots=True)
class TriageResult:
    category: Category | None
    priority: Priority
    reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class ExtractedText:
    fields: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


_STROKE = ("卒中", "中风", "脑梗", "脑出血", "stroke")
_CHEST = ("胸痛", "心梗", "主动脉夹层", "肺栓塞", "chest pain")


def decode_text(raw: bytes, declared_charsets: Sequence[str] | str | None) -> tuple[str, list[str]]:
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError:
        return raw.decode("gb18030", errors="replace"), ["decoded as GB18030"]


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def extract_text(ds: Dataset) -> ExtractedText:
    out = ExtractedText()
    for kw in TRIAGE_KEYWORDS:
        value = ds.get(kw)
        if value:
            out.fields[kw] = _normalise(str(value))
    return out


def classify(
    fields: Mapping[str, str],
    *,
    modality: str | None = None,
    explicit: Category | None = None,
) -> TriageResult:
    if explicit is not None:
        return TriageResult(explicit, "stat", (f"explicit flag: {explicit}",))
    for kw, text in fields.items():
        low = text.lower()
        for cat, words in (("stroke", _STROKE), ("chest_pain", _CHEST)):
            for w in words:
                if w in low:
                    return TriageResult(cat, "stat", (f"{kw}: '{w}'",))  # type: ignore[arg-type]
    return TriageResult(None, "routine", ())


def triage_dataset(ds: Dataset, *, explicit: Category | None = None) -> TriageResult:
    text = extract_text(ds)
    return classify(text.fields, modality=str(ds.get("Modality", "")), explicit=explicit)
