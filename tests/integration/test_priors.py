"""A patient's prior studies on the reading page: the same patient ID at the same site, and
across the sites whose IDs the county links; with their signed reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import Study, World, build_world
from worklist.models import Study as StudyRow
from worklist.settings import WorklistSettings


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def _announce(world: World, study: Study, *, patient_id: str, gateway: str = "gw_ts01") -> str:
    assert world.announce(study, gateway=gateway).status_code == 200
    with world.factory.begin() as session:
        session.execute(
            update(StudyRow)
            .where(StudyRow.study_instance_uid == study.uid)
            .values(patient_id=patient_id)
        )
    world.clock.tick(60)
    return study.uid


def _priors(world: World, uid: str, username: str = "dr_wang") -> list[str]:
    r = world.get(username, f"/api/v1/studies/{uid}/priors")
    assert r.status_code == 200, r.text
    return [p["study_instance_uid"] for p in r.json()]


def test_priors_are_the_same_patients_other_studies(world: World) -> None:
    old = _announce(world, Study("TS01", "CT", "头颅CT平扫"), patient_id="P-7")
    url = f"/api/v1/studies/{old}/report"
    assert world.post("dr_li", f"/api/v1/worklist/{old}/claim").status_code == 200
    text = {"findings": "脑实质未见异常密度。", "impression": "颅内未见明显异常。"}
    assert world.put("dr_li", url, json=text).status_code == 200
    assert world.post("dr_li", f"{url}/sign", json={"status": "final"}).status_code == 200
    other_patient = _announce(world, Study("TS01", "CT", "胸部CT"), patient_id="P-8")
    elsewhere = _announce(world, Study("TS02", "CT", "头颅CT"), patient_id="P-7", gateway="gw_all")
    now = _announce(world, Study("TS01", "CT", "头颅CT平扫 复查"), patient_id="P-7")

    assert _priors(world, now) == [old]
    r = world.get("dr_wang", f"/api/v1/studies/{now}/priors").json()
    assert r[0]["report"]["impression"] == "颅内未见明显异常。"
    assert r[0]["report"]["signed_by"] == "dr_li" and r[0]["patient_id"] == "P-7"
    assert _priors(world, old) == [now]
    assert other_patient not in _priors(world, now)

    # the county links TS01's and TS02's patient IDs: the other site's study is a prior too
    app = world.client.app
    app.state.worklist_settings = WorklistSettings(  # type: ignore[attr-defined]
        stable_seconds=60, linked_sites="TS01,TS02"
    )
    assert _priors(world, now) == [elsewhere, old]
    # readers only (a clinic reads its reports elsewhere); another site's study is a 404
    assert world.get("nurse_ts01", f"/api/v1/studies/{now}/priors").status_code == 403
    assert world.get("dr_wang", "/api/v1/studies/1.2.3/priors").status_code == 404
