"""The township gateway's calls: its configuration, and "these instances arrived"."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from storage.errors import InvalidKey
from storage.keys import instance_key, is_instance_key
from viewer_api.deps import Audit, GatewayUser, NowDep, SessionDep, WorklistSettingsDep
from viewer_api.errors import ObjectKeyMismatch, SiteNotAllowed
from viewer_api.limits import ThreadedJSONRoute
from viewer_api.schemas import (
    GatewayConfig,
    GatewaySite,
    HeldOut,
    IngestIn,
    IngestOut,
    Input,
    InstanceIn,
    Instant,
    ResendOut,
)
from worklist.accounts import list_sites
from worklist.audit import AuditAction
from worklist.completion import mark_study_complete
from worklist.errors import UnknownSite
from worklist.ingest import InstanceArrival, record_instances
from worklist.models import Site, User
from worklist.operations import gateway_clock_offset, record_gateway_status
from worklist.resends import REPLACED

logger = logging.getLogger(__name__)

# a batch of announced instances runs to megabytes: its JSON is parsed off the event loop
router = APIRouter(prefix="/api/v1", tags=["gateway"], route_class=ThreadedJSONRoute)


def _allowed_sites(session: Session, user: User) -> list[Site]:
    """A gateway bound to a site sends for that site only; an unbound one (the all-in-one
    gateway) for every site."""
    sites = list_sites(session=session)
    if user.site_id is None:
        return sites
    return [s for s in sites if s.id == user.site_id]


@router.get("/gateway/config", response_model=GatewayConfig)
def gateway_config(session: SessionDep, user: GatewayUser) -> GatewayConfig:
    return GatewayConfig(
        sites=[
            GatewaySite(
                code=s.code,
                name=s.name,
                ae_titles=[a.ae_title for a in s.ae_titles],
                networks=[n.network for n in s.networks],
                certificates=[c.sha256 for c in s.certificates],
            )
            for s in _allowed_sites(session, user)
        ]
    )


def _arrival(item: InstanceIn, site: str) -> InstanceArrival:
    """The announced instance; its key must be the site-prefixed one, a re-sent version of it
    (``storage.keys.version_key``), or the key it had before keys got their site prefix (a
    gateway not yet upgraded, or an instance spooled before)."""
    uids = (item.study_instance_uid, item.series_instance_uid, item.sop_instance_uid)
    try:
        expected = instance_key(site, *uids)
    except InvalidKey:
        raise UnknownSite(f"no site {site[:40]!r}") from None
    if not is_instance_key(item.object_key, site, *uids):
        raise ObjectKeyMismatch(
            f"object_key must be {expected!r} for instance {item.sop_instance_uid}"
        )
    fields = item.model_dump(exclude={"urgent_hint", "text_fields", "charset_notes"})
    return InstanceArrival(
        **fields,
        text_fields=dict(item.text_fields or {}),
        charset_notes=list(item.charset_notes or []),
        urgent_hint=item.urgent_hint.model_dump() if item.urgent_hint is not None else None,
    )


@router.post(
    "/ingest/instances",
    response_model=IngestOut,
    responses={
        status.HTTP_403_FORBIDDEN: {"description": "This gateway may not send for that site"},
        status.HTTP_422_UNPROCESSABLE_CONTENT: {"description": "Unknown site or bad UIDs"},
    },
)
def ingest_instances(
    body: IngestIn,
    session: SessionDep,
    user: GatewayUser,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
) -> IngestOut:
    if user.site_id is not None:
        own = user.site.code if user.site is not None else None
        if body.site != own:
            raise SiteNotAllowed()
    arrivals = [_arrival(item, body.site) for item in body.instances]
    outcome = record_instances(
        session=session,
        site_code=body.site,
        calling_ae=body.calling_ae,
        instances=arrivals,
        now=now,
        deadlines=wl_settings.deadlines,
        gateway_offset_seconds=gateway_clock_offset(session=session, gateway=user),
        modality_utc_offset=wl_settings.modality_utc_offset,
        overwrite_policy=wl_settings.overwrite_policy,
    )
    audit(
        AuditAction.INSTANCES_INGESTED,
        object_id=body.site,
        detail={
            "calling_ae": body.calling_ae,
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "study_uids": outcome.study_uids,
            "held": len(outcome.conflicts),
            "resent": len(outcome.resends),
        },
    )
    for held in outcome.conflicts:
        if held.new:
            audit(
                AuditAction.INGEST_CONFLICT_HELD,
                object_id=held.study_instance_uid,
                detail={
                    "conflict_id": held.conflict_id,
                    "kind": held.kind,
                    "site": body.site,
                    "calling_ae": body.calling_ae,
                    "sop_instance_uid": held.sop_instance_uid,
                },
            )
    for r in outcome.resends:
        audit(
            AuditAction.INSTANCE_REPLACED
            if r.outcome == REPLACED
            else AuditAction.INSTANCE_VERSION_KEPT,
            object_id=r.study_instance_uid,
            detail={
                "sop_instance_uid": r.sop_instance_uid,
                "outcome": r.outcome,
                "version_id": r.version_id,
                "policy": wl_settings.overwrite_policy,
                "site": body.site,
                "calling_ae": body.calling_ae,
                "after_signed_report": r.after_signed_report,
            },
        )
    logger.info(
        "instances ingested",
        extra={
            "action": "instances_ingested",
            "site": body.site,
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "held": len(outcome.conflicts),
            "study_uids": outcome.study_uids,
        },
    )
    return IngestOut(
        accepted=outcome.accepted,
        duplicates=outcome.duplicates,
        conflicts=[
            HeldOut(
                conflict_id=h.conflict_id,
                kind=h.kind,
                study_instance_uid=h.study_instance_uid,
                sop_instance_uid=h.sop_instance_uid,
            )
            for h in outcome.conflicts
        ],
        resends=[
            ResendOut(
                sop_instance_uid=r.sop_instance_uid,
                study_instance_uid=r.study_instance_uid,
                object_key=r.object_key,
                outcome=r.outcome,
                version_id=r.version_id,
                after_signed_report=r.after_signed_report,
            )
            for r in outcome.resends
        ],
    )


class RefusalIn(Input):
    """A DICOM association the gateway refused (``gateway.outbox.REFUSAL_FIELDS``)."""

    at: Instant
    calling_ae: str = Field(default="", max_length=64)
    called_ae: str = Field(default="", max_length=64)
    peer: str = Field(default="", max_length=64)
    site: str = Field(default="", max_length=32)
    reason: str = Field(default="", max_length=200)
    certificate_sha256: str = Field(default="", max_length=64)


class GatewayStatusIn(Input):
    """A summary of the gateway's spool (``gateway.heartbeat.summary``), and the associations
    it refused since its last report."""

    pending_urgent: int = Field(default=0, ge=0)
    pending_routine: int = Field(default=0, ge=0)
    oldest_unsent_age_seconds: float | None = Field(default=None, ge=0, le=1e9)
    oldest_urgent_unsent_age_seconds: float | None = Field(default=None, ge=0, le=1e9)
    last_error: dict[str, str | int] | None = None
    spool_bytes: int = Field(default=0, ge=0)
    upload_failures: int = Field(default=0, ge=0)
    # when the gateway sent it, on its clock (an older gateway: absent): its clock offset
    sent_at: Instant | None = None
    refusals: list[RefusalIn] = Field(default_factory=list, max_length=200)


@router.post(
    "/gateway/status",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
def gateway_status(
    body: GatewayStatusIn, session: SessionDep, user: GatewayUser, audit: Audit, now: NowDep
) -> Response:
    """The gateway's heartbeat: its queue and last upload error, for the operations page;
    each association it refused becomes an audit event (``association_refused``)."""
    for refusal in body.refusals:
        audit(
            AuditAction.ASSOCIATION_REFUSED,
            object_id=refusal.site or refusal.calling_ae,
            outcome="refused",
            detail=refusal.model_dump(mode="json"),
        )
    last = body.last_error or {}
    status_json = body.model_dump(exclude={"last_error", "sent_at", "refusals"})
    status_json["last_error"] = (
        {"error": str(last.get("error", ""))[:500], "attempts": int(last.get("attempts") or 0)}
        if last
        else None
    )
    record_gateway_status(
        session=session, gateway=user, status=status_json, now=now, sent_at=body.sent_at
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class StudyCompleteIn(Input):
    """The modality finished the study (MPPS COMPLETED) with ``expected_instances`` images."""

    site: str = Field(min_length=1, max_length=32)
    study_instance_uid: str = Field(min_length=1, max_length=64)
    expected_instances: int = Field(ge=1, le=1_000_000)


class StudyCompleteOut(BaseModel):
    study_instance_uid: str
    status: str
    num_instances: int
    expected_instances: int
    ready: bool


@router.post(
    "/ingest/study-complete",
    response_model=StudyCompleteOut,
    responses={
        status.HTTP_403_FORBIDDEN: {"description": "This gateway may not send for that site"},
        status.HTTP_404_NOT_FOUND: {"description": "No such study at that site"},
        status.HTTP_422_UNPROCESSABLE_CONTENT: {"description": "Unknown site"},
    },
)
def study_complete(
    body: StudyCompleteIn,
    session: SessionDep,
    user: GatewayUser,
    audit: Audit,
    now: NowDep,
) -> StudyCompleteOut:
    """Mark the study ready when it holds every expected instance; idempotent. ``ready``
    false: not all of them were announced yet (the gateway asks again later)."""
    if user.site_id is not None:
        own = user.site.code if user.site is not None else None
        if body.site != own:
            raise SiteNotAllowed()
    if body.site not in {s.code for s in list_sites(session=session)}:
        raise UnknownSite(f"no site {body.site!r}")
    outcome = mark_study_complete(
        session=session,
        study_uid=body.study_instance_uid,
        expected_instances=body.expected_instances,
        now=now,
        site_code=body.site,
    )
    if outcome.changed:
        audit(
            AuditAction.STUDY_COMPLETE,
            object_id=body.study_instance_uid,
            detail={
                "expected_instances": body.expected_instances,
                "num_instances": outcome.num_instances,
            },
        )
    return StudyCompleteOut(
        study_instance_uid=outcome.study_uid,
        status=outcome.status,
        num_instances=outcome.num_instances,
        expected_instances=outcome.expected_instances,
        ready=outcome.ready,
    )
