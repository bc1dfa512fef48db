"""A CT series from real anatomy for the benchmarks: pydicom's ``CT_small.dcm`` (a real
128x128 CT slice, 16-bit signed, noise about 15 HU) brought to 512x512 and given a fresh
CT-like noise per slice, so a compressor sees real texture and a realistic noise floor, not
the flat regions of the synthetic phantoms.

Per slice: the real slice, shifted by a few pixels and upsampled 4x (bilinear), plus noise
whose level follows the scanner's: white Gaussian noise smoothed over about one pixel (the
reconstruction kernel correlates neighbours) and scaled to ``noise_hu`` (default 12 HU), in
air as in tissue, as a real scanner delivers it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from teleread.dicom_builders import SeriesInfo, StudyInfo, ct_image, write_part10


def _upsample(img: np.ndarray, factor: int) -> np.ndarray:
    rows, cols = img.shape
    ys = np.linspace(0, rows - 1, rows * factor)
    xs = np.linspace(0, cols - 1, cols * factor)
    across = np.array([np.interp(xs, np.arange(cols), r) for r in img])
    return np.array([np.interp(ys, np.arange(rows), c) for c in across.T]).T


def _smooth(noise: np.ndarray) -> np.ndarray:
    out = noise.copy()
    for axis in (0, 1):
        out = 0.25 * np.roll(out, -1, axis) + 0.5 * out + 0.25 * np.roll(out, 1, axis)
    return out


def real_ct_slices(count: int, *, noise_hu: float = 12.0, seed: int = 0) -> list[np.ndarray]:
    """``count`` 512x512 int16 slices (stored = HU + 1024) from pydicom's real CT."""
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    ds = dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    rng = np.random.default_rng(seed)
    slices = []
    for i in range(count):
        shifted = np.roll(hu, (i % 5 - 2, i % 3 - 1), axis=(0, 1))
        big = _upsample(shifted, 4)
        noise = _smooth(rng.standard_normal(big.shape))
        noise *= noise_hu / noise.std()
        stored = np.clip(np.rint(big + noise) + 1024, -1024, 3071).astype(np.int16)
        slices.append(stored)
    return slices


def write_real_ct(
    folder: Path, count: int, *, description: str = "头颅CT平扫 急性脑卒中", noise_hu: float = 12.0
) -> tuple[str, int]:
    """Write a ``count``-slice series of ``real_ct_slices`` as one study; (study UID, bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = StudyInfo(
        study_uid=generate_uid(),
        charset="ISO_IR 192",
        patient_name="REAL^CT",
        patient_id="R" + uuid.uuid4().hex[:8],
        patient_sex="M",
        patient_birth_date="19580101",
        patient_age="068Y",
        description=description,
        accession="R1",
        study_date="20261125",
        study_time="080000",
    )
    series = SeriesInfo(generate_uid(), 1, "5mm STANDARD", "CT", generate_uid())
    total = 0
    for i, stored in enumerate(real_ct_slices(count, noise_hu=noise_hu)):
        ds = ct_image(
            study,
            series,
            sop_uid=generate_uid(),
            instance_number=i + 1,
            stored=stored,
            spacing_mm=0.6615,  # the real slice covers 85 mm at 128 px; drawn as 340 mm
            thickness_mm=5.0,
            z_mm=5.0 * i,
        )
        total += write_part10(ds, folder / f"{i:04d}.dcm").stat().st_size
    return study.study_uid, total
