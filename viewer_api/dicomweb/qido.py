"""QIDO-RS (PS3.18 10.6): search studies, series and instances in the index tables, with
the conditions ``qido_query.parse_query`` makes of the query parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Select, func, select, true
from sqlalchemy.orm import InstrumentedAttribute, Session

from viewer_api.dicomweb import dicom_json as dj
from viewer_api.dicomweb.access import Viewer, base_url, json_response, serve, viewer_route
from viewer_api.dicomweb.qido_query import INSTANCE, SERIES, STUDY, Query, parse_query
from worklist.audit import AuditAction
from worklist.models import Instance, Series, Study, User
from worklist.visibility import visible_studies_filter

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])


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
LEVELS = {STUDY: "studies", SERIES: "series", INSTANCE: "instances"}
# what the audit keeps of a query: its parameters, each cut to this
MAX_AUDITED_PARAMS, MAX_AUDITED_VALUE = 32, 256
Search = Callable[[Session, User, Query, str], list[dict[str, Any]]]


def _search(
    session: Session, viewer: Viewer, *, request: Request, level: int, search: Search, scope: str
) -> Response:
    query = parse_query(request, level)
    data = search(session, viewer.user, query, base_url(request))
    session.commit()  # read-only, done
    asked = list(request.query_params.multi_items())[:MAX_AUDITED_PARAMS]
    viewer.viewed(
        AuditAction.DICOMWEB_SEARCHED,
        study_uid=scope,
        detail={
            "level": LEVELS[level],
            "query": [[key, value[:MAX_AUDITED_VALUE]] for key, value in asked],
            "results": len(data),
        },
    )
    return json_response(data, query.headers())


async def _serve_search(request: Request, level: int, search: Search, scope: str = "") -> Response:
    """A QIDO search; audited with what was asked and how many matched (``scope``: the
    study UID of a study-scoped search)."""
    return await serve(
        request,
        lambda session, viewer: _search(
            session, viewer, request=request, level=level, search=search, scope=scope
        ),
    )


@router.get("/studies", responses=_JSON)
@viewer_route
async def qido_studies(request: Request) -> Response:
    return await _serve_search(
        request,
        STUDY,
        lambda session, user, query, url: search_studies(
            session=session, viewer=user, query=query, url=url
        ),
    )


@router.get("/series", responses=_JSON)
@viewer_route
async def qido_series(request: Request) -> Response:
    return await _serve_search(
        request,
        SERIES,
        lambda session, user, query, url: search_series(
            session=session, viewer=user, query=query, url=url
        ),
    )


@router.get("/studies/{study_uid}/series", responses=_JSON)
@viewer_route
async def qido_study_series(study_uid: str, request: Request) -> Response:
    return await _serve_search(
        request,
        SERIES,
        lambda session, user, query, url: search_series(
            session=session, viewer=user, query=query, url=url, study_uid=study_uid
        ),
        study_uid,
    )


@router.get("/instances", responses=_JSON)
@viewer_route
async def qido_instances(request: Request) -> Response:
    return await _serve_search(
        request,
        INSTANCE,
        lambda session, user, query, url: search_instances(
            session=session, viewer=user, query=query, url=url
        ),
    )


@router.get("/studies/{study_uid}/instances", responses=_JSON)
@viewer_route
async def qido_study_instances(study_uid: str, request: Request) -> Response:
    return await _serve_search(
        request,
        INSTANCE,
        lambda session, user, query, url: search_instances(
            session=session, viewer=user, query=query, url=url, study_uid=study_uid
        ),
        study_uid,
    )


@router.get("/studies/{study_uid}/series/{series_uid}/instances", responses=_JSON)
@viewer_route
async def qido_series_instances(study_uid: str, series_uid: str, request: Request) -> Response:
    return await _serve_search(
        request,
        INSTANCE,
        lambda session, user, query, url: search_instances(
            session=session,
            viewer=user,
            query=query,
            url=url,
            study_uid=study_uid,
            series_uid=series_uid,
        ),
        study_uid,
    )
