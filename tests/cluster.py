"""The county in its production shape on 127.0.0.1, as real processes: PostgreSQL, an S3
server, `teleread db upgrade` jobs, several `teleread api` replicas sharing database, bucket
and secret key, and one township `teleread gateway` given every replica's URL. Used by
tests/integration/test_cluster.py and bench/cluster.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from minio import Minio
from sqlalchemy import Engine, text

from tests.processes import (
    STARTUP_SECONDS,
    Proc,
    free_port,
    start_api,
    teleread_env,
    wait_healthy,
)
from tests.servers.seaweed import S3Server
from worklist import accounts
from worklist.db import make_engine, make_sessionmaker, utcnow

SITE, MODALITY_AE, GATEWAY_AE = "TS01", "CT_TS01", "TELEREAD"
GATEWAY_USER, GATEWAY_PASSWORD = "gw_ts01", "gateway-password-ts01"
READER, READER_PASSWORD = "dr_li", "reader-password-li"
ADMIN, ADMIN_PASSWORD = "admin", "admin-password-county"


@dataclass
class Cluster:
    workdir: Path
    database_url: str
    s3: S3Server
    bucket: str
    api_ports: list[int]
    apis: list[Proc]
    gateway: Proc
    dicom_port: int
    upgrade_outputs: list[str] = field(default_factory=list)

    def api_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.api_ports[index]}"

    def reader(self, index: int) -> httpx.Client:
        """An HTTP client of replica ``index``, logged in as the radiologist."""
        return self.login(index, READER, READER_PASSWORD)

    def login(self, index: int, username: str, password: str) -> httpx.Client:
        client = httpx.Client(base_url=self.api_url(index), timeout=10)
        r = client.post("/api/v1/auth/token", data={"username": username, "password": password})
        r.raise_for_status()
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        return client

    def minio(self) -> Minio:
        return Minio(
            self.s3.endpoint,
            self.s3.access_key,
            self.s3.secret_key,
            secure=False,
            region="us-east-1",
        )

    def uploaded_sops(self) -> set[str]:
        """The SOP Instance UIDs whose objects are in the bucket."""
        return {
            str(o.object_name).rsplit("/", 1)[-1].removesuffix(".dcm")
            for o in self.minio().list_objects(self.bucket, recursive=True)
        }

    @staticmethod
    def announced_sops(engine: Engine) -> set[str]:
        """The SOP Instance UIDs the county's database knows."""
        with engine.connect() as conn:
            return set(conn.scalars(text("SELECT sop_instance_uid FROM instances")))

    def storescu(self, files: list[Path], *, called_ae: str = GATEWAY_AE) -> subprocess.Popen[str]:
        """dcmtk's storescu sending ``files`` to the gateway as the township's CT."""
        return subprocess.Popen(
            [
                "storescu",
                "-aet",
                MODALITY_AE,
                "-aec",
                called_ae,
                "127.0.0.1",
                str(self.dicom_port),
                *map(str, files),
            ],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def _storage_env(s3: S3Server, bucket: str) -> dict[str, str]:
    return {
        "TELEREAD_STORAGE_BACKEND": "s3",
        "TELEREAD_STORAGE_ENDPOINT": s3.endpoint,
        "TELEREAD_STORAGE_ACCESS_KEY": s3.access_key,
        "TELEREAD_STORAGE_SECRET_KEY": s3.secret_key,
        "TELEREAD_STORAGE_BUCKET": bucket,
        "TELEREAD_STORAGE_SECURE": "false",
        "TELEREAD_STORAGE_REGION": "us-east-1",
    }


def _accounts(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with make_sessionmaker(engine).begin() as session:
            now = utcnow()
            accounts.create_site(
                session=session, code=SITE, name="青山镇卫生院", ae_titles=[MODALITY_AE], now=now
            )
            for username, password, role, site in (
                (GATEWAY_USER, GATEWAY_PASSWORD, "gateway", SITE),
                (ADMIN, ADMIN_PASSWORD, "admin", None),
                (READER, READER_PASSWORD, "radiologist", None),
            ):
                accounts.create_user(
                    session=session,
                    username=username,
                    password=password,
                    role=role,
                    site_code=site,
                    display_name="",
                    now=now,
                )
    finally:
        engine.dispose()


def wait_for_echo(port: int, proc: Proc, timeout: float = STARTUP_SECONDS) -> None:
    """Until the gateway accepts the township CT's C-ECHO (it knows the site by then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise AssertionError(f"the gateway exited {proc.popen.returncode}:\n{proc.output()}")
        echo = subprocess.run(
            ["echoscu", "-aet", MODALITY_AE, "-aec", GATEWAY_AE, "127.0.0.1", str(port)],
            capture_output=True,
            check=False,
        )
        if echo.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the gateway did not answer C-ECHO in {timeout} s:\n{proc.output()}")


@contextlib.contextmanager
def run_cluster(
    workdir: Path, *, database_url: str, s3: S3Server, bucket: str, replicas: int = 2
) -> Iterator[Cluster]:
    """Start ``replicas`` APIs and as many `teleread db upgrade` jobs at once on
    ``database_url`` (empty or migrated), then the gateway; stop everything on exit."""
    env = {**_storage_env(s3, bucket), "TELEREAD_WORKLIST_STABLE_SECONDS": "5"}
    ports = [free_port() for _ in range(replicas)]
    procs: list[Proc] = []
    try:
        apis = [
            start_api(database_url=database_url, port=port, env=env, log=workdir / f"api{i}.log")
            for i, port in enumerate(ports)
        ]
        procs += apis
        upgrades = [
            Proc(
                ["db", "upgrade", "--database-url", database_url],
                teleread_env(env),
                workdir / f"upgrade{i}.log",
            )
            for i in range(replicas)
        ]
        procs += upgrades
        for proc in upgrades:
            if proc.wait(120) != 0:
                raise AssertionError(f"teleread db upgrade failed:\n{proc.output()}")
        _accounts(database_url)
        dicom_port = free_port()
        gateway_env = {
            **env,
            "TELEREAD_GATEWAY_HOST": "127.0.0.1",
            "TELEREAD_GATEWAY_PORT": str(dicom_port),
            "TELEREAD_GATEWAY_AE_TITLE": GATEWAY_AE,
            "TELEREAD_GATEWAY_SPOOL_DIR": str(workdir / "spool"),
            "TELEREAD_GATEWAY_SPOOL_SLOTS": "64",
            "TELEREAD_GATEWAY_CONFIG_REFRESH_SECONDS": "1",
            "TELEREAD_GATEWAY_API_URL": ",".join(f"http://127.0.0.1:{p}" for p in ports),
            "TELEREAD_GATEWAY_API_USERNAME": GATEWAY_USER,
            "TELEREAD_GATEWAY_API_PASSWORD": GATEWAY_PASSWORD,
        }
        gateway = Proc(["gateway", "run"], teleread_env(gateway_env), workdir / "gateway.log")
        procs.append(gateway)  # starting while the APIs still do
        for port, api in zip(ports, apis, strict=True):
            wait_healthy(f"http://127.0.0.1:{port}", api)
        wait_for_echo(dicom_port, gateway)
        yield Cluster(
            workdir=workdir,
            database_url=database_url,
            s3=s3,
            bucket=bucket,
            api_ports=ports,
            apis=apis,
            gateway=gateway,
            dicom_port=dicom_port,
            upgrade_outputs=[p.output() for p in upgrades],
        )
    finally:
        for proc in reversed(procs):  # nothing of theirs is kept: no graceful stop to wait for
            proc.kill9()
            proc.stop()


class Watcher(threading.Thread):
    """Polls ``probe`` (returning the keys it sees now) every ``interval`` seconds and keeps
    when each key was first seen (time.monotonic())."""

    def __init__(self, probe: Callable[[], set[str]], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self._probe = probe
        self._interval = interval
        self._stop_event = threading.Event()
        self.first_seen: dict[str, float] = {}
        self.errors = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                seen = self._probe()
            except Exception:  # a replica killed under it, a busy moment: poll again
                self.errors += 1
                seen = set()
            now = time.monotonic()
            for key in seen:
                self.first_seen.setdefault(key, now)
            self._stop_event.wait(self._interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def have_dcmtk() -> bool:
    return shutil.which("storescu") is not None and shutil.which("echoscu") is not None
