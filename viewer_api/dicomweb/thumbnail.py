"""Thumbnails (PS3.18 10.7, "Retrieve Rendered Thumbnail"): a small picture of a study, a
series or an instance, as OHIF's study browser asks for them
(``thumbnailRendering: "thumbnail"``).

The server picks the picture: for an instance, its first frame; for a series, its middle
image; for a study, the middle image of its first series that has images (not an SR, a
presentation state or a key object selection). It is rendered like ``/rendered`` (the
file's window, else the modality's), fitted into ``viewport=w,h`` (256 x 256 unless given),
JPEG unless ``Accept`` (or ``?accept=``) asks for PNG.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from viewer_api.deps import SessionDep, ViewerUser
from viewer_api.dicomweb.access import find_instances
from viewer_api.dicomweb.display import JPEG, PNG
from viewer_api.dicomweb.rendered import render
from worklist.models import Instance

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

DEFAULT_VIEWPORT = "256,256"
# series without pictures of their own
NO_IMAGE_MODALITIES = frozenset({"SR", "PR", "KO", "DOC", "RWV", "SEG", "RTSTRUCT"})
_IMAGES: dict[int | str, dict[str, Any]] = {200: {"content": {JPEG: {}, PNG: {}}}}
Viewport = Annotated[str | None, Query(max_length=20)]
Quality = Annotated[int, Query(ge=1, le=100)]
AcceptHeader = Annotated[str | None, Header()]


def _middle(rows: list[tuple[Instance, str]]) -> tuple[Instance, str]:
    return rows[len(rows) // 2]


def _thumbnail(
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
    viewport: str | None,
    quality: int,
    accept: str | None,
) -> Response:
    rows = find_instances(
        session=session, viewer=user, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
    )
    if series_uid is None:
        by_series: dict[str, list[tuple[Instance, str]]] = {}
        for instance, series in rows:
            by_series.setdefault(series, []).append((instance, series))
        pictured = [
            group
            for group in by_series.values()
            if (group[0][0].series.modality or "").upper() not in NO_IMAGE_MODALITIES
        ]
        rows = (pictured or list(by_series.values()))[0]
    instance, series = _middle(rows)
    return render(
        request,
        session,
        user,
        study_uid,
        series,
        instance.sop_instance_uid,
        1,
        None,
        quality,
        viewport or DEFAULT_VIEWPORT,
        accept or JPEG,
    )


@router.get("/studies/{study_uid}/thumbnail", responses=_IMAGES)
def study_thumbnail(
    study_uid: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    viewport: Viewport = None,
    quality: Quality = 80,
    accept: AcceptHeader = None,
) -> Response:
    return _thumbnail(request, session, user, study_uid, None, None, viewport, quality, accept)


@router.get("/studies/{study_uid}/series/{series_uid}/thumbnail", responses=_IMAGES)
def series_thumbnail(
    study_uid: str,
    series_uid: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    viewport: Viewport = None,
    quality: Quality = 80,
    accept: AcceptHeader = None,
) -> Response:
    return _thumbnail(
        request, session, user, study_uid, series_uid, None, viewport, quality, accept
    )


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/thumbnail",
    responses=_IMAGES,
)
def instance_thumbnail(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    viewport: Viewport = None,
    quality: Quality = 80,
    accept: AcceptHeader = None,
) -> Response:
    return _thumbnail(
        request, session, user, study_uid, series_uid, sop_uid, viewport, quality, accept
    )
