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
from starlette.routing import Route

from viewer_api.deps import SessionDep, ViewerUser
from viewer_api.dicomweb import fast
from viewer_api.dicomweb.access import bad_request, find_instance, not_acceptable, unreadable
from viewer_api.dicomweb.display import JPEG, PNG, Window, encode, parse_window, to_display
from viewer_api.dicomweb.frames import frames_of, parse_frame_list
from viewer_api.dicomweb.multipart import parse_accept
from viewer_api.dicomweb.pixels import Frames, PixelError, StoredInstance

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
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame: int,
    window: str | None,
    quality: int,
    viewport: str | None,
    accept: str | None,
) -> Response:
    """One frame (from 1) of a visible instance as PNG or JPEG (``Accept`` or ``?accept=``):
    windowed (``window``, else the file's or the modality's), fitted into ``viewport``."""
    media_type = choose_media_type(request.query_params.get("accept") or accept)
    chosen = parse_window(window) if window else None
    size = parse_viewport(viewport) if viewport else None
    instance = find_instance(
        session=session, viewer=user, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
    )
    session.commit()  # done with the database: its connection is not held while rendering
    frames: Frames = frames_of(request)
    fast = frames.native_frame_from_header(instance, frame - 1)
    try:
        if fast is not None:
            arr, header = fast
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


def _quality(value: str | None) -> int:
    if value is None:
        return 90
    try:
        quality = int(value)
    except ValueError:
        quality = 0
    if not 1 <= quality <= 100:
        raise bad_request("quality must be a whole number from 1 to 100")
    return quality


async def _serve_rendered(request: Request) -> Response:
    """Both rendered routes, without FastAPI's per-request machinery (``dicomweb.fast``).
    The checks are the documented routes' (below), in the same order: ``check_url_inputs``
    (NUL 400, UID grammar 422), the bearer token (401), a viewer role (403), the parameters
    (400), a study the caller may see (404); one session, rolled back on failure."""
    path = request.path_params
    session: Session = request.app.state.session_factory()
    try:
        user = await fast.viewer(request, session)
        frame = 1
        if "frame" in path:
            numbers = parse_frame_list(path["frame"])
            if len(numbers) != 1:
                raise bad_request("render one frame at a time")
            frame = numbers[0]
        query = request.query_params
        quality = _quality(query.get("quality"))
        return await fast.in_thread(
            session,
            lambda: render(
                request,
                session,
                user,
                path["study_uid"],
                path["series_uid"],
                path["sop_uid"],
                frame,
                query.get("window"),
                quality,
                query.get("viewport"),
                request.headers.get("accept"),
            ),
        )
    finally:
        session.close()  # no I/O: the worker closed it, or no query ran


_IMAGES: dict[int | str, dict[str, Any]] = {200: {"content": {PNG: {}, JPEG: {}}}}
Quality = Annotated[int, Query(ge=1, le=100)]
AcceptHeader = Annotated[str | None, Header()]


_INSTANCE = "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
# Both rendered paths served by _serve_rendered. ``create_app`` puts these first in the
# app's routes (matching a request through every included router costs more than the route
# itself); the FastAPI routes below behave the same and document the parameters in the
# OpenAPI schema, and answer where these are not installed.
FAST_ROUTES = [
    Route(path, _serve_rendered, methods=["GET"], include_in_schema=False)
    for path in (_INSTANCE + "/rendered", _INSTANCE + "/frames/{frame}/rendered")
]


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered",
    responses=_IMAGES,
)
def rendered_instance(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    window: str | None = None,
    quality: Quality = 90,
    viewport: str | None = None,
    accept: AcceptHeader = None,
) -> Response:
    return render(
        request, session, user, study_uid, series_uid, sop_uid, 1, window, quality, viewport, accept
    )


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame}/rendered",
    responses=_IMAGES,
)
def rendered_frame(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    window: str | None = None,
    quality: Quality = 90,
    viewport: str | None = None,
    accept: AcceptHeader = None,
) -> Response:
    numbers = parse_frame_list(frame)
    if len(numbers) != 1:
        raise bad_request("render one frame at a time")
    return render(
        request,
        session,
        user,
        study_uid,
        series_uid,
        sop_uid,
        numbers[0],
        window,
        quality,
        viewport,
        accept,
    )
