"""Triage rules: a YAML file (the built-in ``rules.yaml`` or a county's own), compiled.

Schema (see ``rules.yaml`` for the full built-in set)::

    version: 1
    extends: builtin            # a county file: "builtin" (default) adds to the built-in
                                # rules, "none" replaces them
    weights: {code: 4, alert: 3, diagnosis: 2, symptom: 2, exam: 2, sign: 1}
    threshold: 2                # a category needs this total weight; signs count only when
                                # their family reaches it on its own (see rules.yaml)
    categories:
      stroke:                   # category names: stroke, chest_pain
        - name: 脑梗             # shown in reasons: "StudyDescription: '脑梗死' (stroke: 脑梗)"
          kind: diagnosis       # alert | diagnosis | symptom | exam | sign
          family: infarction    # the clinical family (evaluation reports recall per family)
          source: ICD-10 I63    # where the terms come from (a standard, a scale, a guideline)
          patterns: ['脑梗(死|塞)?']   # regular expressions, case-insensitive by default
          word: false           # true: no ASCII letter or digit may touch an ASCII letter
                                # or digit at either end of the match (MI not in MIP)
          case_sensitive: false # true for short abbreviations (MI, PE, TIA...)
          requires_any: []      # context: one of these must appear somewhere in the study
          unless_any: []        # context: none of these may appear anywhere in the study
          sudden: false         # a sign: a sudden-onset cue (`onset`) in its field adds 1
    coding_schemes:             # which code items the code rules read (worklist.triage.codes)
      - name: ICD-10
        designators: ['I10', 'ICD-?10']   # Coding Scheme Designator, full match, any case
        values: '[A-Z][0-9]{2}.*'         # the shape of a value (full match)
        match: prefix           # prefix: I63 matches I63.900 (dots ignored); exact
        undeclared_in: [AdmittingDiagnosesCodeSequence]  # no or an unknown designator here:
                                # a value of this shape is taken as this scheme
    other_schemes: ['I10P']     # designators that are never read as a scheme above
    codes:                      # coded entries: stronger evidence than text
      - name: I63 脑梗死 cerebral infarction
        scheme: ICD-10
        codes: [I63]
        category: stroke        # null: a code that says "not urgent" (a sequela, an old MI):
                                # its meaning is then not read as text either
        family: infarction
        source: ICD-10 I63
    stat:                       # priority stat without a category (a STAT order)
      - name: STAT priority
        fields: [RequestedProcedurePriority]
        patterns: ['^STAT$']
    urgent_order: [...]         # like stat: an urgent order adds 1 to a family of signs
    onset: [...]                # sudden-onset cues anywhere in the field (突发, 2小时, sudden)
    onset_in_clause: [...]      # sudden-onset cues in the sign's own clause (急性, acute)
    lookalikes: [{name: 胸椎 thoracic spine, patterns: ['胸椎']}]   # masked before matching
    negation: [...]             # cues before a term, in its clause (无, 否认, no, denies)
    negation_after: [...]       # right after the term: 已排除, excluded, ruled out
    history_before: [...]       # 陈旧性, history of ...
    history_after: [...]        # right after the term: 后遗症, 史, sequelae ...
    history_later: [...]        # later in the term's clause: 病史, 3年, 5 years ago ...
    follow_up: [...]            # a clause saying 复查 / follow-up is not urgent
    acute: [...]                # keeps a term urgent although the exam name says 复查
    scope_breaks: [...]         # end a negation / history scope (伴, 但, but, with ...)
    history_keeps: [...]        # scope breaks that do not end a history scope (伴: 既往X伴Y)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from worklist.triage.codes import normalise_code
from worklist.triage.errors import RulesError

Category = Literal["stroke", "chest_pain"]
CATEGORIES: tuple[Category, ...] = ("stroke", "chest_pain")
KINDS = ("alert", "diagnosis", "symptom", "exam", "sign")
CODE_KIND = "code"
SIGN_KIND = "sign"
DEFAULT_THRESHOLD = 2
# a kind's weight when the file's `weights` does not say
DEFAULT_WEIGHTS = {CODE_KIND: 4, "alert": 3, "diagnosis": 2, "symptom": 2, "exam": 2, SIGN_KIND: 1}
_LIST_KEYS = (
    "onset",
    "onset_in_clause",
    "negation",
    "negation_after",
    "history_before",
    "history_after",
    "history_later",
    "history_keeps",
    "follow_up",
    "acute",
    "scope_breaks",
)


@dataclass(frozen=True, slots=True)
class Rule:
    category: Category | None
    name: str
    kind: str
    regex: re.Pattern[str]  # a code rule: matches the normalised code value from its start
    weight: int
    requires_any: re.Pattern[str] | None = None
    fields: frozenset[str] = frozenset()
    family: str = ""
    source: str = ""
    scheme: str = ""  # a code rule's coding scheme
    unless_any: re.Pattern[str] | None = None
    sudden: bool = False  # a sign: a sudden-onset cue in its field adds 1


@dataclass(frozen=True, slots=True)
class CodingScheme:
    name: str
    designators: re.Pattern[str]
    values: re.Pattern[str]
    prefix: bool
    undeclared_in: frozenset[str]


@dataclass(frozen=True, slots=True)
class Rules:
    rules: tuple[Rule, ...]
    stat: tuple[Rule, ...]
    lookalikes: tuple[tuple[str, re.Pattern[str]], ...]
    negation: re.Pattern[str]
    negation_after: re.Pattern[str]
    history_before: re.Pattern[str]
    history_after: re.Pattern[str]
    history_later: re.Pattern[str]
    history_keeps: re.Pattern[str]
    follow_up: re.Pattern[str]
    acute: re.Pattern[str]
    scope_breaks: re.Pattern[str]
    source: tuple[str, ...] = field(default=())
    codes: tuple[Rule, ...] = ()
    schemes: tuple[CodingScheme, ...] = ()
    other_schemes: re.Pattern[str] | None = None
    urgent_order: tuple[Rule, ...] = ()
    onset: re.Pattern[str] | None = None
    onset_in_clause: re.Pattern[str] | None = None
    threshold: int = DEFAULT_THRESHOLD


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: faster


def _alternation(patterns: list[str], *, word: bool = False, case_sensitive: bool = False) -> str:
    if not patterns:
        return r"(?!x)x"  # matches nothing
    body = "|".join(f"(?:{p})" for p in patterns)
    if word:
        # no ASCII letter or digit may touch an ASCII letter or digit of the match; a match
        # that begins or ends with a Chinese character may touch anything (气促2小时)
        body = (
            rf"(?:(?<![A-Za-z0-9])|(?=[^A-Za-z0-9]))(?:{body})"
            rf"(?:(?![A-Za-z0-9])|(?<=[^A-Za-z0-9]))"
        )
    return body if case_sensitive else f"(?i:{body})"


def _compile(source: str, what: str, patterns: list[str], **kw: bool) -> re.Pattern[str]:
    try:
        return re.compile(_alternation(patterns, **kw))
    except re.error as exc:
        raise RulesError(f"{source}: {what}: bad pattern: {exc}") from exc


def _anchored(source: str, what: str, patterns: list[str]) -> re.Pattern[str]:
    """Patterns that must start right after a match (optional spaces first)."""
    return _compile(source, what, [f"^\\s*(?:{p})" for p in patterns])


def _strings(value: Any, source: str, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesError(f"{source}: {what} must be a list of strings")
    return list(value)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {**base}
    out["weights"] = {**base.get("weights", {}), **(extra.get("weights") or {})}
    cats: dict[str, list[Any]] = {k: list(v) for k, v in (base.get("categories") or {}).items()}
    for cat, rules in (extra.get("categories") or {}).items():
        cats.setdefault(cat, []).extend(rules or [])
    out["categories"] = cats
    if "threshold" in extra:
        out["threshold"] = extra["threshold"]
    for key in (
        "stat",
        "urgent_order",
        "lookalikes",
        "codes",
        "coding_schemes",
        "other_schemes",
        *_LIST_KEYS,
    ):
        out[key] = list(base.get(key) or []) + list(extra.get(key) or [])
    return out


def _read(path: Path | None) -> tuple[dict[str, Any], str]:
    if path is None:
        text = resources.files("worklist.triage").joinpath("rules.yaml").read_text("utf-8")
        source = "built-in rules.yaml"
    else:
        text = Path(path).read_text("utf-8")
        source = str(path)
    try:
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RulesError(f"{source}: expected a mapping at the top level")
    return data, source


def _rule(item: Any, category: Category | None, weights: Mapping[str, int], src: str) -> Rule:
    if not isinstance(item, dict) or "name" not in item:
        raise RulesError(f"{src}: every rule needs a name (got {item!r:.80})")
    name = str(item["name"])
    kind = str(item.get("kind", "diagnosis"))
    if category is not None and kind not in KINDS:
        raise RulesError(f"{src}: rule {name!r}: kind must be one of {KINDS}")
    patterns = _strings(item.get("patterns"), src, f"rule {name!r} patterns")
    if not patterns:
        raise RulesError(f"{src}: rule {name!r} has no patterns")
    regex = _compile(
        src,
        f"rule {name!r}",
        patterns,
        word=bool(item.get("word", False)),
        case_sensitive=bool(item.get("case_sensitive", False)),
    )
    context = _strings(item.get("requires_any"), src, f"rule {name!r} requires_any")
    unless = _strings(item.get("unless_any"), src, f"rule {name!r} unless_any")
    return Rule(
        category=category,
        name=name,
        kind=kind,
        regex=regex,
        weight=int(item.get("weight", weights.get(kind, DEFAULT_WEIGHTS.get(kind, 2)))),
        requires_any=_compile(src, f"rule {name!r}", context) if context else None,
        fields=frozenset(_strings(item.get("fields"), src, f"rule {name!r} fields")),
        family=str(item.get("family") or ""),
        source=str(item.get("source") or ""),
        unless_any=_compile(src, f"rule {name!r}", unless) if unless else None,
        sudden=bool(item.get("sudden", False)),
    )


def _scheme(item: Any, src: str) -> CodingScheme:
    if not isinstance(item, dict) or "name" not in item:
        raise RulesError(f"{src}: every coding scheme needs a name (got {item!r:.80})")
    name = str(item["name"])
    what = f"coding scheme {name!r}"
    match = str(item.get("match", "exact"))
    if match not in ("prefix", "exact"):
        raise RulesError(f"{src}: {what}: match must be 'prefix' or 'exact'")
    values = _strings(item.get("values"), src, f"{what} values")
    return CodingScheme(
        name=name,
        designators=_compile(src, what, _strings(item.get("designators"), src, what)),
        values=_compile(src, what, values or [".*"]),
        prefix=match == "prefix",
        undeclared_in=frozenset(_strings(item.get("undeclared_in"), src, what)),
    )


def _code_rule(
    item: Any, schemes: Mapping[str, CodingScheme], weights: Mapping[str, int], src: str
) -> Rule:
    if not isinstance(item, dict) or "name" not in item:
        raise RulesError(f"{src}: every code rule needs a name (got {item!r:.80})")
    name = str(item["name"])
    scheme = schemes.get(str(item.get("scheme", "")))
    if scheme is None:
        raise RulesError(f"{src}: code rule {name!r}: scheme must be one of {sorted(schemes)}")
    category = item.get("category")
    if category is not None and category not in CATEGORIES:
        raise RulesError(f"{src}: code rule {name!r}: unknown category {category!r}")
    codes = [normalise_code(c) for c in _strings(item.get("codes"), src, f"code rule {name!r}")]
    codes.sort(key=len, reverse=True)  # the alternation's first match is then the longest
    if not codes or not all(codes):
        raise RulesError(f"{src}: code rule {name!r} has no codes")
    tail = "" if scheme.prefix else "$"
    regex = _compile(src, f"code rule {name!r}", [re.escape(c) + tail for c in codes])
    return Rule(
        category=cast(Category | None, category),
        name=name,
        kind=CODE_KIND,
        regex=regex,
        weight=int(item.get("weight", weights.get(CODE_KIND, DEFAULT_WEIGHTS[CODE_KIND]))),
        family=str(item.get("family") or ""),
        source=str(item.get("source") or ""),
        scheme=scheme.name,
    )


def compile_rules(data: Mapping[str, Any], source: str = "rules") -> Rules:
    """Build ``Rules`` from an already parsed mapping (the YAML schema above)."""
    weights = {str(k): int(v) for k, v in (data.get("weights") or {}).items()}
    rules: list[Rule] = []
    for cat, items in (data.get("categories") or {}).items():
        if cat not in CATEGORIES:
            raise RulesError(f"{source}: unknown category {cat!r} (known: {CATEGORIES})")
        for item in items or []:
            rules.append(_rule(item, cast(Category, cat), weights, source))
    stat = tuple(_rule(i, None, weights, source) for i in data.get("stat") or [])
    lookalikes: list[tuple[str, re.Pattern[str]]] = []
    for item in data.get("lookalikes") or []:
        r = _rule(item, None, weights, source)
        lookalikes.append((r.name, r.regex))
    lists = {k: _strings(data.get(k), source, k) for k in _LIST_KEYS}
    schemes = {s.name: s for s in (_scheme(i, source) for i in data.get("coding_schemes") or [])}
    codes = tuple(_code_rule(i, schemes, weights, source) for i in data.get("codes") or [])
    others = _strings(data.get("other_schemes"), source, "other_schemes")
    order = tuple(_rule(i, None, weights, source) for i in data.get("urgent_order") or [])
    try:
        threshold = int(data.get("threshold", DEFAULT_THRESHOLD))
    except (TypeError, ValueError) as exc:
        raise RulesError(f"{source}: threshold must be a whole number") from exc
    return Rules(
        rules=tuple(rules),
        stat=stat,
        lookalikes=tuple(lookalikes),
        negation=_compile(source, "negation", lists["negation"]),
        negation_after=_anchored(source, "negation_after", lists["negation_after"]),
        history_before=_compile(source, "history_before", lists["history_before"]),
        history_after=_anchored(source, "history_after", lists["history_after"]),
        history_later=_compile(source, "history_later", lists["history_later"]),
        history_keeps=_compile(source, "history_keeps", lists["history_keeps"]),
        follow_up=_compile(source, "follow_up", lists["follow_up"]),
        acute=_compile(source, "acute", lists["acute"]),
        scope_breaks=_compile(source, "scope_breaks", lists["scope_breaks"]),
        source=(source,),
        codes=codes,
        schemes=tuple(schemes.values()),
        other_schemes=_compile(source, "other_schemes", others) if others else None,
        urgent_order=order,
        onset=_compile(source, "onset", lists["onset"]) if lists["onset"] else None,
        onset_in_clause=(
            _compile(source, "onset_in_clause", lists["onset_in_clause"])
            if lists["onset_in_clause"]
            else None
        ),
        threshold=threshold,
    )


def load_rules(path: str | Path | None = None) -> Rules:
    """The built-in rules, or a county's file (added to the built-in unless ``extends: none``)."""
    builtin, builtin_src = _read(None)
    if path is None:
        return compile_rules(builtin, builtin_src)
    extra, src = _read(Path(path))
    extends = str(extra.get("extends", "builtin")).lower()
    if extends == "none":
        return compile_rules(extra, src)
    if extends != "builtin":
        raise RulesError(f"{src}: extends must be 'builtin' or 'none'")
    rules = compile_rules(_merge(builtin, extra), f"{builtin_src} + {src}")
    return rules


@lru_cache(maxsize=1)
def default_rules() -> Rules:
    """The rules in force: the built-in file, plus ``TELEREAD_TRIAGE_RULES_FILE`` if set."""
    from worklist.triage.settings import get_settings

    return load_rules(get_settings().rules_file)
