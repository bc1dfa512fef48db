"""Lossless recompression that keeps the promise: every uncompressed file among pydicom's test
data, teleread's demo studies and tests/dicom_factory images is rebuilt bit for bit (sha256
equal) from what the gateway would upload; the codec takes 8/16-bit monochrome, palette and
RGB images, Explicit and Implicit VR; non-images and images the codec does not give back
exactly are deflated byte-exactly or sent as received; small files and poor savings are sent as
received; the forwarder uploads the smaller object, announces its sha256 and survives a crash
between upload and mark."""

from __future__ import annotations

import hashlib
import os
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)

from gateway.forwarder import Forwarder
from gateway.outbox import ANNOUNCED
from gateway.recompress import MIN_BYTES, recompress
from gateway.spool import Spool
from gateway.upload import upload_body
from storage.decoding import decoding_plugin
from storage.errors import IntegrityError
from storage.recompressed import (
    NotRebuildable,
    inflate,
    original_of,
    read_note,
    read_note_head,
    rebuild_original,
    split_part10,
)
from teleread.demo import write_demo_studies
from tests.dicom_factory import make_ct, make_dx, part10_bytes
from tests.integration.test_gateway_support import SwitchableStore
from tests.unit.test_gateway_forwarder import RecordingCounty
from tests.unit.test_gateway_spool import received

EVERY_FILE = {"min_bytes": 0, "min_saving": -100.0}  # thresholds off: rebuild everything


def _pydicom_uncompressed() -> dict[str, bytes]:
    """pydicom's test files (bundled, and downloaded ones when present) in a native little
    endian syntax, images or not."""
    found = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in get_testdata_files():
            path = Path(name)
            if not path.is_file():
                continue
            try:
                meta = dcmread(path, stop_before_pixels=True).file_meta
            except Exception:
                continue  # the deliberately unreadable ones
            if meta.get("TransferSyntaxUID") in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
                found[f"pydicom/{path.name}"] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def every_file(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The demo studies as ``teleread demo-studies`` writes them, factory images, pydicom's."""
    demo = tmp_path_factory.mktemp("demo")
    files = {
        f"demo/{s.key}/{f.name}": f.read_bytes() for s in write_demo_studies(demo) for f in s.files
    }
    files["factory/ct"] = part10_bytes(make_ct())
    files["factory/dx"] = part10_bytes(make_dx())
    files.update(_pydicom_uncompressed())
    names = " ".join(files)
    for expected in ("CT_small", "MR_small_implicit", "examples_rgb_color", "examples_palette"):
        assert expected in names
    return files


def _pixels(data: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(BytesIO(data)).pixel_array


def test_every_uncompressed_file_rebuilds_bit_for_bit(every_file: dict[str, bytes]) -> None:
    methods: dict[str, int] = {}
    for name, original in every_file.items():
        out = recompress(original, "jpegls", **EVERY_FILE)
        if out is None:  # Implicit VR that no codec takes (no deflate for it), or a file meta
            # without its group length (never spooled so): sent as received
            split = split_part10(original)
            assert split is None or split[0].TransferSyntaxUID == ImplicitVRLittleEndian, name
            continue
        methods[out.method] = methods.get(out.method, 0) + 1
        assert out.sha256 == hashlib.sha256(out.data).hexdigest()
        note = read_note(out.data)
        assert note is not None, name
        assert (
            note["original_sha256"] == out.original_sha256 == hashlib.sha256(original).hexdigest()
        )
        assert note["original_size"] == len(original)
        rebuilt = original_of(out.data)
        assert rebuilt == original, name
        before = dcmread(BytesIO(original), stop_before_pixels=True, force=True)
        after = dcmread(BytesIO(out.data), stop_before_pixels=True)
        assert after.get("SOPInstanceUID") == before.get("SOPInstanceUID"), name
    demo = sum(1 for n in every_file if n.startswith("demo/"))
    assert methods["jpegls"] >= demo + 2 + 10  # every demo and factory image, pydicom's images
    assert methods["deflate"] >= 20  # SRs, RT plans, waveforms, ...


@pytest.mark.parametrize(
    ("method", "codec"), [("jpegls", JPEGLSLossless), ("j2k", JPEG2000Lossless)]
)
def test_codecs_keep_pixels_and_uids(method: str, codec: str) -> None:
    images = {
        "ct": part10_bytes(make_ct(rows=128, cols=128)),
        "dx": part10_bytes(make_dx()),
        **{
            k: v
            for k, v in _pydicom_uncompressed().items()
            if any(n in k for n in ("CT_small", "MR_small_implicit", "rgb_color", "palette"))
        },
    }
    for name, original in images.items():
        out = recompress(original, method, **EVERY_FILE)
        assert out is not None, name
        assert out.method == method, name
        meta, _ = split_part10(out.data) or pytest.fail(name)
        assert meta.TransferSyntaxUID == out.transfer_syntax_uid == codec
        assert np.array_equal(_pixels(out.data), _pixels(original)), name
        assert rebuild_original(out.data) == original, name


def test_the_gateway_and_the_county_decode_with_the_named_plugins() -> None:
    # CharLS (the encoder's own library) for JPEG-LS, not pydicom's first choice
    # pylibjpeg-libjpeg (four times slower); OpenJPEG through pylibjpeg for JPEG 2000;
    # both installed with teleread, so the stock order is only a fallback
    assert decoding_plugin(JPEGLSLossless) == "pyjpegls"
    assert decoding_plugin(JPEG2000Lossless) == "pylibjpeg"
    assert decoding_plugin(ExplicitVRLittleEndian) == ""


def test_ct_and_dr_get_smaller_and_small_or_poor_ones_are_sent_as_received() -> None:
    ct = part10_bytes(make_ct(rows=256, cols=256))
    for method in ("jpegls", "j2k", "deflate"):
        out = recompress(ct, method)
        assert out is not None
        assert out.saved_bytes > len(ct) // 4, method
    small = part10_bytes(make_ct(rows=64, cols=64))
    assert len(small) < MIN_BYTES
    assert recompress(small, "jpegls") is None  # tiny: not worth it
    assert recompress(small, "jpegls", min_bytes=0) is not None
    assert recompress(ct, "jpegls", max_bytes=len(ct) - 1) is None  # too big to hold 4 times
    noise = make_dx()
    rng = np.random.default_rng(0)
    noise.PixelData = rng.integers(0, 1 << 16, noise.Rows * noise.Columns, dtype="<u2").tobytes()
    noise.BitsStored, noise.HighBit = 16, 15
    assert recompress(part10_bytes(noise), "jpegls") is None  # incompressible: as received
    assert recompress(ct, "none") is None
    jls = recompress(ct, "jpegls")
    assert jls is not None
    assert recompress(jls.data, "j2k", **EVERY_FILE) is None  # already compressed: left alone
    assert recompress(b"not dicom", "deflate", **EVERY_FILE) is None


def test_pixels_the_codec_cannot_give_back_exactly_are_never_stored_that_way() -> None:
    # 12 bits stored, garbage in the 4 unused high bits (an overlay in old CT files): the
    # JPEG-LS stream holds 12 bits, so the rebuilt file would differ; deflated instead
    ds = make_ct(rows=128, cols=128)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    pixels = np.frombuffer(ds.PixelData, "<u2") & 0x0FFF | 0xA000
    ds.PixelData = pixels.astype("<u2").tobytes()
    original = part10_bytes(ds)
    out = recompress(original, "jpegls", **EVERY_FILE)
    assert out is not None
    assert out.method == "deflate"
    assert out.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    assert original_of(out.data) == original
    split = split_part10(out.data)
    assert split is not None
    assert inflate(out.data[split[1] :]) == original[split_part10(original)[1] :]  # type: ignore[index]
    # the same as Implicit VR (no deflate for it): sent as received
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit = part10_bytes(ds)
    assert recompress(implicit, "jpegls", **EVERY_FILE) is None


def test_a_damaged_object_or_note_is_refused() -> None:
    original = part10_bytes(make_ct(rows=128, cols=128))
    out = recompress(original, "jpegls")
    assert out is not None
    assert original_of(original) == original  # stored as received: itself
    damaged = bytearray(out.data)
    damaged[-200] ^= 0x01  # inside the JPEG-LS stream
    with pytest.raises((IntegrityError, NotRebuildable)):
        original_of(bytes(damaged))
    note = read_note(out.data)
    assert note is not None
    assert read_note_head(BytesIO(out.data)) == note  # from the file meta alone
    assert read_note_head(BytesIO(original)) is None
    note["original_sha256"] = "0" * 64
    with pytest.raises(IntegrityError):
        rebuild_original(out.data, note)
    del note["residual"]
    with pytest.raises(NotRebuildable):
        rebuild_original(out.data, note)


def test_forwarder_uploads_recompressed_and_resumes_after_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    store = SwitchableStore(tmp_path / "store")
    county = RecordingCounty()
    ds = make_ct(rows=128, cols=128)
    inst, data, offset = received(ds)
    spool.store(inst, data, dataset_offset=offset)
    head = spool.outbox.next_to_upload(1e12)
    assert head is not None
    # a crash after the put, before the outbox mark: do the put by hand
    with open(spool.path_of(head), "rb") as original:
        body, size, sha, saved = upload_body(spool, head, original, "jpegls")
    store.put(head.object_key, body, size=size, sha256=sha)
    assert saved > 0
    spool.close()
    spool = Spool(tmp_path / "spool")
    fwd = Forwarder(spool, store, county, announce_delay=0, recompress="jpegls")  # type: ignore[arg-type]
    fwd.drain(10)
    assert store.put_keys == [head.object_key]  # found, not uploaded again
    (item,) = [i for c in county.calls for i in c["instances"]]
    stored = store.get(head.object_key)
    assert item["sha256"] == hashlib.sha256(stored).hexdigest() == sha
    assert item["size"] == len(stored) < len(data)
    assert item["transfer_syntax_uid"] == JPEGLSLossless
    assert np.array_equal(_pixels(stored), ds.pixel_array)
    assert spool.outbox.query("SELECT state FROM outbox")[0][0] == ANNOUNCED
    counters = spool.outbox.counters()
    assert counters["uploads"] == 1  # the object found in the store, marked once
    assert counters["bytes_uploaded"] == 0  # ... and not sent again
    assert counters["instances_announced"] == 1
    assert os.listdir(spool.objects) == []
    spool.close()
