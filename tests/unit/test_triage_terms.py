"""Every group of the built-in rules names its family and source and holds to its examples
(tests/triage_eval/term_examples.yaml): positives are urgent in the group's category with
the group named in the reasons; negated, historical, follow-up and chronic forms stay
routine."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from worklist.triage import classify, load_rules
from worklist.triage.rules import Rule, Rules

EXAMPLES = Path(__file__).resolve().parents[1] / "triage_eval" / "term_examples.yaml"
NEGATIVE_FORMS = ("negated", "historical", "follow_up", "chronic")
R = "ReasonForTheRequestedProcedure"
ADM = "AdmittingDiagnosesCodeSequence"


@cache
def examples() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLES.read_text("utf-8"))
    assert isinstance(data, dict)
    return data


@cache
def builtin() -> Rules:
    return load_rules(None)


def _rule(name: str) -> Rule:
    return next(r for r in builtin().rules if r.name == name)


def _fields(name: str, text: str) -> dict[str, str]:
    group = examples()["groups"][name]
    rule = _rule(name)
    assert rule.category is not None
    exam = group.get("exam", examples()["exams"][rule.category])
    field = group.get("field", R)
    if field == "StudyDescription":
        return {"StudyDescription": f"{exam} {text}".strip()}
    return {"StudyDescription": exam, field: text} if exam else {field: text}


def test_every_group_names_family_and_source_and_has_examples() -> None:
    groups = examples()["groups"]
    codes = examples()["codes"]
    rules = builtin()
    assert {r.name for r in rules.rules} == set(groups)
    assert {r.name for r in rules.codes} == set(codes)
    for rule in rules.rules:
        assert rule.family and rule.source, rule.name
        for form in ("positive", "negated", "historical"):
            assert groups[rule.name].get(form), (rule.name, form)
    for rule in rules.codes:
        assert rule.family and rule.source, rule.name
        assert codes[rule.name]["not_urgent"], rule.name
        assert bool(codes[rule.name]["positive"]) == (rule.category is not None), rule.name


@pytest.mark.parametrize("name", sorted(yaml.safe_load(EXAMPLES.read_text("utf-8"))["groups"]))
def test_group_examples(name: str) -> None:
    group = examples()["groups"][name]
    rule = _rule(name)
    wrong: list[str] = []
    for text in group["positive"]:
        result = classify(_fields(name, text))
        named = any((r.category, r.term) == (rule.category, rule.name) for r in result.reasons)
        if (result.category, result.priority) != (rule.category, "stat") or not named:
            wrong.append(f"positive {text!r}: {result}")
    for form in NEGATIVE_FORMS:
        for text in group.get(form) or []:
            result = classify(_fields(name, text))
            if result.priority != "routine":
                wrong.append(f"{form} {text!r}: {result}")
    assert wrong == []


@pytest.mark.parametrize("name", sorted(yaml.safe_load(EXAMPLES.read_text("utf-8"))["codes"]))
def test_code_examples(name: str) -> None:
    group = examples()["codes"][name]
    rule = next(r for r in builtin().codes if r.name == name)
    wrong: list[str] = []
    for code in group["positive"]:
        result = classify({"StudyDescription": "CT", ADM: code})
        if result.category != rule.category or (
            result.reasons[0].category,
            result.reasons[0].term,
        ) != (rule.category, name):
            wrong.append(f"positive {code!r}: {result}")
        # the same code with a follow-up exam name is not urgent
        if classify({"StudyDescription": "CT复查", ADM: code}).priority != "routine":
            wrong.append(f"follow-up {code!r}")
    for code in group["not_urgent"]:
        result = classify({"StudyDescription": "CT", ADM: code})
        if result.priority != "routine":
            wrong.append(f"not urgent {code!r}: {result}")
    assert wrong == []
