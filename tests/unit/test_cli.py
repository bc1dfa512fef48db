"""The `teleread` command's own behaviour: arguments in, JSON or messages out."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from teleread.cli import main


def test_triage_prints_one_json_object_per_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from teleread.demo import write_demo_studies

    write_demo_studies(tmp_path, ct_slices=2, ct_size=32, dx_size=32)
    ct = get_testdata_file("CT_small.dcm")
    assert ct is not None
    assert main(["triage", str(tmp_path), str(ct)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (
        len(rows) == 2 + 1 + 1 + 1 + 1
    )  # stroke 2, CTA 1, DX 1, spine 1 (slices // 4 >= 1), CT_small
    by_path = {Path(r["path"]).name: r for r in rows}
    assert by_path["CT_small.dcm"]["priority"] == "routine"
    categories = {r["category"] for r in rows}
    assert categories == {"stroke", "chest_pain", None}
    for row in rows:
        assert {
            "path",
            "sop_instance_uid",
            "study_instance_uid",
            "category",
            "priority",
            "reasons",
        } <= row.keys()


def test_triage_explain_names_every_matched_term(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from worklist.triage.cases import Case
    from worklist.triage.evaluate import case_bytes

    case = Case(
        id="x",
        expect="stroke",
        enc="gbk-as-latin1",
        fields={
            "StudyDescription": "头颅CT",
            "ReasonForTheRequestedProcedure": "无胸痛，突发走路不稳",
        },
        codes={"AdmittingDiagnosesCodeSequence": ["I69.3^I10^脑梗死后遗症"]},
    )
    (tmp_path / "a.dcm").write_bytes(case_bytes(case))
    assert main(["triage", "--explain", str(tmp_path / "a.dcm")]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["category"] == "stroke"
    by_rule = {m["rule"]: m for m in row["explain"] if "rule" in m}
    walk = by_rule["平衡/步态障碍"]
    assert (walk["counted"], walk["family"], walk["sudden_onset"]) == (True, "balance_eyes", "突发")
    assert walk["source"].startswith("BE-FAST B")
    assert by_rule["胸痛"]["counted"] is False and by_rule["胸痛"]["why_not"] == "negated by '无'"
    code = by_rule["ICD-10 I69 脑血管病后遗症 sequelae of cerebrovascular disease (history)"]
    assert (code["kind"], code["counted"], code["source"]) == ("code", False, "ICD-10 I69")
    assert main(["triage", str(tmp_path / "a.dcm")]) == 0
    assert "explain" not in json.loads(capsys.readouterr().out)


def test_sites_and_users_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert (
        main(["sites", "add", "TS05", "--name", "五号镇", "--ae", "CT_TS05", "--data-dir", data])
        == 0
    )
    assert "CT_TS05" in capsys.readouterr().out
    # the same AE title cannot belong to two sites
    assert (
        main(["sites", "add", "TS06", "--name", "六号镇", "--ae", "CT_TS05", "--data-dir", data])
        == 1
    )

    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    assert (
        main(
            [
                "users",
                "add",
                "nurse5",
                "--role",
                "clinic",
                "--site",
                "TS05",
                "--password-stdin",
                "--data-dir",
                data,
            ]
        )
        == 0
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert (
        main(
            ["users", "add", "dr5", "--role", "radiologist", "--password-stdin", "--data-dir", data]
        )
        == 2
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("long enough pw\n"))
    # a clinic account needs its site
    assert (
        main(["users", "add", "nurse6", "--role", "clinic", "--password-stdin", "--data-dir", data])
        == 1
    )
    err = capsys.readouterr().err
    assert "at least 8" in err and "teleread:" in err


def test_password_is_never_an_argument() -> None:
    with pytest.raises(SystemExit):
        main(["users", "add", "x", "--role", "admin", "--password", "secret123"])


def test_serve_keeps_objects_in_the_data_dir_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded store's root is configuration handed to the store, not an environment
    variable written behind the other parts' backs."""
    import os

    from teleread.allinone import embedded_storage_settings
    from teleread.embedded import DataDir

    data_dir = DataDir.resolve(str(tmp_path / "data"))
    monkeypatch.delenv("TELEREAD_STORAGE_ROOT", raising=False)
    assert embedded_storage_settings(data_dir).root == data_dir.objects
    assert "TELEREAD_STORAGE_ROOT" not in os.environ
    monkeypatch.setenv("TELEREAD_STORAGE_ROOT", str(tmp_path / "elsewhere"))
    assert embedded_storage_settings(data_dir).root == tmp_path / "elsewhere"
