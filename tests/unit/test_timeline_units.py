"""The study timeline's pure parts: an image's acquisition time from its header; the
pages' words for every hop, stage and deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.unit.test_page_strings import strings
from worklist.timeline import HOPS, STAGE_NAMES, acquisition_time
from worklist.turnaround import TARGET_STATES

CST = timedelta(hours=8)


def header(**tags: str) -> dict[str, Any]:
    return {tag: {"vr": "XX", "Value": [value]} for tag, value in tags.items()}


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        # Acquisition Date and Time, local time read at the default offset
        ({"00080022": "20261206", "00080032": "083015"}, datetime(2026, 12, 6, 0, 30, 15)),
        # fractions, and the old colon form
        (
            {"00080022": "20261206", "00080032": "08:30:15.25"},
            datetime(2026, 12, 6, 0, 30, 15, 250000),
        ),
        # Acquisition DateTime first, with its own offset
        (
            {"0008002A": "20261206083015-0500", "00080022": "20260101", "00080032": "000000"},
            datetime(2026, 12, 6, 13, 30, 15),
        ),
        # the header's Timezone Offset From UTC
        (
            {"00080023": "20261206", "00080033": "0830", "00080201": "+0000"},
            datetime(2026, 12, 6, 8, 30),
        ),
        # content time when there is no acquisition time; series time last
        ({"00080023": "20261206", "00080033": "120000"}, datetime(2026, 12, 6, 4, 0)),
        ({"00080021": "20261206", "00080031": "12"}, datetime(2026, 12, 6, 4, 0)),
    ],
)
def test_acquisition_time_reads_the_header(tags: dict[str, str], expected: datetime) -> None:
    assert acquisition_time(header(**tags), default_offset=CST) == expected.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "tags",
    [
        {},
        {"00080022": "20261206"},  # a date alone says no time
        {"00080022": "2026120", "00080032": "083015"},
        {"00080022": "20261306", "00080032": "083015"},
        {"00080022": "20261206", "00080032": "256015"},
        {"00080022": "18000101", "00080032": "083015"},  # no modality's clock said that
        {"0008002A": "garbage"},
    ],
)
def test_acquisition_time_is_none_when_the_header_says_nothing_usable(
    tags: dict[str, str],
) -> None:
    assert acquisition_time(header(**tags), default_offset=CST) is None
    assert acquisition_time(None, default_offset=CST) is None


def test_every_hop_stage_and_target_has_words_in_both_languages() -> None:
    table = strings()
    named = [f"hop_{h}" for h in HOPS] + [f"stage_{s}" for s in STAGE_NAMES]
    named += [f"tstate_{s}" for s in TARGET_STATES]
    named += [f"target_{t}" for t in ("read_deadline", "stroke_read_45min", "cta_read_10min")]
    assert sorted(n for n in named if n not in table) == []
