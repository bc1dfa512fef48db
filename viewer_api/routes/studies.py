"""One study: its detail and its stored instances (each as the modality sent it: an object the
gateway recompressed losslessly is rebuilt bit for bit, ``storage.recompressed``)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Path, Request, status
from fastapi.responses import Response, StreamingResponse

from storage import recompressed
from storage.base import ObjectStore
from storage.verified import open_verified
from viewer_api.deps import (
    AdminUser,
    Audit,
    NowDep,
    ReaderUser,
    SessionDep,
    StoreDep,
    ViewerUser,
    VisibleStudy,
    WorklistSettingsDep,
    get_visible_study,
    reads_only,
)
from viewer_api.json_body import JsonBody
from viewer_api.schemas import InstanceVersionOut, PriorStudy, StudyDetail
from viewer_api.schemas.timeline import TimelineOut
from viewer_api.validation import MAX_INT32
from worklist import repository, resends
from worklist.audit import AuditAction
from worklist.errors import StudyNotFound
from worklist.models import Instance, Study
from worklist.timeline import study_timeline

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])

CHUNK_BYTES = 256 * 1024
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "No such study visible to you"}
}


STUDY_JSON: JsonBody[StudyDetail] = JsonBody(StudyDetail)


@router.get("/{study_uid}", response_model=StudyDetail, responses=_NOT_FOUND)
@reads_only
def get_study(
    study_uid: str,
    request: Request,
    user: ViewerUser,
    session: SessionDep,
    audit: Audit,
    now: NowDep,
) -> Response:
    """The study with its series and their instances' UIDs. A viewer opens it with every
    study: the view is audited off the request path (``Auditor.view``; the timeline's
    "opened" hop reads it once written), the body made here (``viewer_api.json_body``) and
    the read transaction ended here too (``get_db`` then has no I/O left to hand to a
    thread; so is ``get_visible_study``, called here rather than as a dependency of its
    own)."""
    study = get_visible_study(study_uid, request, session, user, now)
    sop_uids = repository.sop_uids_by_series(session=session, study=study)
    audit.view(AuditAction.STUDY_VIEWED, object_id=study.study_instance_uid)
    response = STUDY_JSON.response(StudyDetail.of(study, sop_uids))
    session.commit()
    return response


@router.get("/{study_uid}/priors", response_model=list[PriorStudy], responses=_NOT_FOUND)
def get_priors(
    user: ReaderUser,
    study: VisibleStudy,
    session: SessionDep,
    audit: Audit,
    wl_settings: WorklistSettingsDep,
) -> list[PriorStudy]:
    """The patient's other studies, newest first, with their signed reports: the same
    patient ID at the same site, or across the sites whose IDs the county links
    (``TELEREAD_WORKLIST_LINKED_SITES``)."""
    priors = repository.list_priors(
        session=session, study=study, viewer=user, linked_sites=wl_settings.linked_sites
    )
    audit(
        AuditAction.PRIORS_VIEWED,
        object_id=study.study_instance_uid,
        detail={"priors": [p.study_instance_uid for p in priors]},
    )
    return [PriorStudy.from_prior(p) for p in priors]


@router.get("/{study_uid}/timeline", response_model=TimelineOut, responses=_NOT_FOUND)
def get_timeline(
    user: ViewerUser, study: VisibleStudy, session: SessionDep, audit: Audit, now: NowDep
) -> TimelineOut:
    """The study's path from the scanner to the clinic, hop by hop (``worklist.timeline``):
    each hop's time, clock and source, the durations between them, and the deadlines it is
    held to. Seen by whoever may see the study (a clinic: its own site's)."""
    timeline = study_timeline(session=session, study=study, now=now)
    audit(AuditAction.STUDY_TIMELINE_VIEWED, object_id=study.study_instance_uid)
    return TimelineOut.from_timeline(timeline)


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
    sop_uid: str, user: ViewerUser, study: VisibleStudy, audit: Audit, store: StoreDep
) -> StreamingResponse:
    instance = _find_instance(study, sop_uid)
    if instance is None:
        raise StudyNotFound("No such instance in this study")
    where = {"study_uid": study.study_instance_uid, "sop_uid": sop_uid}
    with audit.corrupt_objects(object_id=sop_uid, detail=where):
        response = _stored_file(
            store,
            instance.object_key,
            sha256=instance.sha256,
            size=instance.size,
            transfer_syntax_uid=instance.transfer_syntax_uid,
            filename=f"{instance.sop_instance_uid}.dcm",
        )
    audit(
        AuditAction.INSTANCE_VIEWED,
        object_id=instance.sop_instance_uid,
        detail={"study_uid": study.study_instance_uid},
    )
    return response


def _stored_file(
    store: ObjectStore,
    key: str,
    *,
    sha256: str,
    size: int,
    transfer_syntax_uid: str,
    filename: str,
) -> StreamingResponse:
    """A stored object as the modality sent it (``application/dicom``)."""
    stream = open_verified(store, key, sha256=sha256, size=size)  # ObjectNotFound -> 404
    body, length, etag = _chunks(stream), size, sha256
    if transfer_syntax_uid in recompressed.SYNTAXES:
        # maybe recompressed by the gateway: the file the modality sent, rebuilt from the
        # stored object just verified, and checked against the sha256 its note records
        with stream:
            original = recompressed.original_of(stream.read())
        body, length = iter((original,)), len(original)
        etag = hashlib.sha256(original).hexdigest()
    return StreamingResponse(
        body,
        media_type="application/dicom",
        headers={
            "Content-Length": str(length),
            "Content-Disposition": f'attachment; filename="{filename}"',
            "ETag": f'"{etag}"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/{study_uid}/versions", response_model=list[InstanceVersionOut], responses=_NOT_FOUND)
def list_instance_versions(
    user: AdminUser, study: VisibleStudy, session: SessionDep, audit: Audit
) -> list[InstanceVersionOut]:
    """The study's instance versions not served: replaced by a corrected re-send
    (``superseded``) or re-sent but not served (``not_applied``: the overwrite policy, or
    older than the version served). Newest first."""
    versions = resends.list_versions(session=session, study=study)
    audit(
        AuditAction.INSTANCE_VERSIONS_VIEWED,
        object_id=study.study_instance_uid,
        detail={"versions": len(versions)},
    )
    return [InstanceVersionOut.of(v) for v in versions]


@router.get(
    "/{study_uid}/versions/{version_id}",
    response_class=StreamingResponse,
    responses={
        status.HTTP_404_NOT_FOUND: {"description": "No such study or version"},
        status.HTTP_200_OK: {"content": {"application/dicom": {}}},
    },
)
def get_instance_version(
    version_id: Annotated[int, Path(ge=1, le=MAX_INT32)],
    user: AdminUser,
    study: VisibleStudy,
    session: SessionDep,
    audit: Audit,
    store: StoreDep,
) -> StreamingResponse:
    """One kept version, as stored (the file the modality sent)."""
    version = resends.get_version(session=session, version_id=version_id)
    if version is None or version.study_id != study.id:
        raise StudyNotFound("No such version of an instance in this study")
    where = {"study_uid": study.study_instance_uid, "version_id": version.id}
    with audit.corrupt_objects(object_id=version.sop_instance_uid, detail=where):
        response = _stored_file(
            store,
            version.object_key,
            sha256=version.sha256,
            size=version.size,
            transfer_syntax_uid=version.transfer_syntax_uid,
            filename=f"{version.sop_instance_uid}_{version.sha256[:16]}.dcm",
        )
    audit(
        AuditAction.INSTANCE_VERSION_RETRIEVED,
        object_id=study.study_instance_uid,
        detail={"sop_instance_uid": version.sop_instance_uid, "version_id": version.id},
    )
    return response
