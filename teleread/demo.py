"""Synthetic demo studies: a stroke head CT, a chest-pain aortic CTA, a routine chest DR and a
routine thoracic-spine CT, written as valid Part-10 files with Chinese text in the character
sets township machines really send (GB18030, UTF-8).

Everything is deterministic for a seed: UIDs come from ``generate_uid`` with seed-derived
entropy and the pixel noise from ``numpy.random.default_rng(seed)``. The datasets come from
``teleread.dicom_builders``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from teleread.dicom_builders import (
    SeriesInfo,
    StudyInfo,
    ct_image,
    demo_uid,
    dx_image,
    write_part10,
)
from teleread.phantoms import (
    FloatGrid,
    chest_ct_slice,
    chest_radiograph,
    grid,
    head_slice,
    hu_to_stored,
)


@dataclass
class DemoStudy:
    """What ``write_demo_studies`` wrote for one study."""

    key: str
    study_uid: str
    expected_category: str | None
    modality: str
    description: str
    charset: str
    patient_name: str
    directory: Path
    files: list[Path] = field(default_factory=list)


# --- the demo studies ------------------------------------------------------------------------


def _write_ct_series(
    outdir: Path,
    study: StudyInfo,
    series: SeriesInfo,
    *,
    seed: int,
    slices: int,
    size: int,
    fov_mm: float,
    thickness_mm: float,
    phantom: Callable[[FloatGrid, FloatGrid, float], np.ndarray],
    window: tuple[int, int],
    rng: np.random.Generator,
) -> list[Path]:
    spacing = round(fov_mm / size, 4)
    x, y = grid(size, size, spacing)
    files = []
    for i in range(slices):
        t = i / max(1, slices - 1)
        hu = phantom(x, y, t)
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * 4.0
        stored = hu_to_stored(hu)
        sop_uid = demo_uid(seed, study.accession, series.number, i)
        ds = ct_image(
            study,
            series,
            sop_uid=sop_uid,
            instance_number=i + 1,
            stored=stored,
            spacing_mm=spacing,
            thickness_mm=thickness_mm,
            z_mm=round(i * thickness_mm, 2),
            window=window,
        )
        files.append(write_part10(ds, outdir / f"CT{i + 1:04d}.dcm"))
    return files


def _study(seed: int, n: int, **kw: str) -> StudyInfo:
    accession = f"A{seed % 100000:05d}{n:02d}"
    kw.setdefault("patient_id", f"P{seed % 100000:05d}{n:02d}")
    return StudyInfo(
        study_uid=demo_uid(seed, accession, "study"), accession=accession, study_id=str(n), **kw
    )


def _series(
    seed: int, study: StudyInfo, number: int, description: str, modality: str
) -> SeriesInfo:
    return SeriesInfo(
        series_uid=demo_uid(seed, study.accession, "series", number),
        number=number,
        description=description,
        modality=modality,
        frame_of_reference_uid=demo_uid(seed, study.accession, "for", number),
    )


def write_demo_studies(
    outdir: Path, *, seed: int = 0, ct_slices: int = 40, ct_size: int = 512, dx_size: int = 1024
) -> list[DemoStudy]:
    """Write the four demo studies under ``outdir`` (one folder each) and describe them."""
    outdir = Path(outdir)
    rng = np.random.default_rng(seed)
    date = "20261125"
    studies: list[DemoStudy] = []

    def record(
        key: str, info: StudyInfo, category: str | None, modality: str, files: list[Path]
    ) -> None:
        studies.append(
            DemoStudy(
                key=key,
                study_uid=info.study_uid,
                expected_category=category,
                modality=modality,
                description=info.description,
                charset=info.charset,
                patient_name=info.patient_name,
                directory=outdir / key,
                files=files,
            )
        )

    stroke = _study(
        seed,
        1,
        charset="GB18030",
        patient_name="王^小明",
        patient_sex="M",
        patient_birth_date="19580312",
        patient_age="068Y",
        description="头颅CT平扫 急性脑卒中",
        study_date=date,
        study_time="083015",
        requested_procedure="头颅CT平扫",
        reason="突发左侧肢体无力2小时 卒中绿色通道",
        body_part="HEAD",
        protocol="HEAD STROKE",
        referring_physician="赵^医生",
    )
    files = _write_ct_series(
        outdir / "01_stroke_head_ct",
        stroke,
        _series(seed, stroke, 2, "头颅 5mm 平扫", "CT"),
        seed=seed,
        slices=ct_slices,
        size=ct_size,
        fov_mm=250.0,
        thickness_mm=5.0,
        phantom=lambda x, y, t: head_slice(x, y, t, bleed=True),
        window=(40, 80),
        rng=rng,
    )
    record("01_stroke_head_ct", stroke, "stroke", "CT", files)

    cta = _study(
        seed,
        2,
        charset="ISO_IR 192",
        patient_name="李^建国",
        patient_sex="M",
        patient_birth_date="19650704",
        patient_age="061Y",
        description="主动脉CTA 胸痛 撕裂样胸背痛",
        study_date=date,
        study_time="091200",
        requested_procedure="胸腹主动脉CTA",
        reason="突发撕裂样胸背痛1小时 胸痛中心",
        body_part="CHEST",
        protocol="AORTA CTA",
    )
    files = _write_ct_series(
        outdir / "02_chest_pain_cta",
        cta,
        _series(seed, cta, 3, "CTA 1.25mm", "CT"),
        seed=seed,
        slices=max(1, ct_slices // 2),
        size=ct_size,
        fov_mm=360.0,
        thickness_mm=1.25,
        phantom=lambda x, y, t: chest_ct_slice(x, y, t, contrast=True),
        window=(300, 700),
        rng=rng,
    )
    record("02_chest_pain_cta", cta, "chest_pain", "CT", files)

    dr = _study(
        seed,
        3,
        charset="GB18030",
        patient_name="张^丽",
        patient_sex="F",
        patient_birth_date="19790920",
        patient_age="047Y",
        description="胸部正位 体检",
        study_date=date,
        study_time="100512",
        requested_procedure="胸部正位片",
        reason="健康体检",
        body_part="CHEST",
        protocol="CHEST PA",
    )
    dr_series = _series(seed, dr, 1, "胸部 后前位", "DX")
    ds = dx_image(
        dr,
        dr_series,
        sop_uid=demo_uid(seed, dr.accession, 1, 0),
        pixels=chest_radiograph(dx_size, dx_size, rng),
        pixel_spacing_mm=round(430.0 / dx_size, 4),
    )
    record(
        "03_routine_chest_dr",
        dr,
        None,
        "DX",
        [write_part10(ds, outdir / "03_routine_chest_dr" / "DX0001.dcm")],
    )

    spine = _study(
        seed,
        4,
        charset="GB18030",
        patient_name="陈^志强",
        patient_sex="M",
        patient_birth_date="19700101",
        patient_age="056Y",
        description="胸椎CT 复查",
        study_date=date,
        study_time="103340",
        requested_procedure="胸椎CT平扫",
        reason="胸椎压缩性骨折术后复查",
        body_part="TSPINE",
        protocol="T-SPINE",
    )
    files = _write_ct_series(
        outdir / "04_routine_tspine_ct",
        spine,
        _series(seed, spine, 2, "胸椎 骨窗", "CT"),
        seed=seed,
        slices=max(1, ct_slices // 4),
        size=ct_size,
        fov_mm=360.0,
        thickness_mm=2.0,
        phantom=lambda x, y, t: chest_ct_slice(x, y, t, contrast=False),
        window=(500, 2000),
        rng=rng,
    )
    record("04_routine_tspine_ct", spine, None, "CT", files)
    return studies
