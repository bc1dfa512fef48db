"""The gateway end to end on loopback: dcmtk / pynetdicom peers -> SCP -> spool -> real
FilesystemStore -> a small real county API."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from gateway import status
from gateway.config import GatewaySettings
from gateway.county import CountyClient
from gateway.ops import spool_status
from gateway.outbox import ANNOUNCED
from gateway.service import Gateway
from storage.recompressed import original_of
from tests.dicom_factory import make_ct, make_dx, write
from tests.integration.test_gateway_support import (  # noqa: F401
    County,
    SwitchableStore,
    after_meta,
    county,
)

CALLING = "CT_TS01"
DCMTK = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")


def _env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


@pytest.fixture
def make_gateway(tmp_path: Path, county: County) -> Iterator[Callable[..., Gateway]]:  # noqa: F811
    started: list[Gateway] = []

    def make(
        spool_dir: Path | None = None, *, forward: bool = True, **overrides: object
    ) -> Gateway:
        settings = GatewaySettings(
            ae_title="TELEREAD",
            host="127.0.0.1",
            port=0,
            spool_dir=spool_dir or tmp_path / "spool",
            api_url=county.url,
            api_username="gw",
            api_password="pw",
            announce_delay_seconds=0.05,
            backoff_initial_seconds=0.05,
            backoff_max_seconds=0.5,
            spool_min_free_bytes=0,
            **{"workers": 1, **overrides},  # type: ignore[arg-type]
        )
        store = SwitchableStore(tmp_path / "store")
        gw = Gateway(settings=settings, store=store)
        gw.start(forward=forward)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _announced(gw: Gateway, n: int) -> Callable[[], bool]:
    def check() -> bool:
        rows = gw.spool.outbox.query("SELECT COUNT(*) FROM outbox WHERE state = ?", (ANNOUNCED,))
        return int(rows[0][0]) >= n

    return check


@pytest.mark.dcmtk
@DCMTK
def test_echo_known_and_unknown_ae(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()
    ok = subprocess.run(
        ["echoscu", "-aet", CALLING, "-aec", "TELEREAD", "127.0.0.1", str(gw.port)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        ["echoscu", "-aet", "STRANGER", "-aec", "TELEREAD", "127.0.0.1", str(gw.port)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode != 0
    assert "Calling AE Title Not Recognized" in bad.stdout + bad.stderr


@pytest.mark.dcmtk
@DCMTK
def test_storescu_ct_and_dr_stored_byte_identical(
    make_gateway: Callable[..., Gateway],
    tmp_path: Path,
    county: County,  # noqa: F811
) -> None:
    gw = make_gateway()
    src = tmp_path / "send"
    study = generate_uid()
    files = [
        write(make_ct(study, instance_number=i, sop_uid=generate_uid()), src / f"ct{i}.dcm")
        for i in range(1, 4)
    ]
    files.append(write(make_dx(charset="ISO_IR 192"), src / "dx.dcm"))
    run = subprocess.run(
        [
            "storescu",
            "-aet",
            CALLING,
            "-aec",
            "TELEREAD",
            "+sd",
            "127.0.0.1",
            str(gw.port),
            str(src),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    _wait(_announced(gw, len(files)))

    for path in files:
        sent = path.read_bytes()
        ds = dcmread(path, stop_before_pixels=True)
        key = f"TS01/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        stored = original_of(gw.store.get(key))  # recompressed by default: rebuilt
        assert after_meta(stored) == after_meta(sent)
        meta = dcmread(gw.store.open(key), stop_before_pixels=True).file_meta
        assert meta.SourceApplicationEntityTitle == CALLING
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    by_sop = {i["sop_instance_uid"]: i for i in county.state.instances}
    assert len(by_sop) == len(files)
    ct = by_sop[str(dcmread(files[0]).SOPInstanceUID)]
    assert ct["patient_name"] == "王^小明"
    assert ct["urgent_hint"]["category"] == "stroke"
    assert ct["urgent_hint"]["priority"] == "stat"
    assert "头颅" in ct["text_fields"]["StudyDescription"]
    assert ct["dicom_json"]["0020000D"]["Value"] == [ct["study_instance_uid"]]
    dx = by_sop[str(dcmread(files[-1]).SOPInstanceUID)]
    assert dx["patient_name"] == "张^丽"
    assert dx["urgent_hint"]["priority"] == "routine"
    call = county.state.calls[0]
    assert (call["site"], call["calling_ae"], call["called_ae"]) == ("TS01", CALLING, "TELEREAD")
    # the spool files are gone once announced; the rows stay for dedup
    assert not list((gw.spool.root / "objects").glob("*.dcm"))
    assert spool_status(gw.spool)["pending"] == 0


@pytest.mark.dcmtk
@DCMTK
def test_called_ae_flags_the_study(
    make_gateway: Callable[..., Gateway],
    tmp_path: Path,
    county: County,  # noqa: F811
) -> None:
    gw = make_gateway()
    path = write(make_dx(study_description="胸部正位"), tmp_path / "s" / "dx.dcm")
    run = subprocess.run(
        ["storescu", "-aet", CALLING, "-aec", "CHESTPAIN", "127.0.0.1", str(gw.port), str(path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    _wait(_announced(gw, 1))
    (item,) = county.state.instances
    assert item["urgent_hint"]["category"] == "chest_pain"
    assert county.state.calls[0]["called_ae"] == "CHESTPAIN"


def _send(port: int, *items: Dataset | Path, calling: str = CALLING) -> list[int]:
    ae = AE(ae_title=calling)
    for item in items:
        ds = dcmread(item, stop_before_pixels=True) if isinstance(item, Path) else item
        meta = ds.file_meta
        ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="TELEREAD")
    assert assoc.is_established
    try:
        out = []
        for item in items:
            rsp = assoc.send_c_store(str(item) if isinstance(item, Path) else item)
            out.append(int(rsp.Status))
        return out
    finally:
        assoc.release()


def test_malformed_datasets_fail_and_the_server_keeps_serving(
    make_gateway: Callable[..., Gateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = make_gateway(forward=False)
    no_study = make_ct()
    del no_study.StudyInstanceUID
    with warnings.catch_warnings():  # pydicom rightly warns about the bad UID
        warnings.simplefilter("ignore")
        bad_uid = make_ct(SeriesInstanceUID="1.2.03.x")
    # a dataset whose bytes are garbage after a valid file meta header
    good = make_ct()
    raw = write(good, tmp_path / "good.dcm").read_bytes()
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(
        raw[: len(raw) - len(after_meta(raw))] + b"\x08\x00\x18\x00UI\xff\x7f" + b"\x01" * 40
    )
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send bytes as they are
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        statuses = _send(gw.port, no_study, bad_uid, broken, tmp_path / "good.dcm")
    assert statuses[0] == status.CANNOT_UNDERSTAND
    assert statuses[1] == status.CANNOT_UNDERSTAND
    assert statuses[2] in (status.CANNOT_UNDERSTAND, status.DATASET_DOES_NOT_MATCH_SOP_CLASS)
    assert statuses[3] == status.SUCCESS
    assert gw.spool.outbox.query("SELECT COUNT(*) FROM outbox")[0][0] == 1


def test_duplicate_is_noop_and_a_resend_goes_beside_the_first(
    make_gateway: Callable[..., Gateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = make_gateway()
    ds = make_ct()
    first = write(ds, tmp_path / "a.dcm")
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    assert _send(gw.port, first, first) == [status.SUCCESS, status.SUCCESS]
    _wait(_announced(gw, 1))
    assert _send(gw.port, first) == [status.SUCCESS]  # after announcement too
    ds.StudyDescription = "changed"
    second = write(ds, tmp_path / "b.dcm")
    assert _send(gw.port, second) == [status.SUCCESS]
    _wait(_announced(gw, 2))
    rows = gw.spool.outbox.query("SELECT state, object_key FROM outbox ORDER BY id")
    key = f"TS01/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    tag = hashlib.sha256(after_meta(second.read_bytes())).hexdigest()[:16]
    version = key.removesuffix(".dcm") + f"_{tag}.dcm"
    assert rows == [(ANNOUNCED, key), (ANNOUNCED, version)]
    # never overwritten: each version under its own key, for the county's policy to choose
    assert after_meta(original_of(gw.store.get(key))) == after_meta(first.read_bytes())
    assert after_meta(original_of(gw.store.get(version))) == after_meta(second.read_bytes())
    assert spool_status(gw.spool)["counters"]["instances_resent"] == 1


def test_unknown_ae_picked_up_after_site_added(
    make_gateway: Callable[..., Gateway],
    county: County,  # noqa: F811
) -> None:
    gw = make_gateway()
    ae = AE(ae_title="DR_TS02")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="TELEREAD")
    assert assoc.is_rejected
    with county.state.lock:
        county.state.sites.append({"code": "TS02", "name": "T2", "ae_titles": ["DR_TS02"]})
    time.sleep(1.1)  # unknown-AE refreshes are limited to one a second
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="TELEREAD")
    assert assoc.is_established
    assoc.release()
    assert (gw.spool.root / "sites.json").exists()


def test_spool_full_answers_out_of_resources(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(forward=False, spool_max_bytes=1000)
    assert _send(gw.port, make_ct()) == [status.OUT_OF_RESOURCES]


def test_restart_resumes_from_outbox(
    make_gateway: Callable[..., Gateway],
    tmp_path: Path,
    county: County,  # noqa: F811
) -> None:
    gw = make_gateway()
    gw.store.down = True  # type: ignore[attr-defined]
    datasets = [make_ct(instance_number=i) for i in range(3)]
    assert _send(gw.port, *datasets) == [status.SUCCESS] * 3
    time.sleep(0.2)
    gw.stop()
    assert not county.state.instances
    gw2 = make_gateway(spool_dir=tmp_path / "spool")
    _wait(_announced(gw2, 3))
    assert {i["sop_instance_uid"] for i in county.state.instances} == {
        str(d.SOPInstanceUID) for d in datasets
    }


def test_county_client_relogs_in(county: County) -> None:  # noqa: F811
    client = CountyClient(county.url, "gw", "pw")
    client._token = "stale"
    assert [s.code for s in client.config()] == ["TS01"]
    client.close()
