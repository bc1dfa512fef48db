"""``teleread api`` with two worker processes on one SQLite file, as installed on a 2-core
machine: both workers accept connections, an event made through one reaches the streams
the other holds, ``/metrics`` counts every worker's requests in one scrape, a disabled
account is refused by every worker within the token cache's bound, a worker killed
with SIGKILL is replaced while the API keeps answering, SIGTERM stops every process
after each worker has written its batched audit events, and workers whose parent was
killed with SIGKILL stop too.

Which worker holds a connection is read from ``/proc``: the server side of each loopback
connection (its inode in ``/proc/net/tcp``) among each worker's open descriptors."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from storage import FilesystemStore
from tests.load_client import seed_accounts, seed_studies
from tests.processes import SECRET_KEY, Proc, free_port, start_api, wait_healthy
from viewer_api.security import create_access_token
from viewer_api.settings import ApiSettings
from worklist.db import make_engine, make_sessionmaker, upgrade, utcnow
from worklist.models import ROLE_ADMIN, AuditEvent, User

METRICS_TOKEN = "workers-test-scrape-token-0123456789"
WAIT = 60.0  # a ceiling for conditions polled below, not a sleep


@dataclass
class Api:
    base: str
    port: int
    proc: Proc
    url: str
    objects: Path
    reader: str
    streamers: list[str]
    gateway: str
    victim: str  # dr_001's token
    admin: str

    def workers(self) -> set[int]:
        """The live worker processes (children of ``teleread api``)."""
        pids: set[int] = set()
        for task in Path(f"/proc/{self.proc.popen.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (task / "children").read_text().split())
        return {pid for pid in pids if b"teleread.api_worker" in _cmdline(pid) and _alive(pid)}

    def holders(self) -> dict[int, int]:
        """Client port -> the worker pid that holds that connection to the API."""
        by_inode: dict[str, int] = {}
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    f = line.split()
                    local_port = int(f[1].rsplit(":", 1)[1], 16)
                    if local_port == self.port and f[3] == "01":  # ESTABLISHED
                        by_inode[f[9]] = int(f[2].rsplit(":", 1)[1], 16)
        out: dict[int, int] = {}
        for pid in self.workers():
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
                        if m and m.group(1) in by_inode:
                            out[by_inode[m.group(1)]] = pid
        return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """Running (a zombie, or a reaped pid, is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _client_port(client: httpx.Client) -> int:
    """The local port of ``client``'s one open connection."""
    r = client.get("/healthz")
    assert r.status_code == 200
    stream = r.extensions["network_stream"]
    return int(stream.get_extra_info("client_addr")[1])


def _until(what: str, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("api-workers")
    url = f"sqlite:///{tmp / 'teleread.db'}"
    upgrade(url)
    engine = make_engine(url, pool_size=1, max_overflow=0)
    settings = ApiSettings(secret_key=SECRET_KEY)
    readers, _, streamers, gateway = seed_accounts(
        make_sessionmaker(engine), settings, readers=2, clinics_per_site=0, streamers=4
    )
    with make_sessionmaker(engine).begin() as session:
        admin = User(username="admin_w", password_hash="-", role=ROLE_ADMIN, created_at=utcnow())
        session.add(admin)
        session.flush()
        admin_token = create_access_token(user=admin, settings=settings, now=utcnow())
    streamers = streamers[::2]  # radiologists (the others are clinic staff of one site)
    engine.dispose()
    port = free_port()
    objects = tmp / "objects"
    proc = start_api(
        database_url=url,
        port=port,
        env={
            "TELEREAD_API_WORKERS": "2",
            "TELEREAD_API_METRICS_TOKEN": METRICS_TOKEN,
            "TELEREAD_STORAGE_BACKEND": "filesystem",
            "TELEREAD_STORAGE_ROOT": str(objects),
        },
        log=tmp / "api.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield Api(
            base, port, proc, url, objects, readers[0], streamers, gateway, readers[1], admin_token
        )
    finally:
        proc.stop()


def on_both_workers(api: Api) -> list[httpx.Client]:
    """New connections, until some are held by each worker (close them)."""
    clients: list[httpx.Client] = []
    _until("two workers", lambda: len(api.workers()) == 2)
    for _ in range(60):
        client = httpx.Client(base_url=api.base, timeout=30)
        clients.append(client)
        _client_port(client)
        ports = {_client_port(c) for c in clients}
        if len(clients) >= 4 and len({pid for p, pid in api.holders().items() if p in ports}) == 2:
            return clients
    for client in clients:
        client.close()
    raise AssertionError("every connection went to one worker")


@pytest.fixture
def spread(api: Api) -> Iterator[list[httpx.Client]]:
    clients = on_both_workers(api)
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


def _healthz_count(api: Api) -> float:
    r = httpx.get(
        f"{api.base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    total = 0.0
    for line in r.text.splitlines():
        if line.startswith("teleread_api_http_requests_total{") and 'route="/healthz"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_one_scrape_counts_the_requests_of_every_worker(
    api: Api, spread: list[httpx.Client]
) -> None:
    before = _healthz_count(api)
    for client in spread:
        assert client.get("/healthz").status_code == 200
    assert _healthz_count(api) - before == len(spread)


def test_a_disabled_account_is_refused_by_every_worker(
    api: Api, spread: list[httpx.Client]
) -> None:
    """Within ``TELEREAD_API_USER_CACHE_SECONDS`` (2 s; 10 s here is a ceiling under load),
    as across replicas: each worker has the account cached when it is disabled."""
    victim = {"Authorization": f"Bearer {api.victim}"}
    for client in spread:
        assert client.get("/api/v1/worklist", headers=victim).status_code == 200
    r = httpx.post(
        f"{api.base}/api/v1/users/dr_001/disable",
        headers={"Authorization": f"Bearer {api.admin}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    _until(
        "every worker refusing the disabled account",
        lambda: all(c.get("/api/v1/worklist", headers=victim).status_code == 401 for c in spread),
        timeout=10,
    )


class Stream:
    """An event stream read in a thread: the kinds of the events it got."""

    def __init__(self, base: str, token: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=httpx.Timeout(60.0))
        self.kinds: list[str] = []
        self.port = 0
        self.opened = threading.Event()
        threading.Thread(target=self._run, args=(token,), daemon=True).start()
        assert self.opened.wait(30), "stream did not open"

    def _run(self, token: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            with self.client.stream(
                "GET", "/api/v1/events", params={"access_token": token}
            ) as response:
                assert response.status_code == 200
                stream = response.extensions["network_stream"]
                self.port = int(stream.get_extra_info("client_addr")[1])
                self.opened.set()
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        self.kinds.append(line[6:].strip())


def test_an_event_reaches_the_streams_of_both_workers(api: Api) -> None:
    streams: list[Stream] = []
    try:
        # one stream on each worker: a stream that lands where one is (or nowhere known
        # yet) is closed and another opened, until the other worker takes one (it may still
        # be starting when the first answers /healthz)
        tokens = itertools.cycle(api.streamers)  # radiologists: they see every study
        deadline = time.monotonic() + 60
        while len(streams) < 2:
            stream = Stream(api.base, next(tokens))
            holders = api.holders()
            holder = holders.get(stream.port)
            if holder is None or holder in {holders.get(s.port) for s in streams}:
                stream.client.close()
                assert time.monotonic() < deadline, "every stream went to one worker"
                time.sleep(0.2)
                continue
            streams.append(stream)
        study = seed_studies(
            api.base,
            FilesystemStore(api.objects),
            api.gateway,
            api.objects.parent / "dicom",
            studies_per_site=1,
            instances=1,
            size=16,
        )[0].study
        claim = httpx.post(
            f"{api.base}/api/v1/worklist/{study}/claim",
            headers={"Authorization": f"Bearer {api.reader}"},
            timeout=30,
        )
        assert claim.status_code == 200, claim.text
        _until(
            "the events on every stream",
            lambda: all("study_claimed" in s.kinds for s in streams),
        )
    finally:
        for s in streams:
            s.client.close()


def test_a_killed_worker_is_replaced(api: Api) -> None:
    first = api.workers()
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    _until("a replacement worker", lambda: len(api.workers() - {victim}) == 2)
    assert victim not in api.workers()
    for _ in range(20):  # whichever worker takes it
        with httpx.Client(base_url=api.base, timeout=30) as client:
            assert client.get("/healthz").status_code == 200


def test_sigterm_stops_every_worker_after_its_audit_is_written(
    api: Api, spread: list[httpx.Client]
) -> None:
    workers = api.workers()
    assert len(workers) == 2
    auth = {"Authorization": f"Bearer {api.reader}"}
    for client in spread:  # each worker takes some down, to write within a second
        r = client.get("/dicomweb/studies", headers=auth)
        assert r.status_code in (200, 204), r.text
    api.proc.popen.send_signal(signal.SIGTERM)
    assert api.proc.wait(60) == 0
    _until("no worker left", lambda: not any(_alive(pid) for pid in workers), timeout=10)
    engine = make_engine(api.url, pool_size=1, max_overflow=0)
    try:
        with make_sessionmaker(engine)() as session:
            written = session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "dicomweb_searched")
            )
    finally:
        engine.dispose()
    assert written == len(spread)


def test_workers_stop_when_their_parent_is_killed(api: Api, tmp_path: Path) -> None:
    """SIGKILL leaves the parent no time to stop them: the workers stop themselves."""
    port = free_port()
    proc = start_api(
        database_url=api.url,
        port=port,
        env={"TELEREAD_API_WORKERS": "2", "TELEREAD_STORAGE_ROOT": str(api.objects)},
        log=tmp_path / "api.log",
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        other = replace(api, base=f"http://127.0.0.1:{port}", port=port, proc=proc)
        _until("two workers", lambda: len(other.workers()) == 2)
        workers = other.workers()
        proc.kill9()
        _until("no worker left", lambda: not any(_alive(pid) for pid in workers), timeout=30)
    finally:
        proc.stop()
