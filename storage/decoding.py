"""Which of pydicom's decoding plugins decodes a stored object's pixel data: chosen here, once,
so that the gateway's check of a recompressed file (its rebuild, ``storage.recompressed``)
decodes exactly as the county does when it rebuilds the original or renders a frame.

Left alone, pydicom tries the installed plugins of a transfer syntax in its own order (GDCM,
pylibjpeg, then pyjpegls for JPEG-LS) and keeps the first that decodes. For JPEG-LS that is
pylibjpeg-libjpeg, about four times slower than CharLS through pyjpegls for the same samples
(a 512x512 16-bit CT slice: ~19 ms against ~5 ms of CPU); CharLS is also the encoder the
gateway uses, so a recompressed slice is decoded by the library that wrote it. For JPEG 2000,
pylibjpeg-openjpeg is faster than Pillow's OpenJPEG (~25 ms against ~28 ms) and is named so
that installing GDCM would not change the decoder under stored notes. A preferred plugin that
is not installed leaves the choice to pydicom (its stock order).
"""

from __future__ import annotations

import functools

from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGLSLossless, JPEGLSNearLossless

PREFERRED: dict[str, str] = {
    JPEGLSLossless: "pyjpegls",
    JPEGLSNearLossless: "pyjpegls",
    JPEG2000Lossless: "pylibjpeg",
    JPEG2000: "pylibjpeg",
}


@functools.cache
def decoding_plugin(transfer_syntax: str) -> str:
    """The ``decoding_plugin`` argument of pydicom's decoders for ``transfer_syntax``: the
    preferred plugin when it is installed, else ``""`` (pydicom's own order)."""
    name = PREFERRED.get(str(transfer_syntax), "")
    if not name:
        return ""
    try:
        available = get_decoder(transfer_syntax).available_plugins
    except NotImplementedError:
        return ""
    return name if name in available else ""


__all__ = ["PREFERRED", "decoding_plugin"]
