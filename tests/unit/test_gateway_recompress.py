"""Lossless recompression: decoded pixel data equals the original for every image in the test
set (teleread's demo CT and DR, tests/dicom_factory images, pydicom's own uncompressed test
files: 8/16-bit monochrome, palette colour and RGB, Explicit and Implicit VR); non-images and
images the codecs do not take are deflated byte-exactly; the forwarder uploads the smaller
object, announces its sha256 and survives a crash between upload and mark."""

from __future__ import annotations

import glob
import hashlib
import os
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)

from gateway.forwarder import Forwarder
from gateway.outbox import ANNOUNCED
from gateway.recompress import inflate, recompress, recompression_note, split_part10
from gateway.spool import Spool
from gateway.upload import upload_body
from teleread.demo import write_demo_studies
from tests.dicom_factory import make_ct, make_dx, part10_bytes
from tests.integration.test_gateway_support import SwitchableStore
from tests.unit.test_gateway_forwarder import RecordingCounty
from tests.unit.test_gateway_spool import received


def _pydicom_native_images() -> list[Path]:
    """pydicom's bundled (never downloaded) uncompressed test files with decodable pixels."""
    root = Path(pydicom.__file__).parent / "data" / "test_files"
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(glob.glob(str(root / "**" / "*.dcm"), recursive=True)):
            try:
                ds = dcmread(name)
                ts = ds.file_meta.TransferSyntaxUID
                if ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) and "PixelData" in ds:
                    ds.pixel_array  # noqa: B018  (skip the deliberately broken ones)
                    found.append(Path(name))
            except Exception:
                continue
    return found


@pytest.fixture(scope="module")
def image_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    demo = tmp_path_factory.mktemp("demo")
    studies = write_demo_studies(demo, ct_slices=2, ct_size=96, dx_size=128)
    images = {f"demo/{s.key}/{f.name}": f.read_bytes() for s in studies for f in s.files}
    images["factory/ct"] = part10_bytes(make_ct())
    images["factory/dx"] = part10_bytes(make_dx())
    for path in _pydicom_native_images():
        images[f"pydicom/{path.name}"] = path.read_bytes()
    names = " ".join(images)
    for expected in ("CT_small", "MR_small_implicit", "examples_rgb_color", "examples_palette"):
        assert expected in names
    return images


def _pixels(data: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(BytesIO(data)).pixel_array


@pytest.mark.parametrize(
    ("method", "codec"), [("jpegls", JPEGLSLossless), ("j2k", JPEG2000Lossless)]
)
def test_pixels_identical_for_every_image(
    image_set: dict[str, bytes], method: str, codec: str
) -> None:
    encoded_as_image = 0
    for name, original in image_set.items():
        out = recompress(original, method)
        if out is None:
            continue
        meta, offset = split_part10(out.data) or pytest.fail(name)
        assert meta.TransferSyntaxUID == out.transfer_syntax_uid
        assert np.array_equal(_pixels(out.data), _pixels(original)), name
        assert out.sha256 == hashlib.sha256(out.data).hexdigest()
        before = dcmread(BytesIO(original), stop_before_pixels=True)
        after = dcmread(BytesIO(out.data), stop_before_pixels=True)
        assert after.SOPInstanceUID == before.SOPInstanceUID, name
        note = recompression_note(out.data)
        assert note is not None
        assert note["original_sha256"] == hashlib.sha256(original).hexdigest()
        assert note["original_size"] == len(original)
        if out.method == method:
            assert out.transfer_syntax_uid == codec
            encoded_as_image += 1
        else:  # the codec did not take it: deflated, the original dataset bytes exactly
            assert out.transfer_syntax_uid == DeflatedExplicitVRLittleEndian, name
            inflated = inflate(out.data[offset:])
            assert hashlib.sha256(inflated).hexdigest() == note["original_dataset_sha256"]
    # every demo image, both factory images and pydicom's mono / palette / RGB ones
    assert encoded_as_image >= len([n for n in image_set if not n.startswith("pydicom")]) + 4


def test_ct_and_dr_get_smaller(image_set: dict[str, bytes]) -> None:
    ct = next(v for k, v in image_set.items() if k.startswith("demo/") and "CT" in k)
    for method in ("jpegls", "j2k", "deflate"):
        out = recompress(ct, method)
        assert out is not None
        assert out.saved_bytes > len(ct) // 4, method


def test_deflate_non_image_and_skip_compressed(image_set: dict[str, bytes]) -> None:
    ds = make_ct()
    del ds.PixelData
    raw = part10_bytes(ds)
    out = recompress(raw, "jpegls")
    if out is not None:  # small headers may not shrink; when they do, byte-exact
        split = split_part10(out.data)
        assert split is not None
        assert inflate(out.data[split[1] :]) == raw[split_part10(raw)[1] :]  # type: ignore[index]
    assert recompress(image_set["factory/ct"], "none") is None
    jls = recompress(image_set["factory/ct"], "jpegls")
    assert jls is not None
    assert recompress(jls.data, "j2k") is None  # already compressed: left alone
    assert recompress(b"not dicom", "deflate") is None


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
