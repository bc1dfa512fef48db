"""WADO-RS frames (PS3.18 10.4): frames as stored (``*/*`` or the compressed media type,
with its transfer syntax) or decoded to Explicit VR Little Endian
(``application/octet-stream``, the standard's default). ``frames_of`` and
``parse_frame_list`` serve the rendered routes too.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import Response
from pydicom.uid import UID, ExplicitVRLittleEndian
from sqlalchemy.orm import Session

from viewer_api.dicomweb import multipart
from viewer_api.dicomweb.access import (
    Viewer,
    bad_request,
    find_instances,
    not_acceptable,
    serve,
    unreadable,
    viewer_route,
)
from viewer_api.dicomweb.pixels import FRAME_MEDIA_TYPES, OCTET_STREAM, Frames, PixelError
from worklist.audit import AuditAction
from worklist.errors import StudyNotFound

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

_FRAME_LIST = re.compile(r"^\d+(,\d+)*$")
MAX_FRAMES_PER_REQUEST = 1000


def frames_of(request: Request) -> Frames:
    """The app's frame source and caches (made on first use)."""
    frames: Frames | None = getattr(request.app.state, "dicomweb_frames", None)
    if frames is None:
        state = request.app.state
        frames = Frames(state.store, native_frames=state.settings.native_frames)
        state.dicomweb_frames = frames
    return frames


def parse_frame_list(value: str) -> list[int]:
    """The frame numbers of a WADO-RS frame list, each once, in the order first asked for
    (PS3.18 asks for no duplicates; ``1,1,1,...`` a thousand times must not build a thousand
    copies of one frame), at most ``MAX_FRAMES_PER_REQUEST``."""
    if not _FRAME_LIST.match(value):
        raise bad_request("frames must be a comma-separated list of frame numbers (from 1)")
    parts = value.split(",")
    if len(parts) > MAX_FRAMES_PER_REQUEST or any(len(n) > 9 for n in parts):
        raise bad_request("frame numbers start at 1, at most 1000 per request")
    numbers = list(dict.fromkeys(int(n) for n in parts))
    if min(numbers) < 1:
        raise bad_request("frame numbers start at 1, at most 1000 per request")
    return numbers


NATIVE = str(ExplicitVRLittleEndian)
IMPLICIT = "1.2.840.10008.1.2"


def choose_frame_form(accept: str | None, stored: UID) -> tuple[str, str, bool]:
    """(media type, transfer syntax, send as stored?) for the first acceptable range.

    ``*/*`` and ``transfer-syntax=*`` take frames as stored; ``application/octet-stream``
    without a syntax (or Explicit VR LE) gets them decoded; a compressed media type gets the
    stored codestream when it is of that kind."""
    stored_type = (
        FRAME_MEDIA_TYPES.get(str(stored), OCTET_STREAM) if stored.is_compressed else (OCTET_STREAM)
    )
    stored_ts = str(stored) if stored.is_compressed else NATIVE
    for media in multipart.parse_accept(accept):
        if media.media_type not in ("multipart/related", "*/*") and "/" not in media.media_type:
            continue
        kind = media.part_type
        wanted = media.transfer_syntax
        if kind in ("*/*", "application/*", "image/*") and wanted in (None, "*"):
            if kind == "application/*" and stored.is_compressed:
                return OCTET_STREAM, NATIVE, False
            if kind == "image/*" and not stored.is_compressed:
                continue
            return stored_type, stored_ts, True
        if kind == OCTET_STREAM:
            if wanted == "*" or (wanted == stored_ts and not stored.is_compressed):
                return stored_type, stored_ts, True
            if wanted in (None, NATIVE, IMPLICIT):  # the same frame bytes
                return OCTET_STREAM, wanted or NATIVE, False
            continue
        if stored.is_compressed and kind == stored_type and wanted in (None, "*", stored_ts):
            return stored_type, stored_ts, True
    raise not_acceptable(
        "frames are available as application/octet-stream (Explicit VR Little Endian)"
        + (f" or {stored_type} (transfer syntax {stored})" if stored.is_compressed else "")
    )


_FRAMES: dict[int | str, dict[str, Any]] = {
    200: {"content": {'multipart/related; type="application/octet-stream"': {}}}
}


def _frames(
    session: Session,
    viewer: Viewer,
    *,
    frames: Frames,
    accept: str | None,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame_list: str,
) -> Response:
    numbers = parse_frame_list(frame_list)
    ((instance, _),) = find_instances(
        session=session,
        viewer=viewer,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
    )
    session.commit()  # done with the database: its connection is not held while reading
    viewer.viewed(AuditAction.DICOMWEB_IMAGES_VIEWED, study_uid=study_uid, once=True)
    try:
        ds = frames.dataset(instance)
    except PixelError as exc:
        logger.warning(
            "stored object unreadable",
            extra={"action": "frames_failed", "sop_uid": sop_uid, "error": "PixelError"},
        )
        raise unreadable() from exc
    count = frames.count(ds)
    if count == 0:
        raise StudyNotFound("This instance has no pixel data")
    if max(numbers) > count:
        raise StudyNotFound(f"No such frame: the instance has {count}")
    media_type, ts, as_stored = choose_frame_form(accept, frames.transfer_syntax(ds))
    as_stored = as_stored or not frames.transfer_syntax(ds).is_compressed  # the same bytes
    try:
        parts = [
            frames.stored_frame(ds, n - 1)
            if as_stored
            else frames.native_frame(ds, n - 1, instance)
            for n in numbers
        ]
    except (ValueError, NotImplementedError, RuntimeError, AttributeError) as exc:
        logger.warning(
            "frame extraction failed",
            extra={"action": "frames_failed", "sop_uid": sop_uid, "error": type(exc).__name__},
        )
        raise not_acceptable("this instance's frames cannot be decoded here") from exc
    boundary = multipart.new_boundary()
    part_type = f"{media_type}; transfer-syntax={ts}"
    body = multipart.encode(boundary, [(part_type, p) for p in parts])
    return Response(
        body,
        status_code=status.HTTP_200_OK,
        headers={
            "Content-Type": multipart.content_type(boundary, media_type, ts),
            "Cache-Control": "private, max-age=300",
        },
    )


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_list}",
    responses=_FRAMES,
)
@viewer_route
async def retrieve_frames(
    study_uid: str, series_uid: str, sop_uid: str, frame_list: str, request: Request
) -> Response:
    frames = frames_of(request)
    accept = request.headers.get("accept")
    return await serve(
        request,
        lambda session, viewer: _frames(
            session,
            viewer,
            frames=frames,
            accept=accept,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            frame_list=frame_list,
        ),
    )
