"""The labelled evaluation set: size, coverage, and the precision / recall floor we hold."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from worklist.triage.evaluate import DEFAULT_CASES, Report, evaluate, load_cases, main

# measured: 1.000 / 1.000 for both categories on 186 cases; the floor leaves a little room
MIN_RECALL = 0.98
MIN_PRECISION = 0.95


@pytest.fixture(scope="module")
def report() -> Report:
    return evaluate(load_cases(DEFAULT_CASES))


def test_case_set_is_big_and_covers_every_charset() -> None:
    cases = load_cases(DEFAULT_CASES)
    assert len(cases) >= 150
    encs = Counter(c.enc for c in cases)
    for enc in ("gb18030", "gbk", "utf8", "ir58", "latin1", "gbk-as-latin1", "gbk-undeclared"):
        assert encs[enc] >= 3, enc
    expects = Counter(c.expect for c in cases)
    assert expects["stroke"] >= 40 and expects["chest_pain"] >= 40 and expects[None] >= 50
    langs = Counter("zh" if any(ord(ch) > 0x2E80 for ch in str(c.fields)) else "en" for c in cases)
    assert langs["zh"] >= 80 and langs["en"] >= 40


def test_precision_recall_floor(report: Report) -> None:
    for cat, score in report.scores.items():
        assert score.recall >= MIN_RECALL, (cat, score)
        assert score.precision >= MIN_PRECISION, (cat, score)


def test_every_case_text_decodes_cleanly(report: Report) -> None:
    assert report.decode_errors == []


def test_every_hard_negative_stays_routine(report: Report) -> None:
    wrong = [(c.id, r) for c, r in report.wrong if c.expect is None]
    assert wrong == []


def test_command_prints_and_exits_by_floor(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main([str(DEFAULT_CASES)], out=out) == 0
    text = out.getvalue()
    assert "stroke" in text and "chest_pain" in text and "precision" in text
    one = tmp_path / "one.yaml"
    one.write_text(
        "- {id: a, expect: stroke, enc: gbk, fields: {StudyDescription: 胸部CT}}\n", "utf-8"
    )
    out = io.StringIO()
    assert main([str(one)], out=out) == 1
    assert "BELOW FLOOR" in out.getvalue()
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {id: a, expect: trauma, fields: {}}\n", "utf-8")
    assert main([str(bad)], out=io.StringIO()) == 2
