"""WADO-RS (PS3.18 10.4): retrieve stored instances, metadata from the index, frames.

Instances go out as the stored Part-10 bytes, untouched. Metadata is the header each
instance was announced with (``Instance.dicom_json``), read in one query; an instance
announced without one has its header read from the store as a fallback. Frames come as
stored (``*/*`` or the compressed media type, with its transfer syntax) or decoded to
Explicit VR Little Endian (``application/octet-stream``, the standard's default).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import Response, StreamingResponse
from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian
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
from viewer_api.dicomweb import dicom_json as dj
from viewer_api.dicomweb import fast, multipart
from viewer_api.dicomweb.access import (
    DICOM_JSON,
    bad_request,
    base_url,
    find_instances,
    not_acceptable,
    unreadable,
)
from viewer_api.dicomweb.metadata import metadata_json, pixel_data_element
from viewer_api.dicomweb.pixels import FRAME_MEDIA_TYPES, OCTET_STREAM, Frames, PixelError
from worklist import audit
from worklist.errors import StudyNotFound
from worklist.models import Instance, Series, Study, User
from worklist.repository import visible_studies_filter

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

CHUNK_BYTES = 256 * 1024
# instances summing to at most this are read whole and sent in one piece; more are streamed
BUFFER_BYTES = 8 * 1024 * 1024
DICOM = "application/dicom"
_FRAME_LIST = re.compile(r"^\d+(,\d+)*$")
MAX_FRAMES_PER_REQUEST = 1000


def frames_of(request: Request) -> Frames:
    """The app's frame source and caches (made on first use)."""
    frames: Frames | None = getattr(request.app.state, "dicomweb_frames", None)
    if frames is None:
        frames = Frames(request.app.state.store)
        request.app.state.dicomweb_frames = frames
    return frames


def parse_frame_list(value: str) -> list[int]:
    if not _FRAME_LIST.match(value):
        raise bad_request("frames must be a comma-separated list of frame numbers (from 1)")
    parts = value.split(",")
    if len(parts) > MAX_FRAMES_PER_REQUEST or any(len(n) > 9 for n in parts):
        raise bad_request("frame numbers start at 1, at most 1000 per request")
    numbers = [int(n) for n in parts]
    if min(numbers) < 1:
        raise bad_request("frame numbers start at 1, at most 1000 per request")
    return numbers


# -- retrieve ---------------------------------------------------------------------------


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
    rows = find_instances(
        session=session, viewer=user, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
    )
    instances = [instance for instance, _ in rows]
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
        action="dicomweb_retrieved",
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
        action="dicomweb_retrieved",
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


# -- metadata ---------------------------------------------------------------------------


def _header_from_store(store: ObjectStore, instance: Instance) -> dict[str, Any]:
    """The fallback for an instance announced without its header."""
    try:
        with store.open(instance.object_key) as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(stream, stop_before_pixels=True, force=True)
            data = ds.to_json_dict(
                bulk_data_threshold=1024,
                bulk_data_element_handler=lambda _elem: "",
                suppress_invalid_tags=True,
            )
    except Exception as exc:  # a broken object still gets its index attributes
        logger.warning(
            "header unreadable for metadata",
            extra={
                "action": "metadata_header_failed",
                "sop_uid": instance.sop_instance_uid,
                "error": type(exc).__name__,
            },
        )
        return {}
    return {tag: value for tag, value in data.items() if "BulkDataURI" not in value}


def instance_metadata(
    instance: Instance, *, study_uid: str, series_uid: str, url: str, store: ObjectStore
) -> dict[str, Any]:
    header = instance.dicom_json
    if header is None:
        header = _header_from_store(store, instance)
    data = dj.normalise_header(header)
    data["0020000D"] = dj.element("UI", study_uid)
    data["0020000E"] = dj.element("UI", series_uid)
    data["00080018"] = dj.element("UI", instance.sop_instance_uid)
    data["00080016"] = dj.element("UI", instance.sop_class_uid)
    if instance.transfer_syntax_uid:
        data["00083002"] = dj.element("UI", instance.transfer_syntax_uid)
    if "00280010" in data and dj.PIXEL_DATA not in data:  # an image: pixels by reference
        bits = (data.get("00280100", {}).get("Value") or [16])[0]
        data[dj.PIXEL_DATA] = pixel_data_element(
            url=url,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=instance.sop_instance_uid,
            ts=instance.transfer_syntax_uid,
            bits=bits if isinstance(bits, int) else 16,
        )
    return data


def _metadata(
    request: Request,
    session: SessionDep,
    store: ObjectStore,
    user: User,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Response:
    url = base_url(request)

    def fallback(instance: Instance, series: str) -> dict[str, Any]:
        return instance_metadata(
            instance, study_uid=study_uid, series_uid=series, url=url, store=store
        )

    body = metadata_json(
        session=session,
        viewer=user,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        url=url,
        fallback=fallback,
    )
    return Response(body, media_type=DICOM_JSON, headers={"Cache-Control": "private, no-store"})


_JSON: dict[int | str, dict[str, Any]] = {200: {"content": {"application/dicom+json": {}}}}


@router.get("/studies/{study_uid}/metadata", responses=_JSON)
def study_metadata(
    study_uid: str, request: Request, session: SessionDep, store: StoreDep, user: ViewerUser
) -> Response:
    return _metadata(request, session, store, user, study_uid)


@router.get("/studies/{study_uid}/series/{series_uid}/metadata", responses=_JSON)
def series_metadata(
    study_uid: str,
    series_uid: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    user: ViewerUser,
) -> Response:
    return _metadata(request, session, store, user, study_uid, series_uid)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata", responses=_JSON
)
def instance_metadata_route(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    user: ViewerUser,
) -> Response:
    return _metadata(request, session, store, user, study_uid, series_uid, sop_uid)


# -- frames -----------------------------------------------------------------------------

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


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_list}",
    responses=_FRAMES,
)
def retrieve_frames(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame_list: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
) -> Response:
    numbers = parse_frame_list(frame_list)
    ((instance, _),) = find_instances(
        session=session, viewer=user, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
    )
    frames = frames_of(request)
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
    media_type, ts, as_stored = choose_frame_form(
        request.headers.get("accept"), frames.transfer_syntax(ds)
    )
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
