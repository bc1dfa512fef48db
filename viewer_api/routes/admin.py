"""Decisions a person takes on the worklist.

- an admin reassigns a study to a reader (``/api/v1/worklist/{uid}/assign``) or cancels it
  with a reason (``/api/v1/worklist/{uid}/cancel``);
- clinic staff (own site only), radiologists and admins flag a study urgent
  (``/api/v1/studies/{uid}/flag``); only radiologists and admins downgrade it again
  (``/api/v1/studies/{uid}/unflag``). A person's flag wins over automatic text triage.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status

from viewer_api.deps import (
    ClientAddr,
    NowDep,
    ReaderUser,
    SessionDep,
    ViewerUser,
    WorklistSettingsDep,
    require_roles,
)
from viewer_api.schemas import AssignIn, FlagIn, ReasonIn, WorkflowItem
from worklist import audit, events, repository
from worklist.accounts import get_user_by_username
from worklist.models import PRIORITY_ROUTINE, PRIORITY_STAT, ROLE_ADMIN, User

logger = logging.getLogger(__name__)

router = APIRouter(tags=["worklist admin"])

AdminUser = Annotated[User, Depends(require_roles(ROLE_ADMIN))]


@router.post("/api/v1/worklist/{study_uid}/assign", response_model=WorkflowItem)
def assign(
    study_uid: str,
    body: AssignIn,
    session: SessionDep,
    user: AdminUser,
    now: NowDep,
    client_addr: ClientAddr,
    wl_settings: WorklistSettingsDep,
) -> WorkflowItem:
    """Give the study (and a fresh lease) to ``username``, taking it from any holder."""
    assignee = get_user_by_username(session=session, username=body.username)
    if assignee is None or not assignee.is_active or assignee.role not in repository.READER_ROLES:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{body.username!r} is not an active radiologist or admin",
        )
    study, previous_id = repository.assign_study(
        session=session,
        study_uid=study_uid,
        assignee=assignee,
        by=user,
        now=now,
        lease=wl_settings.lease,
    )
    audit.record(
        session=session,
        actor=user,
        action="study_assigned",
        object_type="study",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail={"to": assignee.username, "previous_holder_id": previous_id},
        now=now,
    )
    events.publish_study_event(
        session=session,
        kind=events.KIND_STUDY_CLAIMED,
        study=study,
        site_code=study.site.code,
        now=now,
        extra={"by": assignee.username, "assigned_by": user.username},
    )
    return WorkflowItem.from_study_at(study, now)


@router.post("/api/v1/worklist/{study_uid}/cancel", response_model=WorkflowItem)
def cancel(
    study_uid: str,
    body: ReasonIn,
    session: SessionDep,
    user: AdminUser,
    now: NowDep,
    client_addr: ClientAddr,
) -> WorkflowItem:
    """Take the study off the worklist; it stays listed under ``status=cancelled``."""
    study = repository.cancel_study(
        session=session, study_uid=study_uid, by=user, reason=body.reason, now=now
    )
    audit.record(
        session=session,
        actor=user,
        action="study_cancelled",
        object_type="study",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail={"reason": body.reason},
        now=now,
    )
    return WorkflowItem.from_study_at(study, now)


@router.post("/api/v1/studies/{study_uid}/flag", response_model=WorkflowItem)
def flag(
    study_uid: str,
    body: FlagIn,
    session: SessionDep,
    user: ViewerUser,
    now: NowDep,
    client_addr: ClientAddr,
    wl_settings: WorklistSettingsDep,
) -> WorkflowItem:
    """Mark the study urgent (stroke / chest pain); its deadline shortens accordingly."""
    study = repository.override_triage(
        session=session,
        study_uid=study_uid,
        user=user,
        priority=PRIORITY_STAT,
        category=body.category,
        reason=body.reason,
        now=now,
        deadlines=wl_settings.deadlines,
    )
    audit.record(
        session=session,
        actor=user,
        action="study_flagged",
        object_type="study",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail={"category": body.category, "reason": body.reason},
        now=now,
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
    now: NowDep,
    client_addr: ClientAddr,
    wl_settings: WorklistSettingsDep,
) -> WorkflowItem:
    """A radiologist or admin downgrades the study to routine, with a reason."""
    study = repository.override_triage(
        session=session,
        study_uid=study_uid,
        user=user,
        priority=PRIORITY_ROUTINE,
        category=None,
        reason=body.reason,
        now=now,
        deadlines=wl_settings.deadlines,
    )
    audit.record(
        session=session,
        actor=user,
        action="study_unflagged",
        object_type="study",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail={"reason": body.reason},
        now=now,
    )
    return WorkflowItem.from_study_at(study, now)
