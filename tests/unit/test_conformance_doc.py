"""docs/conformance.md against the code: the SOP classes and transfer syntaxes the gateway
accepts, what can be decoded, the C-STORE and MPPS statuses it answers, its association
parameters, and the DICOMweb resources and frame media types the county API serves. A change
to any of them fails here until the statement says the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway import mpps, status
from gateway.config import GatewaySettings
from gateway.scp import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, build_ae
from viewer_api.dicomweb import router
from viewer_api.dicomweb.pixels import FRAME_MEDIA_TYPES

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
VERIFICATION = "1.2.840.10008.1.1"
UID_CELL = re.compile(r"`(\d+(?:\.\d+)+)`")


def section(heading: str) -> str:
    """The text under ``heading`` (a whole heading line) up to the next heading."""
    start = DOC.index(f"\n{heading}\n") + len(heading) + 2
    following = re.search(r"^#{1,6} ", DOC[start:], flags=re.MULTILINE)
    return DOC[start : start + following.start()] if following else DOC[start:]


def table_rows(text: str) -> list[list[str]]:
    rows = [
        line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("|")
    ]
    return [[cell.strip() for cell in row] for row in rows[2:]]  # without header and rule


def uid_in(cell: str) -> str:
    found = UID_CELL.search(cell)
    assert found, cell
    return found.group(1)


def decodable(ts: str) -> bool:
    try:
        return bool(get_decoder(UID(ts)).is_available)
    except NotImplementedError:  # no decoder for this syntax at all
        return False


def test_storage_sop_classes_are_the_gateways() -> None:
    documented = set(UID_CELL.findall(section("#### 3.2.1 Storage SOP classes")))
    assert documented == set(STORAGE_SOP_CLASSES)


def test_transfer_syntaxes_and_what_is_decoded() -> None:
    rows = table_rows(section("#### 3.2.2 Transfer syntaxes"))
    documented = {uid_in(row[1]): row[2] for row in rows}
    assert list(documented) == list(TRANSFER_SYNTAXES)
    for ts, rendered in documented.items():
        assert rendered.startswith("yes" if decodable(ts) else "no"), ts


def test_presentation_contexts_and_association_parameters() -> None:
    ae = build_ae(GatewaySettings())
    contexts = {str(cx.abstract_syntax): list(cx.transfer_syntax) for cx in ae.supported_contexts}
    assert set(contexts) == {*STORAGE_SOP_CLASSES, VERIFICATION, mpps.MPPS_SOP_CLASS}
    for abstract, syntaxes in contexts.items():
        if abstract == mpps.MPPS_SOP_CLASS:
            assert syntaxes == [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        else:
            assert syntaxes == list(TRANSFER_SYNTAXES), abstract
    overview = section("## 1 Overview")
    assert f"`{VERIFICATION}`" in overview and f"`{mpps.MPPS_SOP_CLASS}`" in overview
    policies = {row[0]: row[1] for row in table_rows(section("### 3.1 Association policies"))}
    assert policies["Implementation Class UID"].startswith(f"`{ae.implementation_class_uid}`")
    assert policies["Implementation Version Name"] == f"`{ae.implementation_version_name}`"
    assert policies["Maximum PDU size received"].startswith(f"{ae.maximum_pdu_size} bytes")
    settings = GatewaySettings()
    assert policies["Associations at once"].startswith(
        f"{settings.max_associations} (`TELEREAD_GATEWAY_MAX_ASSOCIATIONS`), "
        f"{settings.max_associations_per_address} from one address"
    )


def _statuses_answered() -> set[int]:
    """The C-STORE statuses the gateway's code names (``status.X``), association ones aside."""
    names = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        names |= set(re.findall(r"\bstatus\.([A-Z][A-Z_]+)\b", path.read_text(encoding="utf-8")))
    association = ("REJECTED_", "SOURCE_", "REASON_")
    return {getattr(status, n) for n in names if not n.startswith(association)}


def test_c_store_statuses() -> None:
    rows = table_rows(section("### 3.3 Storage SOP class conformance (C-STORE SCP)"))
    assert {int(row[1].strip("`"), 16) for row in rows} == _statuses_answered()


@pytest.mark.parametrize(
    "name",
    [
        "SUCCESS",
        "PROCESSING_FAILURE",
        "DUPLICATE_SOP_INSTANCE",
        "NO_SUCH_SOP_INSTANCE",
        "INVALID_ATTRIBUTE_VALUE",
    ],
)
def test_mpps_statuses(name: str) -> None:
    assert f"`0x{getattr(mpps, name):04X}`" in section(
        "### 3.4 Modality Performed Procedure Step SCP"
    )


def test_dicomweb_resources_are_the_apis() -> None:
    app = FastAPI()
    app.include_router(router)
    served = {
        (path, method.upper()) for path, ops in app.openapi()["paths"].items() for method in ops
    }
    rows = table_rows(section("## 6 DICOMweb (PS3.18) services of the county API"))
    documented = {(row[1].strip("`"), row[2]) for row in rows if row[1].startswith("`/")}
    assert documented == served


def test_frame_media_types() -> None:
    text = section("## 6 DICOMweb (PS3.18) services of the county API")
    header = "| Transfer syntax | Frame media type |"
    rows = table_rows(header + text.split(header, 1)[1])
    documented = {uid_in(row[0]): row[1].strip("`") for row in rows}
    assert documented == FRAME_MEDIA_TYPES
