"""Triage rules: each family fires, hard negatives stay routine, explicit flags win."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worklist.triage import (
    Reason,
    TriageResult,
    category_for_called_ae,
    classify,
    load_rules,
    merge_results,
)
from worklist.triage.errors import RulesError, UnknownCategory

R = "ReasonForTheRequestedProcedure"
S = "StudyDescription"


@pytest.mark.parametrize(
    ("field", "text", "rule"),
    [
        (R, "code stroke", "code stroke"),
        (R, "卒中绿道", "卒中中心"),
        (R, "静脉溶栓评估", "溶栓/取栓"),
        (R, "pre tPA", "thrombolysis"),
        (R, "NIHSS 6", "NIHSS"),
        (R, "急性脑卒中", "卒中"),
        (R, "acute ischemic stroke", "stroke"),
        (R, "急性脑梗死", "脑梗"),
        (R, "脑出血", "脑出血"),
        (R, "intracerebral haemorrhage", "intracranial haemorrhage"),
        (R, "蛛网膜下腔出血", "蛛网膜下腔出血"),
        (R, "短暂性脑缺血发作", "短暂性脑缺血发作"),
        (R, "r/o ICH", "CVA/TIA/ICH/SAH/LVO"),
        (R, "LVO?", "CVA/TIA/ICH/SAH/LVO"),
        (R, "右侧偏瘫", "偏瘫"),
        (R, "right hemiparesis", "hemiparesis"),
        (R, "左侧肢体无力", "肢体无力/麻木"),
        (R, "失语", "失语/言语不清"),
        (R, "slurred speech", "aphasia"),
        (R, "口角歪斜", "口角歪斜"),
        (R, "facial droop", "facial droop"),
        (S, "CT灌注", "CT灌注"),
        (S, "CT perfusion", "CT perfusion"),
        (S, "头颈CTA", "头颈CTA"),
        (S, "CTA head and neck", "CTA head and neck"),
        (S, "MR DWI acute", "DWI acute infarct"),
        (R, "绿色通道 头颅CT", "绿色通道 (stroke context)"),
    ],
)
def test_stroke_rule_fires(field: str, text: str, rule: str) -> None:
    result = classify({field: text})
    assert result.category == "stroke", result
    assert result.priority == "stat"
    assert any(
        (r.code, r.category, r.term, r.field) == ("term", "stroke", rule, field)
        for r in result.reasons
    )


@pytest.mark.parametrize(
    ("field", "text", "rule"),
    [
        (R, "胸痛中心", "胸痛中心"),
        (R, "chest pain unit", "chest pain centre"),
        (R, "急诊PCI", "急诊PCI"),
        (R, "绿色通道 胸闷", "绿色通道 (chest context)"),
        (S, "胸痛三联", "胸痛三联"),
        (S, "triple rule-out", "胸痛三联"),
        (R, "胸闷胸痛", "胸痛"),
        (R, "心前区疼痛", "胸痛"),
        (R, "chest pain", "chest pain"),
        (R, "撕裂样胸背痛", "撕裂样疼痛"),
        (R, "急性冠脉综合征", "急性冠脉综合征"),
        (R, "acute coronary syndrome", "acute coronary syndrome"),
        (R, "ACS", "ACS/MI"),
        (R, "? MI", "ACS/MI"),
        (R, "STEMI", "STEMI"),
        (R, "心梗", "心梗"),
        (R, "心肌梗死", "心梗"),
        (R, "myocardial infarction", "myocardial infarction"),
        (R, "不稳定型心绞痛", "不稳定型心绞痛"),
        (R, "unstable angina", "unstable angina"),
        (R, "主动脉夹层", "主动脉夹层"),
        (R, "aortic dissection", "aortic dissection"),
        (R, "肺栓塞", "肺栓塞"),
        (R, "肺动脉栓塞", "肺栓塞"),
        (R, "pulmonary embolism", "pulmonary embolism"),
        (S, "冠脉CTA", "冠脉CTA"),
        (S, "coronary CTA", "coronary CTA"),
        (S, "主动脉CTA", "主动脉CTA"),
        (S, "CTA aorta", "aortic CTA"),
        (S, "肺动脉CTA", "肺动脉CTA"),
        (S, "CTPA", "肺动脉CTA"),
        (S, "CT pulmonary angiogram", "CT pulmonary angiogram"),
    ],
)
def test_chest_pain_rule_fires(field: str, text: str, rule: str) -> None:
    result = classify({field: text})
    assert result.category == "chest_pain", result
    assert any((r.category, r.term) == ("chest_pain", rule) for r in result.reasons)


@pytest.mark.parametrize(
    "fields",
    [
        {R: "无胸痛"},
        {R: "否认胸痛"},
        {R: "no chest pain"},
        {R: "denies chest pain"},
        {R: "patient denies chest pain or weakness"},
        {S: "头颅CT", R: "陈旧性脑梗死"},
        {R: "脑梗死后遗症"},
        {S: "头颅CT复查", R: "脑出血"},
        {R: "history of stroke"},
        {R: "follow-up ICH"},
        {S: "胸椎MR"},
        {R: "胸腔积液"},
        {S: "冠脉钙化积分"},
        {S: "coronary calcium score"},
        {S: "3D MIP", R: "PET-CT"},
        {R: "stroke volume"},
        {R: "四肢无力"},
        {R: "双下肢麻木"},
        {R: "周围性面瘫"},
        {R: "PE excluded"},
        {R: "s/p MI"},
        {S: "冠脉CTA", R: "支架术后复查"},
        {R: "胸闷"},
        {R: "头晕"},
    ],
)
def test_hard_negative_stays_routine(fields: dict[str, str]) -> None:
    result = classify(fields)
    assert result == TriageResult(None, "routine", result.reasons), result
    assert all(r.code == "not_counted" for r in result.reasons)


def test_negation_scope_ends_at_clause_break() -> None:
    assert classify({R: "无胸痛，突发左侧肢体无力"}).category == "stroke"
    assert classify({R: "no fever, acute chest pain"}).category == "chest_pain"
    assert classify({R: "无明显诱因出现胸痛"}).category == "chest_pain"  # not a negation
    assert classify({R: "肢体无力伴言语不清"}).category == "stroke"  # 无力 is not 无
    assert classify({R: "排除肺栓塞"}).category == "chest_pain"  # rule out = suspicion
    assert classify({R: "反复胸痛3年，加重2小时"}).category == "chest_pain"
    assert classify({R: "陈旧性脑梗死，今突发右侧肢体无力"}).category == "stroke"


def test_abbreviations_need_word_boundaries_and_case() -> None:
    assert classify({S: "MIP reconstruction"}).priority == "routine"
    assert classify({S: "PET"}).priority == "routine"
    assert classify({R: "mi"}).priority == "routine"  # case-sensitive
    assert classify({R: "急性MI"}).category == "chest_pain"  # Chinese next to it is fine
    assert classify({R: "vitiated"}).priority == "routine"  # no 'tia' inside words


def test_stat_priority_without_category() -> None:
    result = classify({S: "腹部CT", "RequestedProcedurePriority": "STAT"})
    assert result.category is None and result.priority == "stat"
    assert str(result.reasons[0]) == "RequestedProcedurePriority: 'STAT' (stat: STAT priority)"
    assert classify({"RequestedProcedurePriority": "ROUTINE"}).priority == "routine"
    # STAT in another field means nothing
    assert classify({S: "STAT"}).priority == "routine"


def test_explicit_flag_wins_over_text() -> None:
    result = classify({R: "胸痛"}, explicit="stroke")
    assert result.category == "stroke" and result.priority == "stat"
    assert result.reasons[0] == Reason("explicit_flag", category="stroke")
    assert Reason("text_suggested", category="chest_pain") in result.reasons
    assert classify({R: "无胸痛"}, explicit="chest_pain").category == "chest_pain"
    with pytest.raises(UnknownCategory):
        classify({}, explicit="trauma")  # type: ignore[arg-type]


def test_called_ae_mapping() -> None:
    mapping = {"STROKE": "stroke", "CHESTPAIN": "chest_pain", "OTHER": "trauma"}
    assert category_for_called_ae("STROKE", mapping) == "stroke"
    assert category_for_called_ae(" chestpain  ", mapping) == "chest_pain"
    assert category_for_called_ae("TELEREAD", mapping) is None
    assert category_for_called_ae("OTHER", mapping) is None


def test_merge_never_silently_downgrades() -> None:
    stroke = classify({R: "急性脑梗死"})
    routine = classify({S: "胸部CT"})
    merged = merge_results(stroke, routine)
    assert merged.category == "stroke" and merged.priority == "stat"
    assert merged.reasons[0] == stroke.reasons[0]
    assert merge_results(None, routine) == routine
    assert merge_results(routine, stroke) == stroke  # a CTA series can make it urgent
    chest = classify({R: "胸痛"})
    assert merge_results(stroke, chest).category == "stroke"  # first urgent category stays
    stat_only = classify({"RequestedProcedurePriority": "STAT"})
    assert merge_results(stat_only, chest).category == "chest_pain"


def test_reason_names_field_phrase_rule() -> None:
    result = classify({S: "脑梗死"})
    assert [str(r) for r in result.reasons] == ["StudyDescription: '脑梗死' (stroke: 脑梗)"]


def test_county_rules_file_extends_builtin(tmp_path: Path) -> None:
    county = tmp_path / "county.yaml"
    county.write_text(
        "categories:\n"
        "  stroke:\n"
        "    - {name: 县卒中, kind: alert, patterns: ['卒中急救站']}\n"
        "lookalikes:\n"
        "  - {name: 卒中宣教, patterns: ['卒中宣教']}\n",
        encoding="utf-8",
    )
    rules = load_rules(county)
    assert classify({R: "胸痛"}, rules=rules).category == "chest_pain"  # built-in kept
    assert classify({R: "卒中宣教"}, rules=rules).priority == "routine"
    replaced = tmp_path / "only.yaml"
    replaced.write_text(
        "extends: none\ncategories:\n  stroke:\n    - {name: x, patterns: ['xyz']}\n",
        encoding="utf-8",
    )
    only = load_rules(replaced)
    assert classify({R: "xyz"}, rules=only).category == "stroke"
    assert classify({R: "胸痛"}, rules=only).priority == "routine"


def test_bad_rules_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("categories:\n  trauma:\n    - {name: x, patterns: ['y']}\n", "utf-8")
    with pytest.raises(RulesError):
        load_rules(bad)
    bad.write_text("categories:\n  stroke:\n    - {name: x, patterns: ['(']}\n", "utf-8")
    with pytest.raises(RulesError):
        load_rules(bad)


ADM = "AdmittingDiagnosesCodeSequence"


@pytest.mark.parametrize(
    ("fields", "category", "reason"),
    [
        (
            {ADM: "I63.9^I10^脑梗死"},
            "stroke",
            f"{ADM}: code I63.9 (I10) '脑梗死' (stroke: ICD-10 I63",
        ),
        ({ADM: "I61.900x002^ICD-10^x"}, "stroke", f"{ADM}: code I61.900x002 (ICD-10) 'x' (stroke"),
        ({ADM: "G45.9"}, "stroke", f"{ADM}: code G45.9 (stroke: ICD-10 G45"),
        ({ADM: "I21.4^^"}, "chest_pain", f"{ADM}: code I21.4 (chest_pain: ICD-10 I21"),
        ({ADM: "I71.0^I10^Dissection"}, "chest_pain", f"{ADM}: code I71.0 (I10) 'Dissection'"),
        ({ADM: "59282003^SCT^PE"}, "chest_pain", f"{ADM}: code 59282003 (SCT) 'PE'"),
        # a code outranks text: coded stroke with a chest-pain phrase is stroke
        ({ADM: "I63.9^I10^脑梗死", R: "胸痛"}, "stroke", f"{ADM}: code I63.9"),
        # several items, as one instance (' ; ') and as the county merges instances (' | ')
        ({ADM: "I10^I10^高血压 ; E11^I10^糖尿病 | I60.9^I10^SAH"}, "stroke", f"{ADM}: code I60.9"),
        # the meaning of a code no rule knows is read as text
        ({ADM: "X99^99HIS^急性脑梗死"}, "stroke", f"{ADM}: '脑梗死' (stroke: 脑梗)"),
    ],
)
def test_codes_are_read_and_named_as_the_reason(
    fields: dict[str, str], category: str, reason: str
) -> None:
    result = classify(fields)
    assert (result.category, result.priority) == (category, "stat"), result
    assert str(result.reasons[0]).startswith(reason), result.reasons


@pytest.mark.parametrize(
    "fields",
    [
        {ADM: "I69.3^I10^脑梗死"},  # a sequela: its meaning is not read as text either
        {ADM: "I25.2^I10^心肌梗死"},  # old MI
        {ADM: "I71.4^I10^腹主动脉瘤"},  # aneurysm without rupture
        {ADM: "Z86.7^I10^脑梗死个人史"},
        {ADM: "1755008^SCT^Old myocardial infarction"},
        {ADM: "I63.9^I10^脑梗死", S: "头颅CT复查"},  # a follow-up exam discounts a code
        {ADM: "I10^I10^高血压 ; R07.0^I10^咽痛"},  # codes outside the urgent blocks
        {ADM: "B020ZZZ^I10P^x"},  # ICD-10-PCS is a procedure code
        {"ProcedureCodeSequence": "I63^99HIS^头颅CT"},  # a local code only looks like ICD-10
    ],
)
def test_codes_that_are_not_urgent(fields: dict[str, str]) -> None:
    result = classify(fields)
    assert result.priority == "routine", result


def test_stat_order_for_a_head_ct_is_flagged_with_the_order_as_reason() -> None:
    result = classify({S: "CT HEAD", "RequestedProcedurePriority": "STAT", "Modality": "CT"})
    assert result.priority == "stat"
    assert str(result.reasons[0]) == "RequestedProcedurePriority: 'STAT' (stat: STAT priority)"


@pytest.mark.parametrize(
    ("fields", "category"),
    [
        ({R: "走路不稳"}, None),  # a sign alone
        ({R: "突发走路不稳"}, "stroke"),  # + a sudden-onset cue in its field
        ({R: "走路不稳2小时"}, "stroke"),
        ({R: "走路不稳", "RequestedProcedurePriority": "STAT"}, "stroke"),  # + an urgent order
        ({R: "走路不稳", "RequestedProcedurePriority": "HIGH"}, "stroke"),
        ({R: "头晕、走路不稳"}, "stroke"),  # two signs of one family
        ({R: "头晕"}, None),
        ({R: "突发头晕"}, None),  # dizziness is not sudden-defined: it needs another sign
        ({R: "走路不稳半年"}, None),  # chronic
        ({R: "突发走路不稳半年"}, None),
        ({R: "胸闷气短"}, None),  # two signs of different families (ACS, PE)
        ({R: "胸闷伴大汗"}, "chest_pain"),
        ({R: "急性支气管炎,胸闷"}, None),  # 急性 is an onset only in the sign's clause
        ({R: "突发呼吸困难"}, None),  # dyspnoea needs a second PE sign
        ({R: "呼吸困难伴D-二聚体升高"}, "chest_pain"),
        ({R: "无胸痛,突发走路不稳"}, "stroke"),
    ],
)
def test_signs_count_as_a_family(fields: dict[str, str], category: str | None) -> None:
    result = classify(fields)
    assert result.category == category, result
    if category is None:
        assert result.priority == "routine" or "RequestedProcedurePriority" in fields


def test_sign_reasons_name_the_onset_and_the_order() -> None:
    result = classify({R: "突发走路不稳"})
    assert [str(r) for r in result.reasons] == [
        "ReasonForTheRequestedProcedure: '走路不稳' (stroke: 平衡/步态障碍; sudden onset '突发')",
    ]
    assert result.reasons[0].onset == "突发"
    result = classify({R: "复视", "RequestedProcedurePriority": "STAT"})
    assert [str(r) for r in result.reasons[:2]] == [
        "ReasonForTheRequestedProcedure: '复视' (stroke: 复视/视物障碍)",
        "RequestedProcedurePriority: 'STAT' (urgent order: +1 to stroke signs, balance_eyes)",
    ]
    order = result.reasons[1]
    assert (order.code, order.category, order.family) == ("urgent_order", "stroke", "balance_eyes")


def test_explain_lists_every_match_with_family_and_source() -> None:
    from worklist.triage.classify import explain

    rows = explain({R: "陈旧性脑梗死，言语不清", ADM: "I69.3^I10^脑梗死"})
    by_phrase = {r["phrase"]: r for r in rows}
    assert by_phrase["脑梗死"]["counted"] is False
    assert by_phrase["脑梗死"]["why_not"] == "history '陈旧'"
    assert by_phrase["言语不清"]["counted"] is True
    assert by_phrase["言语不清"]["family"] == "speech"
    assert "NIHSS" in by_phrase["言语不清"]["source"]
    assert by_phrase["I69.3 (I10) '脑梗死'"]["why_not"] == "not urgent"


def test_history_and_follow_up_reach_over_the_rest_of_a_clause() -> None:
    assert classify({R: "卒中发作3年余"}).priority == "routine"
    assert classify({R: "胸痛伴大汗病史"}).priority == "routine"
    assert classify({R: "stroke alert 5 years ago"}).priority == "routine"
    assert classify({R: "既往脑梗死伴左侧肢体无力"}).priority == "routine"  # 伴 keeps history
    assert classify({R: "不伴口角歪斜"}).priority == "routine"
    assert classify({R: "陈旧性脑梗死伴新发右侧肢体无力"}).category == "stroke"
    assert classify({R: "反复胸痛3年，加重2小时"}).category == "chest_pain"
    assert classify({R: "术后突发呼吸困难、血氧下降"}).category == "chest_pain"
    assert classify({R: "surveillance of acute ischemic stroke"}).priority == "routine"
    assert classify({R: "车祸致颅内出血"}).priority == "routine"  # trauma, not stroke
    assert classify({R: "非外伤性蛛网膜下腔出血"}).category == "stroke"
    assert classify({R: "nontraumatic intracranial hemorrhage"}).category == "stroke"


def test_a_reason_is_data_that_survives_storage_and_reads_in_english() -> None:
    """What the pages word in the reader's language: the code and its parts, never the
    English; an older gateway's or row's plain string is kept as words."""
    result = classify({R: "突发胸痛 code stroke"}, explicit="chest_pain")
    for reason in result.reasons:
        stored = json.loads(json.dumps(reason.to_json()))
        assert Reason.from_json(stored) == reason
    term = next(r for r in result.reasons if r.code == "term")
    assert term.field == R and term.category and term.term and term.found
    assert term.found in "突发胸痛 code stroke"
    assert str(result.reasons[0]) == "explicit flag: chest_pain (wins over text)"
    assert Reason.from_json("called AE URGENT") == Reason("text", note="called AE URGENT")
    assert Reason.from_json({"code": "no such code", "x": 1}).code == "text"
    long = Reason.from_json({"code": "set_by", "by": "李医生", "note": "x" * 9000})
    assert long.note == "x" * 500
