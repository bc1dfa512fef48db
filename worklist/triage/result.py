"""Triage's value types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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


@dataclass(frozen=True, slots=True)
class TriageResult:
    """``category`` is None for routine studies and for a STAT order with no category."""

    category: Category | None
    priority: Priority
    reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class ExtractedText:
    fields: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
