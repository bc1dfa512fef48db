"""One study: its detail and its stored instances."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, BinaryIO

from fastapi import APIRouter, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from viewer_api.deps import ClientAddr, NowDep, SessionDep, StoreDep, ViewerUser
from viewer_api.schemas import StudyDetail
from worklist import audit, repository
from worklist.errors import StudyNotFound
from worklist.models import Instance, Study, User

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])

CHUNK_BYTES = 256 * 1024
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "No such study visible to you"}
}


def visible_study(*, session: Session, study_uid: str, viewer: User) -> Study:
    """The study if ``viewer`` may see it; ``StudyNotFound`` (404) otherwise, so a clinic
    cannot even learn that another site's study exists."""
    study = repository.get_study(session=session, study_uid=study_uid, viewer=viewer)
    if study is None:
        raise StudyNotFound()
    return study


@router.get("/{study_uid}", response_model=StudyDetail, responses=_NOT_FOUND)
def get_study(
    study_uid: str, session: SessionDep, user: ViewerUser, now: NowDep, client_addr: ClientAddr
) -> StudyDetail:
    study = visible_study(session=session, study_uid=study_uid, viewer=user)
    audit.record(
        session=session,
        actor=user,
        action="study_viewed",
        object_type="study",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        now=now,
    )
    return StudyDetail.from_study(study)


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
    finally:
        stream.close()


def _find_instance(study: Study, sop_uid: str) -> Instance | None:
    for series in study.series:
        for instance in series.instances:
            if instance.sop_instance_uid == sop_uid:
                return instance
    return None


@router.get(
    "/{study_uid}/instances/{sop_uid}",
    response_class=StreamingResponse,
    responses={
        **_NOT_FOUND,
        status.HTTP_200_OK: {"content": {"application/dicom": {}}},
    },
)
def get_instance(
    study_uid: str,
    sop_uid: str,
    session: SessionDep,
    store: StoreDep,
    user: ViewerUser,
    now: NowDep,
    client_addr: ClientAddr,
) -> StreamingResponse:
    study = visible_study(session=session, study_uid=study_uid, viewer=user)
    instance = _find_instance(study, sop_uid)
    if instance is None:
        raise StudyNotFound("No such instance in this study")
    stream = store.open(instance.object_key)  # ObjectNotFound -> 404 via the handlers
    audit.record(
        session=session,
        actor=user,
        action="instance_viewed",
        object_type="instance",
        object_id=instance.sop_instance_uid,
        client_addr=client_addr,
        detail={"study_uid": study.study_instance_uid},
        now=now,
    )
    return StreamingResponse(
        _chunks(stream),
        media_type="application/dicom",
        headers={
            "Content-Length": str(instance.size),
            "Content-Disposition": f'attachment; filename="{instance.sop_instance_uid}.dcm"',
            "ETag": f'"{instance.sha256}"',
            "Cache-Control": "private, no-store",
        },
    )
