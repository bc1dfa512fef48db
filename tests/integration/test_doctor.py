"""`teleread doctor` against real parts: a good embedded configuration passes (a real county
API on 127.0.0.1, the real gateway answering C-ECHO); a wrong database URL, an unwritable
store, an unreachable county, bad certificates and a skewed clock (a tiny uvicorn app that
sends a wrong ``Date``) each give the right FAIL or WARN line; the S3 store against the real
SeaweedFS server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import storage
from gateway.config import GatewaySettings
from storage.settings import StorageSettings
from storage.settings import get_settings as storage_settings
from teleread import doctor
from teleread.bootstrap import ensure_gateway_user
from teleread.cli import main as cli_main
from teleread.doctor import CheckResult, DoctorConfig, TLSFile, run_checks
from teleread.embedded import DataDir
from teleread.services import ApiServer, build_api, start_gateway
from tests.servers.seaweed import S3Server
from worklist import accounts
from worklist.db import make_engine, make_sessionmaker, upgrade, utcnow

TIMEOUT = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def by_name(results: list[CheckResult], name: str) -> list[CheckResult]:
    return [r for r in results if r.name == name]


def one(results: list[CheckResult], name: str) -> CheckResult:
    found = by_name(results, name)
    assert len(found) == 1, (name, results)
    return found[0]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("TELEREAD_"):
            monkeypatch.delenv(key)
    return monkeypatch


# -- a good embedded configuration ---------------------------------------------------------


@pytest.fixture
def embedded(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Iterator[DataDir]:
    """What `teleread serve` leaves in a data directory, and its county API running."""
    data = DataDir.resolve(tmp_path / "data")
    upgrade(data.database_url)
    engine = make_engine(data.database_url)
    factory = make_sessionmaker(engine)
    with factory.begin() as s:
        accounts.create_site(
            session=s, code="TS01", name="一号乡镇卫生院", ae_titles=["CT_TS01"], now=utcnow()
        )
    ensure_gateway_user(factory, data)
    data.objects.mkdir()
    clean_env.setenv("TELEREAD_STORAGE_ROOT", str(data.objects))  # as `teleread serve` does
    storage_settings.cache_clear()  # the API and the gateway build their store from it
    http_port = free_port()
    server = ApiServer(
        build_api(data.database_url, storage.from_settings(), secret_key=data.secret("api")),
        host="127.0.0.1",
        port=http_port,
    )
    server.start()
    clean_env.setenv("TELEREAD_API_PORT", str(http_port))
    clean_env.setenv("TELEREAD_GATEWAY_HOST", "127.0.0.1")
    clean_env.setenv("TELEREAD_GATEWAY_PORT", str(free_port()))
    # deterministic on any CI disk: a small cap and minimum
    clean_env.setenv("TELEREAD_GATEWAY_SPOOL_MAX_BYTES", str(1 << 20))
    clean_env.setenv("TELEREAD_GATEWAY_SPOOL_MIN_FREE_BYTES", str(1 << 20))
    try:
        yield data
    finally:
        server.stop()
        engine.dispose()
        storage_settings.cache_clear()


def test_a_good_embedded_configuration_passes(
    embedded: DataDir, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = DoctorConfig.from_environment(role="all", data_dir=str(embedded.root), timeout=TIMEOUT)
    results = run_checks(cfg)
    assert [r for r in results if r.status != "OK"] == []
    names = [r.name for r in results]
    for name in (
        "database",
        "migrations",
        "secret_key",
        "public_url",
        "object_store",
        "county_api",
        "clock",
        "gateway_login",
        "spool",
        "dicom_port",
        "tls",
    ):
        assert name in names
    assert "TS01" in one(results, "gateway_login").message
    assert "free" in one(results, "dicom_port").message
    # the probe left nothing behind
    assert list(embedded.objects.iterdir()) == []
    assert not embedded.spool.exists()

    # the command line: exit 0, text and JSON
    assert cli_main(["doctor", "--data-dir", str(embedded.root), "--timeout", "3"]) == 0
    text = capsys.readouterr().out
    assert "all checks passed" in text and "数据库可以连接" in text
    # `teleread api` reads its secret from the environment, not the data directory
    monkeypatch.setenv("TELEREAD_API_SECRET_KEY", embedded.secret("api"))
    assert cli_main(["doctor", "--data-dir", str(embedded.root), "--json", "--role", "county"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["role"] == "county"
    assert {c["name"] for c in report["checks"]} == {
        "database",
        "migrations",
        "secret_key",
        "public_url",
        "object_store",
        "tls",
    }
    # a county API alone runs behind a proxy: without a public URL its links are useless
    public = next(c for c in report["checks"] if c["name"] == "public_url")
    assert public["status"] == "WARN" and "TELEREAD_API_PUBLIC_URL" in public["hint"]


def test_the_public_url_of_links_and_qr_codes(
    embedded: DataDir, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset while the API listens beyond loopback, a loopback address then, an address
    nothing answers at, or one that is not http(s): each says so; the API's own address
    (reached for real) passes."""
    api = f"http://127.0.0.1:{os.environ['TELEREAD_API_PORT']}"
    root = str(embedded.root)

    def check(public_url: str | None, host: str | None = None) -> CheckResult:
        if public_url is None:
            monkeypatch.delenv("TELEREAD_API_PUBLIC_URL", raising=False)
        else:
            monkeypatch.setenv("TELEREAD_API_PUBLIC_URL", public_url)
        cfg = DoctorConfig.from_environment(
            role="all", data_dir=root, timeout=TIMEOUT, api_host=host
        )
        return one(doctor.check_public_url(cfg), "public_url")

    assert check(None).status == "OK"  # serve on 127.0.0.1: links are for this machine
    wide = check(None, host="0.0.0.0")
    assert wide.status == "WARN" and "unset" in wide.message and "0.0.0.0" in wide.message
    reached = check(api)
    assert reached.status == "OK" and "reaches the county API" in reached.message
    loopback = check(api, host="0.0.0.0")
    assert loopback.status == "WARN" and "loopback" in loopback.message
    dead = check(f"http://127.0.0.1:{free_port()}")
    assert dead.status == "WARN" and "not reachable" in dead.message
    elsewhere = check(f"{api}/ui/static")  # answers, but not the API's /healthz
    assert elsewhere.status == "WARN" and "leads somewhere else" in elsewhere.message
    assert check("pacs.xx-county.cn").status == "FAIL"  # no scheme

    # the command line: the listening address as given to `serve --host`; a warning is
    # not a failure
    monkeypatch.delenv("TELEREAD_API_PUBLIC_URL")
    assert cli_main(["doctor", "--data-dir", root, "--host", "0.0.0.0", "--timeout", "3"]) == 0
    text = capsys.readouterr().out
    assert "WARN  public_url" in text and "fix: set TELEREAD_API_PUBLIC_URL" in text


def test_the_running_gateway_answers_c_echo(embedded: DataDir) -> None:
    cfg = DoctorConfig.from_environment(role="all", data_dir=str(embedded.root), timeout=TIMEOUT)
    gw = cfg.gateway
    stop = start_gateway(
        storage.from_settings(),
        ae_title=gw.ae_title,
        host="127.0.0.1",
        port=gw.port,
        spool_dir=gw.spool_dir,
        api_url=gw.api_url,
        api_username=gw.api_username,
        api_password=gw.api_password,
    )
    try:
        results = run_checks(cfg)
    finally:
        stop()
    port = one(results, "dicom_port")
    assert port.status == "OK" and "C-ECHO" in port.message, results
    assert exit_code_of(results) == 0


def exit_code_of(results: list[CheckResult]) -> int:
    return doctor.exit_code(results)


def test_a_port_held_by_something_else_fails(embedded: DataDir) -> None:
    cfg = DoctorConfig.from_environment(role="all", data_dir=str(embedded.root), timeout=TIMEOUT)
    with socket.create_server(("127.0.0.1", cfg.gateway.port)) as squatter:
        # accepts the connection and closes it: not DICOM
        def serve() -> None:
            with contextlib.suppress(OSError):
                conn, _ = squatter.accept()
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        result = one(doctor.check_dicom_port(cfg, doctor.CheckState()), "dicom_port")
    assert result.status == "FAIL" and "does not speak DICOM" in result.message


# -- the database ------------------------------------------------------------------------


def _county(tmp_path: Path, **kw: Any) -> DoctorConfig:
    base: dict[str, Any] = {
        "role": "county",
        "storage": StorageSettings(root=tmp_path / "objects"),
        "api_secret_key": "x" * 40,
        "timeout": TIMEOUT,
    }
    base.update(kw)
    return DoctorConfig(**base)


def test_wrong_database_urls_fail_with_the_fix(tmp_path: Path) -> None:
    closed = free_port()
    cases = {
        f"postgresql+psycopg://teleread:pw@127.0.0.1:{closed}/teleread": "cannot connect",
        f"sqlite:///{tmp_path / 'missing' / 'teleread.db'}": "does not exist",
        "nosuchdb://x": "",
    }
    for url, words in cases.items():
        results = run_checks(_county(tmp_path, database_url=url))
        db = one(results, "database")
        assert db.status == "FAIL" and words in db.message, (url, db)
        assert "pw" not in db.message  # the password is not printed
        assert doctor.exit_code(results) == 1
    assert not (tmp_path / "missing").exists()  # the doctor creates nothing


def test_an_unmigrated_or_old_database_says_run_db_upgrade(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    make_engine(f"sqlite:///{empty}").connect().close()
    old = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(old, "0002")
    for url, words in ((f"sqlite:///{empty}", "no tables yet"), (old, "at migration 0002")):
        results = doctor.check_database(_county(tmp_path, database_url=url))
        assert one(results, "database").status == "OK"
        mig = one(results, "migrations")
        assert mig.status == "FAIL" and words in mig.message, mig
        assert "teleread db upgrade" in mig.hint


@pytest.mark.postgres
def test_postgresql_at_head_and_a_wrong_password(pg_url: str, tmp_path: Path) -> None:
    results = doctor.check_database(_county(tmp_path, database_url=pg_url))
    assert [r.status for r in results] == ["OK", "OK"], results
    from sqlalchemy.engine import make_url

    wrong = make_url(pg_url).set(database="no_such_database").render_as_string(False)
    [r] = doctor.check_database(_county(tmp_path, database_url=wrong))
    assert r.status == "FAIL" and "no_such_database" in r.message, r


def test_a_weak_secret_key_fails(tmp_path: Path) -> None:
    for secret in ("changethis", "short-but-random"):
        [r] = doctor.check_secret_key(_county(tmp_path, api_secret_key=secret))
        assert r.status == "FAIL" and "secret key" in r.message
    [r] = doctor.check_secret_key(_county(tmp_path, api_secret_key=None))
    assert r.status == "FAIL" and "not set" in r.message


# -- the object store --------------------------------------------------------------------


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[None]:
    """A directory nobody may write in: chmod for a normal user; root ignores modes, so
    the immutable attribute there."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o500)
        try:
            yield
        finally:
            path.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
        pytest.skip("running as root without chattr: cannot make a read-only directory")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_an_unwritable_store_directory_fails(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    with read_only_dir(root):
        [r] = doctor.check_object_store(_county(tmp_path))
    assert r.status == "FAIL" and "cannot write" in r.message, r
    assert "permission" in r.hint
    # a file where the directory should be; a directory that is not there
    bogus = tmp_path / "a-file"
    bogus.write_text("x")
    cases = (
        (bogus, "FAIL", "not a directory"),
        (bogus / "objects", "FAIL", "cannot be created"),
        (tmp_path / "nope", "WARN", "does not exist yet"),  # made at start; or not mounted?
    )
    for root, status, words in cases:
        cfg = _county(tmp_path, storage=StorageSettings(root=root))
        [r] = doctor.check_object_store(cfg)
        assert r.status == status and words in r.message, r
    assert not (tmp_path / "nope").exists()


@pytest.mark.s3
def test_the_s3_store(s3_server: S3Server, tmp_path: Path) -> None:
    from minio import Minio

    bucket = f"doc-{uuid.uuid4().hex[:16]}"
    Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    ).make_bucket(bucket)

    def settings(**kw: Any) -> StorageSettings:
        base: dict[str, Any] = {
            "backend": "s3",
            "endpoint": s3_server.endpoint,
            "bucket": bucket,
            "secure": False,
            "access_key": SecretStr(s3_server.access_key),
            "secret_key": SecretStr(s3_server.secret_key),
            "region": "us-east-1",
        }
        return StorageSettings(**{**base, **kw})

    [r] = doctor.check_object_store(_county(tmp_path, storage=settings()))
    assert r.status == "OK" and "write, read and delete" in r.message, r
    client = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    )
    assert list(client.list_objects(bucket, recursive=True)) == []

    [r] = doctor.check_object_store(_county(tmp_path, storage=settings(bucket="no-such-bkt")))
    assert r.status == "FAIL" and "does not exist" in r.message and "mc mb" in r.hint
    bad = settings(secret_key=SecretStr("wrong-secret"))
    [r] = doctor.check_object_store(_county(tmp_path, storage=bad))
    assert r.status == "FAIL" and "SECRET_KEY" in r.hint, r
    closed = settings(endpoint=f"127.0.0.1:{free_port()}")
    [r] = doctor.check_object_store(_county(tmp_path, storage=closed))
    assert r.status == "FAIL" and "MinIO running" in r.hint
    client.remove_bucket(bucket)


# -- the county API and the clock ----------------------------------------------------------


class SkewedCounty:
    """A tiny uvicorn app answering like the county API, with a ``Date`` header off by
    ``skew`` seconds (uvicorn's own Date header switched off)."""

    def __init__(self) -> None:
        self.skew = 0.0

        def date_headers() -> dict[str, str]:
            when = datetime.now(UTC) + timedelta(seconds=self.skew)
            return {"Date": format_datetime(when, usegmt=True)}

        async def health(request: Request) -> JSONResponse:
            return JSONResponse({"status": "ok"}, headers=date_headers())

        async def token(request: Request) -> JSONResponse:
            return JSONResponse({"access_token": "t", "token_type": "bearer"})

        async def config(request: Request) -> JSONResponse:
            sites = [{"code": "TS01", "name": "x", "ae_titles": ["CT_TS01"]}]
            return JSONResponse({"sites": sites})

        app = Starlette(
            routes=[
                Route("/healthz", health),
                Route("/api/v1/auth/token", token, methods=["POST"]),
                Route("/api/v1/gateway/config", config),
            ]
        )
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                date_header=False,
                lifespan="off",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> SkewedCounty:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _gateway(tmp_path: Path, **kw: Any) -> DoctorConfig:
    base: dict[str, Any] = {
        "spool_dir": tmp_path / "spool",
        "api_password": SecretStr("pw"),
        "port": free_port(),
        "host": "127.0.0.1",
    }
    base.update(kw)
    return DoctorConfig(role="gateway", gateway=GatewaySettings(**base), timeout=TIMEOUT)


def test_clock_skew_warns_then_fails(tmp_path: Path) -> None:
    with SkewedCounty() as county:
        cfg = _gateway(tmp_path, api_url=f"http://127.0.0.1:{county.port}")
        seen = {}
        for skew in (0.0, -30.0, 300.0):
            county.skew = skew
            results = doctor.check_county_api(cfg, doctor.CheckState())
            assert one(results, "county_api").status == "OK"
            assert one(results, "gateway_login").status == "OK"
            seen[skew] = one(results, "clock")
        # a URL that reaches something else (here: a path prefix the county does not have)
        wrong = _gateway(tmp_path, api_url=f"http://127.0.0.1:{county.port}/county")
        [r] = doctor.check_county_api(wrong, doctor.CheckState())
        assert r.status == "FAIL" and "not a teleread county API" in r.message, r
    assert seen[0.0].status == "OK"
    # (the Date header has whole seconds: 30 s may read as 29 to 31)
    assert seen[-30.0].status == "WARN" and " s ahead of" in seen[-30.0].message
    assert seen[300.0].status == "FAIL" and " s behind" in seen[300.0].message
    assert "tokens expire" in seen[300.0].message and "NTP" in seen[300.0].hint


def test_an_unreachable_county_fails(tmp_path: Path) -> None:
    cfg = _gateway(tmp_path, api_url=f"http://127.0.0.1:{free_port()}")
    results = run_checks(cfg)
    county = one(results, "county_api")
    assert county.status == "FAIL" and "cannot reach" in county.message
    assert "TELEREAD_GATEWAY_API_URL" in county.hint
    assert one(results, "spool").status in ("OK", "WARN")
    assert doctor.exit_code(results) == 1
    text = doctor.format_text(results)
    assert "FAIL  county_api" in text and "fix: " in text and "无法访问县级接口" in text
    # plain http to a remote county is called out
    remote = _gateway(tmp_path, api_url="http://192.0.2.1:8000")
    [warn, *_] = doctor.check_county_api(
        DoctorConfig(role="gateway", gateway=remote.gateway, timeout=0.5), doctor.CheckState()
    )
    assert warn.status == "WARN" and "plain http" in warn.message


# -- TLS material ------------------------------------------------------------------------


def test_tls_material(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = trustme.CA()
    good = ca.issue_cert("127.0.0.1", not_after=now + timedelta(days=365))
    expired = ca.issue_cert(
        "127.0.0.1", not_before=now - timedelta(days=400), not_after=now - timedelta(days=1)
    )
    soon = ca.issue_cert("127.0.0.1", not_after=now + timedelta(days=10))

    def files(name: str, leaf: trustme.LeafCert) -> tuple[Path, Path]:
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key

    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    good_cert, good_key = files("good", good)
    expired_cert, _ = files("expired", expired)
    soon_cert, soon_key = files("soon", soon)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")

    def check(item: TLSFile) -> CheckResult:
        [r] = doctor.check_tls(DoctorConfig(role="county", api_tls=[item]))
        return r

    assert check(TLSFile("GOOD", cert=good_cert, key=good_key, ca=ca_file)).status == "OK"
    r = check(TLSFile("X", cert=expired_cert))
    assert r.status == "FAIL" and "expired" in r.message
    r = check(TLSFile("X", cert=soon_cert, key=soon_key))
    assert r.status == "WARN" and "expires on" in r.message
    r = check(TLSFile("X", cert=good_cert, key=soon_key))
    assert r.status == "FAIL" and "does not belong" in r.message
    r = check(TLSFile("X", ca=garbage))
    assert r.status == "FAIL" and "not a PEM/DER certificate" in r.message
    r = check(TLSFile("X", ca=tmp_path / "missing.pem"))
    assert r.status == "FAIL" and "does not exist" in r.message

    # the settings that point at TLS files are all found: storage, gateway HTTPS and DICOM
    cfg = DoctorConfig(
        role="all",
        storage=StorageSettings(root=tmp_path, ca_bundle=ca_file),
        gateway=GatewaySettings(
            api_ca_bundle=expired_cert,
            tls_port=free_port(),
            tls_cert=good_cert,
            tls_key=good_key,
            tls_ca=ca_file,
        ),
    )
    results = doctor.check_tls(cfg)
    assert [r.status for r in results] == ["OK", "FAIL", "OK"], results
    assert "TELEREAD_GATEWAY_API_CA_BUNDLE" in results[1].message
    assert "TELEREAD_GATEWAY_TLS_CERT" in results[2].message
