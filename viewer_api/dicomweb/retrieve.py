"""WADO-RS retrieve (PS3.18 10.4): a study, series or instance as multipart/related
``application/dicom``, each instance the stored Part-10 bytes, untouched, or, for an object
the gateway recompressed losslessly, the file as received, rebuilt and checked, when the
client's Accept asks for it (``viewer_api.dicomweb.originals``); one instance asked for as
``application/dicom`` (a single-part Accept) as a single-part body (PS3.18 8.7.3).

Instances summing to at most ``BUFFER_BYTES`` are read whole and sent in one piece; more are
streamed. Each retrieve is audited (``dicomweb_retrieved``, off the request path).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from storage.base import ObjectStore
from storage.errors import ObjectNotFound
from viewer_api.dicomweb import multipart, originals
from viewer_api.dicomweb.access import (
    Viewer,
    instances_query,
    level,
    not_acceptable,
    serve,
    viewer_route,
)
from worklist.audit import AuditAction
from worklist.errors import StudyNotFound
from worklist.models import Instance

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

CHUNK_BYTES = 256 * 1024
# instances summing to at most this are read whole and sent in one piece; more are streamed
BUFFER_BYTES = 8 * 1024 * 1024
DICOM = "application/dicom"


def _not_acceptable(syntaxes: set[str], count: int) -> Exception:
    return not_acceptable(
        "instances are sent as stored, or as received when the gateway recompressed them: "
        'accept multipart/related; type="application/dicom"; transfer-syntax=* '
        "(stored syntaxes: "
        + ", ".join(sorted(syntaxes))
        + ")"
        + ("; application/dicom alone is for one instance" if count > 1 else "")
    )


def _object_chunks(store: ObjectStore, key: str) -> Iterator[bytes]:
    stream = store.open(key)
    try:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
    finally:
        stream.close()


def _retrieve(
    session: Session,
    viewer: Viewer,
    *,
    store: ObjectStore,
    accept: str | None,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Response:
    # three columns, not the mapped rows: the rest reads only these, by name
    instances = session.execute(
        instances_query(viewer.user, study_uid, series_uid, sop_uid).with_only_columns(
            Instance.object_key, Instance.transfer_syntax_uid, Instance.size
        )
    ).all()
    what = level(series_uid, sop_uid)
    if not instances:  # another site's study looks like none at all
        raise viewer.not_visible(session, study_uid, what)
    session.commit()  # done with the database: its connection is not held while reading
    wanted = originals.wanted_syntaxes(accept, len(instances))
    small = sum(i.size or 0 for i in instances) <= BUFFER_BYTES
    blobs: list[bytes] = []
    try:
        found = [
            originals.choose(store, i.object_key, i.transfer_syntax_uid or "", wanted)
            for i in instances
        ]
        choices = [c for c in found if c is not None]
        if len(choices) < len(found):
            raise _not_acceptable({i.transfer_syntax_uid or "" for i in instances}, len(found))
        if small:  # read here, in one piece: no thread-pool hop per streamed chunk
            blobs = [
                originals.body(store, i.object_key, c)
                for i, c in zip(instances, choices, strict=True)
            ]
        elif not store.exists(instances[0].object_key):  # fail before the 200 goes out
            raise ObjectNotFound()
    except ObjectNotFound:
        raise StudyNotFound("The stored object is missing") from None
    single = len(choices) == 1 and choices[0].single
    viewer.viewed(
        AuditAction.DICOMWEB_RETRIEVED,
        study_uid=study_uid,
        object_type=what,
        object_id=sop_uid or series_uid or study_uid,
        detail={"study_uid": study_uid, "instances": len(instances)},
    )
    part_types = [
        f"{DICOM}; transfer-syntax={c.transfer_syntax}" if c.transfer_syntax else DICOM
        for c in choices
    ]
    bodies = (
        _object_chunks(store, i.object_key)
        if c.form == "stored"
        else iter((originals.body(store, i.object_key, c),))
        for i, c in zip(instances, choices, strict=True)
    )
    if single:
        headers = {"Content-Type": part_types[0], "Cache-Control": "private, no-store"}
        if small:
            return Response(blobs[0], media_type=None, headers=headers)
        return StreamingResponse(next(bodies), media_type=None, headers=headers)
    boundary = multipart.new_boundary()
    headers = {
        "Content-Type": multipart.content_type(boundary, DICOM),
        "Cache-Control": "private, no-store",
    }
    if small:
        return Response(
            multipart.encode(boundary, zip(part_types, blobs, strict=True)),
            media_type=None,
            headers=headers,
        )
    body = multipart.stream(
        boundary,
        ((part_type, part_body) for part_type, part_body in zip(part_types, bodies, strict=True)),
    )
    return StreamingResponse(body, media_type=None, headers=headers)


_MULTIPART: dict[int | str, dict[str, Any]] = {
    200: {"content": {'multipart/related; type="application/dicom"': {}}}
}
_ONE_OR_MULTIPART: dict[int | str, dict[str, Any]] = {
    200: {"content": {'multipart/related; type="application/dicom"': {}, DICOM: {}}}
}


async def _serve_retrieve(
    request: Request, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> Response:
    store: ObjectStore = request.app.state.store
    accept = request.headers.get("accept")
    return await serve(
        request,
        lambda session, viewer: _retrieve(
            session,
            viewer,
            store=store,
            accept=accept,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
        ),
    )


@router.get("/studies/{study_uid}", responses=_MULTIPART)
@viewer_route
async def retrieve_study(study_uid: str, request: Request) -> Response:
    return await _serve_retrieve(request, study_uid)


@router.get("/studies/{study_uid}/series/{series_uid}", responses=_MULTIPART)
@viewer_route
async def retrieve_series(study_uid: str, series_uid: str, request: Request) -> Response:
    return await _serve_retrieve(request, study_uid, series_uid)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}", responses=_ONE_OR_MULTIPART
)
@viewer_route
async def retrieve_instance(
    study_uid: str, series_uid: str, sop_uid: str, request: Request
) -> Response:
    return await _serve_retrieve(request, study_uid, series_uid, sop_uid)
