"""Which bytes a WADO-RS retrieve sends for an instance: the stored object, or the file the
modality sent, rebuilt from the gateway's lossless recompression (``storage.recompressed``).

An object stored as received has one representation: itself, in its transfer syntax (as
before; nothing is transcoded). A recompressed object (stored in one of
``storage.recompressed.SYNTAXES`` with the gateway's note) has two: the stored one (JPEG-LS or
JPEG 2000 Lossless, or Deflated) and the original (Explicit or Implicit VR Little Endian, as
received, rebuilt bit for bit and checked against the sha256 the gateway recorded). The
client's Accept header picks, its best range first:

- ``transfer-syntax=*`` or the stored syntax: the stored object (OHIF and other viewers that
  decode JPEG-LS get the smaller file);
- the original's syntax (``1.2.840.10008.1.2.1`` for a usual uncompressed CT), or no
  ``transfer-syntax`` parameter at all (PS3.18 makes Explicit VR Little Endian the default
  for ``application/dicom``; what the modality sent is the nearest we hold): the original;
- anything else: not acceptable (406), as for an object stored as received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from storage import recompressed
from storage.base import ObjectStore
from viewer_api.dicomweb import multipart

DICOM = "application/dicom"
Form = Literal["stored", "original"]


@dataclass(frozen=True, slots=True)
class Wanted:
    """One Accept range that takes DICOM instances."""

    transfer_syntax: str | None  # a UID, "*", or None (the range names none)
    single: bool  # a bare application/dicom: one instance as a single-part body


@dataclass(frozen=True, slots=True)
class Choice:
    form: Form
    transfer_syntax: str  # of the part sent
    single: bool  # as the single-part body (PS3.18 8.7.3), not a part of multipart/related


def wanted_syntaxes(accept: str | None, count: int = 1) -> list[Wanted]:
    """The Accept header's ranges that take ``count`` DICOM instances, best first (a bare
    ``application/dicom`` takes one instance only)."""
    wanted: list[Wanted] = []
    for media in multipart.parse_accept(accept):
        if media.media_type not in ("multipart/related", "*/*", DICOM):
            continue
        if media.part_type not in (DICOM, "*/*", "application/*"):
            continue
        single = media.media_type == DICOM
        if single and count > 1:
            continue
        wanted.append(Wanted(media.transfer_syntax, single))
    return wanted


def original_syntax(store: ObjectStore, key: str, stored: str) -> str | None:
    """The original's transfer syntax when the object under ``key`` is a recompression the
    original rebuilds from (its file meta alone is read), else None."""
    if stored not in recompressed.SYNTAXES:
        return None
    with store.open(key) as stream:
        note = recompressed.read_note_head(stream)
    if note is None or note.get("format") != recompressed.NOTE_FORMAT:
        return None
    return str(note.get("original_transfer_syntax") or "") or None


def choose(store: ObjectStore, key: str, stored: str, wanted: list[Wanted]) -> Choice | None:
    """What to send for the object under ``key`` (stored in ``stored``); None: nothing the
    client accepts. The object is read only when the answer depends on its note."""
    original: str | None = None
    looked = False
    for w in wanted:
        ts = w.transfer_syntax
        if ts in ("*", stored):
            return Choice("stored", stored, w.single)
        if not looked:
            original, looked = original_syntax(store, key, stored), True
        if original is not None and ts in (None, original):
            return Choice("original", original, w.single)
        if ts is None:
            return Choice("stored", stored, w.single)
    return None


def body(store: ObjectStore, key: str, choice: Choice) -> bytes:
    """The part's bytes: the stored object, or the original rebuilt and checked
    (``storage.errors.IntegrityError`` when it does not match its recorded sha256)."""
    data = store.get(key)
    return recompressed.rebuild_original(data) if choice.form == "original" else data
