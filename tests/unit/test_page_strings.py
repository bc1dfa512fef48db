"""The pages speak one language at a time: every string they name has both a Chinese and an
English text, and every error code the API answers with has a translation (the pages show
the code's words, never the server's English detail)."""

from __future__ import annotations

import re
from pathlib import Path

from viewer_api import errors
from viewer_api.web.pages import PAGES_DIR, STATIC_DIR, WEB_DIR
from worklist.triage import (
    CODE_SEQUENCE_KEYWORDS,
    REQUEST_CODE_SEQUENCE_KEYWORDS,
    REQUEST_KEYWORDS,
    TRIAGE_KEYWORDS,
)
from worklist.triage.result import REASON_CODES

_ENTRY = re.compile(r'^\s+(\w+): \[\s*"((?:[^"\\]|\\.)*)",\s*"((?:[^"\\]|\\.)*)",?\s*\],$', re.M)


def strings() -> dict[str, tuple[str, str]]:
    text = (STATIC_DIR / "i18n.js").read_text(encoding="utf-8")
    body = text[text.index("const STRINGS = {") : text.index("\n};")]
    found = {m.group(1): (m.group(2), m.group(3)) for m in _ENTRY.finditer(body)}
    entries = [line for line in body.splitlines() if re.match(r"^\s+\w+: \[", line)]
    assert len(found) == len(entries), "an entry is not [Chinese, English]"
    return found


def test_every_api_error_code_has_words_in_both_languages() -> None:
    codes = {p.code for p in errors.ERRORS.values()} | {errors.INTERNAL.code}
    codes |= set(errors.CODES_BY_STATUS.values())
    table = strings()
    missing = sorted(c for c in codes if f"err_{c}" not in table)
    assert missing == [], f"add err_<code> to static/i18n.js for: {missing}"
    for code in codes:
        zh, en = table[f"err_{code}"]
        assert re.search(r"[\u4e00-\u9fff]", zh) and en.isascii() and en, code


def test_every_named_string_exists() -> None:
    table = strings()
    named: set[str] = set()
    scripts = [p for p in STATIC_DIR.glob("*.js") if p.name != "i18n.js"]
    for path in [*PAGES_DIR.glob("*.html"), *WEB_DIR.glob("*.html"), *scripts]:
        text = path.read_text(encoding="utf-8")
        named |= set(re.findall(r'data-i18n(?:-placeholder|-title)?="(\w+)"', text))
        named |= set(re.findall(r'\bt\("(\w+)"\)', text))
    assert sorted(named - set(table)) == []


def test_english_texts_have_no_chinese() -> None:
    for key, (_zh, en) in strings().items():
        if key != "lang_toggle":  # the toggle names the other language
            assert not re.search(r"[\u4e00-\u9fff]", en), key


def test_the_pages_exist() -> None:
    assert Path(PAGES_DIR / "clinic.html").is_file()


def test_every_field_triage_reads_has_a_name_in_both_languages() -> None:
    """A triage reason names its source field in the page's language."""
    read = {*TRIAGE_KEYWORDS, *REQUEST_KEYWORDS, *CODE_SEQUENCE_KEYWORDS}
    read |= set(REQUEST_CODE_SEQUENCE_KEYWORDS)
    table = strings()
    assert sorted(k for k in read if f"field_{k}" not in table) == []


def test_every_reason_code_has_words() -> None:
    script = (STATIC_DIR / "reasons.js").read_text(encoding="utf-8")
    handled = set(re.findall(r'case "(\w+)":', script))
    assert handled == REASON_CODES - {"not_counted", "text"}  # neither is ever shown
