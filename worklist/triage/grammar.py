"""Triage cases generated from a grammar (``tests/triage_eval/grammar.yaml``).

A grammar names clinical families (a category, a kind, the standard the terms come from, and
its terms in Chinese and English, split into a ``dev`` part and a ``held_out`` part) and the
ways a phrase is written: framings per polarity and kind (positive, negated, historical,
follow-up, chronic), prefixes, the DICOM field it goes in, the exam name around it. Every term
gives two positive cases and one case of each negative polarity; the choices (framing,
field, prefix, exam, character set) rotate with a stable hash of the term, so a grammar always
expands to the same cases. Coded entries (``codes:``) give two cases per code.

``expand(data, source)`` -> list of ``cases.Case`` (with ``family``, ``part``, ``form``).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any, cast

from worklist.triage.cases import PROFILES, Case, encode_text
from worklist.triage.rules import CATEGORIES, Category

POLARITIES = ("positive", "negated", "historical", "follow_up", "chronic")
KINDS = ("diagnosis", "symptom", "sign", "pathway")
# character-set profiles (cases.PROFILES) a case's text is written in, in turn
ZH_PROFILES = (
    "gb18030",
    "gbk",
    "utf8",
    "ir58",
    "gbk-as-latin1",
    "gbk-undeclared",
    "gb18030-undeclared",
    "utf8-undeclared",
)
EN_PROFILES = ("ascii", "latin1", "utf8", "gbk", "utf8-as-latin1")
LANGS = ("zh", "en")
CODE_FIELDS = ("AdmittingDiagnosesCodeSequence", "request.ReasonForRequestedProcedureCodeSequence")


class GrammarError(ValueError):
    """The grammar file is not what ``expand`` reads."""


def is_grammar(data: Any) -> bool:
    return isinstance(data, Mapping) and "families" in data


def _turn(key: str) -> int:
    return zlib.crc32(key.encode("utf-8"))


def _pick(items: Sequence[Any], key: str, step: int = 0) -> Any:
    return items[(_turn(key) + step) % len(items)]


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GrammarError(f"{where}: expected a list of strings")
    return list(value)


def _encodable(text: str, profile: str) -> bool:
    try:
        encode_text(text, PROFILES[profile][1])
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _profile(texts: Sequence[str], lang: str, key: str) -> str:
    profiles = ZH_PROFILES if lang == "zh" else EN_PROFILES
    start = _turn(key)
    for i in range(len(profiles)):
        profile = profiles[(start + i) % len(profiles)]
        if all(_encodable(t, profile) for t in texts):
            return profile
    return "utf8"


def _modality(exam: str) -> str:
    if "MR" in exam.upper():
        return "MR"
    if any(w in exam for w in ("正位", "DR", "XR", "CXR")):
        return "DX"
    return "CT"


class _Builder:
    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.source = source
        self.exams = data.get("exams") or {}
        self.fields = _strings(data.get("fields"), "fields")
        self.prefixes = data.get("prefixes") or {}
        self.framings = data.get("framings") or {}
        self.cases: list[Any] = []

    def framings_for(self, polarity: str, kind: str, lang: str) -> list[str]:
        try:
            return _strings(self.framings[polarity][kind][lang], f"framings.{polarity}.{kind}")
        except (KeyError, TypeError) as exc:
            raise GrammarError(f"framings: no {polarity}/{kind}/{lang}") from exc

    def exam(self, category: str, lang: str, key: str) -> str:
        try:
            return str(_pick(self.exams[category][lang], key))
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            raise GrammarError(f"exams: no {category}/{lang}") from exc

    def add_text(
        self,
        *,
        cid: str,
        family: str,
        category: str,
        kind: str,
        lang: str,
        part: str,
        polarity: str,
        phrase: str,
        key: str,
    ) -> None:
        exam = self.exam(category, lang, key + "exam")
        prefix = str(_pick(self.prefixes.get(lang) or [""], key + "prefix"))
        fields: dict[str, str] = {}
        request: dict[str, str] = {}
        choices = [
            f for f in self.fields if kind == "diagnosis" or f != "AdmittingDiagnosesDescription"
        ]
        where = str(_pick(choices, key + "field"))
        text = prefix + phrase
        if where == "StudyDescription+":
            fields["StudyDescription"] = f"{exam} {phrase}"
        else:
            fields["StudyDescription"] = exam
            if where.startswith("request."):
                request[where.removeprefix("request.")] = text
            else:
                fields[where] = text
        fields["Modality"] = _modality(exam)
        texts = [*fields.values(), *request.values()]
        self.cases.append(
            Case(
                id=cid,
                expect=cast(Category, category) if polarity == "positive" else None,
                enc=_profile(texts, lang, key + "enc"),
                fields=fields,
                request=request,
                source=self.source,
                family=family,
                part=part,
                form=polarity,
            )
        )

    def family(self, name: str, spec: Any) -> None:
        if not isinstance(spec, Mapping):
            raise GrammarError(f"family {name}: expected a mapping")
        category = spec.get("category")
        kind = spec.get("kind")
        if category not in CATEGORIES or kind not in KINDS:
            raise GrammarError(f"family {name}: category {category!r} / kind {kind!r}")
        if not spec.get("source"):
            raise GrammarError(f"family {name}: names no source")
        for lang in LANGS:
            parts = spec.get(lang) or {}
            for part in ("dev", "held_out"):
                for i, term in enumerate(_strings(parts.get(part) or [], f"{name}.{lang}")):
                    for polarity in POLARITIES:
                        framings = self.framings_for(polarity, kind, lang)
                        for j in range(2 if polarity == "positive" else 1):
                            key = f"{name}|{term}|{polarity}|{j}"
                            framing = str(_pick(framings, key, j))
                            self.add_text(
                                cid=f"g-{name}-{lang}-{part}-{i}-{polarity}-{j}",
                                family=name,
                                category=str(category),
                                kind=str(kind),
                                lang=lang,
                                part=part,
                                polarity=polarity,
                                phrase=framing.replace("{t}", term),
                                key=key,
                            )

    def codes(self, spec: Any) -> None:
        if not spec:
            return
        if not isinstance(spec, Mapping) or not spec.get("source"):
            raise GrammarError("codes: expected a mapping that names its source")
        schemes = _strings(spec.get("schemes") or [""], "codes.schemes")
        groups: list[tuple[str | None, str, list[str]]] = []
        for cat in CATEGORIES:
            for part in ("dev", "held_out"):
                items = (spec.get(cat) or {}).get(part) or []
                groups.append((cat, part, _strings(items, f"codes.{cat}")))
        groups.append((None, "dev", _strings(spec.get("routine") or [], "codes.routine")))
        for category, part, items in groups:
            for i, item in enumerate(items):
                value, _, rest = item.partition("^")
                meaning, _, scheme_override = rest.partition("^")
                for j in range(2):
                    key = f"codes|{item}|{j}"
                    scheme = scheme_override or str(_pick(schemes, key, j))
                    where = str(_pick(CODE_FIELDS, key, j))
                    exam_category = category or (
                        "stroke" if value[:2] in ("I6", "G4", "Z8") else "chest_pain"
                    )
                    exam = self.exam(exam_category, "zh", key)
                    text = f"{value}^{scheme}^{meaning}"
                    codes: dict[str, list[str]] = {}
                    request_codes: dict[str, list[str]] = {}
                    if where.startswith("request."):
                        request_codes[where.removeprefix("request.")] = [text]
                    else:
                        codes[where] = [text]
                    polarity = "positive" if category else "coded_routine"
                    self.cases.append(
                        Case(
                            id=f"g-codes-{category or 'routine'}-{part}-{i}-{j}",
                            expect=cast(Category | None, category),
                            enc=_profile([exam, meaning], "zh", key),
                            fields={"StudyDescription": exam, "Modality": _modality(exam)},
                            codes=codes,
                            request_codes=request_codes,
                            source=self.source,
                            family="coded",
                            part=part,
                            form=polarity,
                        )
                    )


def expand(data: Mapping[str, Any], source: str = "grammar") -> list[Any]:
    """The grammar's cases (``cases.Case``), in a stable order."""
    builder = _Builder(data, source)
    families = data.get("families")
    if not isinstance(families, Mapping) or not families:
        raise GrammarError("families: expected a mapping of families")
    for name, spec in families.items():
        builder.family(str(name), spec)
    builder.codes(data.get("codes"))
    return builder.cases


__all__ = ["POLARITIES", "GrammarError", "expand", "is_grammar"]
