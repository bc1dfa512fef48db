"""A stored object that is a lossless recompression of the received file, and that file rebuilt
bit for bit from it.

The gateway may upload a smaller file than the one the modality sent (``gateway.recompress``):
the same instance with its pixel data re-encoded losslessly (JPEG-LS, JPEG 2000), or its whole
dataset deflated. The promise that the store holds what the modality sent still holds, because
the stored object carries a *note* from which the received Part-10 file is rebuilt exactly, and
the note's sha256 of that file checks the result (``ObjectCorrupt`` when it differs).

Where the note lives: the stored object's own File Meta Information, as Private Information
(0002,0102) under Private Information Creator UID (0002,0100) ``CREATOR_UID``. PS3.10 7.1 gives
these two elements for information about *the file* that is not part of the instance, which is
what this is (how this file was made from the received one). The alternatives were worse:
object-store user metadata is capped at 2 KiB on S3, absent from the filesystem store and lost by
``rsync`` or a copy to another bucket; a private block in the dataset would become part of the
instance and travel with it to every PACS it is sent on to, while the file meta is dropped when
the instance leaves by DIMSE. dcm4chee keeps the original file and transcodes on retrieval;
here the link is the scarce part, so the smaller file is the one kept and the original is
rebuilt on request. The dataset is not marked lossy (Lossy Image Compression (0028,2110) stays
what the modality said): nothing was lost.

The note is a JSON document:
``{"format": 2, "method", "original_transfer_syntax", "original_size", "original_sha256",
"original_dataset_sha256", "rebuild", "insert_at", "residual"}``. ``residual`` is every byte
of the received file except one *payload* run starting at ``insert_at`` (zlib, base64): the
128-byte preamble, the file meta exactly as received, each non-pixel element's tag, VR, length
and value as received, in their order, the Pixel Data element's own header, any padding and
any element after it. The payload is got back from the stored object:

- ``rebuild: "pixels"``: the stored pixel data decoded, frame after frame, as little-endian
  native samples (the received Pixel Data value, up to its padding byte, which the residual
  keeps);
- ``rebuild: "inflate"``: the stored dataset inflated (Deflated Explicit VR Little Endian of
  the received dataset bytes themselves).

The received file is ``residual[:insert_at] + payload + residual[insert_at:]``; its sha256 must
equal ``original_sha256`` or ``rebuild_original`` raises ``ObjectCorrupt``. The gateway
rebuilds every file this way before it uploads it, and uploads the original whenever the
rebuild is not bit-identical.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import warnings
import zlib
from io import BytesIO
from typing import Any, BinaryIO, Literal

import numpy as np
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.uid import generate_uid

from storage.decoding import decoding_plugin
from storage.errors import StorageError
from storage.verified import ObjectCorrupt

CREATOR_UID = generate_uid(entropy_srcs=["teleread gateway lossless recompression"])
# the transfer syntaxes a recompressed object may have (JPEG-LS Lossless, JPEG 2000 Lossless,
# Deflated Explicit VR Little Endian): only an object in one of them needs its note read
SYNTAXES = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.1.99"})
NOTE_FORMAT = 2
Rebuild = Literal["pixels", "inflate"]
# pydicom's decoders are not documented as thread-safe and warning filters are process-global
_LOCK = threading.Lock()


class NotRebuildable(StorageError):
    """The stored object holds no note this code can rebuild the received file from."""


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


def read_note(stored: bytes) -> dict[str, Any] | None:
    """The recompression note in a stored object's file meta (None: stored as received)."""
    split = split_part10(stored)
    if split is None:
        return None
    meta = split[0]
    if str(meta.get("PrivateInformationCreatorUID", "")) != CREATOR_UID:
        return None
    try:
        note: dict[str, Any] = json.loads(bytes(meta.PrivateInformation).rstrip(b"\x00 "))
    except (ValueError, AttributeError):
        return None
    return note


def read_note_head(stream: BinaryIO, limit: int = 1 << 20) -> dict[str, Any] | None:
    """``read_note`` from the start of an open object, reading its file meta only (at most
    ``limit`` bytes)."""
    head = stream.read(144)
    if len(head) < 144 or head[128:132] != b"DICM":
        return None
    rest = int.from_bytes(head[140:144], "little")
    if rest > limit:
        return None
    return read_note(head + stream.read(rest))


def make_note(
    original: bytes,
    *,
    method: str,
    original_transfer_syntax: str,
    dataset_offset: int,
    rebuild: Rebuild,
    insert_at: int,
    payload_length: int,
) -> dict[str, Any]:
    """The note for a stored object made from ``original`` whose payload (see the module
    docstring) replaces ``original[insert_at : insert_at + payload_length]``."""
    if not 0 <= insert_at <= insert_at + payload_length <= len(original):
        raise ValueError("payload outside the original file")
    residual = original[:insert_at] + original[insert_at + payload_length :]
    return {
        "format": NOTE_FORMAT,
        "method": method,
        "original_transfer_syntax": original_transfer_syntax,
        "original_size": len(original),
        "original_sha256": hashlib.sha256(original).hexdigest(),
        "original_dataset_sha256": hashlib.sha256(
            memoryview(original)[dataset_offset:]
        ).hexdigest(),
        "rebuild": rebuild,
        "insert_at": insert_at,
        "residual": base64.b64encode(zlib.compress(residual, 9)).decode("ascii"),
    }


def encode_note(note: dict[str, Any]) -> bytes:
    """The note as the value of Private Information (0002,0102): JSON, padded to even length."""
    text = json.dumps(note, sort_keys=True, separators=(",", ":")).encode()
    return text + b" " * (len(text) % 2)


def inflate(dataset: bytes) -> bytes:
    """The dataset bytes of a Deflated Explicit VR Little Endian stream (padding ignored)."""
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(dataset)


def native_pixels(part10: bytes, transfer_syntax: str) -> bytes:
    """A Part-10 file's pixel data (in ``transfer_syntax``) decoded, every frame, as
    little-endian native samples (colour by pixel, no colour-space or palette conversion),
    by the plugin ``storage.decoding`` names; only the elements that describe the pixels
    are parsed."""
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = pixel_array(BytesIO(part10), decoding_plugin=decoding_plugin(transfer_syntax))
    return np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).tobytes()


def rebuild_original(stored: bytes, note: dict[str, Any] | None = None) -> bytes:
    """The received Part-10 file, bit for bit, from a recompressed stored object; checked
    against the note's sha256 (``storage.verified.ObjectCorrupt``, an ``IntegrityError``,
    when it differs or the payload does not decode). ``NotRebuildable``: no usable note."""
    note = note if note is not None else read_note(stored)
    if note is None or note.get("format") != NOTE_FORMAT:
        raise NotRebuildable()
    split = split_part10(stored)
    if split is None:
        raise NotRebuildable("the stored object is not a Part-10 file")
    try:
        residual = zlib.decompress(base64.b64decode(note["residual"]))
        at = int(note["insert_at"])
        rebuild = note["rebuild"]
    except (KeyError, ValueError, TypeError, zlib.error) as exc:
        raise NotRebuildable(f"note unreadable: {exc!r}"[:300]) from exc
    if rebuild not in ("pixels", "inflate"):
        raise NotRebuildable(f"unknown rebuild {rebuild!r}")
    try:
        if rebuild == "inflate":
            payload = inflate(stored[split[1] :])
        else:
            payload = native_pixels(stored, str(split[0].get("TransferSyntaxUID", "")))
    except Exception as exc:  # the decoders raise what they like on a damaged stream
        raise ObjectCorrupt(f"the stored payload does not decode: {exc!r}"[:300]) from exc
    original = b"".join((residual[:at], payload, residual[at:]))
    if hashlib.sha256(original).hexdigest() != note.get("original_sha256"):
        raise ObjectCorrupt("the rebuilt file's sha256 differs from the received file's")
    return original


def original_of(stored: bytes) -> bytes:
    """What the modality sent: the object itself, or rebuilt from its note (checked)."""
    note = read_note(stored)
    return stored if note is None else rebuild_original(stored, note)
