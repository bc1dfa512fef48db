"""What a reader would find in a PDF: its text, fonts left unembedded, characters drawn with
no glyph (``.notdef`` or an empty outline), and the QR codes on its pages (decoded from a
rendering of the page, as a phone would)."""

from __future__ import annotations

import re
from io import BytesIO
from typing import Any

from pypdf import PdfReader
from pypdf.generic import ContentStream, DictionaryObject, TextStringObject

FONT_FILES = ("/FontFile", "/FontFile2", "/FontFile3")
_BFCHAR = re.compile(rb"beginbfchar(.*?)endbfchar", re.S)
_BFRANGE = re.compile(rb"beginbfrange(.*?)endbfrange", re.S)
_HEX = re.compile(rb"<([0-9A-Fa-f]*)>")
_RANGE = re.compile(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>")


def pdf_text(data: bytes) -> str:
    reader = PdfReader(BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def _fonts(reader: PdfReader) -> dict[str, DictionaryObject]:
    found: dict[str, DictionaryObject] = {}
    for page in reader.pages:
        resources = page.get("/Resources")
        fonts = resources.get_object().get("/Font") if resources else None
        for name, ref in (fonts.get_object() if fonts else {}).items():
            found[str(name)] = ref.get_object()
    return found


def _descriptor(font: DictionaryObject) -> DictionaryObject | None:
    if "/DescendantFonts" in font:
        font = font["/DescendantFonts"][0].get_object()
    descriptor = font.get("/FontDescriptor")
    return descriptor.get_object() if descriptor is not None else None


def unembedded_fonts(data: bytes) -> list[str]:
    """The base names of fonts the PDF uses without carrying their glyphs."""
    missing = []
    for font in _fonts(PdfReader(BytesIO(data))).values():
        descriptor = _descriptor(font)
        if descriptor is None or not any(key in descriptor for key in FONT_FILES):
            missing.append(str(font.get("/BaseFont")))
    return missing


def _to_unicode(font: DictionaryObject) -> dict[int, str]:
    stream = font.get("/ToUnicode")
    if stream is None:
        return {}
    data = stream.get_object().get_data()

    def text(hex_digits: bytes) -> str:
        return bytes.fromhex(hex_digits.decode()).decode("utf-16-be")

    mapping = {}
    for block in _BFCHAR.findall(data):
        values = _HEX.findall(block)
        for code, target in zip(values[::2], values[1::2], strict=True):
            mapping[int(code, 16)] = text(target)
    for block in _BFRANGE.findall(data):
        for low, high, start in _RANGE.findall(block):
            first = ord(text(start))
            for n, code in enumerate(range(int(low, 16), int(high, 16) + 1)):
                mapping[code] = chr(first + n)
    return mapping


class _Glyphs:
    """A simple TrueType font's code -> (character, glyph drawn) as a reader resolves it."""

    def __init__(self, font: DictionaryObject) -> None:
        from fontTools.ttLib import TTFont

        if font.get("/Subtype") != "/TrueType":
            raise AssertionError(f"unexpected font type {font.get('/Subtype')}")
        descriptor = _descriptor(font)
        assert descriptor is not None and "/FontFile2" in descriptor
        self.face = TTFont(BytesIO(descriptor["/FontFile2"].get_object().get_data()))
        cmap = self.face["cmap"].getcmap(3, 0) or self.face["cmap"].getcmap(1, 0)
        self.cmap: dict[int, str] = dict(cmap.cmap) if cmap else {}
        self.unicode = _to_unicode(font)
        self.notdef = self.face.getGlyphOrder()[0]

    def problem(self, code: int) -> str | None:
        char = self.unicode.get(code, "")
        glyph = self.cmap.get(code, self.notdef)
        if not char or char == "\x00":
            return f"code {code}: no character"
        if glyph == self.notdef:
            return f"{char!r}: .notdef"
        if self.face["glyf"][glyph].numberOfContours == 0 and not char.isspace():
            return f"{char!r}: empty glyph"
        return None


def _shown(operands: list[Any]) -> list[bytes]:
    out = []
    for operand in operands:
        if isinstance(operand, list):
            out += _shown(operand)
        elif isinstance(operand, TextStringObject):
            out.append(operand.get_original_bytes())
        elif isinstance(operand, bytes):
            out.append(bytes(operand))
    return out


def missing_glyphs(data: bytes) -> list[str]:
    """Every drawn character that has no real glyph in its (embedded) font."""
    reader = PdfReader(BytesIO(data))
    problems: list[str] = []
    for page in reader.pages:
        fonts = page["/Resources"].get_object()["/Font"].get_object()
        glyphs: dict[str, _Glyphs] = {}
        current: _Glyphs | None = None
        for operands, operator in ContentStream(page.get_contents(), reader).operations:
            if operator == b"Tf":
                name = str(operands[0])
                if name not in glyphs:
                    glyphs[name] = _Glyphs(fonts[name].get_object())
                current = glyphs[name]
            elif operator in (b"Tj", b"TJ", b"'", b'"'):
                assert current is not None, "text shown before a font was set"
                for raw in _shown(operands):
                    problems += [p for code in raw if (p := current.problem(code))]
    return problems


def qr_codes(data: bytes, *, scale: float = 4.0) -> list[str]:
    """The texts of every QR code on the PDF's pages (pages rendered at 288 dpi)."""
    import pypdfium2
    import zxingcpp

    found: list[str] = []
    document = pypdfium2.PdfDocument(data)
    try:
        for page in document:
            image = page.render(scale=scale).to_pil()
            found += [r.text for r in zxingcpp.read_barcodes(image) if r.format.name == "QRCode"]
    finally:
        document.close()
    return found
