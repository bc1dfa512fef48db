"""``read_paths`` (``teleread triage``): files and folders, never crashing."""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.data import get_testdata_files

from worklist.triage import read_paths
from worklist.triage.cases import Case
from worklist.triage.evaluate import case_bytes


def test_pydicom_test_files_do_not_crash_and_are_routine() -> None:
    files = get_testdata_files()
    rows = list(read_paths(files))
    assert len(rows) >= len(files)
    read = [r for r in rows if "error" not in r]
    assert len(read) >= 100
    for row in read:
        assert row["priority"] == "routine" and row["category"] is None, row
        json.dumps(row, ensure_ascii=False)
    assert all(set(r) == {"path", "error"} for r in rows if "error" in r)


def test_folder_recursive_with_junk(tmp_path: Path) -> None:
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    case = Case(
        id="x",
        expect="stroke",
        enc="gbk-as-latin1",
        fields={"StudyDescription": "头颅CT", "ReasonForTheRequestedProcedure": "突发失语"},
    )
    (sub / "img.dcm").write_bytes(case_bytes(case))
    (tmp_path / "notes.txt").write_text("not dicom", "utf-8")
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "trunc.dcm").write_bytes(case_bytes(case)[:140])
    rows = {Path(r["path"]).name: r for r in read_paths([tmp_path, tmp_path / "missing.dcm"])}
    img = rows["img.dcm"]
    assert img["category"] == "stroke" and img["priority"] == "stat"
    assert img["sop_instance_uid"] and img["study_instance_uid"]
    assert img["reasons"][0] == "ReasonForTheRequestedProcedure: '失语' (stroke: 失语/言语不清)"
    assert any(r.startswith("charset: ") for r in img["reasons"])
    for name in ("notes.txt", "empty.dcm", "trunc.dcm", "missing.dcm"):
        assert "error" in rows[name], rows[name]
