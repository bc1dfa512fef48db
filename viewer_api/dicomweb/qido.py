"""QIDO-RS (PS3.18 10.6): search studies, series and instances in the index tables.

Query keys are attribute keywords or tags (``PatientName`` or ``00100010``); FastAPI has
already %-decoded them. ``*`` and ``?`` are wildcards; person names match case-insensitively
and against each ``=`` component group (``Wang^Xiaoming=王^小明`` matches ``王*``); dates take
ranges (``20260101-20261231``, ``-20261231``); UIDs and modalities take comma lists.
Keys the index cannot match are ignored with a ``Warning`` header, as the standard asks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import ColumnElement, Select, and_, func, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute, Session

from viewer_api.deps import SessionDep, ViewerUser
from viewer_api.dicomweb import dicom_json as dj
from viewer_api.dicomweb.access import bad_request, base_url, json_response
from worklist.models import Instance, Series, Study, User
from worklist.repository import visible_studies_filter

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
STUDY, SERIES, INSTANCE = 0, 1, 2
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2,6}(\.\d{1,6})?$")
_CONTROL = {"limit", "offset", "fuzzymatching", "includefield"}

Matcher = Callable[[str], ColumnElement[bool] | None]


def _escape_like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _text(column: InstrumentedAttribute[str]) -> Matcher:
    def match(value: str) -> ColumnElement[bool] | None:
        if value.strip("*") == "":
            return None
        if _has_wildcard(value):
            return column.like(_escape_like(value), escape="\\")
        return column == value

    return match


def _person_name(column: InstrumentedAttribute[str]) -> Matcher:
    """Case-insensitive; the whole name or any of its ``=`` component groups."""

    def match(value: str) -> ColumnElement[bool] | None:
        if value.strip("*") == "":
            return None
        pattern = _escape_like(value)
        return or_(
            *(
                column.ilike(p, escape="\\")
                for p in (pattern, pattern + "=%", "%=" + pattern, "%=" + pattern + "=%")
            )
        )

    return match


def _range(column: InstrumentedAttribute[str], shape: re.Pattern[str], what: str) -> Matcher:
    def match(value: str) -> ColumnElement[bool] | None:
        low, dash, high = value.partition("-")
        for part in (low, high):
            if part and not shape.match(part):
                raise bad_request(f"{what} must be a value or a range like 20260101-20261231")
        if not dash:
            return column == low if low else None
        conditions = []
        if low:
            conditions.append(column >= low)
        if high:
            # a time range's upper end includes its fractions ("1200" covers "120059.9")
            conditions.append(column <= high + ("\uffff" if what == "StudyTime" else ""))
        if not conditions:
            return None
        conditions.append(column != "")
        return and_(*conditions)

    return match


def _values(value: str) -> list[str]:
    return [v.strip() for v in re.split(r"[,\\]", value) if v.strip()]


def _in_list(column: InstrumentedAttribute[str]) -> Matcher:
    def match(value: str) -> ColumnElement[bool] | None:
        values = _values(value)
        return column.in_(values) if values else None

    return match


def _modalities_in_study(value: str) -> ColumnElement[bool] | None:
    values = _values(value)
    if not values:
        return None
    column = Study.modalities
    return or_(
        *(
            or_(
                column == m,
                column.startswith(m + "\\", autoescape=True),
                column.endswith("\\" + m, autoescape=True),
                column.contains("\\" + m + "\\", autoescape=True),
            )
            for m in values
        )
    )


def _integer(column: InstrumentedAttribute[int | None], what: str) -> Matcher:
    def match(value: str) -> ColumnElement[bool] | None:
        return column == _int_param(value, what, -(2**31), 2**31 - 1)

    return match


# tag -> (level it belongs to, matcher)
MATCHERS: dict[str, tuple[int, Matcher]] = {
    "00100010": (STUDY, _person_name(Study.patient_name)),
    "00100020": (STUDY, _text(Study.patient_id)),
    "00100030": (STUDY, _range(Study.patient_birth_date, _DATE, "PatientBirthDate")),
    "00100040": (STUDY, _text(Study.patient_sex)),
    "00080020": (STUDY, _range(Study.study_date, _DATE, "StudyDate")),
    "00080030": (STUDY, _range(Study.study_time, _TIME, "StudyTime")),
    "00080050": (STUDY, _text(Study.accession_number)),
    "00080061": (STUDY, _modalities_in_study),
    "00081030": (STUDY, _text(Study.study_description)),
    "0020000D": (STUDY, _in_list(Study.study_instance_uid)),
    "00080060": (SERIES, _in_list(Series.modality)),
    "0008103E": (SERIES, _text(Series.series_description)),
    "00180015": (SERIES, _text(Series.body_part_examined)),
    "0020000E": (SERIES, _in_list(Series.series_instance_uid)),
    "00200011": (SERIES, _integer(Series.series_number, "SeriesNumber")),
    "00080016": (INSTANCE, _in_list(Instance.sop_class_uid)),
    "00080018": (INSTANCE, _in_list(Instance.sop_instance_uid)),
    "00200013": (INSTANCE, _integer(Instance.instance_number, "InstanceNumber")),
}


@dataclass
class Query:
    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    include_all: bool = False
    include: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    def headers(self) -> dict[str, str] | None:
        if not self.ignored:
            return None
        names = ", ".join(dj.keyword_of(t) for t in self.ignored)
        return {"Warning": f'299 teleread "Not supported for matching, ignored: {names}"'}


def _int_param(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None
    if not low <= number <= high:
        raise bad_request(f"{name} must be between {low} and {high}")
    return number


def parse_query(request: Request, level: int) -> Query:
    query = Query()
    for key, value in request.query_params.multi_items():
        name = key.lower()
        if name == "limit":
            query.limit = _int_param(value, "limit", 0, MAX_LIMIT)
        elif name == "offset":
            query.offset = _int_param(value, "offset", 0, 2**31 - 1)
        elif name == "fuzzymatching":
            continue
        elif name == "includefield":
            for item in _values(value):
                if item.lower() == "all":
                    query.include_all = True
                    continue
                tag = dj.resolve_tag(item)
                if tag is None:
                    raise bad_request(f"includefield: unknown attribute {item!r}")
                query.include.append(tag)
        else:
            tag = dj.resolve_tag(key.split(".")[0])
            if tag is None:
                raise bad_request(f"Unknown query key {key!r}")
            matcher = MATCHERS.get(tag)
            if matcher is None or matcher[0] > level:
                query.ignored.append(tag)
                continue
            condition = matcher[1](value)
            if condition is not None:
                query.conditions.append(condition)
    return query


def _study_counts(session: Session, study_ids: list[int]) -> dict[int, tuple[int, int]]:
    if not study_ids:
        return {}
    rows = session.execute(
        select(Series.study_id, func.count(Series.id), func.sum(Series.num_instances))
        .where(Series.study_id.in_(study_ids))
        .group_by(Series.study_id)
    )
    return {sid: (int(n), int(m or 0)) for sid, n, m in rows}


def _representatives(
    session: Session, column: InstrumentedAttribute[int], ids: list[int]
) -> dict[int, dict[str, Any]]:
    """One announced header per study (or series), for includefield."""
    if not ids:
        return {}
    first = (
        select(func.min(Instance.id))
        .where(column.in_(ids), Instance.dicom_json.is_not(None))
        .group_by(column)
    )
    rows = session.execute(select(column, Instance.dicom_json).where(Instance.id.in_(first)))
    return {key: header for key, header in rows if header}


def _extra(query: Query, header: dict[str, Any] | None, defaults: tuple[str, ...]) -> dict:
    tags = list(query.include)
    if query.include_all:
        tags.extend(defaults)
    return dj.pick(dj.normalise_header(header) if header else None, tags)


def search_studies(
    *, session: Session, viewer: User, query: Query, url: str
) -> list[dict[str, Any]]:
    of_study = Series.study_id == Study.id  # the counts: correlated, so one round trip
    stmt: Select[Study, int, int] = (
        select(
            Study,
            select(func.count(Series.id)).where(of_study).scalar_subquery(),
            select(func.coalesce(func.sum(Series.num_instances), 0))
            .where(of_study)
            .scalar_subquery(),
        )
        .where(visible_studies_filter(viewer), *query.conditions)
        .order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
        .limit(query.limit)
        .offset(query.offset)
    )
    rows = list(session.execute(stmt))
    headers = (
        _representatives(session, Instance.study_id, [study.id for study, _, _ in rows])
        if (query.include or query.include_all)
        else {}
    )
    results = []
    for study, n_series, n_instances in rows:
        data = _extra(query, headers.get(study.id), dj.STUDY_EXTRA)
        data.update(
            dj.study_attributes(study, num_series=n_series, num_instances=n_instances, base_url=url)
        )
        results.append(dj.sorted_dataset(data))
    return results


def search_series(
    *, session: Session, viewer: User, query: Query, url: str, study_uid: str | None = None
) -> list[dict[str, Any]]:
    stmt = (
        select(Series, Study)
        .join(Study, Series.study_id == Study.id)
        .where(visible_studies_filter(viewer), *query.conditions)
    )
    if study_uid is not None:
        stmt = stmt.where(Study.study_instance_uid == study_uid)
    stmt = (
        stmt.order_by(Study.id, Series.series_number, Series.id)
        .limit(query.limit)
        .offset(query.offset)
    )
    rows = list(session.execute(stmt))
    wanted = query.include or query.include_all
    headers = (
        _representatives(session, Instance.series_id, [s.id for s, _ in rows]) if (wanted) else {}
    )
    counts = _study_counts(session, list({st.id for _, st in rows})) if study_uid is None else {}
    results = []
    for series, study in rows:
        data = _extra(query, headers.get(series.id), dj.SERIES_EXTRA + dj.STUDY_EXTRA)
        if study_uid is None:  # an all-series search returns the study's attributes too
            n_series, n_instances = counts.get(study.id, (0, 0))
            data.update(
                dj.study_attributes(
                    study, num_series=n_series, num_instances=n_instances, base_url=url
                )
            )
            del data["00081190"]
        data.update(dj.series_attributes(series, study_uid=study.study_instance_uid, base_url=url))
        data["0020000D"] = dj.element("UI", study.study_instance_uid)
        data["00080005"] = dj.element("CS", dj.UTF8)
        results.append(dj.sorted_dataset(data))
    return results


def search_instances(
    *,
    session: Session,
    viewer: User,
    query: Query,
    url: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> list[dict[str, Any]]:
    stmt = (
        select(Instance, Series, Study)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Instance.study_id == Study.id)
        .where(visible_studies_filter(viewer), *query.conditions)
        .where(Study.study_instance_uid == study_uid if study_uid else true())
        .where(Series.series_instance_uid == series_uid if series_uid else true())
        .order_by(Study.id, Series.series_number, Series.id, Instance.instance_number, Instance.id)
        .limit(query.limit)
        .offset(query.offset)
    )
    results = []
    for instance, series, study in session.execute(stmt):
        header = instance.dicom_json or None
        if query.include_all and header is not None:
            data = dj.normalise_header(header)
        else:  # only the picked attributes are copied
            data = dj.normalise_header(dj.pick(header, [*dj.INSTANCE_EXTRA, *query.include]))
        if study_uid is None:
            data.update(
                dj.study_attributes(
                    study,
                    num_series=0,
                    num_instances=study.num_instances,
                    base_url=url,
                )
            )
            for tag in ("00081190", "00201206", "00201208"):
                data.pop(tag, None)
        if series_uid is None:
            data.update(
                dj.series_attributes(series, study_uid=study.study_instance_uid, base_url=url)
            )
            data.pop("00081190", None)
        data.update(
            dj.instance_attributes(
                instance,
                study_uid=study.study_instance_uid,
                series_uid=series.series_instance_uid,
                base_url=url,
            )
        )
        data["0020000D"] = dj.element("UI", study.study_instance_uid)
        data["0020000E"] = dj.element("UI", series.series_instance_uid)
        data["00080005"] = dj.element("CS", dj.UTF8)
        data.pop(dj.PIXEL_DATA, None)
        results.append(dj.sorted_dataset(data))
    return results


_JSON: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/dicom+json": {}}},
    204: {"description": "No match"},
}


@router.get("/studies", responses=_JSON)
def qido_studies(request: Request, session: SessionDep, user: ViewerUser) -> Response:
    query = parse_query(request, STUDY)
    data = search_studies(session=session, viewer=user, query=query, url=base_url(request))
    session.commit()  # read-only: see deps.get_db
    return json_response(data, query.headers())


@router.get("/series", responses=_JSON)
def qido_series(request: Request, session: SessionDep, user: ViewerUser) -> Response:
    query = parse_query(request, SERIES)
    data = search_series(session=session, viewer=user, query=query, url=base_url(request))
    session.commit()  # read-only: see deps.get_db
    return json_response(data, query.headers())


@router.get("/studies/{study_uid}/series", responses=_JSON)
def qido_study_series(
    study_uid: str, request: Request, session: SessionDep, user: ViewerUser
) -> Response:
    query = parse_query(request, SERIES)
    data = search_series(
        session=session, viewer=user, query=query, url=base_url(request), study_uid=study_uid
    )
    session.commit()  # read-only: see deps.get_db
    return json_response(data, query.headers())


@router.get("/instances", responses=_JSON)
def qido_instances(request: Request, session: SessionDep, user: ViewerUser) -> Response:
    query = parse_query(request, INSTANCE)
    data = search_instances(session=session, viewer=user, query=query, url=base_url(request))
    session.commit()  # read-only: see deps.get_db
    return json_response(data, query.headers())


@router.get("/studies/{study_uid}/instances", responses=_JSON)
def qido_study_instances(
    study_uid: str, request: Request, session: SessionDep, user: ViewerUser
) -> Response:
    query = parse_query(request, INSTANCE)
    data = search_instances(
        session=session, viewer=user, query=query, url=base_url(request), study_uid=study_uid
    )
    session.commit()  # read-only: see deps.get_db
    return json_response(data, query.headers())


@router.get("/studies/{study_uid}/series/{series_uid}/instances", responses=_JSON)
def qido_series_instances(
    study_uid: str, series_uid: str, request: Request, session: SessionDep, user: ViewerUser
) -> Response:
    query = parse_query(request, INSTANCE)
    data = search_instances(
        session=session,
        viewer=user,
        query=query,
        url=base_url(request),
        study_uid=study_uid,
        series_uid=series_uid,
    )
    session.commit()  # read-only: see deps.get_db
    return json_response(data, query.headers())
