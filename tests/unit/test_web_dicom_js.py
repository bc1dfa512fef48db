"""The browser's DICOM decoder (viewer_api/web/static/dicom.js), run under node against
files pydicom writes: the stored pixels, rescale and window come out as pydicom reads them,
in explicit and implicit VR, past a sequence of undefined length; compressed data is
reported as such (the viewer then asks the server to render it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from tests.dicom_factory import make_ct, make_dx, write
from viewer_api.web.pages import STATIC_DIR

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (runs dicom.js)")

SCRIPT = """
import { readFileSync } from "node:fs";
import { parseDicom, renderToImageData, defaultWindow } from "%s";
const out = [];
for (const path of process.argv.slice(2)) {
  const buf = readFileSync(path);
  const img = parseDicom(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const res = { ...img, pixels: undefined };
  if (!img.compressed) {
    res.pixels = Array.from(img.pixels);
    const data = { data: new Uint8ClampedArray(img.rows * img.columns * 4) };
    const w = defaultWindow(img);
    res.window = w;
    const rgba = renderToImageData(img, w.center, w.width, data).data;
    res.grey = Array.from(rgba.filter((_, i) => i %% 4 === 0));
  }
  out.push(res);
}
console.log(JSON.stringify(out));
"""


def run_decoder(tmp_path: Path, *files: Path) -> list[dict[str, Any]]:
    script = tmp_path / "decode.mjs"
    script.write_text(SCRIPT % (STATIC_DIR / "dicom.js").as_uri(), encoding="utf-8")
    done = subprocess.run(
        [str(NODE), str(script), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def expected_grey(ds: Dataset, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2 linear window over the rescaled values."""
    values = ds.pixel_array.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1)) + float(
        getattr(ds, "RescaleIntercept", 0)
    )
    low = center - 0.5 - (width - 1) / 2
    grey = np.clip((values - low) * 255 / (width - 1), 0, 255)
    grey[values <= low] = 0
    grey[values > low + width - 1] = 255
    return grey.ravel()


def test_explicit_and_implicit_vr_ct_and_dx(tmp_path: Path) -> None:
    ct = make_ct(rows=32, cols=32, WindowCenter=40, WindowWidth=80)
    explicit = write(ct, tmp_path / "ct.dcm")
    implicit_ds = make_ct(rows=32, cols=32)
    implicit_ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    # a private-ish sequence of undefined length before the pixel data must be walked past
    item = Dataset()
    item.CodeValue = "T-A0100"
    item.CodeMeaning = "Brain"
    implicit_ds.AnatomicRegionSequence = Sequence([item])
    implicit = tmp_path / "ct-implicit.dcm"
    implicit_ds.save_as(implicit, implicit_vr=True, little_endian=True, enforce_file_format=True)
    dx = write(make_dx(rows=40, cols=30), tmp_path / "dx.dcm")

    decoded = run_decoder(tmp_path, explicit, implicit, dx)
    for path, got in zip((explicit, implicit, dx), decoded, strict=True):
        ds = dcmread(path)
        assert got["compressed"] is False
        assert (got["rows"], got["columns"]) == (ds.Rows, ds.Columns)
        assert got["slope"] == float(getattr(ds, "RescaleSlope", 1))
        assert got["intercept"] == float(getattr(ds, "RescaleIntercept", 0))
        assert np.array_equal(np.array(got["pixels"]), ds.pixel_array.ravel()), path.name
        want = expected_grey(ds, got["window"]["center"], got["window"]["width"])
        assert np.allclose(np.array(got["grey"]), want, atol=1.0), path.name
    assert decoded[0]["window"] == {"center": 40, "width": 80}
    assert decoded[0]["modality"] == "CT" and decoded[2]["modality"] == "DX"


def test_compressed_data_is_reported_not_decoded(tmp_path: Path) -> None:
    ds = make_ct(rows=16, cols=16)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "rle.dcm"
    ds.save_as(path, enforce_file_format=True)
    [got] = run_decoder(tmp_path, path)
    assert got["compressed"] is True
    assert got["rows"] == 16 and got["transferSyntax"] == str(RLELossless)


def test_palette_ybr_and_lookup_tables_are_left_to_the_server(tmp_path: Path) -> None:
    palette = make_dx(rows=8, cols=8, PhotometricInterpretation="PALETTE COLOR")
    ybr = make_dx(rows=8, cols=8, PhotometricInterpretation="YBR_FULL")
    voi = make_dx(rows=8, cols=8)
    lut = Dataset()
    lut.LUTDescriptor = [256, 0, 8]
    lut.add_new("LUTData", "US", list(range(256)))
    voi.VOILUTSequence = Sequence([lut])
    plain = make_dx(rows=8, cols=8)
    paths = [
        write(ds, tmp_path / f"{name}.dcm")
        for name, ds in (("palette", palette), ("ybr", ybr), ("voi", voi), ("plain", plain))
    ]
    decoded = run_decoder(tmp_path, *paths)
    assert [d["compressed"] for d in decoded] == [True, True, True, False]


def test_garbage_is_an_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    script = tmp_path / "junk.mjs"
    script.write_text(
        f'import {{ parseDicom }} from "{(STATIC_DIR / "dicom.js").as_uri()}";\n'
        'import { readFileSync } from "node:fs";\n'
        f'const b = readFileSync("{path}");\n'
        "try { parseDicom(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));"
        ' console.log("parsed"); } catch (e) { console.log("error " + e.message); }\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [str(NODE), str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("error"), done.stdout


ORIENTATION = """
import { orientationLabels } from "%s";
const cases = JSON.parse(process.argv[2]);
console.log(JSON.stringify(cases.map((c) => orientationLabels(c))));
"""


def test_orientation_letters_at_the_image_edges(tmp_path: Path) -> None:
    cases = [
        {"orientation": [1, 0, 0, 0, 1, 0]},  # axial
        {"orientation": [0, 1, 0, 0, 0, -1]},  # sagittal
        {"orientation": [1, 0, 0, 0, 0, -1]},  # coronal
        {"orientation": [0.8, 0.6, 0, 0, 0, -1]},  # oblique
        {"orientation": None, "patientOrientation": ["L", "F"]},  # a PA chest film
        {"orientation": None, "patientOrientation": None},
    ]
    script = tmp_path / "orient.mjs"
    script.write_text(ORIENTATION % (STATIC_DIR / "dicom.js").as_uri(), encoding="utf-8")
    done = subprocess.run(
        [str(NODE), str(script), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = json.loads(done.stdout)
    edges = [None if g is None else [g[k] for k in ("left", "right", "top", "bottom")] for g in got]
    assert edges == [
        ["R", "L", "A", "P"],
        ["A", "P", "H", "F"],
        ["R", "L", "H", "F"],
        ["RA", "LP", "H", "F"],
        ["R", "L", "H", "F"],
        None,
    ]
