"""The county as a cluster: real PostgreSQL, a real S3 server (SeaweedFS), two `teleread api`
processes and one `teleread gateway` given both URLs, dcmtk's storescu as the township CT.

It comes up the production way (two `teleread db upgrade` jobs and both APIs started at
once on an empty database: one migration run), then one API is killed with SIGKILL in the
middle of a send: every instance is still announced within 5 s of its upload, and a stroke
study sent during the outage is at the top of the other replica's worklist within 5 s of
its first C-STORE."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import text

from tests.cluster import Cluster, Watcher, have_dcmtk, run_cluster
from tests.dicom_factory import make_ct, write
from tests.servers.postgres import PostgresServer
from tests.servers.seaweed import S3Server
from worklist.db import head_revision, make_engine

ROUTINE_INSTANCES = 150
STROKE_INSTANCES = 6
WITHIN_SECONDS = 5.0

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.s3,
    pytest.mark.dcmtk,
    pytest.mark.skipif(not have_dcmtk(), reason="dcmtk's storescu/echoscu are missing"),
]


@pytest.fixture(scope="module")
def cluster(
    postgres_server: PostgresServer, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    name = f"cluster_{uuid.uuid4().hex}"
    with postgres_server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # empty: the cluster migrates it
    url = postgres_server.url(name).render_as_string(hide_password=False)
    try:
        with run_cluster(
            tmp_path_factory.mktemp("cluster"),
            database_url=url,
            s3=s3_server,
            bucket=f"cluster-{uuid.uuid4().hex[:12]}",
        ) as running:
            yield running
    finally:
        with postgres_server.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_two_upgrades_and_two_apis_at_once_migrate_once(cluster: Cluster) -> None:
    outputs = cluster.upgrade_outputs
    assert sum("database migrated from (empty)" in o for o in outputs) == 1, outputs
    assert sum(f"at the latest migration {head_revision()}" in o for o in outputs) == 1
    engine = make_engine(cluster.database_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()
    assert [v for (v,) in versions] == [head_revision()]


def _study_files(folder: Path, count: int, *, stroke: bool) -> tuple[str, dict[str, Path]]:
    """A study of ``count`` small CT slices: a stroke head CT, or a routine abdomen;
    its UID and its files by SOP Instance UID."""
    study, series = generate_uid(), generate_uid()
    routine = {
        "study_description": "腹部CT平扫 复查",
        "body_part": "ABDOMEN",
        "series_description": "腹部 5mm",
    }
    files = {}
    for number in range(count):
        sop = generate_uid()
        ds = make_ct(
            study,
            series_uid=series,
            sop_uid=sop,
            instance_number=number + 1,
            **({} if stroke else routine),
        )
        files[sop] = write(ds, folder / f"{sop}.dcm")
    return study, files


@pytest.mark.alone  # 5 s is the promise: with other tests beside it, it measures the machine
def test_a_replica_killed_mid_send_loses_nothing_and_a_stroke_goes_first(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, routine = _study_files(tmp_path / "routine", ROUTINE_INSTANCES, stroke=False)
    stroke_uid, stroke = _study_files(tmp_path / "stroke", STROKE_INSTANCES, stroke=True)
    engine = make_engine(cluster.database_url, pool_size=1, max_overflow=0)

    def announced() -> set[str]:
        return cluster.announced_sops(engine)

    survivor = cluster.reader(1)
    watchers = [Watcher(cluster.uploaded_sops), Watcher(announced)]
    for watcher in watchers:
        watcher.start()
    try:
        send = cluster.storescu(list(routine.values()))
        # kill the replica the gateway talks to (the first URL) once uploads are under way
        deadline = time.monotonic() + 60
        while len(watchers[0].first_seen) < ROUTINE_INSTANCES // 4:
            assert send.poll() is None or time.monotonic() < deadline, send.stdout
            assert time.monotonic() < deadline, "uploads did not start"
            time.sleep(0.02)
        cluster.apis[0].kill9()
        stroke_sent = time.monotonic()
        stroke_send = cluster.storescu(list(stroke.values()))
        top_at = None
        while time.monotonic() < stroke_sent + 30:
            items = survivor.get("/api/v1/worklist", params={"limit": 1}).json()
            if items and items[0]["study_instance_uid"] == stroke_uid:
                top_at = time.monotonic()
                break
            time.sleep(0.05)
        assert stroke_send.wait(60) == 0, stroke_send.stdout
        assert send.wait(120) == 0, send.stdout
        everything = set(routine) | set(stroke)
        deadline = time.monotonic() + 60
        while not everything <= set(watchers[1].first_seen) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for watcher in watchers:
            watcher.stop()
        survivor.close()
        engine.dispose()
    assert top_at is not None, (
        f"the stroke study never topped the worklist\n{cluster.gateway.output()[-3000:]}"
    )
    assert top_at - stroke_sent <= WITHIN_SECONDS, top_at - stroke_sent
    up, ann = watchers[0].first_seen, watchers[1].first_seen
    missing = everything - set(ann)
    assert not missing, f"{len(missing)} never announced"
    assert set(up) >= everything
    late = sorted(ann[uid] - up[uid] for uid in everything if ann[uid] - up[uid] > WITHIN_SECONDS)
    assert not late, f"{len(late)} announced over {WITHIN_SECONDS} s after upload: {late[-5:]}"
