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
from sqlalchemy.orm import Session

from viewer_api.dicomweb.access import Viewer, find_instances, serve, viewer_route
from viewer_api.dicomweb.display import JPEG, PNG
from viewer_api.dicomweb.frames import frames_of
from viewer_api.dicomweb.pixels import Frames
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


def _thumbnail(
    session: Session,
    viewer: Viewer,
    *,
    frames: Frames,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
    viewport: str | None,
    quality: int,
    accept: str | None,
) -> Response:
    rows = find_instances(
        session=session,
        viewer=viewer,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
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
    instance, series = rows[len(rows) // 2]  # the middle image
    return render(
        session,
        viewer,
        frames=frames,
        study_uid=study_uid,
        series_uid=series,
        sop_uid=instance.sop_instance_uid,
        frame_list=None,
        window=None,
        quality=quality,
        viewport=viewport or DEFAULT_VIEWPORT,
        accept=accept or JPEG,
    )


async def _serve_thumbnail(
    request: Request,
    *,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
    viewport: str | None,
    quality: int,
    accept: str | None,
) -> Response:
    frames = frames_of(request)
    accept = request.query_params.get("accept") or accept  # the query's wins (PS3.18 8.3.3)
    return await serve(
        request,
        lambda session, viewer: _thumbnail(
            session,
            viewer,
            frames=frames,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            viewport=viewport,
            quality=quality,
            accept=accept,
        ),
    )


@router.get("/studies/{study_uid}/thumbnail", responses=_IMAGES)
@viewer_route
async def study_thumbnail(
    study_uid: str,
    request: Request,
    viewport: Viewport = None,
    quality: Quality = 80,
    accept: AcceptHeader = None,
) -> Response:
    return await _serve_thumbnail(
        request,
        study_uid=study_uid,
        series_uid=None,
        sop_uid=None,
        viewport=viewport,
        quality=quality,
        accept=accept,
    )


@router.get("/studies/{study_uid}/series/{series_uid}/thumbnail", responses=_IMAGES)
@viewer_route
async def series_thumbnail(
    study_uid: str,
    series_uid: str,
    request: Request,
    viewport: Viewport = None,
    quality: Quality = 80,
    accept: AcceptHeader = None,
) -> Response:
    return await _serve_thumbnail(
        request,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=None,
        viewport=viewport,
        quality=quality,
        accept=accept,
    )


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/thumbnail",
    responses=_IMAGES,
)
@viewer_route
async def instance_thumbnail(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    viewport: Viewport = None,
    quality: Quality = 80,
    accept: AcceptHeader = None,
) -> Response:
    return await _serve_thumbnail(
        request,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        viewport=viewport,
        quality=quality,
        accept=accept,
    )
