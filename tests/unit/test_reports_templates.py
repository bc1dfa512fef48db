"""Report templates: the built-in files, matching rules, a county's own directory, and the
errors a bad file gives."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from worklist.models import Series, Study
from worklist.report_templates import (
    NoTemplate,
    TemplateError,
    TemplateSettings,
    best_template,
    get_templates,
    load_templates,
    parse_template,
    rank_templates,
)

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
BUILTIN = load_templates()


def _study(
    modality: str,
    description: str,
    *,
    category: str | None = None,
    body_part: str = "",
    text: dict[str, str] | None = None,
) -> Study:
    study = Study(
        study_instance_uid="1.2.3",
        modalities=modality,
        study_description=description,
        category=category,
        text_fields=text or {},
        received_at=NOW,
        last_instance_at=NOW,
    )
    study.series = [
        Series(series_instance_uid="1.2.3.1", modality=modality, body_part_examined=body_part)
    ]
    return study


def test_builtin_templates_are_chinese_with_english_keys() -> None:
    keys = [t.key for t in BUILTIN]
    assert keys == ["chest_cta_pain", "chest_dr", "generic_ct", "generic_dr", "head_ct_stroke"]
    for template in BUILTIN:
        assert template.source == "builtin"
        assert template.findings and template.impression
        assert any("\u4e00" <= ch <= "\u9fff" for ch in template.name + template.findings)


@pytest.mark.parametrize(
    ("expected", "study"),
    [
        ("head_ct_stroke", _study("CT", "头颅CT平扫", category="stroke", body_part="HEAD")),
        # category first: a stroke CT without head keywords still gets the stroke template
        ("head_ct_stroke", _study("CT", "急诊", category="stroke")),
        ("chest_cta_pain", _study("CT", "胸部CTA", category="chest_pain", body_part="CHEST")),
        ("chest_cta_pain", _study("CT\\SR", "主动脉CTA", category="chest_pain")),
        ("chest_dr", _study("DX", "胸部正位", body_part="CHEST")),
        ("chest_dr", _study("CR", "", body_part="chest")),  # body part, any case
        ("chest_dr", _study("DX", "体检", text={"RequestedProcedureDescription": "胸片"})),
        ("generic_dr", _study("DX", "左膝关节正侧位", body_part="KNEE")),
        # a routine head CT is not given the stroke template
        ("generic_ct", _study("CT", "头颅CT平扫", body_part="HEAD")),
        ("generic_ct", _study("CT", "腹部CT", category="stroke_mimic")),
    ],
)
def test_best_match(expected: str, study: Study) -> None:
    assert best_template(BUILTIN, study=study).key == expected


def test_ranking_and_no_match() -> None:
    ranked = rank_templates(BUILTIN, study=_study("CT", "头颅", category="stroke"))
    assert [t.key for _, t in ranked] == ["head_ct_stroke", "generic_ct"]
    assert ranked[0][0] > ranked[1][0]
    with pytest.raises(NoTemplate):
        best_template(BUILTIN, study=_study("MR", "头颅MR"))
    with pytest.raises(NoTemplate):
        best_template((), study=_study("CT", "头颅"))


def test_county_directory_adds_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "generic_ct.yaml").write_text(
        "key: generic_ct\nname: 本县CT\nmatch: {modalities: [ct]}\nfindings: 本县\n",
        encoding="utf-8",
    )
    (tmp_path / "head_mr.yaml").write_text(
        "key: head_mr\nname: 头颅MR\nmatch: {modalities: [MR], keywords: [头颅]}\n"
        "findings: 所见\nimpression: 印象\n",
        encoding="utf-8",
    )
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    mine = load_templates(tmp_path)
    assert len(mine) == 6
    by_key = {t.key: t for t in mine}
    assert by_key["generic_ct"].name == "本县CT" and by_key["generic_ct"].modalities == ("CT",)
    assert by_key["generic_ct"].source.endswith("generic_ct.yaml")
    assert best_template(mine, study=_study("MR", "头颅MR")).key == "head_mr"
    assert best_template(mine, study=_study("CT", "腹部")).findings == "本县"

    monkeypatch.setenv("TELEREAD_WORKLIST_REPORT_TEMPLATES_DIR", str(tmp_path))
    assert TemplateSettings().report_templates_dir == tmp_path
    assert get_templates(tmp_path) is get_templates(tmp_path)  # loaded once


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("key: [unclosed\n", "not valid YAML"),
        ("- a list\n", "file"),
        ("key: Bad-Key\nname: x\n", "key"),
        ("key: ok\n", "name"),
        ("key: ok\nname: x\nfindngs: typo\n", "findngs"),
        ("key: ok\nname: x\nmatch: {modality: [CT]}\n", "match.modality"),
        ("key: ok\nname: x\nmatch: {keywords: 头}\n", "match.keywords"),
    ],
)
def test_bad_template_files_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=r"^county/x\.yaml: ") as err:
        parse_template(text, source="county/x.yaml")
    assert message in str(err.value)


def test_bad_county_directories(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="not found"):
        load_templates(tmp_path / "missing")
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text("key: same\nname: x\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="repeats"):
        load_templates(tmp_path)
