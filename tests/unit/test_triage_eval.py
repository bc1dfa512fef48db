"""The labelled evaluation set: size, coverage, and the precision / recall floor we hold."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
import yaml

from worklist.triage.evaluate import DEFAULT_CASES, Report, evaluate, load_cases, main
from worklist.triage.grammar import POLARITIES

GRAMMAR = Path(__file__).resolve().parents[1] / "triage_eval" / "grammar.yaml"
# the grammar's cases (measured 2026-12: stroke recall 0.997, precision 1.000; chest pain
# recall 1.000, precision 0.962; held-out part 0.993 / 1.000): floors a little below
GRAMMAR_MIN_RECALL = 0.98
GRAMMAR_MIN_PRECISION = 0.93
HELD_OUT_MIN_RECALL = 0.98  # the goal holds for the terms not looked at too
MAX_FALSE_ALARM_RATE = 0.03  # per negative form

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


@pytest.fixture(scope="module")
def grammar_report() -> Report:
    return evaluate(load_cases(GRAMMAR))


def test_grammar_expands_to_a_big_set_with_a_held_out_part() -> None:
    cases = load_cases(GRAMMAR)
    assert len(cases) >= 400
    assert {c.part for c in cases} == {"dev", "held_out"}
    families = {c.family for c in cases}
    assert len(families) >= 15
    for family in families:
        parts = {c.part for c in cases if c.family == family and c.expect}
        assert parts == {"dev", "held_out"}, family
    forms = Counter(c.form for c in cases)
    for form in POLARITIES:
        assert forms[form] >= 400, form
    assert len({c.enc for c in cases}) >= 8
    fields = {kw for c in cases for kw in [*c.fields, *c.request, *c.codes, *c.request_codes]}
    assert len(fields) >= 8, fields


def test_grammar_recall_precision_floor(grammar_report: Report) -> None:
    for cat, score in grammar_report.scores.items():
        assert score.recall >= GRAMMAR_MIN_RECALL, (cat, score)
        assert score.precision >= GRAMMAR_MIN_PRECISION, (cat, score)
    for (cat, family, part), tally in grammar_report.families.items():
        floor = GRAMMAR_MIN_RECALL if part == "dev" else HELD_OUT_MIN_RECALL
        if family in ("coded",):
            floor = 1.0
        assert tally.right / tally.cases >= min(floor, 0.85), (cat, family, part, tally)
    by_part: dict[tuple[str, str], list[int]] = {}
    for (cat, _, part), t in grammar_report.families.items():
        acc = by_part.setdefault((cat, part), [0, 0])
        acc[0] += t.right
        acc[1] += t.cases
    for (cat, part), (right, n) in by_part.items():
        floor = GRAMMAR_MIN_RECALL if part == "dev" else HELD_OUT_MIN_RECALL
        assert right / n >= floor, (cat, part, right, n)
    for form, tally in grammar_report.forms.items():
        assert (tally.cases - tally.right) / tally.cases <= MAX_FALSE_ALARM_RATE, (form, tally)
    assert grammar_report.decode_errors == []


def test_command_reports_by_family(tmp_path: Path) -> None:
    data = yaml.safe_load(GRAMMAR.read_text("utf-8"))
    data["families"] = {"face": data["families"]["face"]}
    data.pop("codes")
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    out = io.StringIO()
    dicom = tmp_path / "dicom"
    assert main([str(small), "--by-family", "--write-dicom", str(dicom)], out=out) in (0, 1)
    text = out.getvalue()
    assert "stroke/face" in text and "held_out" in text and "negated" in text
    assert len(list(dicom.glob("*.dcm"))) == len(load_cases(small))
