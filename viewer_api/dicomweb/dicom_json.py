"""DICOM JSON (PS3.18 F.2) from the index: studies, series and instances rows plus the
header each instance was announced with (``Instance.dicom_json``)."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from worklist.models import Instance, Series, Study

JsonDataset = dict[str, Any]

UTF8 = "ISO_IR 192"  # JSON is Unicode, whatever the file declared
PIXEL_DATA = "7FE00010"

# attribute keyword -> (tag, VR) for the fields the index holds
STUDY_TAGS: dict[str, tuple[str, str]] = {
    "SpecificCharacterSet": ("00080005", "CS"),
    "StudyDate": ("00080020", "DA"),
    "StudyTime": ("00080030", "TM"),
    "AccessionNumber": ("00080050", "SH"),
    "ModalitiesInStudy": ("00080061", "CS"),
    "StudyDescription": ("00081030", "LO"),
    "RetrieveURL": ("00081190", "UR"),
    "PatientName": ("00100010", "PN"),
    "PatientID": ("00100020", "LO"),
    "PatientBirthDate": ("00100030", "DA"),
    "PatientSex": ("00100040", "CS"),
    "StudyInstanceUID": ("0020000D", "UI"),
    "NumberOfStudyRelatedSeries": ("00201206", "IS"),
    "NumberOfStudyRelatedInstances": ("00201208", "IS"),
}
SERIES_TAGS: dict[str, tuple[str, str]] = {
    "Modality": ("00080060", "CS"),
    "SeriesDescription": ("0008103E", "LO"),
    "BodyPartExamined": ("00180015", "CS"),
    "SeriesInstanceUID": ("0020000E", "UI"),
    "SeriesNumber": ("00200011", "IS"),
    "NumberOfSeriesRelatedInstances": ("00201209", "IS"),
}
INSTANCE_TAGS: dict[str, tuple[str, str]] = {
    "SOPClassUID": ("00080016", "UI"),
    "SOPInstanceUID": ("00080018", "UI"),
    "AvailableTransferSyntaxUID": ("00083002", "UI"),
    "InstanceNumber": ("00200013", "IS"),
}
# what includefield=all adds at each level, taken from a representative instance's header
STUDY_EXTRA = (
    "00080090",  # ReferringPhysicianName
    "00200010",  # StudyID
    "00101010",  # PatientAge
    "00080080",  # InstitutionName
    "00321060",  # RequestedProcedureDescription
)
SERIES_EXTRA = (
    "00080021",  # SeriesDate
    "00080031",  # SeriesTime
    "00180050",  # SliceThickness
    "00185100",  # PatientPosition
    "00081010",  # StationName
    "00080070",  # Manufacturer
)
INSTANCE_EXTRA = (
    "00280010",  # Rows
    "00280011",  # Columns
    "00280100",  # BitsAllocated
    "00280008",  # NumberOfFrames
    "00280004",  # PhotometricInterpretation
)


def resolve_tag(key: str) -> str | None:
    """``"PatientName"`` or ``"00100010"`` -> ``"00100010"``; None when it is neither."""
    if len(key) == 8:
        try:
            int(key, 16)
        except ValueError:
            pass
        else:
            return key.upper()
    tag = tag_for_keyword(key)
    return None if tag is None else f"{tag:08X}"


def keyword_of(tag: str) -> str:
    return keyword_for_tag(int(tag, 16)) or tag


def vr_of(tag: str) -> str:
    try:
        return str(dictionary_VR(int(tag, 16)))
    except KeyError:
        return "UN"


def person_name(name: str) -> dict[str, str]:
    """A PN value: ``"Wang^Xiaoming=王^小明"`` -> Alphabetic + Ideographic components."""
    groups = name.split("=")
    value: dict[str, str] = {}
    for label, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False):
        if group:
            value[label] = group
    return value


def element(vr: str, value: Any) -> dict[str, Any]:
    """One attribute; empty strings and None become an attribute without a Value."""
    if value is None or value == "":
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [person_name(str(value))]}
    if vr == "IS":
        return {"vr": vr, "Value": [int(value)]}
    if isinstance(value, list):
        return {"vr": vr, "Value": value}
    if vr in ("CS",) and isinstance(value, str) and "\\" in value:
        return {"vr": vr, "Value": [v for v in value.split("\\") if v]}
    return {"vr": vr, "Value": [value]}


def study_attributes(
    study: Study, *, num_series: int, num_instances: int, base_url: str
) -> JsonDataset:
    data = {
        "00080005": element("CS", UTF8),
        "00080020": element("DA", study.study_date),
        "00080030": element("TM", study.study_time),
        "00080050": element("SH", study.accession_number),
        "00080061": element("CS", study.modalities),
        "00081030": element("LO", study.study_description),
        "00081190": element("UR", f"{base_url}/studies/{study.study_instance_uid}"),
        "00100010": element("PN", study.patient_name),
        "00100020": element("LO", study.patient_id),
        "00100030": element("DA", study.patient_birth_date),
        "00100040": element("CS", study.patient_sex),
        "0020000D": element("UI", study.study_instance_uid),
        "00201206": element("IS", num_series),
        "00201208": element("IS", num_instances),
    }
    if not study.modalities:
        # no series said its modality: left out rather than sent without a value (OHIF's
        # study list cannot take an empty ModalitiesInStudy)
        del data["00080061"]
    return data


def series_attributes(series: Series, *, study_uid: str, base_url: str) -> JsonDataset:
    return {
        "00080060": element("CS", series.modality),
        "0008103E": element("LO", series.series_description),
        "00081190": element(
            "UR", f"{base_url}/studies/{study_uid}/series/{series.series_instance_uid}"
        ),
        "00180015": element("CS", series.body_part_examined),
        "0020000E": element("UI", series.series_instance_uid),
        "00200011": element("IS", series.series_number),
        "00201209": element("IS", series.num_instances),
    }


def instance_attributes(
    instance: Instance, *, study_uid: str, series_uid: str, base_url: str
) -> JsonDataset:
    return {
        "00080016": element("UI", instance.sop_class_uid),
        "00080018": element("UI", instance.sop_instance_uid),
        "00081190": element(
            "UR",
            f"{base_url}/studies/{study_uid}/series/{series_uid}"
            f"/instances/{instance.sop_instance_uid}",
        ),
        "00083002": element("UI", instance.transfer_syntax_uid),
        "00200013": element("IS", instance.instance_number),
    }


def pick(header: JsonDataset | None, tags: tuple[str, ...] | list[str]) -> JsonDataset:
    """The ``tags`` ``header`` has."""
    if not header:
        return {}
    return {t: header[t] for t in tags if t in header}


def normalise_header(header: JsonDataset) -> JsonDataset:
    """An announced header made right for a client: the character set says UTF-8 (the JSON
    is Unicode) and a patient name's ``=`` groups become PN components."""
    data = dict(header)
    data["00080005"] = {"vr": "CS", "Value": [UTF8]}
    pn = data.get("00100010")
    if isinstance(pn, dict):
        values = pn.get("Value") or []
        if values and isinstance(values[0], dict):
            alpha = values[0].get("Alphabetic", "")
            if "=" in alpha and len(values[0]) == 1:
                data["00100010"] = {"vr": "PN", "Value": [person_name(alpha)]}
    return data


def sorted_dataset(data: JsonDataset) -> JsonDataset:
    return {tag: data[tag] for tag in sorted(data)}
