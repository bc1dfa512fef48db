"""Request and response bodies. Separate from the ORM models on purpose: a column added to a
model never leaks into a response, and a response never exposes more than listed here.

By subject: ``worklist`` (rows, study detail, workflow), ``reports`` (drafts, signing,
addenda, critical results, templates), ``gateway`` (its configuration and the ingest
announcement), ``service`` (token, audit events, health). The validation they share (the
storable-text check, bounded types, ``MAX_*`` limits) is ``viewer_api.validation``; every
name stays importable from here."""

from viewer_api.schemas.gateway import (
    GatewayConfig,
    GatewaySite,
    HeldOut,
    IngestIn,
    IngestOut,
    InstanceIn,
    UrgentHint,
)
from viewer_api.schemas.reports import (
    AddendumIn,
    AddendumOut,
    CriticalResultIn,
    CriticalResultOut,
    ReportDraftIn,
    ReportOut,
    ReportTemplateOut,
    SignIn,
)
from viewer_api.schemas.service import AuditEventOut, Health, SessionOut, Token
from viewer_api.schemas.share_links import ShareLinkOut
from viewer_api.schemas.worklist import (
    AssignIn,
    EventOut,
    FlagIn,
    PriorReport,
    PriorStudy,
    ReasonIn,
    SeriesOut,
    StudyDetail,
    Triage,
    WorkflowItem,
    WorklistItem,
)
from viewer_api.validation import (
    EARLIEST,
    LATEST,
    MAX_INSTANCES_PER_CALL,
    MAX_INT32,
    MAX_INT64,
    MAX_OFFSET,
    MAX_REASON,
    MAX_TEXT,
    Input,
    Instant,
    Int32,
    check_instant,
    check_storable,
    text_problem,
)

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_INSTANCES_PER_CALL",
    "MAX_INT32",
    "MAX_INT64",
    "MAX_OFFSET",
    "MAX_REASON",
    "MAX_TEXT",
    "AddendumIn",
    "AddendumOut",
    "AssignIn",
    "AuditEventOut",
    "CriticalResultIn",
    "CriticalResultOut",
    "EventOut",
    "FlagIn",
    "GatewayConfig",
    "GatewaySite",
    "Health",
    "HeldOut",
    "IngestIn",
    "IngestOut",
    "Input",
    "InstanceIn",
    "Instant",
    "Int32",
    "PriorReport",
    "PriorStudy",
    "ReasonIn",
    "ReportDraftIn",
    "ReportOut",
    "ReportTemplateOut",
    "SeriesOut",
    "SessionOut",
    "ShareLinkOut",
    "SignIn",
    "StudyDetail",
    "Token",
    "Triage",
    "UrgentHint",
    "WorkflowItem",
    "WorklistItem",
    "check_instant",
    "check_storable",
    "text_problem",
]
