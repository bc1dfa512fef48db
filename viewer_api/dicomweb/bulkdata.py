"""WADO-RS bulk data (PS3.18 10.4.1.1.3, 8.7.3.5): the binary values the metadata gives by
``BulkDataURI`` instead of inline (OverlayData, WaveformData, curve and LUT data, an icon's
pixels, private blobs): ``.../instances/{sop}/bulkdata/{tag}(/{item}/{tag})*``, the path
``storage.header_json.bulk_path`` wrote. The value as ``application/octet-stream``, in a
multipart/related body (the standard's default) or single part when asked for; Little
Endian whatever the stored object's byte order.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import Response
from sqlalchemy.orm import Session

from storage.header_json import find_bulk, parse_bulk_path
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
from viewer_api.dicomweb.frames import frames_of
from viewer_api.dicomweb.pixels import OCTET_STREAM, Frames, PixelError
from worklist.audit import AuditAction
from worklist.errors import StudyNotFound

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

# binary VRs and the size of the words a big-endian object stores swapped
_WORD = {"OB": 1, "UN": 1, "OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def little_endian(value: bytes, vr: str, big_endian: bool) -> bytes:
    size = _WORD.get(vr, 1)
    if not big_endian or size == 1 or len(value) % size:
        return value
    out = bytearray(len(value))
    for i in range(size):
        out[i::size] = value[size - 1 - i :: size]
    return bytes(out)


def _multipart_wanted(accept: str | None) -> bool:
    """True: multipart/related of octet-stream parts (the default); False: single part."""
    for media in multipart.parse_accept(accept):
        if media.media_type == "multipart/related" and media.part_type in (
            OCTET_STREAM,
            "*/*",
            "application/*",
        ):
            return True
        if media.media_type in ("*/*", "application/*"):
            return True
        if media.media_type == OCTET_STREAM:
            return False
    raise not_acceptable("bulk data is available as application/octet-stream")


def _bulkdata(
    session: Session,
    viewer: Viewer,
    *,
    frames: Frames,
    accept: str | None,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    path: str,
) -> Response:
    try:
        steps = parse_bulk_path(path)
    except ValueError as exc:
        raise bad_request(f"bulk data path: {exc}") from exc
    as_multipart = _multipart_wanted(accept)
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
            extra={"action": "bulkdata_failed", "sop_uid": sop_uid, "error": "PixelError"},
        )
        raise unreadable() from exc
    with warnings.catch_warnings():  # an odd value elsewhere in the item only warns
        warnings.simplefilter("ignore")
        elem = find_bulk(ds, steps)
    if elem is None or str(elem.VR) not in _WORD or not isinstance(elem.value, bytes):
        raise StudyNotFound("No such bulk data in this instance")
    value = little_endian(elem.value, str(elem.VR), not ds.is_little_endian)
    headers = {"Cache-Control": "private, max-age=300"}
    if not as_multipart:
        return Response(value, media_type=OCTET_STREAM, headers=headers)
    boundary = multipart.new_boundary()
    body = multipart.encode(boundary, [(OCTET_STREAM, value)])
    headers["Content-Type"] = multipart.content_type(boundary, OCTET_STREAM)
    return Response(body, status_code=status.HTTP_200_OK, headers=headers)


_BULK: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            'multipart/related; type="application/octet-stream"': {},
            "application/octet-stream": {},
        }
    }
}


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/{path:path}",
    responses=_BULK,
)
@viewer_route
async def retrieve_bulkdata(
    study_uid: str, series_uid: str, sop_uid: str, path: str, request: Request
) -> Response:
    frames = frames_of(request)
    accept = request.headers.get("accept")
    return await serve(
        request,
        lambda session, viewer: _bulkdata(
            session,
            viewer,
            frames=frames,
            accept=accept,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            path=path,
        ),
    )
