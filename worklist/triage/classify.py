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

Codes (``...CodeSequence`` fields, ``worklist.triage.codes``) a code rule knows count with
their own weight and come first in the reasons; a sequela or chronic code is not urgent.

Signs (kind ``sign``: 走路不稳, 复视, 呼吸困难, 胸闷...) count only as a family: the weights of
a family's distinct sign rules, plus 1 for each ``sudden`` sign with an onset cue in its
field (突发, 2小时, sudden; 急性 in its clause) and 1 for an urgent order
(RequestedProcedurePriority STAT or HIGH), must reach ``threshold`` on their own.

Category: the one with the highest total weight of distinct matched rules, at least
``threshold`` (ties: stroke). With no category, a STAT order (RequestedProcedurePriority STAT
/ 急) or a bare 绿色通道 makes the priority stat with category None. Explicit flags (called AE
title, a user) win.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worklist.triage.codes import ITEM_SEPARATOR, Code, is_code_field, normalise_code, parse_codes
from worklist.triage.errors import UnknownCategory
from worklist.triage.normalise import normalise
from worklist.triage.result import ROUTINE, STAT, Reason, TriageResult
from worklist.triage.rules import (
    CATEGORIES,
    CODE_KIND,
    SIGN_KIND,
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
_FIELD_FOLLOW_UP = ("diagnosis", "exam")
_BREAK_PUNCTUATION = re.compile(r"[\s,;.!?:。;、]+")
# a full stop ends a clause, a decimal point (4.5小时) does not
_CLAUSE_BREAK = re.compile(r"[,;!?:。;!?\n|]|(?<!\d)\.|\.(?!\d)")
MAX_REASONS = 12


@dataclass(frozen=True, slots=True)
class Hit:
    field: str
    phrase: str
    rule: Rule
    why_not: str | None = None  # None: the match counts (negation, history, follow-up)
    onset: str = ""  # a sudden sign: the onset cue in its field


@dataclass(slots=True)
class Matches:
    """Everything the rules found in a study's text fields."""

    hits: list[Hit] = field(default_factory=list)  # category matches, counted or not
    notes: list[Reason] = field(default_factory=list)  # look-alikes
    stat: list[Hit] = field(default_factory=list)  # priority-only matches
    order: list[Hit] = field(default_factory=list)  # urgent-order matches


@dataclass(slots=True)
class Scored:
    scores: dict[Category, int]
    counted: list[Hit]  # hits that count towards a category, in order (codes first)
    sign_notes: list[Reason]  # signs that reached their family's threshold with help
    sign_alone: list[Hit]  # signs whose family stayed below the threshold


def _mask(text: str, rules: Rules) -> tuple[str, list[tuple[str, str]]]:
    masked: list[tuple[str, str]] = []
    for name, regex in rules.lookalikes:

        def blank(m: re.Match[str], name: str = name) -> str:
            masked.append((m.group(), name))
            return " " * len(m.group())

        text = regex.sub(blank, text)
    return text, masked


def _scope_start(text: str, start: int, rules: Rules, *, history: bool = False) -> int:
    """Where the negation (or history) scope of a match at ``start`` begins: after the last
    scope break before it (a history scope goes on over ``history_keeps``: 既往X伴Y)."""
    begin = 0
    for m in rules.scope_breaks.finditer(text, 0, start):
        if history and rules.history_keeps.fullmatch(_BREAK_PUNCTUATION.sub("", m.group())):
            continue
        begin = m.end()
    return begin


def _clause_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    left = max((m.end() for m in _CLAUSE_BREAK.finditer(text, 0, start)), default=0)
    right_m = _CLAUSE_BREAK.search(text, end)
    return left, right_m.start() if right_m else len(text)


def _clause(text: str, start: int, end: int) -> str:
    left, right = _clause_bounds(text, start, end)
    return text[left:right]


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
    left, right = _clause_bounds(text, start, end)
    clause = text[left:right]
    hist = (
        rules.history_before.search(text[_scope_start(text, start, rules, history=True) : start])
        or rules.history_after.match(after)
        or rules.history_later.search(text, end, right)
    )
    if hist and not rules.acute.search(after):
        return f"history '{hist.group().strip()}'"
    fu = rules.follow_up.search(clause)
    # a scope break after the cue and before the term (术后突发呼吸困难) starts a new event
    if fu and not (
        left + fu.end() <= start and rules.scope_breaks.search(text, left + fu.end(), start)
    ):
        return f"follow-up '{fu.group().strip()}'"
    # a diagnosis or an exam: a follow-up cue anywhere in its field, unless its clause is acute
    if rule.kind in _FIELD_FOLLOW_UP and not rules.acute.search(clause):
        fu = rules.follow_up.search(text)
        if fu:
            return f"follow-up '{fu.group().strip()}'"
    if (
        exam_follow_up
        and field != exam_follow_up[0]
        and rule.kind in _FIELD_FOLLOW_UP
        and not rules.acute.search(clause)
    ):
        return f"follow-up: {exam_follow_up[0]} says '{exam_follow_up[1]}'"
    return None


def _onset(text: str, start: int, end: int, rules: Rules) -> str:
    """A sudden-onset cue for a sign: anywhere in its field, or (急性, acute) in its clause."""
    cue = rules.onset.search(text) if rules.onset is not None else None
    if cue is None and rules.onset_in_clause is not None:
        cue = rules.onset_in_clause.search(_clause(text, start, end))
    return cue.group().strip() if cue else ""


def _explain(hit: Hit) -> Reason:
    return Reason(
        "code" if hit.rule.kind == CODE_KIND else "term",
        category=hit.rule.category,
        family=hit.rule.family or None,
        term=hit.rule.name,
        found=hit.phrase,
        field=hit.field,
        onset=hit.onset or None,
    )


def _not_counted(hit: Hit, why: str | None = None) -> Reason:
    return Reason(
        "not_counted",
        category=hit.rule.category,
        family=hit.rule.family or None,
        term=hit.rule.name,
        found=hit.phrase,
        field=hit.field,
        note=why or (hit.rule.name if hit.rule.category is None else hit.why_not),
    )


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


def _read_codes(field: str, value: str, rules: Rules) -> tuple[str, list[Hit]]:
    """A code field: (the meanings of codes no rule knows, as text; the codes rules know,
    those of a not-urgent rule with ``why_not``)."""
    text: list[str] = []
    hits: list[Hit] = []
    for code in parse_codes(value):
        rule = code_rule(code, field, rules)
        if rule is None:
            if code.meaning:
                text.append(code.meaning)
        else:
            why = "not urgent" if rule.category is None else None
            hits.append(Hit(field, code.shown(), rule, why_not=why))
    return ITEM_SEPARATOR.join(text), hits


def find_matches(
    fields: Mapping[str, str], *, modality: str | None = None, rules: Rules | None = None
) -> Matches:
    """Every rule match in the fields, each with why it does not count (if it does not)."""
    rules = rules or default_rules()
    found = Matches()
    texts: dict[str, str] = {}
    coded: list[Hit] = []
    for kw, value in fields.items():
        if not value:
            continue
        if is_code_field(kw):
            meanings, code_hits = _read_codes(kw, str(value), rules)
            value = meanings
            coded.extend(code_hits)
        masked, looks = _mask(normalise(str(value)), rules)
        texts[kw] = masked
        found.notes.extend(
            Reason("not_counted", found=p.strip(), field=kw, note=f"look-alike: {n}")
            for p, n in looks
        )
    context = " | ".join([*texts.values(), modality or ""])
    exam_follow_up: tuple[str, str] | None = None
    for kw in FOLLOW_UP_FIELDS:
        m = rules.follow_up.search(texts.get(kw, ""))
        if m and not rules.acute.search(texts[kw]):
            exam_follow_up = (kw, m.group().strip())
    for hit in coded:  # a code is a diagnosis: a follow-up exam name discounts it too
        if hit.why_not is None and exam_follow_up and hit.field != exam_follow_up[0]:
            said = f"follow-up: {exam_follow_up[0]} says '{exam_follow_up[1]}'"
            hit = Hit(hit.field, hit.phrase, hit.rule, why_not=said)
        found.hits.append(hit)
    # each rule on its own: re does not optimise an alternation of many patterns, so one
    # joined "any rule" regex to skip texts cost more than the rules it skipped
    for kw, text in texts.items():
        for rule in rules.rules:
            if rule.fields and kw not in rule.fields:
                continue
            if rule.requires_any is not None and not rule.requires_any.search(context):
                continue
            if rule.unless_any is not None and rule.unless_any.search(context):
                continue
            for m in rule.regex.finditer(text):
                phrase = m.group().strip()
                why = _why_not(text, m.start(), m.end(), rules, exam_follow_up, rule, kw)
                onset = ""
                if why is None and rule.sudden:
                    onset = _onset(text, m.start(), m.end(), rules)
                found.hits.append(Hit(kw, phrase, rule, why, onset))
    for kw, text in texts.items():
        for rules_of, out in ((rules.stat, found.stat), (rules.urgent_order, found.order)):
            for rule in rules_of:
                if rule.fields and kw not in rule.fields:
                    continue
                for m in rule.regex.finditer(text):
                    if _why_not(text, m.start(), m.end(), rules, None, rule, kw) is None:
                        out.append(Hit(kw, m.group().strip(), rule))
                        break
    return found


def _score(found: Matches, rules: Rules) -> Scored:
    """Category totals: distinct rules' weights; a family of signs only when it reaches the
    threshold on its own (sign weights, +1 per sudden sign with an onset cue, +1 for an
    urgent order)."""
    counted = [h for h in found.hits if h.why_not is None and h.rule.category is not None]
    weights: dict[Category, dict[str, int]] = {}
    signs: dict[tuple[Category, str], dict[str, int]] = {}
    for h in counted:
        cat = h.rule.category
        assert cat is not None
        if h.rule.kind == SIGN_KIND:
            in_family = signs.setdefault((cat, h.rule.family or h.rule.name), {})
            weight = h.rule.weight + (1 if h.onset else 0)
            in_family[h.rule.name] = max(in_family.get(h.rule.name, 0), weight)
        else:
            weights.setdefault(cat, {})[h.rule.name] = h.rule.weight
    order = found.order[0] if found.order else None
    passed: set[tuple[Category, str]] = set()
    sign_notes: list[Reason] = []
    for (cat, family), by_rule in signs.items():
        total = sum(by_rule.values()) + (1 if order else 0)
        if total >= rules.threshold:
            passed.add((cat, family))
            weights.setdefault(cat, {})[f"signs: {family}"] = total
            if order:
                sign_notes.append(
                    Reason(
                        "urgent_order",
                        category=cat,
                        family=family,
                        term=order.rule.name,
                        found=order.phrase,
                        field=order.field,
                    )
                )
    scores = {
        cat: sum(by_rule.values())
        for cat, by_rule in weights.items()
        if sum(by_rule.values()) >= rules.threshold
    }
    keep = [
        h
        for h in counted
        if h.rule.kind != SIGN_KIND or (h.rule.category, h.rule.family or h.rule.name) in passed
    ]
    keep.sort(key=lambda h: h.rule.kind != CODE_KIND)  # codes first, otherwise in order
    alone = [h for h in counted if h.rule.kind == SIGN_KIND and h not in keep]
    return Scored(scores, keep, sign_notes, alone)


def explain(
    fields: Mapping[str, str], *, modality: str | None = None, rules: Rules | None = None
) -> list[dict[str, Any]]:
    """Every matched term with its category, rule, family, source, and whether it counted
    (``teleread triage --explain``)."""
    rules = rules or default_rules()
    found = find_matches(fields, modality=modality, rules=rules)
    scored = _score(found, rules)
    counted = {id(h) for h in scored.counted}
    rows: list[dict[str, Any]] = []
    for h in found.hits:
        if id(h) in counted:
            why = None
        elif h.why_not is not None:
            why = h.why_not
        elif h.rule.kind == SIGN_KIND:
            why = f"a sign alone: family {h.rule.family} below {rules.threshold}"
        else:
            why = f"{h.rule.category} total below {rules.threshold}"
        rows.append(
            {
                "field": h.field,
                "phrase": h.phrase,
                "category": h.rule.category,
                "rule": h.rule.name,
                "kind": h.rule.kind,
                "family": h.rule.family,
                "source": h.rule.source,
                "weight": h.rule.weight,
                "counted": why is None,
                **({"sudden_onset": h.onset} if h.onset else {}),
                **({"why_not": why} if why else {}),
            }
        )
    for h in [*found.stat, *found.order]:
        rows.append(
            {
                "field": h.field,
                "phrase": h.phrase,
                "category": None,
                "rule": h.rule.name,
                "kind": "stat" if h in found.stat else "urgent_order",
                "family": h.rule.family,
                "source": h.rule.source,
                "weight": 0,
                "counted": True,
            }
        )
    rows.extend({"note": str(n)} for n in found.notes)
    return rows


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
    found = find_matches(fields, modality=modality, rules=rules)
    scored = _score(found, rules)
    scores, hits = scored.scores, scored.counted
    ignored = list(
        dict.fromkeys(
            [
                *found.notes,
                *(_not_counted(h) for h in found.hits if h.why_not is not None),
                *(_not_counted(h, f"a sign alone: {h.rule.name}") for h in scored.sign_alone),
            ]
        )
    )
    ordered_hits = list(dict.fromkeys([*(_explain(h) for h in hits), *scored.sign_notes]))
    stat_hits = found.stat
    stat_reasons = [
        Reason("stat_order", term=h.rule.name, found=h.phrase, field=h.field) for h in stat_hits
    ]
    if flag is not None:
        reasons = [Reason("explicit_flag", category=flag)]
        text_cat = _best(scores)
        if text_cat is not None and text_cat != flag:
            reasons.append(Reason("text_suggested", category=text_cat))
        return TriageResult(
            flag, STAT, tuple([*reasons, *ordered_hits, *stat_reasons][:MAX_REASONS])
        )
    best = _best(scores)
    if best is not None:
        first = [_explain(h) for h in hits if h.rule.category == best]
        reasons = list(dict.fromkeys([*first, *ordered_hits, *stat_reasons]))
        return TriageResult(best, STAT, tuple(reasons[:MAX_REASONS]))
    if stat_hits:
        reasons = [*stat_reasons, Reason("priority_only")]
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
        note = Reason("kept_stat")
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
