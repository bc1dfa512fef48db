"""kill -9 soak: the gateway as a real process (``python -m gateway``), dcmtk ``storescu``
sending, SIGKILL at random moments, restart on the same spool, resend what got no success.

At the end every instance that got a success status is in the object store with the dataset
bytes that were sent, and the county knows it exactly once. "Exactly once" is checked at the
county's index (the set of SOP Instance UIDs it recorded, which the real API deduplicates by
SOP Instance UID, see ``worklist.ingest``); a re-POST of an instance after a crash between the
announcement and its outbox mark is allowed and counted (``duplicate_posts``), since the API
answers it as a duplicate.

``run_soak`` is shared with ``bench/soak.py`` (the issue's 1,000 instances x 20 kills).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from storage.filesystem import FilesystemStore
from storage.recompressed import original_of
from tests.dicom_factory import make_ct, make_dx, write
from tests.integration.test_gateway_support import (
    County,
    CountyHandler,
    CountyState,
    after_meta,
    free_port,
)

CALLING = "CT_TS01"
ROOT = Path(__file__).resolve().parents[2]
DCMTK = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")


@contextlib.contextmanager
def run_county() -> Iterator[County]:
    """The test county API in this process: it outlives every gateway restart."""
    state = CountyState(sites=[{"code": "TS01", "name": "Township 1", "ae_titles": [CALLING]}])
    handler = type("Handler", (CountyHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda *_: None  # type: ignore[method-assign]  # a killed gateway's
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield County(f"http://127.0.0.1:{server.server_address[1]}", state)
    finally:
        server.shutdown()
        server.server_close()


def make_files(directory: Path, n: int, *, urgent_every: int = 10) -> list[Path]:
    """``n`` small (64x64) CT and DX instances in a few studies; every ``urgent_every``-th
    study is a stroke CT, the rest routine chest radiographs."""
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    per_study = 10
    for s in range((n + per_study - 1) // per_study):
        study, series = generate_uid(), generate_uid()
        for i in range(min(per_study, n - s * per_study)):
            if s % urgent_every == 0:
                ds = make_ct(study, series_uid=series, instance_number=i + 1)
            else:
                ds = make_dx(study, series_uid=series, instance_number=i + 1)
            files.append(write(ds, directory / f"s{s:04d}_{i:02d}.dcm"))
    return files


@dataclass
class SoakResult:
    instances: int
    kills: int
    rounds: list[tuple[int, int, int]]
    succeeded: int
    stored_ok: int
    announced_once: int
    duplicate_posts: int
    seconds: float
    problems: list[str] = field(default_factory=list)


class GatewayProcess:
    """``python -m gateway`` with its own session (SIGKILL reaches any child it starts)."""

    def __init__(
        self,
        *,
        spool: Path,
        store: Path,
        county_url: str,
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
    ):
        self.port = port
        self.log = log
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONFAULTHANDLER": "1",  # SIGABRT dumps every thread's stack into the log
            "TELEREAD_GATEWAY_AE_TITLE": "TELEREAD",
            "TELEREAD_GATEWAY_HOST": "127.0.0.1",
            "TELEREAD_GATEWAY_PORT": str(port),
            "TELEREAD_GATEWAY_SPOOL_DIR": str(spool),
            "TELEREAD_GATEWAY_SPOOL_MIN_FREE_BYTES": "0",
            "TELEREAD_GATEWAY_API_URL": county_url,
            "TELEREAD_GATEWAY_API_USERNAME": "gw",
            "TELEREAD_GATEWAY_API_PASSWORD": "pw",
            "TELEREAD_GATEWAY_ANNOUNCE_DELAY_SECONDS": "0.05",
            "TELEREAD_GATEWAY_BACKOFF_INITIAL_SECONDS": "0.05",
            "TELEREAD_GATEWAY_BACKOFF_MAX_SECONDS": "0.5",
            "TELEREAD_STORAGE_BACKEND": "filesystem",
            "TELEREAD_STORAGE_ROOT": str(store),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway"],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited: {self.log.read_text()[-3000:]}")
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("gateway did not start listening")

    def kill(self) -> None:
        """SIGKILL the gateway and everything in its session (nothing else)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def dump_threads(self) -> None:
        """Every thread's stack into the log (faulthandler), then the process is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM (a clean stop), then SIGKILL whatever of its session is left."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self.kill()


_SENDING = re.compile(r"Sending file: (.+)$")
_RESPONSE = re.compile(r"Received Store Response \((\w+)")


def storescu(port: int, files: list[Path]) -> subprocess.Popen[str]:
    """Send ``files`` on one association, verbose (one response line per instance)."""
    return subprocess.Popen(
        [
            "storescu",
            "-v",
            "-nh",
            "-aet",
            CALLING,
            "-aec",
            "TELEREAD",
            "-to",
            "10",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def successes(output: str) -> set[str]:
    """The files whose C-STORE response said Success."""
    ok: set[str] = set()
    current: str | None = None
    for line in output.splitlines():
        if m := _SENDING.search(line):
            current = m.group(1).strip()
        elif (m := _RESPONSE.search(line)) and current is not None:
            if m.group(1) == "Success":
                ok.add(current)
            current = None
    return ok


def _send_and_maybe_kill(
    gw: GatewayProcess, files: list[Path], kill_at: int | None, rng: random.Random
) -> tuple[str, int]:
    """Send ``files``; with ``kill_at``, SIGKILL the gateway once that many store responses
    have come back (plus up to 20 ms), i.e. in the middle of the association. Returns the
    storescu output and the number of responses seen before the kill."""
    scu = storescu(gw.port, files)
    assert scu.stdout is not None
    lines: list[str] = []
    responses = 0
    reached = threading.Event()

    def read() -> None:
        nonlocal responses
        assert scu.stdout is not None
        for line in scu.stdout:
            lines.append(line)
            if _RESPONSE.search(line):
                responses += 1
                if kill_at is not None and responses >= kill_at:
                    reached.set()
        reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen = 0
    if kill_at is not None:
        reached.wait(120)
        time.sleep(rng.uniform(0, 0.02))
        seen = responses
        gw.kill()
    scu.wait(timeout=120)
    reader.join(30)
    return "".join(lines), seen


def run_soak(
    workdir: Path,
    *,
    instances: int,
    kills: int,
    drain_timeout: float = 120.0,
    seed: int | None = None,
    env: dict[str, str] | None = None,
) -> SoakResult:
    """Send ``instances`` files with storescu, SIGKILL the gateway ``kills`` times at random
    points of the sends (and so of its uploads and announcements), restart it on the same
    spool each time and resend whatever got no success; then check store and county.
    ``env``: more gateway settings (``TELEREAD_GATEWAY_...``)."""
    rng = random.Random(seed)
    started = time.monotonic()
    files = make_files(workdir / "send", instances)
    spool, store_dir = workdir / "spool", workdir / "store"
    keys: dict[str, tuple[str, str]] = {}
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        keys[str(f)] = (
            str(ds.SOPInstanceUID),
            f"TS01/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm",
        )
    ok: set[str] = set()
    rounds: list[tuple[int, int, int]] = []  # (sent, responses before the kill, successes)
    killed = 0
    with run_county() as county:
        gw = GatewayProcess(
            spool=spool,
            store=store_dir,
            county_url=county.url,
            port=free_port(),
            log=workdir / "gateway.log",
            env=env,
        )
        try:
            while len(ok) < len(files) or killed < kills:
                if len(rounds) > kills + 20:
                    raise AssertionError(f"storescu never got through: {rounds}")
                gw.start()
                remaining = [f for f in files if str(f) not in ok] or files[:20]
                # kills spread over the whole send: on average every instances/kills responses
                span = max(2, 2 * len(files) // max(1, kills))
                kill_at = min(rng.randrange(span), len(remaining) - 1) if killed < kills else None
                out, seen = _send_and_maybe_kill(gw, remaining, kill_at, rng)
                if kill_at is not None:
                    killed += 1
                got = successes(out)
                ok |= got
                rounds.append((len(remaining), seen, len(got)))
                if kill_at is None:
                    break
            # a gateway (the last one, or a fresh one if the last send ended in a kill) drains
            if gw.proc is None:
                gw.start()
            end = time.monotonic() + drain_timeout
            want = {keys[f][0] for f in ok}
            while time.monotonic() < end and not want <= county.state.seen:
                time.sleep(0.1)
            if not want <= county.state.seen:
                gw.dump_threads()  # a stuck forwarder: its stack is in gateway.log
            gw.terminate()
        finally:
            gw.kill()
        problems: list[str] = []
        store = FilesystemStore(store_dir)
        stored_ok = 0
        for f in sorted(ok):
            sop, key = keys[f]
            if not store.exists(key):
                problems.append(f"not stored: {sop}")
            elif after_meta(original_of(store.get(key))) != after_meta(Path(f).read_bytes()):
                problems.append(f"bytes differ: {sop}")
            else:
                stored_ok += 1
        posts = Counter(i["sop_instance_uid"] for i in county.state.instances)
        index = county.state.seen
        announced_once = sum(1 for f in ok if keys[f][0] in index)
        problems += [f"not announced: {keys[f][0]}" for f in ok if keys[f][0] not in index]
        unknown = index - {sop for sop, _ in keys.values()}
        problems += [f"announced but never sent: {u}" for u in sorted(unknown)]
    return SoakResult(
        instances=len(files),
        kills=killed,
        rounds=rounds,
        succeeded=len(ok),
        stored_ok=stored_ok,
        announced_once=announced_once,
        duplicate_posts=sum(c - 1 for c in posts.values()),
        seconds=round(time.monotonic() - started, 1),
        problems=problems,
    )


@pytest.mark.dcmtk
@DCMTK
def test_kill_9_soak(tmp_path: Path) -> None:
    result = run_soak(tmp_path, instances=200, kills=5)
    assert result.problems == []
    assert result.kills == 5
    assert result.succeeded == result.instances == 200
    assert result.stored_ok == result.announced_once == 200
