"""WADO-RS retrieve (PS3.18 10.4): a study, series or instance as multipart/related
``application/dicom``, each instance the stored Part-10 bytes, untouched.

Instances summing to at most ``BUFFER_BYTES`` are read whole and sent in one piece; more are
streamed. One instance (``_retrieve_one``) is also served by a plain Starlette route first in
the app (``FAST_ROUTES``), with the same checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from starlette.routing import Route

from storage.base import ObjectStore
from storage.errors import ObjectNotFound
from viewer_api.deps import (
    ClientAddr,
    NowDep,
    SessionDep,
    StoreDep,
    ViewerUser,
)
from viewer_api.dicomweb import fast, multipart
from viewer_api.dicomweb.access import instances_query, not_acceptable
from worklist import audit
from worklist.audit import AuditAction
from worklist.errors import StudyNotFound
from worklist.models import Instance, Series, Study, User
from worklist.repository import visible_studies_filter

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

CHUNK_BYTES = 256 * 1024
# instances summing to at most this are read whole and sent in one piece; more are streamed
BUFFER_BYTES = 8 * 1024 * 1024
DICOM = "application/dicom"


def _check_retrieve_accept(accept: str | None, syntaxes: set[str]) -> None:
    """Instances are sent as stored: acceptable unless the client names only other
    transfer syntaxes (we do not transcode) or another media type."""
    for media in multipart.parse_accept(accept):
        if media.media_type not in ("multipart/related", "*/*", DICOM):
            continue
        if media.part_type not in (DICOM, "*/*", "application/*"):
            continue
        wanted = media.transfer_syntax
        if wanted in (None, "*") or syntaxes <= {wanted}:
            return
    raise not_acceptable(
        'instances are sent as stored: accept multipart/related; type="application/dicom"'
        "; transfer-syntax=* (stored syntaxes: " + ", ".join(sorted(syntaxes)) + ")"
    )


def _object_chunks(store: ObjectStore, key: str) -> Iterator[bytes]:
    stream = store.open(key)
    try:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
    finally:
        stream.close()


def _retrieve(
    *,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    user: User,
    now: Any,
    client_addr: str,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Response:
    # three columns, not the mapped rows: the rest reads only these, by name
    instances = session.execute(
        instances_query(user, study_uid, series_uid, sop_uid).with_only_columns(
            Instance.object_key, Instance.transfer_syntax_uid, Instance.size
        )
    ).all()
    if not instances:  # as find_instances: another site's study looks like none at all
        what = "instance" if sop_uid else "series" if series_uid else "study"
        raise StudyNotFound(f"No such {what} visible to you")
    _check_retrieve_accept(
        request.headers.get("accept"), {i.transfer_syntax_uid or "" for i in instances}
    )
    small = sum(i.size or 0 for i in instances) <= BUFFER_BYTES
    blobs: list[bytes] = []
    try:
        if small:  # read here, in one piece: no thread-pool hop per streamed chunk
            blobs = [store.get(i.object_key) for i in instances]
        elif not store.exists(instances[0].object_key):  # fail before the 200 goes out
            raise ObjectNotFound()
    except ObjectNotFound:
        raise StudyNotFound("The stored object is missing") from None
    audit.record(
        session=session,
        actor=user,
        action=AuditAction.DICOMWEB_RETRIEVED,
        object_type="instance" if sop_uid else "series" if series_uid else "study",
        object_id=sop_uid or series_uid or study_uid,
        client_addr=client_addr,
        detail={"study_uid": study_uid, "instances": len(instances)},
        now=now,
    )
    session.commit()  # the audit row, before the response starts (see deps.get_db)
    boundary = multipart.new_boundary()
    headers = {
        "Content-Type": multipart.content_type(boundary, DICOM),
        "Cache-Control": "private, no-store",
    }
    part_types = [
        f"{DICOM}; transfer-syntax={i.transfer_syntax_uid}" if i.transfer_syntax_uid else DICOM
        for i in instances
    ]
    if small:
        return Response(
            multipart.encode(boundary, zip(part_types, blobs, strict=True)),
            media_type=None,
            headers=headers,
        )
    body = multipart.stream(
        boundary,
        (
            (part_type, _object_chunks(store, i.object_key))
            for part_type, i in zip(part_types, instances, strict=True)
        ),
    )
    return StreamingResponse(body, media_type=None, headers=headers)


_MULTIPART: dict[int | str, dict[str, Any]] = {
    200: {"content": {'multipart/related; type="application/dicom"': {}}}
}


@router.get("/studies/{study_uid}", responses=_MULTIPART)
def retrieve_study(
    study_uid: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    user: ViewerUser,
    now: NowDep,
    client_addr: ClientAddr,
) -> Response:
    return _retrieve(
        request=request,
        session=session,
        store=store,
        user=user,
        now=now,
        client_addr=client_addr,
        study_uid=study_uid,
    )


@router.get("/studies/{study_uid}/series/{series_uid}", responses=_MULTIPART)
def retrieve_series(
    study_uid: str,
    series_uid: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    user: ViewerUser,
    now: NowDep,
    client_addr: ClientAddr,
) -> Response:
    return _retrieve(
        request=request,
        session=session,
        store=store,
        user=user,
        now=now,
        client_addr=client_addr,
        study_uid=study_uid,
        series_uid=series_uid,
    )


# one instance's stored object, by its three UIDs: columns only, the statement built once
# (the visibility filter is added per caller)
_STORED_INSTANCE = (
    select(Instance.object_key, Instance.transfer_syntax_uid, Instance.size)
    .join(Series, Instance.series_id == Series.id)
    .join(Study, Instance.study_id == Study.id)
    .where(
        Study.study_instance_uid == bindparam("study_uid"),
        Series.series_instance_uid == bindparam("series_uid"),
        Instance.sop_instance_uid == bindparam("sop_uid"),
    )
)


def _retrieve_one(
    *,
    session: Session,
    store: ObjectStore,
    user: User,
    now: Any,
    client_addr: str,
    accept: str | None,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
) -> Response:
    """``_retrieve`` for one instance, the same answer (404, 406, audit row, body and
    headers) with less work: three columns instead of the mapped row, and the body built
    with one copy of the object."""
    row = session.execute(
        _STORED_INSTANCE.where(visible_studies_filter(user)),
        {"study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid},
    ).first()
    if row is None:
        raise StudyNotFound("No such instance visible to you")
    object_key, syntax, size = row
    _check_retrieve_accept(accept, {syntax or ""})
    small = (size or 0) <= BUFFER_BYTES
    blob = b""
    try:
        if small:
            blob = store.get(object_key)
        elif not store.exists(object_key):  # fail before the 200 goes out
            raise ObjectNotFound()
    except ObjectNotFound:
        raise StudyNotFound("The stored object is missing") from None
    audit.record(
        session=session,
        actor=user,
        action=AuditAction.DICOMWEB_RETRIEVED,
        object_type="instance",
        object_id=sop_uid,
        client_addr=client_addr,
        detail={"study_uid": study_uid, "instances": 1},
        now=now,
    )
    session.commit()  # the audit row, before the response starts (see deps.get_db)
    boundary = multipart.new_boundary()
    headers = {
        "Content-Type": multipart.content_type(boundary, DICOM),
        "Cache-Control": "private, no-store",
    }
    part_type = f"{DICOM}; transfer-syntax={syntax}" if syntax else DICOM
    if small:  # the same bytes as multipart.encode, joined once
        body = b"".join(
            (
                multipart.part_header(boundary, part_type),
                blob,
                b"\r\n",
                multipart.closing(boundary),
            )
        )
        return Response(body, media_type=None, headers=headers)
    chunks = multipart.stream(boundary, [(part_type, _object_chunks(store, object_key))])
    return StreamingResponse(chunks, media_type=None, headers=headers)


async def _serve_retrieve_instance(request: Request) -> Response:
    """``retrieve_instance`` (below) without FastAPI's per-request machinery
    (``dicomweb.fast``), which costs more than reading the instance. The checks are the
    documented route's, in the same order: ``check_url_inputs`` (NUL 400, UID grammar 422),
    the bearer token (401), a viewer role (403), a study the caller may see (404), the
    Accept header (406); one thread hop; one session, rolled back on failure."""
    path = request.path_params
    state = request.app.state
    session: Session = state.session_factory()
    try:
        user = await fast.viewer(request, session)
        store: ObjectStore = state.store
        now = state.clock()
        client_addr = request.client.host if request.client is not None else ""
        accept = request.headers.get("accept")
        return await fast.in_thread(
            session,
            lambda: _retrieve_one(
                session=session,
                store=store,
                user=user,
                now=now,
                client_addr=client_addr,
                accept=accept,
                study_uid=path["study_uid"],
                series_uid=path["series_uid"],
                sop_uid=path["sop_uid"],
            ),
        )
    finally:
        session.close()  # no I/O: the worker closed it, or no query ran


# retrieve_instance served by _serve_retrieve_instance: ``create_app`` puts this first in
# the app's routes; the FastAPI route below behaves the same, documents the route in the
# OpenAPI schema, and answers where this is not installed.
FAST_ROUTES = [
    Route(
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
        _serve_retrieve_instance,
        methods=["GET"],
        include_in_schema=False,
    )
]


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}", responses=_MULTIPART)
def retrieve_instance(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    user: ViewerUser,
    now: NowDep,
    client_addr: ClientAddr,
) -> Response:
    return _retrieve_one(
        session=session,
        store=store,
        user=user,
        now=now,
        client_addr=client_addr,
        accept=request.headers.get("accept"),
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
    )
