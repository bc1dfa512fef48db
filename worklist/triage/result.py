"""Triage's value types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal, cast, get_args

from worklist.triage.rules import Category

Priority = Literal["stat", "routine"]
STAT: Priority = "stat"
ROUTINE: Priority = "routine"

TRIAGE_KEYWORDS: tuple[str, ...] = (
    "StudyDescription",
    "RequestedProcedureDescription",
    "ReasonForTheRequestedProcedure",
    "AdmittingDiagnosesDescription",
    "ReasonForStudy",
    "AdditionalPatientHistory",
    "RequestedProcedureComments",
    "PerformedProcedureStepDescription",
    "ProtocolName",
    "SeriesDescription",
    "BodyPartExamined",
    "RequestingService",
    "RequestedProcedurePriority",
    "Modality",
)


ReasonCode = Literal[
    "term",  # a vocabulary term found in a field: category, family, term, found, field, onset
    "code",  # a diagnosis code in a code field: category, family, term, found (the code), field
    "stat_order",  # a STAT order / 绿色通道: term, found, field (priority only, no category)
    "urgent_order",  # an urgent order that lifted a family of signs: category, family, ...
    "explicit_flag",  # the called AE title's category, over the text: category
    "text_suggested",  # the text alone suggested another category than the flag: category
    "priority_only",  # stat from the order alone: no stroke or chest-pain finding
    "kept_stat",  # later series alone would be routine: the study stays stat
    "not_counted",  # a match that did not count: category, term, found, field, note (why)
    "charset",  # a text value decoded with a fallback: note (never the text itself)
    "gateway_flag",  # the gateway said urgent without a reason of its own
    "call_ahead",  # a clinic announced the patient: category, note (the clinic's words)
    "set_by",  # a person set the triage: by (display name), note (their reason)
    "text",  # a reason in words only (an older gateway's or an older row's): note
]
REASON_CODES: frozenset[str] = frozenset(get_args(ReasonCode))
MAX_REASON_PART = 500


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a study is (or is not) urgent, as data: the pages word it in the reader's language
    from ``code`` and the parts; ``str()`` words it in English for logs and the CLI."""

    code: ReasonCode
    category: str | None = None
    family: str | None = None  # the term's clinical family (rules.yaml)
    term: str | None = None  # the vocabulary entry that matched (rules.yaml name)
    found: str | None = None  # what the text said, or the code as sent
    field: str | None = None  # the DICOM keyword it was found in
    onset: str | None = None  # a sudden sign's onset cue (突发)
    by: str | None = None
    note: str | None = None  # words as given: a person's, a clinic's, why a match did not count

    def __str__(self) -> str:
        match self.code:
            case "term":
                onset = f"; sudden onset '{self.onset}'" if self.onset else ""
                return f"{self.field}: '{self.found}' ({self.category}: {self.term}{onset})"
            case "code":
                return f"{self.field}: code {self.found} ({self.category}: {self.term})"
            case "stat_order":
                return f"{self.field}: '{self.found}' (stat: {self.term})"
            case "urgent_order":
                signs = f"+1 to {self.category} signs, {self.family}"
                return f"{self.field}: '{self.found}' (urgent order: {signs})"
            case "explicit_flag":
                return f"explicit flag: {self.category} (wins over text)"
            case "text_suggested":
                return f"text alone suggested {self.category}"
            case "priority_only":
                return "priority only: no stroke or chest-pain finding in the text"
            case "kept_stat":
                return "kept stat: later series alone would be routine"
            case "not_counted":
                why = f"{self.category}: {self.note}" if self.category else self.note
                return f"not urgent: {self.field}: '{self.found}' ({why})"
            case "charset":
                return f"charset: {self.note}"
            case "gateway_flag":
                return "urgent flag from gateway"
            case "call_ahead":
                return f"call-ahead: {self.note}" if self.note else "call-ahead"
            case "set_by":
                return f"set by {self.by}: {self.note}"
            case _:
                return self.note or ""

    def to_json(self) -> dict[str, str]:
        """The stored and sent form: the code and the parts that are set."""
        out: dict[str, str] = {"code": self.code}
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_json(cls, value: object) -> Reason:
        """A stored or received reason; a plain string (an older gateway's or row's) or an
        unknown code is kept as words."""
        if isinstance(value, Mapping) and value.get("code") in REASON_CODES:
            parts = {
                f.name: str(value[f.name])[:MAX_REASON_PART]
                for f in fields(cls)[1:]
                if isinstance(value.get(f.name), str | int | float)
            }
            return cls(cast(ReasonCode, value["code"]), **parts)
        if isinstance(value, Mapping):
            return cls("text", note=str(value.get("text") or value)[:MAX_REASON_PART])
        return cls("text", note=str(value)[:MAX_REASON_PART])


@dataclass(frozen=True, slots=True)
class TriageResult:
    """``category`` is None for routine studies and for a STAT order with no category."""

    category: Category | None
    priority: Priority
    reasons: tuple[Reason, ...] = ()


@dataclass(slots=True)
class ExtractedText:
    fields: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
