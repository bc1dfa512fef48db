"""Input validation shared by every request body: the storable-text check, the bounded
integer and time types, and the size limits (``MAX_*``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, field_validator

from storage.keys import is_valid_uid

MAX_TEXT = 20_000
MAX_INSTANCES_PER_CALL = 1000
MAX_REASON = 2000
# the database's integers: PostgreSQL INTEGER is 32-bit, BIGINT 64-bit (SQLite refuses more)
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
# paging: an offset past this many rows is no page anyone reads
MAX_OFFSET = MAX_INT32


def check_uid(value: str) -> str:
    if not is_valid_uid(value):
        raise ValueError("not a DICOM UID")
    return value


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (PostgreSQL refuses NUL, every driver refuses
    lone surrogates), or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no unpaired surrogates)"
    return None


def check_storable(value: Any) -> None:
    """Raise ``ValueError`` for text (strings, and the keys and values of nested lists and
    objects) that no database can store, or a number JSON cannot carry. Iterative: a body
    nested thousands deep does not overflow the stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                raise ValueError(f"text {problem}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("numbers must be finite")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


class Input(BaseModel):
    """Base of every request body: all text must be storable (no NUL, valid Unicode)."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        check_storable(value)
        return value


Int32 = Annotated[int, Field(ge=-MAX_INT32 - 1, le=MAX_INT32)]
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def check_instant(value: datetime) -> datetime:
    """An aware time between 1900 and 2200 (UTC): a time near year 1 or 9999 with an offset
    does not even convert to UTC (``OverflowError``), and none of those is a real one."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError("time must be between 1900 and 2200")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(check_instant)]
