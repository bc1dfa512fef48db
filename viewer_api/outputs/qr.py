"""QR codes (segno) drawn as vector squares in a reportlab flowable: sharp at any print size."""

from __future__ import annotations

import segno
from reportlab.lib.colors import black, white
from reportlab.platypus import Flowable

QUIET_ZONE = 4  # modules of white border the standard asks for


def qr_matrix(text: str) -> list[list[bool]]:
    """The dark/light modules of ``text``'s QR code (error correction M), no border."""
    code = segno.make_qr(text, error="m")
    return [[bool(v) for v in row] for row in code.matrix]


class QRCode(Flowable):
    """A square QR code ``size`` points wide, quiet zone included."""

    def __init__(self, text: str, size: float) -> None:
        super().__init__()
        self.text = text
        self.matrix = qr_matrix(text)
        self.size = size
        self.width = self.height = size

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return self.size, self.size

    def draw(self) -> None:
        canvas = self.canv
        modules = len(self.matrix) + 2 * QUIET_ZONE
        step = self.size / modules
        canvas.setFillColor(white)
        canvas.rect(0, 0, self.size, self.size, stroke=0, fill=1)
        canvas.setFillColor(black)
        for r, row in enumerate(self.matrix):
            y = self.size - (r + QUIET_ZONE + 1) * step
            for c, dark in enumerate(row):
                if dark:
                    x = (c + QUIET_ZONE) * step
                    # a hair larger than a module so neighbours leave no hairline gaps
                    canvas.rect(x, y, step * 1.02, step * 1.02, stroke=0, fill=1)


def qr_svg(text: str, *, scale: int = 4) -> str:
    """``text``'s QR code as an inline SVG element."""
    return str(segno.make_qr(text, error="m").svg_inline(scale=scale))


__all__ = ["QRCode", "qr_matrix", "qr_svg"]
