"""Lossless recompression before upload: fewer bytes over a slow township uplink.

``recompress(part10, method)`` returns the Part-10 bytes to upload instead of the spooled
original, or ``None`` to upload the original. It never loses information:

- ``jpegls`` / ``j2k``: images in a native syntax (Explicit or Implicit VR Little Endian) with
  1 sample (MONOCHROME1, MONOCHROME2, PALETTE COLOR) or 3 (RGB), 8 or 16 bits allocated and
  at most 16 stored, are re-encoded with pydicom's encoders (JPEG-LS Lossless through
  ``pyjpegls``, JPEG 2000 Lossless through ``pylibjpeg-openjpeg``). The result is decoded
  again and used only if its pixel data equals the original's, array for array; the SOP
  Instance UID is kept (a lossless transfer syntax change is the same instance).
- ``deflate`` (and the fallback of the two above for instances they do not take: SR, PDFs,
  32-bit dose grids, odd photometrics): Explicit VR Little Endian datasets become Deflated
  Explicit VR Little Endian. The deflated stream is the received dataset bytes exactly, so
  inflating it gives back the original bytes.
- Already compressed, Big Endian, or anything that fails: ``None``.

What was done is written into the stored object's own file meta header, the place PS3.10
gives for per-file information that is not part of the instance: Transfer Syntax UID (the new
one), Private Information Creator UID ``RECOMPRESSION_CREATOR_UID`` and Private Information
(0002,0102), a JSON document ``{"method", "original_transfer_syntax", "original_size",
"original_sha256", "original_dataset_sha256"}``. The dataset's other elements are left as
received (no Derivation Description: the image is not derived, and Lossy Image Compression
stays what the modality said). The spool keeps the original; the announced size and sha256
are the uploaded object's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import warnings
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Literal

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    generate_uid,
)
from pynetdicom.dsutils import encode_file_meta

logger = logging.getLogger(__name__)

Method = Literal["none", "jpegls", "j2k", "deflate"]
METHODS: tuple[str, ...] = ("none", "jpegls", "j2k", "deflate")
RECOMPRESSION_CREATOR_UID = generate_uid(entropy_srcs=["teleread gateway lossless recompression"])
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_CODECS = {"jpegls": JPEGLSLossless, "j2k": JPEG2000Lossless}
_MONO = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
_PREAMBLE = b"\x00" * 128 + b"DICM"
# pydicom's decoders and encoders are not documented as thread-safe, and warning filters are
# process-global: one recompression at a time (the forwarder is one thread anyway)
_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Recompressed:
    data: bytes  # the Part-10 file to upload
    method: str  # "jpegls", "j2k" or "deflate" (what was actually done)
    transfer_syntax_uid: str
    sha256: str
    original_size: int
    original_sha256: str

    @property
    def saved_bytes(self) -> int:
        return self.original_size - len(self.data)


def split_part10(part10: bytes) -> tuple[FileMetaDataset, int] | None:
    """(file meta, offset of the dataset) of a Part-10 file, or None."""
    if len(part10) < 144 or part10[128:132] != b"DICM" or part10[132:136] != b"\x02\x00\x00\x00":
        return None
    offset = 144 + int.from_bytes(part10[140:144], "little")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            meta = dcmread(BytesIO(part10[:offset]), force=True).file_meta
        except Exception:
            return None
    return meta, offset


def recompression_note(part10: bytes) -> dict[str, Any] | None:
    """The gateway's note in a stored object's file meta (None: not recompressed by us)."""
    split = split_part10(part10)
    if split is None:
        return None
    meta = split[0]
    if str(meta.get("PrivateInformationCreatorUID", "")) != RECOMPRESSION_CREATOR_UID:
        return None
    try:
        note: dict[str, Any] = json.loads(bytes(meta.PrivateInformation).rstrip(b"\x00 "))
    except (ValueError, AttributeError):
        return None
    return note


def _with_note(meta: FileMetaDataset, ts: str, note: dict[str, Any], dataset: bytes) -> bytes:
    new = FileMetaDataset()
    for elem in meta:
        if elem.tag not in (0x00020000, 0x00020010, 0x00020100, 0x00020102):
            new.add(elem)
    new.TransferSyntaxUID = UID(ts)
    new.PrivateInformationCreatorUID = RECOMPRESSION_CREATOR_UID
    text = json.dumps(note, sort_keys=True, separators=(",", ":")).encode()
    new.PrivateInformation = text + b" " * (len(text) % 2)
    return b"".join((_PREAMBLE, encode_file_meta(new), dataset))


def _deflate(dataset: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = compressor.compress(dataset) + compressor.flush()
    return out + b"\x00" * (len(out) % 2)  # PS3.5 A.5: padded to even length


def inflate(dataset: bytes) -> bytes:
    """The dataset bytes of a Deflated Explicit VR Little Endian stream."""
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(dataset)


def _image_eligible(ds: Dataset) -> bool:
    try:
        spp = int(ds.SamplesPerPixel)
        photometric = str(ds.PhotometricInterpretation).strip()
        allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    except (AttributeError, TypeError, ValueError):
        return False
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return False
    if not ((spp == 1 and photometric in _MONO) or (spp == 3 and photometric == "RGB")):
        return False
    return allocated in (8, 16) and 1 < stored <= allocated


def _encode_image(part10: bytes, ts: str) -> bytes | None:
    """The dataset re-encoded with ``ts`` if its decoded pixels equal the original's."""
    ds = dcmread(BytesIO(part10))
    if "PixelData" not in ds or not _image_eligible(ds):
        return None
    original = ds.pixel_array
    ds.compress(ts, generate_instance_uid=False)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    encoded = out.getvalue()
    check = dcmread(BytesIO(encoded))
    if not np.array_equal(check.pixel_array, original):
        logger.warning(
            "recompressed pixel data differs from the original; uploading the original",
            extra={"action": "recompress_mismatch", "sop_uid": str(ds.SOPInstanceUID)},
        )
        return None
    split = split_part10(encoded)
    return encoded[split[1] :] if split else None


def recompress(part10: bytes, method: str) -> Recompressed | None:
    """The bytes to upload instead of ``part10`` (see the module docstring), or None."""
    if method == "none":
        return None
    split = split_part10(part10)
    if split is None:
        return None
    meta, offset = split
    original_ts = str(meta.get("TransferSyntaxUID", ""))
    if original_ts not in _NATIVE:
        return None
    dataset: bytes | None = None
    done, ts = method, ""
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method in _CODECS:
            ts = _CODECS[method]
            try:
                dataset = _encode_image(part10, ts)
            except Exception as exc:  # an encoder refusing odd data: fall back, never fail
                logger.info(
                    "not recompressed as an image",
                    extra={"action": "recompress_skipped", "error": repr(exc)[:200]},
                )
                dataset = None
        if dataset is None and original_ts == ExplicitVRLittleEndian:
            done, ts = "deflate", DeflatedExplicitVRLittleEndian
            dataset = _deflate(part10[offset:])
    if dataset is None:
        return None
    original_sha256 = hashlib.sha256(part10).hexdigest()
    note = {
        "method": done,
        "original_transfer_syntax": original_ts,
        "original_size": len(part10),
        "original_sha256": original_sha256,
        "original_dataset_sha256": hashlib.sha256(part10[offset:]).hexdigest(),
    }
    data = _with_note(meta, ts, note, dataset)
    if len(data) >= len(part10):  # nothing gained: send what came
        return None
    return Recompressed(
        data=data,
        method=done,
        transfer_syntax_uid=ts,
        sha256=hashlib.sha256(data).hexdigest(),
        original_size=len(part10),
        original_sha256=original_sha256,
    )
