"""QIDO-RS (PS3.18 10.6) query parameters: each key becomes a condition on the index tables.

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

from fastapi import Request
from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from viewer_api.dicomweb import dicom_json as dj
from viewer_api.dicomweb.access import bad_request
from worklist.models import Instance, Series, Study

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
STUDY, SERIES, INSTANCE = 0, 1, 2
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2,6}(\.\d{1,6})?$")
_CONTROL = {"limit", "offset", "fuzzymatching", "includefield"}

Matcher = Callable[[str], ColumnElement[bool] | None]


def escape_like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _text(column: InstrumentedAttribute[str]) -> Matcher:
    def match(value: str) -> ColumnElement[bool] | None:
        if value.strip("*") == "":
            return None
        if _has_wildcard(value):
            return column.like(escape_like(value), escape="\\")
        return column == value

    return match


def _person_name(column: InstrumentedAttribute[str]) -> Matcher:
    """Case-insensitive; the whole name or any of its ``=`` component groups."""

    def match(value: str) -> ColumnElement[bool] | None:
        if value.strip("*") == "":
            return None
        pattern = escape_like(value)
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
