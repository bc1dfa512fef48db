"""WADO-RS metadata, fast: the announced headers are spliced as JSON text, never parsed.

A 300-instance study is one query returning each header's stored JSON text; the few
attributes a client needs changed or added (the character set is UTF-8 now; a name's ``=``
groups become PN components; the available transfer syntax; the pixel data's BulkDataURI;
the other bulk data's URIs, stored relative to the instance, made absolute: ``bulkdata.py``)
are edited in the text. ``dicom_json.normalise_header`` + ``json.dumps`` is the reference
this must agree with (the unit tests check it). An instance announced without a header has
it read from the store as a fallback (``instance_metadata``).
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian
from sqlalchemy import Text, cast
from sqlalchemy.orm import Session

from storage.base import ObjectStore
from storage.header_json import BULK_PREFIX, header_json
from viewer_api.dicomweb import dicom_json as dj
from viewer_api.dicomweb.access import (
    DICOM_JSON,
    Viewer,
    base_url,
    instances_query,
    level,
    serve,
    viewer_route,
)
from worklist.audit import AuditAction
from worklist.models import Instance, Series

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

# top-level members as json.dumps writes them (sorted tags: the first match is top level)
_CHARSET = re.compile(r'"00080005"\s*:\s*\{[^{}]*\}')
_PN = re.compile(r'"00100010"\s*:\s*(\{[^{}\[\]]*\[\s*\{[^{}]*\}\s*\][^{}\[\]]*\})')
_BITS = re.compile(r'"00280100"\s*:\s*\{[^{}]*"Value"\s*:\s*\[\s*(\d+)')
_UTF8_MEMBER = '"00080005": {"vr": "CS", "Value": ["ISO_IR 192"]}'
# a top-level Pixel Data member is the last one (sorted tags); one inside a sequence item
# (an icon's) is followed by the item's and the sequence's closing brackets
_TOP_PIXEL_DATA = re.compile(r'"7FE00010"\s*:\s*\{[^{}]*\}\s*\}\s*$')
_BULK = re.compile(r'"BulkDataURI"\s*:\s*"' + BULK_PREFIX)


def pixel_data_element(
    *, url: str, study_uid: str, series_uid: str, sop_uid: str, ts: str, bits: int
) -> dict[str, str]:
    encapsulated = UID(ts or ExplicitVRLittleEndian).is_encapsulated
    return {
        "vr": "OB" if encapsulated or bits <= 8 else "OW",
        "BulkDataURI": f"{url}/studies/{study_uid}/series/{series_uid}"
        f"/instances/{sop_uid}/frames/1",
    }


def instance_url(url: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{url}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def absolute_bulk(data: dict[str, Any], instance: str) -> dict[str, Any]:
    """A header whose BulkDataURIs are relative to its instance (``storage.header_json``)
    with them made this server's bulk data URLs (the stored header is not changed)."""
    out: dict[str, Any] = {}
    for tag, element in data.items():
        uri = element.get("BulkDataURI") if isinstance(element, dict) else None
        if isinstance(uri, str) and uri.startswith(BULK_PREFIX):
            element = {**element, "BulkDataURI": f"{instance}/{uri}"}
        elif isinstance(element, dict) and element.get("vr") == "SQ" and element.get("Value"):
            items = [
                absolute_bulk(i, instance) if isinstance(i, dict) else i for i in element["Value"]
            ]
            element = {**element, "Value": items}
        out[tag] = element
    return out


def splice(
    raw: str, *, url: str, study_uid: str, series_uid: str, sop_uid: str, sop_class: str, ts: str
) -> str:
    """One instance's metadata as JSON text, from its stored header text."""
    text = raw.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError("not a JSON object")
    if '"' + BULK_PREFIX in text:
        member = (
            f'"BulkDataURI": "{instance_url(url, study_uid, series_uid, sop_uid)}/{BULK_PREFIX}'
        )
        text = _BULK.sub(lambda _m: member, text)
    extra: dict[str, Any] = {}
    if '"00080005"' in text:
        text = _CHARSET.sub(_UTF8_MEMBER, text, count=1)
    else:
        extra["00080005"] = {"vr": "CS", "Value": [dj.UTF8]}
    name = _PN.search(text)
    if name is not None and "=" in name.group(1):
        fixed = dj.normalise_header({"00100010": json.loads(name.group(1))})["00100010"]
        member = '"00100010": ' + json.dumps(fixed)
        text = text[: name.start()] + member + text[name.end() :]
    for tag, uid in (
        ("00080016", sop_class),
        ("00080018", sop_uid),
        ("0020000D", study_uid),
        ("0020000E", series_uid),
    ):
        if f'"{tag}"' not in text:
            extra[tag] = {"vr": "UI", "Value": [uid]}
    if ts and '"00083002"' not in text:
        extra["00083002"] = {"vr": "UI", "Value": [ts]}
    if '"00280010"' in text and _TOP_PIXEL_DATA.search(text) is None:
        bits = _BITS.search(text)
        extra[dj.PIXEL_DATA] = pixel_data_element(
            url=url,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            ts=ts,
            bits=int(bits.group(1)) if bits else 16,
        )
    if not extra:
        return text
    members = json.dumps(extra)[1:-1]
    return text[:-1].rstrip() + (", " if text[1:-1].strip() else "") + members + "}"


def metadata_json(
    *,
    session: Session,
    viewer: Viewer,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
    url: str,
    fallback: Any,
) -> bytes:
    """The metadata array for a study, series or instance, as a JSON body. ``fallback``
    (instance -> header dict) serves instances announced without a header."""
    base = instances_query(viewer.user, study_uid, series_uid, sop_uid)
    stmt = base.with_only_columns(
        Instance.id,
        Instance.sop_instance_uid,
        Instance.sop_class_uid,
        Instance.transfer_syntax_uid,
        cast(Instance.dicom_json, Text),
        Series.series_instance_uid,
    )
    rows = session.execute(stmt).all()
    if not rows:
        raise viewer.not_visible(session, study_uid, level(series_uid, sop_uid))
    pieces = []
    for instance_id, sop, sop_class, ts, raw, series in rows:
        piece = None
        if isinstance(raw, str) and raw not in ("", "null"):
            try:
                piece = splice(
                    raw,
                    url=url,
                    study_uid=study_uid,
                    series_uid=series,
                    sop_uid=sop,
                    sop_class=sop_class,
                    ts=ts,
                )
            except ValueError:
                piece = None
        if piece is None:
            instance = session.get(Instance, instance_id)
            assert instance is not None
            piece = json.dumps(fallback(instance, series), ensure_ascii=False)
        pieces.append(piece)
    return ("[" + ", ".join(pieces) + "]").encode("utf-8")


# -- the routes, and the header from the store -------------------------------------------


def _header_from_store(store: ObjectStore, instance: Instance) -> dict[str, Any]:
    """The fallback for an instance announced without its header."""
    try:
        with store.open(instance.object_key) as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(stream, stop_before_pixels=True, force=True)
            data = header_json(ds).data
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
    return data


def instance_metadata(
    instance: Instance, *, study_uid: str, series_uid: str, url: str, store: ObjectStore
) -> dict[str, Any]:
    header = instance.dicom_json
    if header is None:
        header = _header_from_store(store, instance)
    data = dj.normalise_header(header)
    data = absolute_bulk(data, instance_url(url, study_uid, series_uid, instance.sop_instance_uid))
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
    session: Session,
    viewer: Viewer,
    *,
    store: ObjectStore,
    url: str,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Response:
    def fallback(instance: Instance, series: str) -> dict[str, Any]:
        return instance_metadata(
            instance, study_uid=study_uid, series_uid=series, url=url, store=store
        )

    body = metadata_json(
        session=session,
        viewer=viewer,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        url=url,
        fallback=fallback,
    )
    session.commit()  # read-only, done
    viewer.viewed(AuditAction.DICOMWEB_METADATA_VIEWED, study_uid=study_uid, once=True)
    return Response(body, media_type=DICOM_JSON, headers={"Cache-Control": "private, no-store"})


async def _serve_metadata(
    request: Request, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> Response:
    store: ObjectStore = request.app.state.store
    url = base_url(request)
    return await serve(
        request,
        lambda session, viewer: _metadata(
            session,
            viewer,
            store=store,
            url=url,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
        ),
    )


_JSON: dict[int | str, dict[str, Any]] = {200: {"content": {"application/dicom+json": {}}}}


@router.get("/studies/{study_uid}/metadata", responses=_JSON)
@viewer_route
async def study_metadata(study_uid: str, request: Request) -> Response:
    return await _serve_metadata(request, study_uid)


@router.get("/studies/{study_uid}/series/{series_uid}/metadata", responses=_JSON)
@viewer_route
async def series_metadata(study_uid: str, series_uid: str, request: Request) -> Response:
    return await _serve_metadata(request, study_uid, series_uid)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata", responses=_JSON
)
@viewer_route
async def instance_metadata_route(
    study_uid: str, series_uid: str, sop_uid: str, request: Request
) -> Response:
    return await _serve_metadata(request, study_uid, series_uid, sop_uid)
