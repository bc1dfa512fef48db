"""Text normalisation before matching: NFKC (full-width ＣＴ -> CT), odd spacing."""

from __future__ import annotations

import re
import unicodedata

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_SINGLE_CJK_RE = re.compile(rf"^[{_CJK}]$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normalise(text: str) -> str:
    """NFKC, controls and odd whitespace collapsed, letter-spaced Chinese joined.

    "头颅ＣＴ  平扫" -> "头颅CT 平扫"; "脑 梗 死" -> "脑梗死" (a run of single ideographs
    separated by single spaces is one word spaced out). Spaces between longer Chinese words are
    kept: they often separate phrases ("陈旧性脑梗 突发失语").
    """
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL_RE.sub(" ", text)
    tokens = text.split()
    out: list[str] = []
    run: list[str] = []
    for tok in tokens:
        if _SINGLE_CJK_RE.match(tok):
            run.append(tok)
            continue
        if run:
            out.append("".join(run))
            run = []
        out.append(tok)
    if run:
        out.append("".join(run))
    return " ".join(out)
