"""Hostile bodies against a real ``teleread api`` process: a 1.5-million-key JSON body and a
15 MiB body without a token are refused within a second with a small 4xx, on any route, and
the process's peak memory stays within 200 MiB of its idle figure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from storage import FilesystemStore
from tests.load_client import seed_accounts, seed_studies
from tests.processes import SECRET_KEY, Proc, free_port, start_api, wait_healthy
from viewer_api.settings import ApiSettings
from worklist.db import make_engine, make_sessionmaker, upgrade


def memory_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, int, dict[str, str], str]]:
    url = f"sqlite:///{tmp_path / 'teleread.db'}"
    upgrade(url)
    engine = make_engine(url, pool_size=1, max_overflow=0)
    readers, _, _, gateway = seed_accounts(
        make_sessionmaker(engine),
        ApiSettings(secret_key=SECRET_KEY),
        readers=1,
        clinics_per_site=0,
        streamers=0,
    )
    engine.dispose()
    port = free_port()
    env = {
        "TELEREAD_STORAGE_BACKEND": "filesystem",
        "TELEREAD_STORAGE_ROOT": str(tmp_path),
        "TELEREAD_API_WORKERS": "1",  # the process whose memory is measured serves
    }
    proc: Proc = start_api(database_url=url, port=port, env=env, log=tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        [study] = seed_studies(
            base, FilesystemStore(tmp_path), gateway, tmp_path, studies_per_site=1, instances=1
        )[:1]
        yield base, proc.popen.pid, {"reader": readers[0], "gateway": gateway}, study.study
    finally:
        proc.stop()


def many_keys(n: int) -> bytes:
    return ("{" + ",".join(f'"{i:x}":0' for i in range(n)) + "}").encode()


def test_hostile_bodies_are_refused_fast_and_small(
    api: tuple[str, int, dict[str, str], str],
) -> None:
    base, pid, tokens, study = api
    huge = many_keys(1_500_000)  # about 14 MiB
    blob = b"\0" * (15 * 1024 * 1024)
    reader = {"Authorization": f"Bearer {tokens['reader']}", "Content-Type": "application/json"}
    gateway = {"Authorization": f"Bearer {tokens['gateway']}", "Content-Type": "application/json"}
    report = f"/api/v1/studies/{study}/report"
    ingest = "/api/v1/ingest/instances"

    def chunked(data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), 256 * 1024):
            yield data[i : i + 256 * 1024]

    cases: list[tuple[str, str, str, dict[str, str], object, int]] = [
        ("1.5M keys, a reader's route", "PUT", report, reader, huge, 413),
        ("1.5M keys, the gateway's route", "POST", ingest, gateway, huge, 413),
        ("1.5M keys streamed, no token", "POST", ingest, {}, chunked(huge), 401),
        ("15 MiB, no token", "POST", ingest, {}, blob, 401),
        ("15 MiB streamed, no token", "PUT", report, {}, chunked(blob), 401),
        ("5000 unknown keys, under the cap", "PUT", report, reader, many_keys(5_000), 422),
        ("100k keys, a reader's route", "PUT", report, reader, many_keys(100_000), 413),
    ]
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(5):  # warm: the routes' first use imports and caches
            client.get("/healthz")
            client.put(report, json={"findings": ""}, headers=reader)
        _, idle_peak = memory_mib(pid)
        for name, method, path, headers, content, expected in cases:
            started = time.monotonic()
            r = client.request(method, path, headers=headers, content=content)  # type: ignore[arg-type]
            seconds = time.monotonic() - started
            assert r.status_code == expected, (name, r.status_code, r.text[:300])
            assert seconds < 1.0, f"{name}: {seconds:.2f} s"
            assert len(r.content) < 4096, f"{name}: {len(r.content)} bytes"
            assert r.json()["code"], name
            if expected == 422:  # the first 20 of 5000 errors, and their count
                assert len(r.json()["detail"]) == 20
                assert r.headers["x-validation-errors"] == "5000"
        assert client.get("/healthz").status_code == 200
    _, peak = memory_mib(pid)
    assert peak - idle_peak < 200, f"peak RSS grew {peak - idle_peak:.0f} MiB"
