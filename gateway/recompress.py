"""Lossless recompression before upload: fewer bytes over a slow township uplink.

``recompress(part10, method)`` returns the Part-10 file to upload instead of the spooled
original, or ``None`` to upload the original. It never loses a bit: every file it returns
carries a note (``storage.recompressed``) from which the spooled original is rebuilt, and it
returns a file only after rebuilding the original from it and finding the same sha256.

- ``jpegls`` / ``j2k``: images in a native syntax (Explicit or Implicit VR Little Endian) with
  1 sample (MONOCHROME1, MONOCHROME2, PALETTE COLOR) or 3 interleaved ones (RGB), 8 or 16 bits
  allocated and at most 16 stored, get their pixel data re-encoded with pydicom's encoders
  (JPEG-LS Lossless through ``pyjpegls``, JPEG 2000 Lossless through ``pylibjpeg-openjpeg``).
  The SOP Instance UID is kept (a lossless transfer syntax change is the same instance).
- ``deflate`` (and the fallback of the two above for instances they do not take: SR, PDFs,
  32-bit dose grids, odd photometrics, pixel data whose bytes the codec does not give back):
  Explicit VR Little Endian datasets become Deflated Explicit VR Little Endian; inflating the
  stream gives back the received dataset bytes.
- ``None`` (upload the original): ``none``; already compressed or Big Endian; smaller than
  ``MIN_BYTES`` (the note and the county's rebuild would cost more than the link time saved)
  or larger than ``MAX_BYTES`` (the memory it would take);
  saving less than ``MIN_SAVING`` of the size; anything whose rebuild is not bit-identical
  (logged) or that fails.

The stored object's file meta says what was done: Transfer Syntax UID (the new one) and the
note in Private Information (0002,0102). The dataset's other elements are left as received
(no Derivation Description: the image is not derived, and Lossy Image Compression stays what
the modality said). The spool keeps the original; the announced size and sha256 are the
uploaded object's.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import warnings
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Literal

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)
from pynetdicom.dsutils import encode_file_meta

from storage.recompressed import (
    CREATOR_UID,
    Rebuild,
    encode_note,
    make_note,
    rebuild_original,
    split_part10,
)

logger = logging.getLogger(__name__)

Method = Literal["none", "jpegls", "j2k", "deflate"]
METHODS: tuple[str, ...] = ("none", "jpegls", "j2k", "deflate")
MIN_BYTES = 16 * 1024  # below this an instance crosses a 20 Mbit/s link in under 7 ms
MIN_SAVING = 0.15  # a smaller saving is not worth the county's rebuild on request
# encoding and checking hold about four times the instance in memory: every single-frame
# image fits (a mammogram is ~27 MB), bigger multi-frame objects are sent as received
MAX_BYTES = 32 << 20
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_CODECS = {"jpegls": JPEGLSLossless, "j2k": JPEG2000Lossless}
_MONO = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
_PREAMBLE = b"\x00" * 128 + b"DICM"
_PIXEL_DATA = 0x7FE00010
# pydicom's encoders are not documented as thread-safe, and warning filters are
# process-global: one encoding at a time
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


def _stored_file(meta: FileMetaDataset, ts: str, note: bytes, dataset: bytes) -> bytes:
    new = FileMetaDataset()
    for elem in meta:
        if elem.tag not in (0x00020000, 0x00020010, 0x00020100, 0x00020102):
            new.add(elem)
    new.TransferSyntaxUID = UID(ts)
    new.PrivateInformationCreatorUID = CREATOR_UID
    new.PrivateInformation = note
    return b"".join((_PREAMBLE, encode_file_meta(new), dataset))


def _deflate(dataset: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = compressor.compress(dataset) + compressor.flush()
    return out + b"\x00" * (len(out) % 2)  # PS3.5 A.5: padded to even length


def _image_eligible(ds: Dataset) -> bool:
    try:
        spp = int(ds.SamplesPerPixel)
        photometric = str(ds.PhotometricInterpretation).strip()
        allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        planar = int(ds.get("PlanarConfiguration", 0) or 0)
    except (AttributeError, TypeError, ValueError):
        return False
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return False
    if not ((spp == 1 and photometric in _MONO) or (spp == 3 and photometric == "RGB")):
        return False
    return allocated in (8, 16) and 1 < stored <= allocated and planar == 0


def _encode_image(part10: bytes, ts: str) -> tuple[bytes, int, int] | None:
    """(the dataset with its pixel data encoded as ``ts``, where the received pixel value
    starts in ``part10``, its length without padding), or None when not an eligible image."""
    ds = dcmread(BytesIO(part10))
    if "PixelData" not in ds or not _image_eligible(ds):
        return None
    raw = ds.get_item(_PIXEL_DATA)  # as read: a RawDataElement, where its value starts
    value_at, value_length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    length = get_expected_length(ds, unit="bytes")
    if value_at is None or value_length in (None, 0xFFFFFFFF) or length > value_length:
        return None
    ds.compress(ts, generate_instance_uid=False)
    out = DicomBytesIO()  # the dataset alone: the stored file's meta is made by _stored_file
    out.is_implicit_VR, out.is_little_endian = False, True  # every codec syntax's encoding
    write_dataset(out, ds)
    return out.getvalue(), value_at, length


def _checked(
    part10: bytes,
    meta: FileMetaDataset,
    offset: int,
    *,
    method: str,
    ts: str,
    dataset: bytes,
    rebuild: Rebuild,
    insert_at: int,
    payload_length: int,
) -> tuple[bytes, dict[str, Any]] | None:
    """The stored file for ``dataset`` and its note, if the original rebuilds from it bit
    for bit."""
    note = make_note(
        part10,
        method=method,
        original_transfer_syntax=str(meta.TransferSyntaxUID),
        dataset_offset=offset,
        rebuild=rebuild,
        insert_at=insert_at,
        payload_length=payload_length,
    )
    data = _stored_file(meta, ts, encode_note(note), dataset)
    try:
        same = rebuild_original(data, note) == part10
    except Exception as exc:  # a decoder refusing its own output: keep the original
        same = False
        logger.info(
            "rebuild from the recompressed file failed",
            extra={"action": "recompress_rebuild_failed", "error": repr(exc)[:200]},
        )
    if not same:
        logger.warning(
            "the original does not rebuild bit for bit from its %s recompression; not used",
            method,
            extra={"action": "recompress_mismatch", "method": method},
        )
        return None
    return data, note


def recompress(
    part10: bytes,
    method: str,
    *,
    min_bytes: int = MIN_BYTES,
    min_saving: float = MIN_SAVING,
    max_bytes: int = MAX_BYTES,
) -> Recompressed | None:
    """The bytes to upload instead of ``part10`` (see the module docstring), or None.
    ``min_bytes``, ``min_saving``, ``max_bytes``: the thresholds (a negative saving keeps a
    larger file: tests use it to rebuild every file)."""
    if method == "none" or not min_bytes <= len(part10) <= max_bytes:
        return None
    split = split_part10(part10)
    if split is None:
        return None
    meta, offset = split
    original_ts = str(meta.get("TransferSyntaxUID", ""))
    if original_ts not in _NATIVE:
        return None
    checked: tuple[bytes, dict[str, Any]] | None = None
    done = method
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method in _CODECS:
            ts = _CODECS[method]
            try:
                encoded = _encode_image(part10, ts)
            except Exception as exc:  # an encoder refusing odd data: fall back, never fail
                logger.info(
                    "not recompressed as an image",
                    extra={"action": "recompress_skipped", "error": repr(exc)[:200]},
                )
                encoded = None
            if encoded is not None:
                dataset, value_at, length = encoded
                checked = _checked(
                    part10,
                    meta,
                    offset,
                    method=method,
                    ts=ts,
                    dataset=dataset,
                    rebuild="pixels",
                    insert_at=value_at,
                    payload_length=length,
                )
        if checked is None and original_ts == ExplicitVRLittleEndian:
            done, ts = "deflate", DeflatedExplicitVRLittleEndian
            checked = _checked(
                part10,
                meta,
                offset,
                method=done,
                ts=ts,
                dataset=_deflate(part10[offset:]),
                rebuild="inflate",
                insert_at=offset,
                payload_length=len(part10) - offset,
            )
    if checked is None or len(checked[0]) > len(part10) * (1 - min_saving):
        return None  # nothing gained worth the trouble: send what came
    data, note = checked
    return Recompressed(
        data=data,
        method=done,
        transfer_syntax_uid=ts,
        sha256=hashlib.sha256(data).hexdigest(),
        original_size=len(part10),
        original_sha256=note["original_sha256"],  # of part10, and its rebuild matched it
    )
