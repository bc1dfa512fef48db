"""MPPS end to end: a modality's N-CREATE (IN PROGRESS), C-STOREs and N-SET (COMPLETED,
listing its images) -> the gateway -> the real county API (uvicorn on loopback, SQLite and
PostgreSQL) marks the study ready; and the API call ``/ingest/study-complete`` on its own."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy.orm import Session, sessionmaker

from gateway import mpps
from gateway.config import GatewaySettings
from gateway.service import Gateway
from storage import FilesystemStore
from tests.dicom_factory import make_ct
from tests.integration.test_api_world import PASSWORDS, Study, World, build_world

CALLING = "CT_TS01"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


@pytest.fixture
def api_url(world: World) -> Iterator[str]:
    """The world's app served by uvicorn on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(world.client.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started and time.monotonic() < end:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _status(world: World, study_uid: str) -> str:
    return str(world.get("dr_li", f"/api/v1/studies/{study_uid}").json()["status"])


# -- the API call on its own ---------------------------------------------------------------


def test_study_complete_marks_ready_only_with_every_instance(world: World) -> None:
    study = Study("TS01", "CT", "腹部CT平扫", count=3)
    world.announce(study)
    body = {"site": "TS01", "study_instance_uid": study.uid, "expected_instances": 4}
    r = world.post("gw_ts01", "/api/v1/ingest/study-complete", json=body)
    assert r.status_code == 200 and r.json()["ready"] is False
    assert _status(world, study.uid) == "receiving"
    body["expected_instances"] = 3
    for _ in range(2):  # idempotent
        r = world.post("gw_ts01", "/api/v1/ingest/study-complete", json=body)
        assert r.status_code == 200
        assert r.json() == {
            "study_instance_uid": study.uid,
            "status": "ready",
            "num_instances": 3,
            "expected_instances": 3,
            "ready": True,
        }
    assert _status(world, study.uid) == "ready"


def test_study_complete_checks_site_role_and_input(world: World) -> None:
    study = Study("TS01", "CT", "腹部CT平扫", count=1)
    world.announce(study)
    path = "/api/v1/ingest/study-complete"
    body = {"site": "TS01", "study_instance_uid": study.uid, "expected_instances": 1}
    assert world.post("gw_ts01", path, json={**body, "site": "TS02"}).status_code == 403
    assert world.post("gw_all", path, json={**body, "site": "TS02"}).status_code == 404
    assert world.post("gw_all", path, json={**body, "site": "NOPE"}).status_code == 422
    assert world.post("gw_ts01", path, json={**body, "expected_instances": 0}).status_code == 422
    unknown = {**body, "study_instance_uid": "1.2.3.4"}
    assert world.post("gw_ts01", path, json=unknown).status_code == 404
    for user in ("dr_li", "nurse_ts01", "boss"):
        assert world.post(user, path, json=body).status_code == 403, user
    assert _status(world, study.uid) == "receiving"


# -- MPPS through the gateway --------------------------------------------------------------


def _mpps_create(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepID = "PPS1"
    ds.Modality = "CT"
    ds.PerformedProcedureStepStartDate = "20261125"
    ds.PerformedProcedureStepStartTime = "100000"
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.AccessionNumber = "A001"
    ds.ScheduledStepAttributesSequence = [step]
    ds.PerformedSeriesSequence = []
    return ds


def _mpps_completed(series_uid: str, sops: list[str]) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate = "20261125"
    ds.PerformedProcedureStepEndTime = "101000"
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.Modality = "CT"
    refs = []
    for sop in sops:
        ref = Dataset()
        ref.ReferencedSOPClassUID = CT_IMAGE
        ref.ReferencedSOPInstanceUID = sop
        refs.append(ref)
    series.ReferencedImageSequence = refs
    ds.PerformedSeriesSequence = [series]
    return ds


@pytest.fixture
def gateway(api_url: str, tmp_path: Path) -> Iterator[Gateway]:
    settings = GatewaySettings(
        ae_title="TELEREAD",
        host="127.0.0.1",
        port=0,
        spool_dir=tmp_path / "spool",
        api_url=api_url,
        api_username="gw_all",
        api_password=PASSWORDS["gw_all"],
        announce_delay_seconds=0.05,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.5,
        spool_min_free_bytes=0,
        mpps_poll_seconds=0.1,
        workers=1,
    )
    gw = Gateway(settings=settings, store=FilesystemStore(tmp_path / "objects"))
    gw.start()
    yield gw
    gw.stop()


def test_mpps_completed_makes_the_study_ready(gateway: Gateway, world: World) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    images = [
        make_ct(
            study_uid,
            series_uid=series_uid,
            instance_number=i + 1,
            study_description="腹部CT平扫",
            rows=32,
            cols=32,
        )
        for i in range(3)
    ]
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(mpps.MPPS_SOP_CLASS)
    ae.add_requested_context(CT_IMAGE, [images[0].file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="TELEREAD")
    assert assoc.is_established
    pps_uid = generate_uid()
    try:
        st, _ = assoc.send_n_create(_mpps_create(study_uid), mpps.MPPS_SOP_CLASS, pps_uid)
        assert int(st.Status) == mpps.SUCCESS
        st, _ = assoc.send_n_create(_mpps_create(study_uid), mpps.MPPS_SOP_CLASS, pps_uid)
        assert int(st.Status) == mpps.DUPLICATE_SOP_INSTANCE
        st, _ = assoc.send_n_set(
            _mpps_completed(series_uid, []), mpps.MPPS_SOP_CLASS, generate_uid()
        )
        assert int(st.Status) == mpps.NO_SUCH_SOP_INSTANCE
        for ds in images[:2]:
            assert int(assoc.send_c_store(ds).Status) == 0
        # COMPLETED lists three images; only two have arrived
        sops = [str(ds.SOPInstanceUID) for ds in images]
        st, _ = assoc.send_n_set(_mpps_completed(series_uid, sops), mpps.MPPS_SOP_CLASS, pps_uid)
        assert int(st.Status) == mpps.SUCCESS
        _wait(lambda: world.get("dr_li", f"/api/v1/studies/{study_uid}").status_code == 200)
        time.sleep(0.5)  # several polls of the completion thread
        assert _status(world, study_uid) == "receiving"
        assert gateway.mpps.get(pps_uid)["announce_state"] == mpps.WAITING  # type: ignore[index]
        assert int(assoc.send_c_store(images[2]).Status) == 0
        # a completed step may no longer be changed
        st, _ = assoc.send_n_set(_mpps_completed(series_uid, sops), mpps.MPPS_SOP_CLASS, pps_uid)
        assert int(st.Status) == mpps.PROCESSING_FAILURE
    finally:
        assoc.release()
    _wait(lambda: _status(world, study_uid) == "ready")
    detail = world.get("dr_li", f"/api/v1/studies/{study_uid}").json()
    assert detail["num_instances"] == 3
    _wait(lambda: gateway.mpps.get(pps_uid)["announce_state"] == mpps.DONE)  # type: ignore[index]


def test_mpps_survives_a_restart(world: World, api_url: str, tmp_path: Path) -> None:
    """The step's state is in mpps.db: N-CREATE before a restart, N-SET after it."""
    store = mpps.MppsStore(tmp_path / "mpps.db")
    uid, study_uid, series_uid = generate_uid(), generate_uid(), generate_uid()
    store.create(uid, _mpps_create(study_uid), site="TS01", calling_ae=CALLING)
    store.close()
    again = mpps.MppsStore(tmp_path / "mpps.db")
    assert again.update(uid, _mpps_completed(series_uid, ["1.2.3.4"])) == mpps.COMPLETED
    assert again.instances_of(uid) == ["1.2.3.4"]
    assert [s.uid for s in again.waiting(time.time() + 1)] == [uid]
    with pytest.raises(mpps.MppsError):
        again.create(uid, _mpps_create(study_uid), site="TS01", calling_ae=CALLING)
    again.close()
