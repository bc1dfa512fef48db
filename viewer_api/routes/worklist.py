"""The reading worklist: list, claim, release, claim the next most urgent study."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from viewer_api.deps import (
    ClientAddr,
    NowDep,
    ReaderUser,
    SessionDep,
    ViewerUser,
    WorklistSettingsDep,
)
from viewer_api.schemas import WorklistItem
from worklist import audit, repository

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/worklist", tags=["worklist"])

MAX_PAGE = 500


@router.get("", response_model=list[WorklistItem])
def list_worklist(
    session: SessionDep,
    user: ViewerUser,
    now: NowDep,
    client_addr: ClientAddr,
    site: Annotated[str | None, Query(max_length=32)] = None,
    modality: Annotated[str | None, Query(max_length=16)] = None,
    category: Annotated[str | None, Query(max_length=32)] = None,
    study_status: Annotated[str | None, Query(alias="status", max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[WorklistItem]:
    studies = repository.list_worklist(
        session=session,
        viewer=user,
        now=now,
        site_code=site,
        modality=modality,
        category=category,
        status=study_status,
        limit=limit,
        offset=offset,
    )
    audit.record(
        session=session,
        actor=user,
        action="worklist_view",
        object_type="worklist",
        client_addr=client_addr,
        detail={"count": len(studies), "offset": offset},
        now=now,
    )
    return [WorklistItem.from_study(s) for s in studies]


@router.post(
    "/next",
    response_model=WorklistItem,
    responses={status.HTTP_204_NO_CONTENT: {"description": "Nothing is waiting"}},
)
def claim_next(
    session: SessionDep,
    user: ReaderUser,
    now: NowDep,
    client_addr: ClientAddr,
    wl_settings: WorklistSettingsDep,
) -> WorklistItem | Response:
    study = repository.claim_next(session=session, reader=user, now=now, lease=wl_settings.lease)
    if study is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    audit.record(
        session=session,
        actor=user,
        action="study_claimed",
        object_type="study",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail={"next": True},
        now=now,
    )
    logger.info(
        "study claimed",
        extra={"action": "study_claimed", "study_uid": study.study_instance_uid},
    )
    return WorklistItem.from_study(study)


@router.post(
    "/{study_uid}/claim",
    response_model=WorklistItem,
    responses={status.HTTP_409_CONFLICT: {"description": "Another reader holds it"}},
)
def claim(
    study_uid: str,
    session: SessionDep,
    user: ReaderUser,
    now: NowDep,
    client_addr: ClientAddr,
    wl_settings: WorklistSettingsDep,
) -> WorklistItem:
    study = repository.claim_study(
        session=session, study_uid=study_uid, reader=user, now=now, lease=wl_settings.lease
    )
    audit.record(
        session=session,
        actor=user,
        action="study_claimed",
        object_type="study",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        now=now,
    )
    logger.info("study claimed", extra={"action": "study_claimed", "study_uid": study_uid})
    return WorklistItem.from_study(study)


@router.post("/{study_uid}/release", response_model=WorklistItem)
def release(
    study_uid: str,
    session: SessionDep,
    user: ReaderUser,
    now: NowDep,
    client_addr: ClientAddr,
    wl_settings: WorklistSettingsDep,
) -> WorklistItem:
    study = repository.release_study(
        session=session,
        study_uid=study_uid,
        reader=user,
        now=now,
        stable_seconds=wl_settings.stable_seconds,
    )
    audit.record(
        session=session,
        actor=user,
        action="study_released",
        object_type="study",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        now=now,
    )
    logger.info("study released", extra={"action": "study_released", "study_uid": study_uid})
    return WorklistItem.from_study(study)
