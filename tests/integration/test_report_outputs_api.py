"""Report outputs through the real API on SQLite and PostgreSQL: PDF, FHIR, SR, the read
receipt, and who may see which (share links: test_share_links)."""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from html import unescape
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.keys import instance_key, version_key
from tests.dicom_factory import make_ct, part10_bytes
from tests.integration.test_api_world import Study, World, build_world
from tests.pdf_checks import missing_glyphs, qr_codes, unembedded_fonts
from viewer_api.outputs.settings import OutputSettings
from viewer_api.outputs.sr import BASIC_TEXT_SR
from viewer_api.outputs.sr_outbox import SRSender
from worklist import accounts
from worklist.models import AuditEvent

IMPRESSION = "右侧顶叶急性脑梗死，建议尽快完善CT血管成像。"
FINDINGS = "右侧顶叶见片状低密度影，边界模糊。"
DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    for w in build_world(session_factory, tmp_path):
        w.client.app.state.output_settings = OutputSettings(  # type: ignore[attr-defined]
            hospital_name="某某县人民医院", public_url="https://county.example"
        )
        yield w


def announce_ct(world: World, *, site: str = "TS01", count: int = 3) -> Study:
    """A real little head CT (Part-10 objects in the store, headers as DICOM JSON)."""
    study = Study(site=site, modality="CT", description="胸部CT平扫", count=count)
    datasets = [
        make_ct(
            study.uid,
            series_uid=study.series_uid,
            sop_uid=sop,
            instance_number=n,
            study_description="胸部CT平扫",
            patient_name="王^小明",
        )
        for n, sop in enumerate(study.sop_uids, start=1)
    ]
    for ds in datasets:
        blob = part10_bytes(ds)
        study.blobs[ds.SOPInstanceUID] = blob
        key = instance_key(study.site, study.uid, study.series_uid, ds.SOPInstanceUID)
        world.store.put(key, blob, sha256=hashlib.sha256(blob).hexdigest())
    payload = world.payload(study)
    for item, ds in zip(payload["instances"], datasets, strict=True):
        item["dicom_json"] = ds.to_json_dict()
        item["patient_name"] = "王^小明"
    response = world.post("gw_all", "/api/v1/ingest/instances", json=payload)
    assert response.status_code == 200, response.text
    return study


def write_report(world: World, uid: str, *, sign: str | None = "final") -> None:
    assert world.post("dr_li", f"/api/v1/worklist/{uid}/claim").status_code == 200
    body = {"findings": FINDINGS, "impression": IMPRESSION, "recommendation": "建议复查。"}
    assert world.put("dr_li", f"/api/v1/studies/{uid}/report", json=body).status_code == 200
    if sign:
        r = world.post("dr_li", f"/api/v1/studies/{uid}/report/sign", json={"status": sign})
        assert r.status_code == 200, r.text


def pdf_text(data: bytes) -> str:
    """The PDF's text without white space (its lines wrap anywhere)."""
    return re.sub(r"\s+", "", "".join(p.extract_text() for p in PdfReader(BytesIO(data)).pages))


def test_pdf_for_clinic_and_readers(world: World) -> None:
    study = announce_ct(world)
    write_report(world, study.uid, sign="preliminary")
    r = world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    text = pdf_text(r.content)
    assert IMPRESSION in text and "初步报告" in text
    assert "某某县人民医院" in text and "一号乡镇卫生院" in text and "王小明" in text
    assert unembedded_fonts(r.content) == [] and missing_glyphs(r.content) == []
    assert qr_codes(r.content) == []  # no share link: a download makes none

    # finalise: the same route now prints FINAL
    assert (
        world.put(
            "dr_li",
            f"/api/v1/studies/{study.uid}/report",
            json={"findings": FINDINGS, "impression": IMPRESSION},
        ).status_code
        == 200
    )
    r = world.post("dr_li", f"/api/v1/studies/{study.uid}/report/sign", json={"status": "final"})
    assert r.status_code == 200
    text = pdf_text(world.get("dr_wang", f"/api/v1/studies/{study.uid}/report.pdf").content)
    assert "正式报告" in text and "初步报告" not in text
    assert r.json()["content_sha256"] in text


def test_print_view_and_pdf_carry_the_same_fields(world: World) -> None:
    study = announce_ct(world)
    write_report(world, study.uid, sign="final")
    for lang in ("zh-CN", "en"):
        html = world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.html?lang={lang}")
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "<script" not in html.text and "style=" not in html.text
        pdf = world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.pdf?lang={lang}")
        text = pdf_text(pdf.content)
        lines = re.findall(
            r'<span class="rd-label">(.*?)</span><span class="rd-colon">(.*?)</span>'
            r'<span class="rd-value">(.*?)</span>',
            html.text,
        )
        assert len(lines) == 13  # 9 patient and study fields, 4 of the signature
        for label, colon, value in lines:
            assert re.sub(r"\s+", "", unescape(f"{label}{colon}{value}")) in text
    assert (
        world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.pdf?lang=fr").status_code
        == 422
    )


def test_drafts_are_404_for_clinic_and_409_for_readers(world: World) -> None:
    study = announce_ct(world)
    for path in ("report.pdf", "report.fhir.json", "report.html"):
        assert world.get("dr_li", f"/api/v1/studies/{study.uid}/{path}").status_code == 404
    write_report(world, study.uid, sign=None)
    for path in ("report.pdf", "report.fhir.json", "report.html"):
        assert world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/{path}").status_code == 404
        r = world.get("dr_wang", f"/api/v1/studies/{study.uid}/{path}")
        assert r.status_code == 409 and "not signed" in r.json()["detail"]
    assert world.post("dr_li", f"/api/v1/studies/{study.uid}/report/sr").status_code == 409


def test_fhir_validates_and_follows_status(world: World) -> None:
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    study = announce_ct(world)
    write_report(world, study.uid, sign="final")
    r = world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.fhir.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    model = DiagnosticReport.model_validate(r.json())
    assert model.status == "final" and model.conclusion == IMPRESSION
    contained = {c["resourceType"]: c for c in r.json()["contained"]}
    assert contained["ImagingStudy"]["numberOfInstances"] == 3
    assert contained["Patient"]["name"][0]["text"] == "王小明"

    add = {"text": "补充：左侧顶叶另见小片陈旧灶。", "reason": "复阅"}
    world.clock.tick(60)
    assert (
        world.post("dr_wang", f"/api/v1/studies/{study.uid}/report/addenda", json=add).status_code
        == 201
    )
    r = world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.fhir.json")
    assert DiagnosticReport.model_validate(r.json()).status == "amended"
    assert "已修订报告" in pdf_text(
        world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.pdf").content
    )


def test_critical_result_box_in_pdf(world: World) -> None:
    study = announce_ct(world)
    write_report(world, study.uid, sign=None)
    now = world.clock.now
    critical = {
        "finding": "急性脑梗死",
        "identified_at": (now - timedelta(minutes=10)).isoformat(),
        "communicated_to_name": "赵护士",
        "communicated_to_role": "急诊护士",
        "communicated_to_phone": "13800000000",
        "communicated_at": (now - timedelta(minutes=5)).isoformat(),
        "method": "phone",
        "read_back_confirmed": True,
    }
    r = world.post("dr_li", f"/api/v1/studies/{study.uid}/report/critical-results", json=critical)
    assert r.status_code == 201, r.text
    assert (
        world.post(
            "dr_li", f"/api/v1/studies/{study.uid}/report/sign", json={"status": "final"}
        ).status_code
        == 200
    )
    text = pdf_text(world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.pdf").content)
    assert "危急值通报" in text and "赵护士" in text


def _dciodvfy(data: bytes, tmp_path: Path) -> str:
    assert DCIODVFY is not None
    path = tmp_path / "report-sr.dcm"
    path.write_bytes(data)
    done = subprocess.run(
        [DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout + done.stderr


@pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools' dciodvfy not installed")
def test_sr_is_stored_with_the_study(world: World, tmp_path: Path) -> None:
    study = announce_ct(world)
    write_report(world, study.uid, sign="final")
    assert world.post("nurse_ts01", f"/api/v1/studies/{study.uid}/report/sr").status_code == 403
    r = world.post("dr_wang", f"/api/v1/studies/{study.uid}/report/sr")
    assert r.status_code == 201, r.text
    sr = r.json()
    again = world.post("dr_li", f"/api/v1/studies/{study.uid}/report/sr")
    assert again.status_code == 200 and again.json()["sop_instance_uid"] == sr["sop_instance_uid"]

    detail = world.get("dr_li", f"/api/v1/studies/{study.uid}").json()
    assert detail["num_instances"] == 4 and detail["status"] == "final"
    series = {s["series_instance_uid"]: s for s in detail["series"]}
    assert series[sr["series_instance_uid"]]["modality"] == "SR"

    # byte-retrievable through the ordinary instance route, by a clinic user of the site
    got = world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/instances/{sr['sop_instance_uid']}")
    assert got.status_code == 200
    key = instance_key(study.site, study.uid, sr["series_instance_uid"], sr["sop_instance_uid"])
    assert got.content == world.store.get(key)
    report = _dciodvfy(got.content, tmp_path)
    assert "Error" not in report, report
    ds = dcmread(BytesIO(got.content))
    assert ds.VerificationFlag == "VERIFIED" and str(ds.PatientName) == "王^小明"
    assert ds.ContentSequence[2].ContentSequence[0].TextValue == IMPRESSION
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert len(evidence.ReferencedSOPSequence) == 3

    # and as a series of the study under /dicomweb (when that is mounted)
    qido = world.get("nurse_ts01", f"/dicomweb/studies/{study.uid}/series")
    if qido.status_code != 404:
        assert qido.status_code == 200, qido.text
        modalities = {s["00080060"]["Value"][0] for s in qido.json()}
        assert modalities == {"CT", "SR"}

    # an addendum makes a new version naming the previous one
    world.clock.tick(60)
    add = {"text": "补充说明。", "reason": "复阅"}
    assert (
        world.post("dr_wang", f"/api/v1/studies/{study.uid}/report/addenda", json=add).status_code
        == 201
    )
    newer = world.post("dr_wang", f"/api/v1/studies/{study.uid}/report/sr").json()
    assert newer["created"] and newer["sop_instance_uid"] != sr["sop_instance_uid"]
    data = world.store.get(
        instance_key(study.site, study.uid, newer["series_instance_uid"], newer["sop_instance_uid"])
    )
    ds = dcmread(BytesIO(data))
    previous = ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert previous.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sr["sop_instance_uid"]
    assert "Error" not in _dciodvfy(data, tmp_path)


def test_read_receipt_recorded_once_by_first_clinic_read(world: World) -> None:
    study = announce_ct(world)
    receipt_path = f"/api/v1/studies/{study.uid}/report/receipt"
    write_report(world, study.uid, sign="preliminary")
    # a preliminary report read is not a receipt; nor is a radiologist's read
    assert world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.pdf").status_code == 200
    assert world.get("dr_li", receipt_path).json()["first_read_at"] is None
    write_report_final(world, study.uid)
    assert world.get("dr_wang", f"/api/v1/studies/{study.uid}/report.pdf").status_code == 200
    assert world.get("boss", receipt_path).json() == {
        "first_read_at": None,
        "first_read_by": None,
        "site": None,
        "via": None,
    }
    world.clock.tick(120)
    first_at = world.clock.now
    assert (
        world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.fhir.json").status_code == 200
    )
    world.clock.tick(120)
    assert world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.pdf").status_code == 200
    receipt = world.get("dr_li", receipt_path).json()
    assert receipt["first_read_by"] == "nurse_ts01" and receipt["via"] == "fhir"
    assert receipt["first_read_at"] == first_at.isoformat()
    assert world.get("nurse_ts01", receipt_path).status_code == 403

    from worklist.audit import list_events

    with world.factory() as session:
        events = list_events(session=session, action="report_first_read", object_id=study.uid)
    assert len(events) == 1


def write_report_final(world: World, uid: str) -> None:
    body = {"findings": FINDINGS, "impression": IMPRESSION}
    assert world.put("dr_li", f"/api/v1/studies/{uid}/report", json=body).status_code == 200
    r = world.post("dr_li", f"/api/v1/studies/{uid}/report/sign", json={"status": "final"})
    assert r.status_code == 200, r.text


def test_json_read_counts_as_receipt(world: World) -> None:
    study = announce_ct(world)
    write_report(world, study.uid, sign="final")
    assert world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report").status_code == 200
    receipt = world.get("dr_li", f"/api/v1/studies/{study.uid}/report/receipt").json()
    assert receipt["first_read_by"] == "nurse_ts01" and receipt["via"] == "json"
    assert world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report.pdf").status_code == 200
    with world.factory() as session:
        from worklist.audit import list_events

        assert not list_events(session=session, action="report_first_read", object_id=study.uid)


def test_another_site_gets_404_everywhere(world: World) -> None:
    study = announce_ct(world)
    write_report(world, study.uid, sign="final")
    paths: list[tuple[str, str]] = [
        ("get", "report.pdf"),
        ("get", "report.fhir.json"),
        ("get", "report/receipt"),
        ("post", "report/sr"),
        ("post", "report/share-links"),
        ("get", "report/share-links"),
    ]
    for method, path in paths:
        call: Any = getattr(world, method)
        r = call("nurse_ts02", f"/api/v1/studies/{study.uid}/{path}")
        assert r.status_code == 404, (path, r.status_code)
        r = call("nurse_ts02", f"/api/v1/studies/{generate_uid()}/{path}")
        assert r.status_code == 404, (path, r.status_code)
    assert world.get(None, f"/api/v1/studies/{study.uid}/report.pdf").status_code == 401
    assert world.get("gw_all", f"/api/v1/studies/{study.uid}/report.pdf").status_code == 403


@dataclass
class Received:
    datasets: list[bytes] = field(default_factory=list)
    calling: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def township_pacs() -> Iterator[tuple[int, Received]]:
    """A real Storage SCP on loopback (the township's PACS) that takes Basic Text SR."""
    received = Received()

    def handle_store(event: Any) -> int:
        with received.lock:
            received.datasets.append(event.request.DataSet.getvalue())
            received.calling.append(event.assoc.requestor.ae_title)
        return 0x0000

    ae = AE(ae_title="PACS_TS01")
    ae.add_supported_context(BASIC_TEXT_SR, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )
    assert server is not None
    yield server.server_address[1], received
    server.shutdown()


def set_pacs(world: World, site: str, destination: str) -> None:
    with world.factory.begin() as s:
        accounts.set_site_destination(session=s, code=site, destination=destination)


def report_send(world: World, uid: str) -> dict[str, Any]:
    r = world.get("dr_li", f"/api/v1/studies/{uid}/report")
    assert r.status_code == 200, r.text
    state: dict[str, Any] = r.json()["sr_send"]
    return state


def test_signing_queues_the_sr_for_the_site_pacs_retried_until_it_is_there(
    world: World, township_pacs: tuple[int, Received]
) -> None:
    port, received = township_pacs
    set_pacs(world, "TS01", f"PACS_TS01@127.0.0.1:{port}")
    set_pacs(world, "TS02", f"PACS@127.0.0.1:{free_port()}")  # down
    out = OutputSettings(sr_send_timeout_seconds=2)
    sender = SRSender(world.factory, world.store, settings=out, clock=world.clock)
    study = announce_ct(world)
    write_report(world, study.uid, sign="final")
    queued = report_send(world, study.uid)
    assert (queued["status"], queued["reason"], queued["attempts"]) == (
        "pending",
        "signed_final",
        0,
    )
    assert sender.run_once() == 1 and sender.run_once() == 0
    assert len(received.datasets) == 1 and received.calling == ["TELEREAD"]
    first = dcmread(BytesIO(received.datasets[0]), force=True)
    sent = report_send(world, study.uid)
    assert (sent["status"], sent["attempts"], sent["last_error"]) == ("sent", 1, None)
    assert sent["sop_instance_uid"] == first.SOPInstanceUID
    assert sent["destination"] == f"PACS_TS01@127.0.0.1:{port}"

    # a corrected re-send after the report: the report stays, its SR is made again over the
    # study as served now (the corrected name) and sent, naming the first as predecessor
    world.clock.tick(60)
    corrected = make_ct(
        study.uid,
        series_uid=study.series_uid,
        sop_uid=study.sop_uids[0],
        instance_number=1,
        study_description="胸部CT平扫",
        patient_name="王^晓明",
    )
    blob = part10_bytes(corrected)
    sha = hashlib.sha256(blob).hexdigest()
    key = version_key("TS01", study.uid, study.series_uid, study.sop_uids[0], sha)
    world.store.put(key, blob, sha256=sha)
    payload = world.payload(study)
    item = payload["instances"][0]
    item.update(
        object_key=key,
        size=len(blob),
        sha256=sha,
        dicom_json=corrected.to_json_dict(),
        patient_name="王^晓明",
    )
    payload["instances"] = [item]
    r = world.post("gw_all", "/api/v1/ingest/instances", json=payload)
    assert r.json()["resends"][0]["after_signed_report"] is True, r.text
    assert report_send(world, study.uid)["reason"] == "study_updated"
    assert sender.run_once() == 1
    second = dcmread(BytesIO(received.datasets[1]), force=True)
    assert second.SOPInstanceUID != first.SOPInstanceUID
    assert str(second.PatientName) == "王^晓明" and str(first.PatientName) == "王^小明"
    [pred] = second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence
    assert pred.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert report_send(world, study.uid)["sop_instance_uid"] == second.SOPInstanceUID

    # asked for by hand: the same queue (the same SR again); a site without one: 409
    r = world.post("dr_li", f"/api/v1/studies/{study.uid}/report/sr?send=true")
    assert r.status_code == 200 and r.json()["sop_instance_uid"] == second.SOPInstanceUID
    assert r.json()["sr_send"]["status"] == "pending"
    assert r.json()["sr_send"]["reason"] == "requested"
    assert sender.run_once() == 1 and len(received.datasets) == 3

    # TS02's PACS is down: pending with the error, retried after the back-off, audited
    other = announce_ct(world, site="TS02")
    write_report(world, other.uid, sign="preliminary")
    assert sender.run_once() == 1
    failed = report_send(world, other.uid)
    assert (failed["status"], failed["reason"], failed["attempts"]) == (
        "pending",
        "signed_preliminary",
        1,
    )
    assert "did not accept" in failed["last_error"]
    assert sender.run_once() == 0  # not due yet
    world.clock.tick(out.sr_send_retry_seconds)
    assert sender.run_once() == 1 and report_send(world, other.uid)["attempts"] == 2
    with world.factory() as s:
        outcomes = s.scalars(
            select(AuditEvent.outcome)
            .where(AuditEvent.action == "report_sr_sent", AuditEvent.object_id == other.uid)
            .order_by(AuditEvent.id)
        ).all()
    assert outcomes == ["failure", "failure"]
    set_pacs(world, "TS01", "")
    r = world.post("dr_li", f"/api/v1/studies/{study.uid}/report/sr?send=true")
    assert r.status_code == 409


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
