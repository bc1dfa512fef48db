"""What DICOMweb routes look up: visible studies' instances, in one query each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request, status
from fastapi.responses import Response
from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session, defer

from viewer_api.errors import InvalidParameter, NotAcceptable, UnreadableObject
from worklist.errors import StudyNotFound
from worklist.models import Instance, Series, Study, User
from worklist.repository import visible_studies_filter

DICOM_JSON = "application/dicom+json"


def base_url(request: Request) -> str:
    """The DICOMweb root as the client reached it (``http://host:port/dicomweb``)."""
    return str(request.base_url).rstrip("/") + "/dicomweb"


def instances_query(
    viewer: User, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> Select[Instance, str]:
    """Instances of a visible study (and series, instance), with their series UID, in
    series then instance order."""
    stmt = (
        select(Instance, Series.series_instance_uid)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Instance.study_id == Study.id)
        .where(Study.study_instance_uid == study_uid, visible_studies_filter(viewer))
    )
    if series_uid is not None:
        stmt = stmt.where(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
    return stmt.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)


def find_instances(
    *,
    session: Session,
    viewer: User,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[tuple[Instance, str]]:
    """``instances_query``'s rows; ``StudyNotFound`` (404) when there are none, so another
    site's study looks exactly like a study that does not exist."""
    rows = [
        (instance, series)
        for instance, series in session.execute(
            instances_query(viewer, study_uid, series_uid, sop_uid).options(
                defer(Instance.dicom_json)  # metadata reads it as text, on its own
            )
        )
    ]
    if not rows:
        what = "instance" if sop_uid else "series" if series_uid else "study"
        raise StudyNotFound(f"No such {what} visible to you")
    return rows


@dataclass(frozen=True, slots=True)
class IndexedInstance:
    """What the index says of one stored instance: enough to find and render its frames."""

    sop_instance_uid: str
    object_key: str
    sha256: str
    transfer_syntax_uid: str
    dicom_json: dict[str, Any] | None


# one instance by its three UIDs, the statement built once (the visibility filter is added
# per caller); a scrolled series asks for it once per slice
_ONE_INSTANCE = (
    select(
        Instance.sop_instance_uid,
        Instance.object_key,
        Instance.sha256,
        Instance.transfer_syntax_uid,
        Instance.dicom_json,
    )
    .join(Series, Instance.series_id == Series.id)
    .join(Study, Instance.study_id == Study.id)
    .where(
        Study.study_instance_uid == bindparam("study_uid"),
        Series.series_instance_uid == bindparam("series_uid"),
        Instance.sop_instance_uid == bindparam("sop_uid"),
    )
)


def find_instance(
    *, session: Session, viewer: User, study_uid: str, series_uid: str, sop_uid: str
) -> IndexedInstance:
    """One instance of a visible study, header included; ``StudyNotFound`` (404) as in
    ``find_instances``."""
    row = session.execute(
        _ONE_INSTANCE.where(visible_studies_filter(viewer)),
        {"study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid},
    ).first()
    if row is None:
        raise StudyNotFound("No such instance visible to you")
    return IndexedInstance(*row)


def json_response(data: list[dict[str, Any]], headers: dict[str, str] | None = None) -> Response:
    """DICOM JSON, or 204 No Content for an empty result."""
    if not data:
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers=headers)
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, media_type=DICOM_JSON, headers=headers)


def bad_request(message: str) -> InvalidParameter:
    return InvalidParameter(message)


def unreadable(message: str = "The stored object cannot be read as DICOM") -> UnreadableObject:
    return UnreadableObject(message)


def not_acceptable(message: str) -> NotAcceptable:
    return NotAcceptable(message)
