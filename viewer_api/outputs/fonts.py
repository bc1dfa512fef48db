"""The report's font: a packaged CJK TrueType font, found at run time, embedded as a subset.

The PDF carries the glyphs it uses (every PDF reader shows it, with or without Asian font
packs). reportlab embeds TrueType outlines only, so the font must be TrueType (``.ttf`` or
``.ttc``): Debian's ``fonts-wqy-microhei`` is the default (Chinese, Latin and the
punctuation a report uses, in one face); ``TELEREAD_API_REPORT_FONT`` names another file.
A character the font lacks is printed as ``MISSING`` rather than left invisible.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont

logger = logging.getLogger(__name__)

# TrueType CJK fonts from Debian packages, most suitable first
CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # fonts-wqy-microhei
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),  # fonts-wqy-zenhei
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),  # fonts-arphic-uming
)
DEBIAN_PACKAGE = "fonts-wqy-microhei"
# a font must have all of these to print a report
MISSING = "□"
PROBE = "县人民医院男女岁影像诊断报告·：（）【】0123456789ABCXYZabcxyz-./%" + MISSING
FONT_NAME = "ReportCJK"


class ReportFontMissing(Exception):
    """No CJK TrueType font for the PDF report."""

    def __init__(self, tried: list[str]) -> None:
        super().__init__(
            "No CJK TrueType font for the PDF report (tried: "
            + ", ".join(tried)
            + f"). Install Debian's {DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}) "
            "or set TELEREAD_API_REPORT_FONT to a .ttf or .ttc file with Chinese glyphs."
        )


@dataclass(frozen=True)
class ReportFont:
    name: str  # as registered with reportlab
    path: Path
    codepoints: frozenset[int]

    def has(self, char: str) -> bool:
        return ord(char) in self.codepoints

    def printable(self, text: str) -> str:
        """``text`` with every character the font lacks replaced by ``MISSING``."""
        if all(ord(ch) in self.codepoints or ch in "\n\t" for ch in text):
            return text
        out = "".join(ch if ch in "\n\t" or self.has(ch) else MISSING for ch in text)
        logger.warning(
            "report text has characters the font lacks",
            extra={"action": "report_font_missing_glyphs", "font": str(self.path)},
        )
        return out


_lock = threading.Lock()
_loaded: dict[str, ReportFont] = {}


def _open(path: Path, name: str) -> TTFont | None:
    try:
        return TTFont(name, str(path), subfontIndex=0)
    except (OSError, TTFError) as exc:
        logger.warning(
            "report font unusable",
            extra={"action": "report_font_unusable", "font": str(path), "error": str(exc)},
        )
        return None


def report_font(configured: str = "") -> ReportFont:
    """The font reports are printed in (loaded and registered once per process).

    ``configured`` (``TELEREAD_API_REPORT_FONT``) is the only candidate when set. Raises
    ``ReportFontMissing`` when no candidate exists or covers ``PROBE``.
    """
    with _lock:
        if configured in _loaded:
            return _loaded[configured]
        candidates = [Path(configured)] if configured else list(CANDIDATES)
        for path in candidates:
            if not path.is_file():
                continue
            name = f"{FONT_NAME}{len(_loaded)}"
            font = _open(path, name)
            if font is None:
                continue
            codepoints = frozenset(font.face.charToGlyph)
            if not all(ord(ch) in codepoints for ch in PROBE):
                logger.warning(
                    "report font lacks common glyphs",
                    extra={"action": "report_font_unusable", "font": str(path)},
                )
                continue
            pdfmetrics.registerFont(font)
            found = ReportFont(name=name, path=path, codepoints=codepoints)
            _loaded[configured] = found
            logger.info(
                "report font loaded", extra={"action": "report_font_loaded", "font": str(path)}
            )
            return found
        raise ReportFontMissing([str(p) for p in candidates])


__all__ = ["CANDIDATES", "MISSING", "ReportFont", "ReportFontMissing", "report_font"]
