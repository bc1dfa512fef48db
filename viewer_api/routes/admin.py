"""Decisions a person takes on the worklist.

- an admin reassigns a study to a reader (``/api/v1/worklist/{uid}/assign``) or cancels it
  with a reason (``/api/v1/worklist/{uid}/cancel``);
- clinic staff (own site only), radiologists and admins flag a study urgent
  (``/api/v1/studies/{uid}/flag``); only radiologists and admins downgrade it again
  (``/api/v1/studies/{uid}/unflag``). A person's flag wins over automatic text triage.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter

from viewer_api.deps import (
    AdminUser,
    Audit,
    NowDep,
    ReaderUser,
    SessionDep,
    ViewerUser,
    WorklistSettingsDep,
)
from viewer_api.errors import InvalidAssignee
from viewer_api.schemas import AssignIn, FlagIn, ReasonIn, WorkflowItem
from worklist import claims, events, triage_override, visibility
from worklist.accounts import get_user_by_username
from worklist.audit import AuditAction
from worklist.models import PRIORITY_ROUTINE, PRIORITY_STAT

logger = logging.getLogger(__name__)

router = APIRouter(tags=["worklist admin"])


@router.post("/api/v1/worklist/{study_uid}/assign", response_model=WorkflowItem)
def assign(
    study_uid: str,
    body: AssignIn,
    session: SessionDep,
    user: AdminUser,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
) -> WorkflowItem:
    """Give the study (and a fresh lease) to ``username``, taking it from any holder."""
    assignee = get_user_by_username(session=session, username=body.username)
    if assignee is None or not assignee.is_active or assignee.role not in visibility.READER_ROLES:
        raise InvalidAssignee(f"{body.username!r} is not an active radiologist or admin")
    study, previous_id = claims.assign_study(
        session=session,
        study_uid=study_uid,
        assignee=assignee,
        by=user,
        now=now,
        lease=wl_settings.lease,
    )
    audit(
        AuditAction.STUDY_ASSIGNED,
        object_id=study.study_instance_uid,
        detail={
            "to": assignee.username,
            "previous_holder_id": previous_id,
            **({"reason": body.reason.strip()} if body.reason and body.reason.strip() else {}),
        },
    )
    events.publish_study_event(
        session=session,
        kind=events.KIND_STUDY_CLAIMED,
        study=study,
        site_code=study.site.code,
        now=now,
        extra={"by": assignee.username, "assigned_by": user.username, "reason": body.reason},
    )
    return WorkflowItem.from_study_at(study, now)


@router.post("/api/v1/worklist/{study_uid}/cancel", response_model=WorkflowItem)
def cancel(
    study_uid: str,
    body: ReasonIn,
    session: SessionDep,
    user: AdminUser,
    audit: Audit,
    now: NowDep,
) -> WorkflowItem:
    """Take the study off the worklist; it stays listed under ``status=cancelled``."""
    study = claims.cancel_study(
        session=session, study_uid=study_uid, by=user, reason=body.reason, now=now
    )
    audit(
        AuditAction.STUDY_CANCELLED,
        object_id=study.study_instance_uid,
        detail={"reason": body.reason},
    )
    return WorkflowItem.from_study_at(study, now)


@router.post("/api/v1/studies/{study_uid}/flag", response_model=WorkflowItem)
def flag(
    study_uid: str,
    body: FlagIn,
    session: SessionDep,
    user: ViewerUser,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
) -> WorkflowItem:
    """Mark the study urgent (stroke / chest pain); its deadline shortens accordingly."""
    study = triage_override.override_triage(
        session=session,
        study_uid=study_uid,
        user=user,
        priority=PRIORITY_STAT,
        category=body.category,
        reason=body.reason,
        now=now,
        deadlines=wl_settings.deadlines,
    )
    audit(
        AuditAction.STUDY_FLAGGED,
        object_id=study.study_instance_uid,
        detail={"category": body.category, "reason": body.reason},
    )
    # the free-text reason stays in the audit trail: events leave the county via webhooks
    events.publish_study_event(
        session=session,
        kind=events.KIND_STUDY_URGENT,
        study=study,
        site_code=study.site.code,
        now=now,
        extra={"flagged_by": user.username, "flagged_by_role": user.role},
    )
    return WorkflowItem.from_study_at(study, now)


@router.post("/api/v1/studies/{study_uid}/unflag", response_model=WorkflowItem)
def unflag(
    study_uid: str,
    body: ReasonIn,
    session: SessionDep,
    user: ReaderUser,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
) -> WorkflowItem:
    """A radiologist or admin downgrades the study to routine, with a reason."""
    study = triage_override.override_triage(
        session=session,
        study_uid=study_uid,
        user=user,
        priority=PRIORITY_ROUTINE,
        category=None,
        reason=body.reason,
        now=now,
        deadlines=wl_settings.deadlines,
    )
    audit(
        AuditAction.STUDY_UNFLAGGED,
        object_id=study.study_instance_uid,
        detail={"reason": body.reason},
    )
    return WorkflowItem.from_study_at(study, now)
