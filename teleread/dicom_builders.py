"""DICOM dataset builders for synthetic images: a CT slice (``ct_image``), a chest DR
(``dx_image``), written as Part-10 files (``write_part10``), with deterministic UIDs
(``demo_uid``). ``teleread.demo`` makes its studies with them; tests make tiny files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
IMPLEMENTATION_VERSION = "TELEREAD_DEMO"
MANUFACTURER = "TeleRead Demo"


def demo_uid(seed: int, *parts: object) -> str:
    """A deterministic UID for (seed, parts), under pydicom's root for generated UIDs."""
    source = "|".join(["teleread-demo", str(seed), *(str(p) for p in parts)])
    return str(generate_uid(entropy_srcs=[source]))


@dataclass(frozen=True)
class StudyInfo:
    """Patient and study level attributes shared by every instance of a study."""

    study_uid: str
    charset: str
    patient_name: str
    patient_id: str
    patient_sex: str
    patient_birth_date: str
    patient_age: str
    description: str
    accession: str
    study_date: str
    study_time: str
    study_id: str = "1"
    institution: str = "某某镇卫生院"
    station: str = "TS01"
    referring_physician: str = ""
    requested_procedure: str = ""
    reason: str = ""
    body_part: str = ""
    protocol: str = ""


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    number: int
    description: str
    modality: str
    frame_of_reference_uid: str = ""


def _base(
    study: StudyInfo, series: SeriesInfo, sop_class: str, sop_uid: str, instance_number: int
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = study.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = study.study_time
    ds.AccessionNumber = study.accession
    ds.Modality = series.modality
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = f"Synthetic {series.modality}"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "1.0"
    ds.InstitutionName = study.institution
    ds.StationName = study.station
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.PatientAge = study.patient_age
    if study.body_part:
        ds.BodyPartExamined = study.body_part
    if study.protocol:
        ds.ProtocolName = study.protocol
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance_number
    if study.requested_procedure or study.reason:
        item = Dataset()
        item.RequestedProcedureID = study.accession
        item.ScheduledProcedureStepID = study.accession
        if study.requested_procedure:
            item.RequestedProcedureDescription = study.requested_procedure
        if study.reason:
            item.ReasonForTheRequestedProcedure = study.reason
        ds.RequestAttributesSequence = Sequence([item])
    return ds


def _pixels(ds: Dataset, pixels: np.ndarray, bits_stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels).astype("<" + pixels.dtype.str[1:]).tobytes()
    ds["PixelData"].VR = "OW"


def ct_image(
    study: StudyInfo,
    series: SeriesInfo,
    *,
    sop_uid: str,
    instance_number: int,
    stored: np.ndarray,
    spacing_mm: float,
    thickness_mm: float,
    z_mm: float,
    window: tuple[int, int] = (40, 80),
    kernel: str = "STANDARD",
) -> Dataset:
    """One axial CT slice; ``stored`` is int16 with HU = stored - 1024."""
    ds = _base(study, series, CT_IMAGE_STORAGE, sop_uid, instance_number)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = series.frame_of_reference_uid or demo_uid(0, series.series_uid)
    ds.PositionReferenceIndicator = ""
    ds.ScanOptions = "HELICAL"
    ds.KVP = 120
    ds.XRayTubeCurrent = 250
    ds.ExposureTime = 1000
    ds.ConvolutionKernel = kernel
    ds.SliceThickness = thickness_mm
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    rows, cols = stored.shape
    x0, y0 = (round(-spacing_mm * (n - 1) / 2, 4) for n in (cols, rows))
    ds.ImagePositionPatient = [x0, y0, z_mm]
    ds.SliceLocation = z_mm
    _pixels(ds, stored, 16)
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = window
    return ds


def dx_image(
    study: StudyInfo,
    series: SeriesInfo,
    *,
    sop_uid: str,
    pixels: np.ndarray,
    pixel_spacing_mm: float,
    instance_number: int = 1,
) -> Dataset:
    """A PA chest radiograph, Digital X-Ray Image Storage - For Presentation (12-bit)."""
    ds = _base(study, series, DX_PRESENTATION_STORAGE, sop_uid, instance_number)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.ViewPosition = "PA"
    ds.PositionerType = "COLUMN"
    view = Dataset()
    view.CodeValue = "399348003"
    view.CodingSchemeDesignator = "SCT"
    view.CodeMeaning = "postero-anterior"
    ds.ViewCodeSequence = Sequence([view])
    region = Dataset()
    region.CodeValue = "43799004"
    region.CodingSchemeDesignator = "SCT"
    region.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([region])
    ds.AcquisitionContextSequence = Sequence([])
    ds.DetectorType = "SCINTILLATOR"
    ds.ImagerPixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.KVP = 125
    ds.ExposureInuAs = 2000
    ds.DistanceSourceToDetector = 1800
    _pixels(ds, pixels, 12)
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return ds


def write_part10(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a Part-10 file (preamble, file meta with group length, dataset)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
