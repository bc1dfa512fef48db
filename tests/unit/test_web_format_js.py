"""How the pages write a time left and an age (viewer_api/web/static/format.js), run under
node in both languages."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from viewer_api.web.pages import STATIC_DIR

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (runs format.js)")

SCRIPT = """
const store = {};
globalThis.localStorage = {
  getItem: (k) => store[k] ?? null,
  setItem: (k, v) => { store[k] = v; },
};
const { timeLeft, ageText } = await import("%s");
const out = {};
for (const lang of ["zh-CN", "en"]) {
  localStorage.setItem("teleread.lang", lang);
  out[lang] = {
    left: JSON.parse(process.argv[2]).map(([s, total]) => timeLeft(s, total)),
    ages: ["066Y", "011M", "003W", "020D", "", "abc"].map(ageText),
  };
}
console.log(JSON.stringify(out));
"""


def run(tmp_path: Path, cases: list[tuple[float | None, float]]) -> dict[str, Any]:
    script = tmp_path / "format.mjs"
    script.write_text(SCRIPT % (STATIC_DIR / "format.js").as_uri(), encoding="utf-8")
    done = subprocess.run(
        [str(NODE), str(script), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_time_left_reads_as_minutes_with_colour_states(tmp_path: Path) -> None:
    twenty = 20 * 60
    cases = [
        (17 * 60 + 10, twenty),  # ok: more than half left
        (10 * 60, twenty),  # half: amber from half the time
        (5 * 60, twenty),  # quarter: red from a quarter
        (20, twenty),
        (-(3 * 60 + 10), twenty),  # overdue
        (-5, twenty),
        (2 * 3600 + 5 * 60, 4 * 3600),
        (None, twenty),
    ]
    got = run(tmp_path, cases)
    zh = [(c["text"], c["state"]) for c in got["zh-CN"]["left"]]
    assert zh == [
        ("剩 18 分", "ok"),
        ("剩 10 分", "half"),
        ("剩 5 分", "quarter"),
        ("剩 1 分", "quarter"),
        ("超时 3 分", "overdue"),
        ("超时 1 分", "overdue"),
        ("剩 2 时 05 分", "ok"),
        ("", "none"),
    ]
    en = [c["text"] for c in got["en"]["left"]]
    assert en[:2] == ["18 min left", "10 min left"] and en[4] == "3 min overdue"
    assert en[6] == "2 h 5 min left"


def test_ages(tmp_path: Path) -> None:
    got = run(tmp_path, [])
    assert got["zh-CN"]["ages"] == ["66岁", "11个月", "3周", "20天", "", "abc"]
    assert got["en"]["ages"][:2] == ["66 y", "11 mo"]
