"""WADO-RS rendered (PS3.18 8.3.5.1.3): a frame as PNG or JPEG for a screen.

The window is the ``window=center,width[,linear|linear-exact|sigmoid]`` parameter, else what
``display.to_display`` chooses (the file's own, a modality default, min..max).
``viewport=w,h`` fits the image into w x h.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from viewer_api.dicomweb.access import (
    Viewer,
    bad_request,
    find_instance,
    not_acceptable,
    serve,
    unreadable,
    viewer_route,
)
from viewer_api.dicomweb.display import JPEG, PNG, Window, encode, parse_window, to_display
from viewer_api.dicomweb.frames import frames_of, parse_frame_list
from viewer_api.dicomweb.multipart import parse_accept
from viewer_api.dicomweb.pixels import Frames, PixelError, StoredInstance
from worklist.audit import AuditAction

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

MAX_VIEWPORT = 4096


def parse_viewport(value: str) -> tuple[int, int]:
    parts = value.split(",")
    try:
        w, h = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise bad_request("viewport must be width,height") from None
    if not (0 < w <= MAX_VIEWPORT and 0 < h <= MAX_VIEWPORT):
        raise bad_request(f"viewport sides must be 1..{MAX_VIEWPORT}")
    return w, h


def choose_media_type(accept: str | None) -> str:
    for media in parse_accept(accept):
        kind = media.media_type
        if kind in (PNG, JPEG):
            return kind
        if kind in ("image/*", "*/*", "image/jpg"):
            return JPEG if kind == "image/jpg" else PNG
    raise not_acceptable("rendered frames are image/png or image/jpeg")


def render(
    session: Session,
    viewer: Viewer,
    *,
    frames: Frames,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame_list: str | None,
    window: str | None,
    quality: int,
    viewport: str | None,
    accept: str | None,
) -> Response:
    """One frame (``frame_list``, one number; the first when None) of a visible instance as
    PNG or JPEG (``accept``): windowed (``window``, else the file's or the modality's),
    fitted into ``viewport``."""
    frame = 1
    if frame_list is not None:
        numbers = parse_frame_list(frame_list)
        if len(numbers) != 1:
            raise bad_request("render one frame at a time")
        frame = numbers[0]
    media_type = choose_media_type(accept)
    chosen = parse_window(window) if window else None
    size = parse_viewport(viewport) if viewport else None
    instance = find_instance(
        session=session,
        viewer=viewer,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
    )
    session.commit()  # done with the database: its connection is not held while rendering
    viewer.viewed(AuditAction.DICOMWEB_IMAGES_VIEWED, study_uid=study_uid, once=True)
    native = frames.native_frame_from_header(instance, frame - 1)
    try:
        if native is not None:
            arr, header = native
            pixels = to_display(arr, header, chosen)
        else:
            pixels = _parsed_display(frames, instance, sop_uid, frame, chosen)
    except (PixelError, ValueError, NotImplementedError, RuntimeError, AttributeError) as exc:
        logger.warning(
            "cannot render frame",
            extra={"action": "render_failed", "sop_uid": sop_uid, "error": type(exc).__name__},
        )
        raise not_acceptable("this instance's pixel data cannot be rendered") from exc
    body = encode(pixels, media_type, quality=quality, viewport=size)
    return Response(body, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})


def _parsed_display(
    frames: Frames, instance: StoredInstance, sop_uid: str, frame: int, chosen: Window | None
) -> np.ndarray:
    """The frame through pydicom: parse the object, decode the frame, window it."""
    try:
        ds = frames.dataset(instance)
    except PixelError as exc:
        logger.warning(
            "stored object unreadable",
            extra={"action": "render_failed", "sop_uid": sop_uid, "error": "PixelError"},
        )
        raise unreadable() from exc
    if frame > frames.count(ds):
        raise (
            bad_request(f"the instance has {frames.count(ds)} frame(s)")
            if frames.count(ds)
            else not_acceptable("the instance has no pixel data to render")
        )
    arr = frames.decoded(instance, ds, frame - 1)
    return to_display(arr, ds, chosen)


_IMAGES: dict[int | str, dict[str, Any]] = {200: {"content": {PNG: {}, JPEG: {}}}}
Quality = Annotated[int, Query(ge=1, le=100)]
AcceptHeader = Annotated[str | None, Header()]
_INSTANCE = "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


async def _serve_rendered(
    request: Request,
    *,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame_list: str | None,
    window: str | None,
    quality: int,
    viewport: str | None,
    accept: str | None,
) -> Response:
    frames = frames_of(request)
    accept = request.query_params.get("accept") or accept  # the query's wins (PS3.18 8.3.3)
    return await serve(
        request,
        lambda session, viewer: render(
            session,
            viewer,
            frames=frames,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            frame_list=frame_list,
            window=window,
            quality=quality,
            viewport=viewport,
            accept=accept,
        ),
    )


@router.get(_INSTANCE + "/rendered", responses=_IMAGES)
@viewer_route
async def rendered_instance(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    window: str | None = None,
    quality: Quality = 90,
    viewport: str | None = None,
    accept: AcceptHeader = None,
) -> Response:
    return await _serve_rendered(
        request,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        frame_list=None,
        window=window,
        quality=quality,
        viewport=viewport,
        accept=accept,
    )


@router.get(_INSTANCE + "/frames/{frame}/rendered", responses=_IMAGES)
@viewer_route
async def rendered_frame(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame: str,
    request: Request,
    window: str | None = None,
    quality: Quality = 90,
    viewport: str | None = None,
    accept: AcceptHeader = None,
) -> Response:
    return await _serve_rendered(
        request,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        frame_list=frame,
        window=window,
        quality=quality,
        viewport=viewport,
        accept=accept,
    )
