"""Decide stroke / chest pain / routine from decoded text fields, with reasons.

For every field (already decoded) the text is normalised (NFKC, spacing), look-alike phrases
(胸椎, 胸腔积液, 冠脉钙化积分...) are masked, and every rule of ``rules.yaml`` is matched. A
match does not count when, in its scope (the text since the last clause break: punctuation,
伴, 但, but, with...), a negation cue precedes it (无, 否认, no, denies), when a history cue
precedes or directly follows it (陈旧性, 既往, history of / 后遗症, 史, 3年) unless the text goes
on to say it is acute again (加重, 突发, acute), or when its clause says follow-up (复查, 随访,
follow-up). A follow-up exam name (StudyDescription / RequestedProcedureDescription saying
复查) also discounts diagnosis and exam-type matches in other fields unless their clause says
acute; symptoms and alerts (偏瘫, 胸痛, 溶栓, code stroke) still count.

"Rule out" (排除, 除外, r/o, ?PE) is a clinical suspicion, so it is *not* a negation.

Category: the one with the highest total weight of distinct matched rules (ties: stroke).
With no category, a STAT order (RequestedProcedurePriority STAT / 急) or a bare 绿色通道 makes
the priority stat with category None. Explicit flags (called AE title, a user) win.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worklist.triage.codes import ITEM_SEPARATOR, Code, is_code_field, normalise_code, parse_codes
from worklist.triage.errors import UnknownCategory
from worklist.triage.normalise import normalise
from worklist.triage.result import ROUTINE, STAT, TriageResult
from worklist.triage.rules import (
    CATEGORIES,
    CODE_KIND,
    Category,
    CodingScheme,
    Rule,
    Rules,
    default_rules,
)

# a follow-up cue here (复查, follow-up) discounts diagnosis / exam matches in other fields
FOLLOW_UP_FIELDS = (
    "StudyDescription",
    "RequestedProcedureDescription",
    "ReasonForTheRequestedProcedure",
)
_CLAUSE_BREAK = re.compile(r"[,;.!?:。;!?\n|]")
MAX_REASONS = 12


@dataclass(frozen=True, slots=True)
class Hit:
    field: str
    phrase: str
    rule: Rule


# patterns whose meaning changes when joined into one alternation (group references,
# conditionals, named groups that could clash, global flags)
_NOT_JOINABLE = re.compile(r"\\[1-9]|\(\?P[=<]|\(\?\(|\(\?[aiLmsux]+\)")


def _any_of(patterns: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One regex that finds a match wherever one of ``patterns`` would (None: cannot be
    joined safely). No match for it in a text: none for any of them, so the loop over them
    can be skipped."""
    if any(_NOT_JOINABLE.search(p.pattern) for p in patterns):
        return None
    try:
        return re.compile("|".join(f"(?:{p.pattern})" for p in patterns) or r"(?!x)x")
    except re.error:
        return None


_prefilters: dict[int, tuple[Rules, re.Pattern[str] | None, re.Pattern[str] | None]] = {}


def _prefilter(rules: Rules) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """(any category rule, any look-alike) of a rule set, compiled once per rule set."""
    entry = _prefilters.get(id(rules))
    if entry is None or entry[0] is not rules:
        if len(_prefilters) > 16:
            _prefilters.clear()
        entry = (
            rules,
            _any_of([r.regex for r in rules.rules]),
            _any_of([regex for _, regex in rules.lookalikes]),
        )
        _prefilters[id(rules)] = entry
    return entry[1], entry[2]


def _mask(text: str, rules: Rules) -> tuple[str, list[tuple[str, str]]]:
    masked: list[tuple[str, str]] = []
    any_lookalike = _prefilter(rules)[1]
    if any_lookalike is not None and any_lookalike.search(text) is None:
        return text, masked
    for name, regex in rules.lookalikes:

        def blank(m: re.Match[str], name: str = name) -> str:
            masked.append((m.group(), name))
            return " " * len(m.group())

        text = regex.sub(blank, text)
    return text, masked


def _scope_start(text: str, start: int, rules: Rules) -> int:
    begin = 0
    for m in rules.scope_breaks.finditer(text, 0, start):
        begin = m.end()
    return begin


def _clause(text: str, start: int, end: int) -> str:
    left = max((m.end() for m in _CLAUSE_BREAK.finditer(text, 0, start)), default=0)
    right_m = _CLAUSE_BREAK.search(text, end)
    return text[left : right_m.start() if right_m else len(text)]


def _why_not(
    text: str,
    start: int,
    end: int,
    rules: Rules,
    exam_follow_up: tuple[str, str] | None,
    rule: Rule,
    field: str,
) -> str | None:
    """Why a match does not count (None: it counts)."""
    scope = text[_scope_start(text, start, rules) : start]
    after = text[end:]
    neg = rules.negation.search(scope) or rules.negation_after.match(after)
    if neg:
        return f"negated by '{neg.group().strip()}'"
    hist = rules.history_before.search(scope) or rules.history_after.match(after)
    if hist and not rules.acute.search(after):
        return f"history '{hist.group().strip()}'"
    clause = _clause(text, start, end)
    fu = rules.follow_up.search(clause)
    if fu:
        return f"follow-up '{fu.group().strip()}'"
    if (
        exam_follow_up
        and field != exam_follow_up[0]
        and rule.kind in ("diagnosis", "exam")
        and not rules.acute.search(clause)
    ):
        return f"follow-up: {exam_follow_up[0]} says '{exam_follow_up[1]}'"
    return None


def _explain(hit: Hit) -> str:
    if hit.rule.kind == CODE_KIND:
        return f"{hit.field}: code {hit.phrase} ({hit.rule.category}: {hit.rule.name})"
    return f"{hit.field}: '{hit.phrase}' ({hit.rule.category}: {hit.rule.name})"


def _scheme_of(code: Code, field: str, rules: Rules) -> CodingScheme | None:
    """The coding scheme a code item is read in (None: no code rule applies to it)."""
    if code.scheme:
        for scheme in rules.schemes:
            if scheme.designators.fullmatch(code.scheme):
                return scheme
        if rules.other_schemes is not None and rules.other_schemes.fullmatch(code.scheme):
            return None
    for scheme in rules.schemes:
        if field in scheme.undeclared_in and scheme.values.fullmatch(code.value):
            return scheme
    return None


def code_rule(code: Code, field: str, rules: Rules) -> Rule | None:
    """The code rule for a code item: the one whose code matches the longest prefix."""
    scheme = _scheme_of(code, field, rules)
    if scheme is None or not code.value:
        return None
    value = normalise_code(code.value)
    best: Rule | None = None
    best_len = -1
    for rule in rules.codes:
        if rule.scheme != scheme.name:
            continue
        m = rule.regex.match(value)
        if m is not None and m.end() > best_len:
            best, best_len = rule, m.end()
    return best


def _read_codes(field: str, value: str, rules: Rules) -> tuple[str, list[Hit], list[str]]:
    """A code field: (the meanings of codes no rule knows, as text; code hits; reasons why
    known codes are not urgent)."""
    text: list[str] = []
    hits: list[Hit] = []
    ignored: list[str] = []
    for code in parse_codes(value):
        rule = code_rule(code, field, rules)
        if rule is None:
            if code.meaning:
                text.append(code.meaning)
        elif rule.category is None:
            ignored.append(f"not urgent: {field}: code {code.shown()} ({rule.name})")
        else:
            hits.append(Hit(field, code.shown(), rule))
    return ITEM_SEPARATOR.join(text), hits, ignored


def find_hits(
    fields: Mapping[str, str], *, modality: str | None = None, rules: Rules | None = None
) -> tuple[list[Hit], list[str], list[Hit]]:
    """(counted category hits, reasons for what did not count, stat-only hits)."""
    rules = rules or default_rules()
    texts: dict[str, str] = {}
    ignored: list[str] = []
    coded: list[Hit] = []
    for kw, value in fields.items():
        if not value:
            continue
        if is_code_field(kw):
            meanings, code_hits, code_ignored = _read_codes(kw, str(value), rules)
            value = meanings
            coded.extend(code_hits)
            ignored.extend(code_ignored)
        masked, looks = _mask(normalise(str(value)), rules)
        texts[kw] = masked
        ignored.extend(f"not urgent: {kw}: '{p.strip()}' (look-alike: {n})" for p, n in looks)
    context = " | ".join([*texts.values(), modality or ""])
    exam_follow_up: tuple[str, str] | None = None
    for kw in FOLLOW_UP_FIELDS:
        m = rules.follow_up.search(texts.get(kw, ""))
        if m and not rules.acute.search(texts[kw]):
            exam_follow_up = (kw, m.group().strip())
    hits: list[Hit] = []
    for hit in coded:  # a code is a diagnosis: a follow-up exam name discounts it too
        if exam_follow_up and hit.field != exam_follow_up[0]:
            said = f"follow-up: {exam_follow_up[0]} says '{exam_follow_up[1]}'"
            ignored.append(
                f"not urgent: {hit.field}: code {hit.phrase} ({hit.rule.category}: {said})"
            )
        else:
            hits.append(hit)
    any_rule = _prefilter(rules)[0]
    for kw, text in texts.items():
        if any_rule is not None and any_rule.search(text) is None:
            continue  # no rule matches anywhere in this text
        for rule in rules.rules:
            if rule.fields and kw not in rule.fields:
                continue
            if rule.requires_any is not None and not rule.requires_any.search(context):
                continue
            for m in rule.regex.finditer(text):
                phrase = m.group().strip()
                why = _why_not(text, m.start(), m.end(), rules, exam_follow_up, rule, kw)
                if why is None:
                    hits.append(Hit(kw, phrase, rule))
                else:
                    ignored.append(f"not urgent: {kw}: '{phrase}' ({rule.category}: {why})")
    stat_hits = [
        Hit(kw, m.group().strip(), rule)
        for kw, text in texts.items()
        for rule in rules.stat
        if not rule.fields or kw in rule.fields
        for m in [rule.regex.search(text)]
        if m
    ]
    return hits, list(dict.fromkeys(ignored)), stat_hits


def _check_category(value: str | None) -> Category | None:
    if value is None:
        return None
    for cat in CATEGORIES:
        if value == cat:
            return cat
    raise UnknownCategory(f"unknown triage category {value!r} (known: {', '.join(CATEGORIES)})")


def _best(scores: Mapping[Category, int]) -> Category | None:
    """Highest total weight; ties go to the category listed first (stroke)."""
    best: Category | None = None
    for cat in CATEGORIES:
        if cat in scores and (best is None or scores[cat] > scores[best]):
            best = cat
    return best


def classify(
    fields: Mapping[str, str],
    *,
    modality: str | None = None,
    explicit: Category | None = None,
    rules: Rules | None = None,
) -> TriageResult:
    """Triage from decoded text fields (DICOM keyword -> text).

    Results are remembered per rule set (the instances of a series carry the same text, and
    classifying is a pure function of it): a repeat costs a dictionary look-up."""
    flag = _check_category(explicit)
    active = rules or default_rules()
    if not (
        all(type(k) is str and type(v) is str for k, v in fields.items())
        and (modality is None or type(modality) is str)
    ):
        return _classify(fields, modality, flag, active)
    key = (tuple(fields.items()), modality, flag)
    global _memo_rules
    with _memo_lock:
        if _memo_rules is not active:
            _memo.clear()
            _memo_rules = active
        result = _memo.get(key)
    if result is None:
        result = _classify(fields, modality, flag, active)
        with _memo_lock:
            if _memo_rules is active:
                if len(_memo) >= MEMO_SIZE:
                    _memo.clear()
                _memo[key] = result
    return result


def clear_memo() -> None:
    """Forget every remembered result (a benchmark's first-instance cost, say)."""
    with _memo_lock:
        _memo.clear()


MEMO_SIZE = 1024
_memo: dict[tuple[Any, ...], TriageResult] = {}
_memo_rules: Rules | None = None
_memo_lock = threading.Lock()


def _classify(
    fields: Mapping[str, str], modality: str | None, flag: Category | None, rules: Rules
) -> TriageResult:
    hits, ignored, stat_hits = find_hits(fields, modality=modality, rules=rules)
    scores: dict[Category, int] = {}
    seen: set[tuple[str, str]] = set()
    for h in hits:
        cat = h.rule.category
        if cat is None or (cat, h.rule.name) in seen:
            continue
        seen.add((cat, h.rule.name))
        scores[cat] = scores.get(cat, 0) + h.rule.weight
    ordered_hits = list(dict.fromkeys(_explain(h) for h in hits))
    stat_reasons = [f"{h.field}: '{h.phrase}' (stat: {h.rule.name})" for h in stat_hits]
    if flag is not None:
        reasons = [f"explicit flag: {flag} (wins over text)"]
        text_cat = _best(scores)
        if text_cat is not None and text_cat != flag:
            reasons.append(f"text alone suggested {text_cat}")
        return TriageResult(
            flag, STAT, tuple([*reasons, *ordered_hits, *stat_reasons][:MAX_REASONS])
        )
    best = _best(scores)
    if best is not None:
        first = [
            r
            for h, r in zip(hits, (_explain(h) for h in hits), strict=True)
            if h.rule.category == best
        ]
        reasons = list(dict.fromkeys([*first, *ordered_hits, *stat_reasons]))
        return TriageResult(best, STAT, tuple(reasons[:MAX_REASONS]))
    if stat_hits:
        reasons = [*stat_reasons, "priority only: no stroke or chest-pain finding in the text"]
        return TriageResult(None, STAT, tuple(reasons[:MAX_REASONS]))
    return TriageResult(None, ROUTINE, tuple(ignored[:MAX_REASONS]))


def merge_results(previous: TriageResult | None, new: TriageResult) -> TriageResult:
    """Combine the triage of a study so far with one recomputed after new series arrived.

    Never silently downgrades: once stat, it stays stat (only a person may downgrade, through
    the worklist's override). The first urgent category is kept (its deadline already runs);
    a stat result without a category takes the category the new text finds.
    """
    if previous is None or previous.priority == ROUTINE:
        return new
    if new.priority == ROUTINE:
        note = "kept stat: later series alone would be routine"
        reasons = previous.reasons if note in previous.reasons else (*previous.reasons, note)
        return TriageResult(previous.category, STAT, reasons[:MAX_REASONS])
    category = previous.category or new.category
    reasons = tuple(dict.fromkeys((*previous.reasons, *new.reasons)))
    return TriageResult(category, STAT, reasons[:MAX_REASONS])


DEFAULT_CALLED_AE_CATEGORIES: dict[str, Category] = {
    "STROKE": "stroke",
    "CHESTPAIN": "chest_pain",
    "CHEST_PAIN": "chest_pain",
}


def _category_name(value: str) -> Category | None:
    key = value.strip().lower().replace("-", "_").replace(" ", "_")
    if key in ("chestpain", "chest_pain"):
        return "chest_pain"
    if key == "stroke":
        return "stroke"
    return None


def category_for_called_ae(called_ae: str, mapping: Mapping[str, str]) -> Category | None:
    """The category a site maps this called AE title to (``STROKE`` -> stroke), else None.

    AE titles compare without padding or case; values may be ``stroke``, ``chest_pain``
    (or ``chest-pain``, ``CHESTPAIN``). Unknown values give None.
    """
    ae = called_ae.strip().upper()
    for key, value in mapping.items():
        if key.strip().upper() == ae:
            return _category_name(value)
    return None
