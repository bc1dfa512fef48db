"""What a modality hears when its instance is kept but will not simply be filed (dcmtk's
storescu as the modality): a study UID another site sent first, another version of an
instance already received, another patient than the study's, an instance of a study the
county already held as another site's. The warning 0xB000 with the reason as Error Comment,
never a bare success; the instance is kept (and forwarded, for the county to hold)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import generate_uid

from gateway.config import GatewaySettings
from gateway.ops import format_status, spool_status
from gateway.outbox import ANNOUNCED, CONFLICT, RECEIVED
from gateway.service import Gateway
from storage import FilesystemStore
from tests.dicom_factory import make_ct, write
from tests.integration.test_api_world import PASSWORDS, Study, World
from tests.integration.test_gateway_device_binding import (
    _run,
    _wait,
    api_url,
    make_gateway,
    pytestmark,
    world,
)

# fixtures from the modules above, named as parameters below
__all__ = ["api_url", "make_gateway", "pytestmark", "world"]
from tests.integration.test_gateway_support import County, county  # noqa: F401

WARNED = "Warning"  # storescu -v: "Received Store Response (Warning: ...)"


def store(port: int, calling: str, path: Path) -> subprocess.CompletedProcess[str]:
    return _run(
        *("storescu", "-v", "-aet", calling, "-aec", "TELEREAD", "127.0.0.1", str(port)),
        str(path),
    )


def answered(run: subprocess.CompletedProcess[str]) -> str:
    """ "success" or "warning" from storescu's verbose output (it exits 0 for both)."""
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout + run.stderr
    assert "Received Store Response" in out, out
    return "warning" if "Received Store Response (Warning" in out else "success"


def test_another_sites_study_uid_and_another_version_are_answered_a_warning(
    make_gateway: Callable[..., Gateway],
    county: County,  # noqa: F811
    tmp_path: Path,
) -> None:
    with county.state.lock:
        county.state.sites.append({"code": "TS02", "name": "T2", "ae_titles": ["CT_TS02"]})
    gw = make_gateway()  # one gateway for both townships (the all-in-one case)
    study = generate_uid()
    first = make_ct(study, instance_number=1, rows=32, cols=32)
    squat = make_ct(study, instance_number=2, rows=32, cols=32, patient_id="Q7")
    more = make_ct(study, instance_number=3, rows=32, cols=32, series_uid=first.SeriesInstanceUID)
    assert answered(store(gw.port, "CT_TS01", write(first, tmp_path / "1.dcm"))) == "success"
    run = store(gw.port, "CT_TS02", write(squat, tmp_path / "2.dcm"))
    assert answered(run) == "warning", run.stdout
    # the owner goes on as before
    assert answered(store(gw.port, "CT_TS01", write(more, tmp_path / "3.dcm"))) == "success"
    # the same instance again, changed (a corrected re-send): forwarded beside the first for
    # the county's overwrite policy (worklist.resends), a success here
    first.StudyDescription = "头颅CT平扫 复查"
    run = store(gw.port, "CT_TS01", write(first, tmp_path / "1b.dcm"))
    assert answered(run) == "success"
    # another patient in the owner's study: held by the county (patient_mismatch), so a
    # warning here too; a name written differently (case, empty components) is the same one
    other = make_ct(study, instance_number=4, rows=32, cols=32, patient_id="P002")
    run = store(gw.port, "CT_TS01", write(other, tmp_path / "4.dcm"))
    assert answered(run) == "warning", run.stdout
    renamed = make_ct(study, instance_number=5, rows=32, cols=32, patient_name="王^小明^^")
    assert answered(store(gw.port, "CT_TS01", write(renamed, tmp_path / "5.dcm"))) == "success"
    rows = gw.spool.outbox.query("SELECT site, state FROM outbox ORDER BY id")
    assert [r[0] for r in rows] == ["TS01", "TS02", "TS01", "TS01", "TS01", "TS01"]
    assert {r[1] for r in rows} == {RECEIVED}
    assert gw.spool.outbox.counters()["instances_answered_held"] == 2
    assert "answered the held warning 2" in format_status(spool_status(gw.spool))


def test_a_study_the_county_held_as_another_sites(
    world: World,
    api_url: str,
    tmp_path: Path,
) -> None:
    owner = Study("TS01", "CT", "头颅CT平扫 急性脑卒中", count=2)
    assert world.announce(owner).status_code == 200
    settings = GatewaySettings(
        ae_title="TELEREAD",
        host="127.0.0.1",
        port=0,
        spool_dir=tmp_path / "spool",
        api_url=api_url,
        api_username="gw_all",
        api_password=PASSWORDS["gw_all"],
        announce_delay_seconds=0.05,
        spool_min_free_bytes=0,
        workers=1,
    )
    gw = Gateway(settings=settings, store=FilesystemStore(tmp_path / "objects"))
    gw.start()
    try:
        series = generate_uid()
        files = [
            write(
                make_ct(owner.uid, series_uid=series, instance_number=i, rows=32, cols=32),
                tmp_path / f"ts02-{i}.dcm",
            )
            for i in (1, 2)
        ]
        # the first instance: nothing known yet at the gateway, the county holds it
        assert answered(store(gw.port, "CT_TS02", files[0])) == "success"

        def held() -> bool:
            rows = gw.spool.outbox.query("SELECT state FROM outbox ORDER BY id")
            return bool(rows) and rows[0][0] == CONFLICT

        _wait(held)
        # the rest of the study, and the first one sent again: a warning
        assert answered(store(gw.port, "CT_TS02", files[1])) == "warning"
        assert answered(store(gw.port, "CT_TS02", files[0])) == "warning"
        _wait(lambda: len(spool_status(gw.spool)["problems"]) == 2)
        problems = spool_status(gw.spool)["problems"]
        assert all("study_other_site" in (p["error"] or "") for p in problems), problems
        # the owner's study untouched and complete; both held for an admin
        detail = world.get("dr_li", f"/api/v1/studies/{owner.uid}").json()
        assert (detail["site"], detail["num_instances"]) == ("TS01", 2)
        conflicts = world.get("boss", "/api/v1/ingest-conflicts").json()
        assert len(conflicts) == 2 and {c["kind"] for c in conflicts} == {"study_other_site"}
        assert not gw.spool.outbox.query("SELECT 1 FROM outbox WHERE state = ?", (ANNOUNCED,))
    finally:
        gw.stop()
