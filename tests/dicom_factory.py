"""Tiny, valid DICOM datasets for tests, built with ``teleread.dicom_builders``.

    ds = make_ct(study_description="头颅CT平扫 急性脑卒中")          # 64x64 GB18030 head CT
    ds = make_dx(study_uid, charset="ISO_IR 192", study_description="胸部正位 体检")
    path = write(ds, tmp_path / "ct.dcm")                             # Part-10 file
    raw = part10_bytes(ds)                                            # the same, as bytes

Fresh UIDs are random unless given. Any other DICOM keyword can be passed as a keyword
argument (``StationName="CT01"``); ``None`` removes the element.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from teleread.dicom_builders import SeriesInfo, StudyInfo, ct_image, dx_image, write_part10
from teleread.phantoms import chest_radiograph, grid, head_slice, hu_to_stored


def _study(
    study_uid: str | None,
    charset: str,
    study_description: str,
    patient_name: str,
    patient_id: str,
    accession: str,
    **kw: str,
) -> StudyInfo:
    return StudyInfo(
        study_uid=study_uid or generate_uid(),
        charset=charset,
        patient_name=patient_name,
        patient_id=patient_id,
        patient_sex=kw.pop("patient_sex", "M"),
        patient_birth_date=kw.pop("patient_birth_date", "19600101"),
        patient_age=kw.pop("patient_age", "066Y"),
        description=study_description,
        accession=accession,
        study_date=kw.pop("study_date", "20261125"),
        study_time=kw.pop("study_time", "100000"),
        **kw,
    )


def _apply(ds: Dataset, attrs: dict[str, Any]) -> Dataset:
    for keyword, value in attrs.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if "SOPInstanceUID" in ds:  # keep the file meta in step with overridden UIDs
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "SOPClassUID" in ds:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return ds


def make_ct(
    study_uid: str | None = None,
    *,
    charset: str = "GB18030",
    study_description: str = "头颅CT平扫 急性脑卒中",
    patient_name: str = "王^小明",
    patient_id: str = "P001",
    accession: str = "A001",
    reason: str = "",
    requested_procedure: str = "",
    body_part: str = "HEAD",
    protocol: str = "",
    institution: str = "某某镇卫生院",
    series_uid: str | None = None,
    sop_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "头颅 5mm",
    instance_number: int = 1,
    rows: int = 64,
    cols: int = 64,
    **attrs: Any,
) -> Dataset:
    """One small axial head CT slice (int16, rescale -1024) with file meta, Explicit VR LE."""
    study = _study(
        study_uid,
        charset,
        study_description,
        patient_name,
        patient_id,
        accession,
        reason=reason,
        requested_procedure=requested_procedure,
        body_part=body_part,
        protocol=protocol,
        institution=institution,
    )
    series = SeriesInfo(
        series_uid or generate_uid(), series_number, series_description, "CT", generate_uid()
    )
    spacing = round(250.0 / max(rows, cols), 4)
    x, y = grid(rows, cols, spacing)
    stored = hu_to_stored(head_slice(x, y, 0.4, bleed=True))
    ds = ct_image(
        study,
        series,
        sop_uid=sop_uid or generate_uid(),
        instance_number=instance_number,
        stored=stored,
        spacing_mm=spacing,
        thickness_mm=5.0,
        z_mm=5.0 * (instance_number - 1),
    )
    return _apply(ds, attrs)


def make_dx(
    study_uid: str | None = None,
    *,
    charset: str = "GB18030",
    study_description: str = "胸部正位 体检",
    patient_name: str = "张^丽",
    patient_id: str = "P002",
    accession: str = "A002",
    reason: str = "",
    requested_procedure: str = "",
    body_part: str = "CHEST",
    protocol: str = "",
    institution: str = "某某镇卫生院",
    series_uid: str | None = None,
    sop_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "胸部 后前位",
    instance_number: int = 1,
    rows: int = 64,
    cols: int = 64,
    **attrs: Any,
) -> Dataset:
    """One small PA chest radiograph, Digital X-Ray Image Storage - For Presentation."""
    study = _study(
        study_uid,
        charset,
        study_description,
        patient_name,
        patient_id,
        accession,
        patient_sex="F",
        reason=reason,
        requested_procedure=requested_procedure,
        body_part=body_part,
        protocol=protocol,
        institution=institution,
    )
    series = SeriesInfo(series_uid or generate_uid(), series_number, series_description, "DX")
    ds = dx_image(
        study,
        series,
        sop_uid=sop_uid or generate_uid(),
        pixels=chest_radiograph(rows, cols, np.random.default_rng(0)),
        pixel_spacing_mm=round(430.0 / max(rows, cols), 4),
        instance_number=instance_number,
    )
    return _apply(ds, attrs)


def write(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a Part-10 file (parents created) and return the path."""
    return write_part10(ds, Path(path))


def part10_bytes(ds: Dataset) -> bytes:
    """The Part-10 file ``write`` would produce, as bytes."""
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
