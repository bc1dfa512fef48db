"""WADO-RS metadata, fast: the announced headers are spliced as JSON text, never parsed.

A 300-instance study is one query returning each header's stored JSON text; the few
attributes a client needs changed or added (the character set is UTF-8 now; a name's ``=``
groups become PN components; the available transfer syntax; the pixel data's BulkDataURI)
are edited in the text. ``dicom_json.normalise_header`` + ``json.dumps`` is the reference
this must agree with (the unit tests check it).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydicom.uid import UID, ExplicitVRLittleEndian
from sqlalchemy import Text, cast
from sqlalchemy.orm import Session

from viewer_api.dicomweb import dicom_json as dj
from viewer_api.dicomweb.access import instances_query
from worklist.errors import StudyNotFound
from worklist.models import Instance, Series, User

# top-level members as json.dumps writes them (sorted tags: the first match is top level)
_CHARSET = re.compile(r'"00080005"\s*:\s*\{[^{}]*\}')
_PN = re.compile(r'"00100010"\s*:\s*(\{[^{}\[\]]*\[\s*\{[^{}]*\}\s*\][^{}\[\]]*\})')
_BITS = re.compile(r'"00280100"\s*:\s*\{[^{}]*"Value"\s*:\s*\[\s*(\d+)')
_UTF8_MEMBER = '"00080005": {"vr": "CS", "Value": ["ISO_IR 192"]}'


def pixel_data_element(
    *, url: str, study_uid: str, series_uid: str, sop_uid: str, ts: str, bits: int
) -> dict[str, str]:
    encapsulated = UID(ts or ExplicitVRLittleEndian).is_encapsulated
    return {
        "vr": "OB" if encapsulated or bits <= 8 else "OW",
        "BulkDataURI": f"{url}/studies/{study_uid}/series/{series_uid}"
        f"/instances/{sop_uid}/frames/1",
    }


def splice(
    raw: str, *, url: str, study_uid: str, series_uid: str, sop_uid: str, sop_class: str, ts: str
) -> str:
    """One instance's metadata as JSON text, from its stored header text."""
    text = raw.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError("not a JSON object")
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
    if '"00280010"' in text and f'"{dj.PIXEL_DATA}"' not in text:
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
    viewer: User,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
    url: str,
    fallback: Any,
) -> bytes:
    """The metadata array for a study, series or instance, as a JSON body. ``fallback``
    (instance -> header dict) serves instances announced without a header."""
    base = instances_query(viewer, study_uid, series_uid, sop_uid)
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
        what = "instance" if sop_uid else "series" if series_uid else "study"
        raise StudyNotFound(f"No such {what} visible to you")
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
