"""The audit trail as files an inspector can open: CSV (for Excel) and a FHIR R4 ``Bundle``
of ``AuditEvent`` resources (for another system).

Both are produced as a stream of text chunks from pages of events
(``worklist.audit.iter_events``), so an export of a million events never holds them all.
Built from plain dicts and the standard library; the tests validate the FHIR output with
``fhir.resources`` (its R4B models, which match R4 for ``AuditEvent`` and ``Bundle``).
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from worklist.models import AuditEvent

# Excel opens a CSV file in the machine's legacy code page (GBK on a Chinese Windows) unless
# the file starts with a UTF-8 byte order mark: without it every 中文 name turns to mojibake.
CSV_BOM = "\ufeff"
CSV_COLUMNS = (
    "id",
    "time_utc",
    "username",
    "role",
    "site",
    "action",
    "object_type",
    "object_id",
    "client_addr",
    "outcome",
    "detail",
)
# A cell that starts with one of these is a formula to Excel ("CSV injection"): a failed
# log-in records the user name an attacker typed. Such cells get a leading apostrophe. Excel and
# LibreOffice also read a formula after leading blanks, and a full-width ＝＋－＠ (what a Chinese
# input method types) as its ASCII form, so the check looks past blanks at the NFKC form.
FORMULA_PREFIXES = ("=", "+", "-", "@")
_LEADING_BLANKS = " \t\r\n\u3000"

DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_SYSTEM = "urn:dicom:uid"
ACTION_SYSTEM = "urn:teleread:audit-action"
USER_SYSTEM = "urn:teleread:user"
SITE_SYSTEM = "urn:teleread:site"
ROLE_SYSTEM = "urn:teleread:role"
OBJECT_SYSTEM = "urn:teleread:object"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
AGENT_TYPE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
NETWORK_MACHINE_NAME = "1"  # AuditEvent.agent.network.type
NETWORK_IP = "2"

# DICOM PS3.16 audit event IDs (CID 400) and the subtypes used here (CID 401, CID 402)
APPLICATION_ACTIVITY = ("110100", "Application Activity")
AUDIT_LOG_USED = ("110101", "Audit Log Used")
DICOM_INSTANCES_TRANSFERRED = ("110104", "DICOM Instances Transferred")
PATIENT_RECORD = ("110110", "Patient Record")
QUERY = ("110112", "Query")
USER_AUTHENTICATION = ("110114", "User Authentication")
LOGIN = ("110122", "Login")
LOGOUT = ("110123", "Logout")

# FHIR AuditEvent.outcome (http://hl7.org/fhir/audit-event-outcome)
OUTCOME_SUCCESS = "0"
OUTCOME_MINOR_FAILURE = "4"
OUTCOME_SERIOUS_FAILURE = "8"
OUTCOME_MAJOR_FAILURE = "12"
OUTCOMES = {
    "success": OUTCOME_SUCCESS,
    "denied": OUTCOME_MINOR_FAILURE,  # e.g. a wrong password; the user may try again
    "refused": OUTCOME_MINOR_FAILURE,
    "failure": OUTCOME_SERIOUS_FAILURE,
    "error": OUTCOME_MAJOR_FAILURE,
}

# list and search screens: a query over many patients' records, not one record
QUERY_ACTIONS = frozenset(
    {
        "worklist_view",
        "reports_listed",
        "critical_results_viewed",
        "stats_viewed",
        "dicomweb_searched",
        "ingest_conflicts_viewed",
    }
)
# which verb an action ends in -> FHIR AuditEvent.action (C/R/U/D/E)
VERB_CODES = (
    (("_viewed", "_view", "_retrieved", "_listed", "_refused"), "R"),
    (("_ingested", "_generated", "_issued", "_added", "_created"), "C"),
    (("_deleted", "_purged", "_revoked"), "D"),
    (("_sent", "_exported"), "E"),
)
# object_type -> (entity type, object role), ParticipantObjectTypeCode / RoleCode
ENTITY_ROLES = {
    "study": (("2", "System Object"), ("3", "Report")),
    "instance": (("2", "System Object"), ("3", "Report")),
    "report": (("2", "System Object"), ("3", "Report")),
    "user": (("1", "Person"), ("11", "Security User Entity")),
    "site": (("3", "Organization"), ("2", "Location")),
}
QUERY_ROLE = ("24", "Query")
PATIENT_OBJECTS = frozenset({"study", "instance", "report", "call_ahead"})


@dataclass(frozen=True, slots=True)
class Classification:
    """An action in the DICOM audit vocabulary: event type, subtype, C/R/U/D/E."""

    type: tuple[str, str]
    subtype: tuple[str, str] | None
    action: str


def _instant(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _verb(action: str) -> str:
    for endings, code in VERB_CODES:
        if action.endswith(endings):
            return code
    return "U"  # claimed, released, signed, flagged, assigned ...: a change to the record


def classify(event: AuditEvent) -> Classification:
    """Map our action names onto the DICOM audit vocabulary."""
    action = event.action
    if action in ("login", "logout"):
        return Classification(USER_AUTHENTICATION, LOGIN if action == "login" else LOGOUT, "E")
    if event.object_type == "audit":
        if action.endswith("_purged"):
            return Classification(APPLICATION_ACTIVITY, None, "D")
        return Classification(AUDIT_LOG_USED, None, "R")
    if action in QUERY_ACTIONS:
        return Classification(QUERY, None, "E")
    if action == "instances_ingested":
        return Classification(DICOM_INSTANCES_TRANSFERRED, None, "C")
    if event.object_type in PATIENT_OBJECTS:
        return Classification(PATIENT_RECORD, None, _verb(action))
    return Classification(APPLICATION_ACTIVITY, None, _verb(action))


def _coding(system: str, pair: tuple[str, str]) -> dict[str, str]:
    return {"system": system, "code": pair[0], "display": pair[1]}


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@lru_cache(maxsize=4096)  # a county has few client addresses; exports repeat them a lot
def _network_type(address: str) -> str:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return NETWORK_MACHINE_NAME
    return NETWORK_IP


def _fhir_text(value: str) -> str:
    """A FHIR string needs a character that is not white space: a value made only of form
    feeds or ideographic spaces (a typed user name can be anything) is written JSON-quoted,
    so it stays visible and distinct."""
    if value and not all(c.isspace() for c in value):
        return value
    return json.dumps(value)


def _agent(event: AuditEvent) -> dict[str, Any]:
    if event.username:
        who: dict[str, Any] = {
            "identifier": {"system": USER_SYSTEM, "value": _fhir_text(event.username)},
            "display": _fhir_text(event.username),
        }
        kind = {"system": AGENT_TYPE, "code": "humanuser", "display": "human user"}
        if event.role == "gateway":
            kind = {"system": AGENT_TYPE, "code": "dataprocessor", "display": "data processor"}
    else:  # nobody logged in (a refused log-in) or the system itself (retention)
        who = {"display": "anonymous" if event.client_addr else "teleread"}
        kind = {"system": AGENT_TYPE, "code": "dataprocessor", "display": "data processor"}
    agent: dict[str, Any] = {"type": {"coding": [kind]}, "who": who, "requestor": True}
    if event.role:
        agent["role"] = [{"coding": [{"system": ROLE_SYSTEM, "code": event.role}]}]
    if event.site_code:
        agent["location"] = {
            "identifier": {"system": SITE_SYSTEM, "value": _fhir_text(event.site_code)},
            "display": _fhir_text(event.site_code),
        }
    if event.client_addr:
        address = _fhir_text(event.client_addr)
        agent["network"] = {"address": address, "type": _network_type(event.client_addr)}
    return agent


def _entity(event: AuditEvent, classification: Classification) -> dict[str, Any] | None:
    detail = [{"type": "detail", "valueString": _json_text(event.detail)}] if event.detail else []
    if classification.type == QUERY or (event.object_type == "audit" and not event.object_id):
        entity: dict[str, Any] = {
            "what": {"display": event.object_type or event.action},
            "type": _coding(ENTITY_TYPE, ("2", "System Object")),
            "role": _coding(OBJECT_ROLE, QUERY_ROLE),
        }
    elif event.object_id:
        if event.object_type in ("study", "instance"):
            identifier = {
                "system": DICOM_UID_SYSTEM,
                "value": _fhir_text(f"urn:oid:{event.object_id}"),
            }
        else:
            identifier = {
                "system": f"{OBJECT_SYSTEM}:{event.object_type or 'object'}",
                "value": _fhir_text(event.object_id),
            }
        entity = {"what": {"identifier": identifier}}
        if event.object_type in ENTITY_ROLES:
            kind, role = ENTITY_ROLES[event.object_type]
            entity["type"] = _coding(ENTITY_TYPE, kind)
            entity["role"] = _coding(OBJECT_ROLE, role)
    elif detail:
        entity = {"what": {"display": event.object_type or event.action}}
    else:
        return None
    if detail:
        entity["detail"] = detail
    return entity


def fhir_audit_event(event: AuditEvent) -> dict[str, Any]:
    """One event as a FHIR R4 ``AuditEvent`` resource (a plain dict)."""
    classification = classify(event)
    subtype = [_coding(ACTION_SYSTEM, (event.action, event.action))]
    if classification.subtype is not None:
        subtype.insert(0, _coding(DCM, classification.subtype))
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"audit-{event.id}",
        "type": _coding(DCM, classification.type),
        "subtype": subtype,
        "action": classification.action,
        "recorded": _instant(event.at),
        "outcome": OUTCOMES.get(event.outcome, OUTCOME_SERIOUS_FAILURE),
        "agent": [_agent(event)],
        "source": {
            "site": "teleread county API",
            "observer": {"display": "teleread"},
            "type": [_coding(SOURCE_TYPE, ("4", "Application Server"))],
        },
    }
    if event.outcome and event.outcome != "success":
        resource["outcomeDesc"] = _fhir_text(event.outcome)
    entity = _entity(event, classification)
    if entity is not None:
        resource["entity"] = [entity]
    return resource


def fhir_bundle_chunks(pages: Iterable[list[AuditEvent]], *, now: datetime) -> Iterator[str]:
    """A FHIR ``Bundle`` (type ``collection``) of the events, as text chunks (one per page)."""
    head = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _instant(now),
    }
    opening = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1] + ',"entry":['
    yield opening
    first = True
    for page in pages:
        parts = []
        for event in page:
            entry = json.dumps(
                {"resource": fhir_audit_event(event)}, ensure_ascii=False, separators=(",", ":")
            )
            parts.append(entry if first else "," + entry)
            first = False
        yield "\n".join(parts)
    yield "]}\n"


def formula_safe(value: str) -> str:
    """``value`` as a spreadsheet shows it as text, never evaluates it."""
    first = unicodedata.normalize("NFKC", value.lstrip(_LEADING_BLANKS)[:1])
    if value.startswith(("\t", "\r", "\n")) or first.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_row(event: AuditEvent) -> list[str]:
    """One event as CSV cells (in ``CSV_COLUMNS`` order), formula-safe."""
    return [
        str(event.id),
        _instant(event.at),
        formula_safe(event.username),
        formula_safe(event.role),
        formula_safe(event.site_code),
        formula_safe(event.action),
        formula_safe(event.object_type),
        formula_safe(event.object_id),
        formula_safe(event.client_addr),
        formula_safe(event.outcome),
        formula_safe(_json_text(event.detail) if event.detail else ""),
    ]


def csv_chunks(pages: Iterable[list[AuditEvent]]) -> Iterator[str]:
    """The events as CSV text chunks: a BOM and the header, then one chunk per page.

    RFC 4180 quoting (``csv`` module, CRLF line ends): commas, quotes and newlines inside a
    cell stay inside it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield CSV_BOM + buffer.getvalue()
    for page in pages:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(csv_row(e) for e in page)
        yield buffer.getvalue()


__all__ = [
    "CSV_BOM",
    "CSV_COLUMNS",
    "Classification",
    "classify",
    "csv_chunks",
    "csv_row",
    "fhir_audit_event",
    "fhir_bundle_chunks",
]
