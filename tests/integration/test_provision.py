"""`teleread init --file county.yaml` (sites, accounts, gateway credentials, the S3 server's
identities) and `teleread storage setup|migrate-keys`, against a real SeaweedFS that enforces
the identities init wrote: a township's key writes under its own site's prefix only."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error
from pydantic import SecretStr
from sqlalchemy import select

from gateway.config import GatewaySettings
from storage.errors import StorageError
from storage.filesystem import FilesystemStore
from storage.keys import instance_key, legacy_instance_key
from storage.minio_store import MinioStore
from storage.settings import StorageSettings
from teleread.cli import main
from teleread.doctor.config import DoctorConfig
from teleread.doctor.county import check_object_store
from teleread.doctor.results import CheckState
from teleread.objects import migrate_keys, setup_bucket
from teleread.provision import ProvisionError, load_spec
from tests.servers.seaweed import run_seaweed
from worklist import accounts
from worklist.db import make_engine, make_sessionmaker, upgrade
from worklist.ingest import InstanceArrival, record_instances
from worklist.models import Instance

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
BUCKET = "teleread"


def _county_yaml(tmp: Path, *, extra_ae: str = "", pacs: str = "PACS_TS01@10.1.2.3:104") -> Path:
    secrets = tmp / "secrets"
    secrets.mkdir(exist_ok=True)
    for name, value in {
        "s3_admin_access_key": "COUNTYADMIN0001",
        "s3_admin_secret_key": "county-admin-secret-0123456789",
        "gateway_api_password": "gateway-ts01-password-from-file",
        "gateway_s3_access_key": "GWTS01KEY0001",
        "gateway_s3_secret_key": "gateway-ts01-s3-secret-0123456789",
        "admin_password": "admin-password-from-file\n",
    }.items():
        if not (secrets / name).exists():
            (secrets / name).write_text(value)
    path = tmp / "county.yaml"
    path.write_text(
        f"""
s3:
  bucket: {BUCKET}
  admin_access_key_file: {secrets}/s3_admin_access_key
  admin_secret_key_file: {secrets}/s3_admin_secret_key
public: {{api_url: "https://county.example", s3_endpoint: "county.example:9000"}}
sites:
  - code: TS01
    name: 青山镇卫生院
    ae_titles: [CT_TS01{", " + extra_ae if extra_ae else ""}]
    pacs: "{pacs}"
    gateway:
      username: gw_ts01
      password_file: {secrets}/gateway_api_password
      s3_access_key_file: {secrets}/gateway_s3_access_key
      s3_secret_key_file: {secrets}/gateway_s3_secret_key
  - code: TS02
    name: 河口镇卫生院
    ae_titles: [CT_TS02]
    gateway: {{username: gw_ts02}}
accounts:
  - {{username: admin, role: admin, password_file: {secrets}/admin_password}}
  - {{username: dr_li, role: radiologist, display_name: 李医生}}
  - {{username: clinic_ts01, role: clinic, site: TS01}}
""",
        encoding="utf-8",
    )
    return path


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs if not k.startswith("#")}


def _init(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["init", *args]) == 0
    return capsys.readouterr().out


def test_init_makes_and_converges_the_county(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'teleread.db'}"
    out = tmp_path / "county-config"
    args = ["--file", str(_county_yaml(tmp_path)), "--out", str(out), "--database-url", url]
    said = _init(args, capsys)
    assert "site TS01 created" in said and "account gw_ts02 (gateway, site TS02) created" in said

    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    try:
        with factory() as s:
            assert [
                (x.code, [a.ae_title for a in x.ae_titles]) for x in accounts.list_sites(session=s)
            ] == [("TS01", ["CT_TS01"]), ("TS02", ["CT_TS02"])]
            sites = {x.code: x.sr_destination for x in accounts.list_sites(session=s)}
            assert sites == {"TS01": "PACS_TS01@10.1.2.3:104", "TS02": ""}
            gw1 = accounts.authenticate(
                session=s, username="gw_ts01", password="gateway-ts01-password-from-file"
            )
            assert gw1 is not None and gw1.role == "gateway" and gw1.site.code == "TS01"
            admin = accounts.authenticate(
                session=s, username="admin", password="admin-password-from-file"
            )
            assert admin is not None and admin.role == "admin"
            made = {
                line.split("\t")[0]: line.split("\t")[1]
                for line in (out / "new-passwords.txt").read_text().splitlines()[1:]
            }
            assert set(made) == {"gw_ts02", "dr_li", "clinic_ts01"}
            for name, password in made.items():
                assert accounts.authenticate(session=s, username=name, password=password)
        ts02 = _env_file(out / "townships" / "TS02.env")
        assert ts02["TELEREAD_GATEWAY_API_USERNAME"] == "gw_ts02"
        assert ts02["TELEREAD_GATEWAY_API_PASSWORD"] == made["gw_ts02"]
        assert ts02["TELEREAD_GATEWAY_API_URL"] == "https://county.example"
        assert (out / "townships" / "TS02.env").stat().st_mode & 0o077 == 0
        identities = {i["name"]: i for i in json.loads((out / "s3.json").read_text())["identities"]}
        assert identities["gateway-TS01"]["credentials"][0]["accessKey"] == "GWTS01KEY0001"
        assert identities["gateway-TS01"]["actions"] == [
            f"Write:{BUCKET}/TS01/*",
            f"Read:{BUCKET}/TS01/*",
        ]
        ts02_key = identities["gateway-TS02"]["credentials"][0]["accessKey"]
        assert ts02["TELEREAD_STORAGE_ACCESS_KEY"] == ts02_key

        # again, unchanged: nothing to do, keys kept
        before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert "nothing to do" in _init(args, capsys)
        assert before == {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}

        # a township's S3 key replaced (its machine was lost)
        assert "TS02: a new S3 key" in _init([*args, "--new-s3-key", "TS02"], capsys)
        renewed = _env_file(out / "townships" / "TS02.env")["TELEREAD_STORAGE_ACCESS_KEY"]
        assert renewed != ts02_key
        identities = {i["name"]: i for i in json.loads((out / "s3.json").read_text())["identities"]}
        assert identities["gateway-TS02"]["credentials"][0]["accessKey"] == renewed
        assert identities["gateway-TS01"]["credentials"][0]["accessKey"] == "GWTS01KEY0001"

        # edited: an AE title added, the admin's password file changed, the PACS moved
        _county_yaml(tmp_path, extra_ae="DR_TS01", pacs="PACS_TS01@10.1.2.4:11112")
        (tmp_path / "secrets" / "admin_password").write_text("a-new-admin-password")
        said = _init(args, capsys)
        assert "AE titles added: DR_TS01" in said and "account admin: password set" in said
        assert "TS01: reports' SRs go to PACS_TS01@10.1.2.4:11112" in said
        with factory() as s:
            assert accounts.authenticate(
                session=s, username="admin", password="a-new-admin-password"
            )
            assert {a.ae_title for a in accounts.get_site(session=s, code="TS01").ae_titles} == {  # type: ignore[union-attr]
                "CT_TS01",
                "DR_TS01",
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("yaml_text", "complaint"),
    [
        ("sites: [{code: 'TS/01', name: x}]", "site code"),
        ("sites: [{code: TS01}]", "'name'"),
        ("accounts: [{username: gw, role: gateway}]", "gateway accounts"),
        ("accounts: [{username: c, role: clinic, site: TS09}]", "TS09"),
        ("sites: [{code: TS01, name: x, gateway: {username: g, s3_access_key_file: /k}}]", "both"),
        ("sites: [{code: TS01, name: x, networks: [10.0.0.0/33]}]", "invalid network"),
        ("sites: [{code: TS01, name: x, pacs: 'PACS@10.1.2.3'}]", "not an AE@host:port"),
    ],
)
def test_a_wrong_file_says_what_and_where(tmp_path: Path, yaml_text: str, complaint: str) -> None:
    path = tmp_path / "county.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ProvisionError, match=complaint):
        load_spec(path)


def _store(endpoint: str, access: str, secret: str) -> MinioStore:
    return MinioStore.from_settings(
        StorageSettings(
            backend="s3",
            endpoint=endpoint,
            access_key=SecretStr(access),
            secret_key=SecretStr(secret),
            bucket=BUCKET,
            secure=False,
            region="us-east-1",
        )
    )


@pytest.mark.s3
def test_a_township_key_writes_under_its_own_site_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'teleread.db'}"
    out = tmp_path / "county-config"
    _init(["--file", str(_county_yaml(tmp_path)), "--out", str(out), "--database-url", url], capsys)
    workdir = Path(tempfile.mkdtemp(prefix="teleread-seaweed-provision-"))
    try:
        with run_seaweed(workdir, config=out / "s3.json") as s3:
            county = _store(s3.endpoint, "COUNTYADMIN0001", "county-admin-secret-0123456789")
            assert "versioning Enabled" in setup_bucket(county)
            ts02 = _env_file(out / "townships" / "TS02.env")
            gateway = _store(s3.endpoint, "GWTS01KEY0001", "gateway-ts01-s3-secret-0123456789")
            own = instance_key("TS01", "1.2.3", "1.2.3.4", "1.2.3.4.5")
            gateway.put(own, b"township one")  # the bucket check it may not make is skipped
            assert gateway.get(own) == b"township one"
            for elsewhere in (
                instance_key("TS02", "1.2.3", "1.2.3.4", "1.2.3.4.5"),
                legacy_instance_key("1.2.3", "1.2.3.4", "1.2.3.4.6"),
                "TS01x/1.dcm",
            ):
                with pytest.raises(StorageError):
                    gateway.put(elsewhere, b"not mine")
            county.put(instance_key("TS02", "1.2", "1.3", "1.4"), b"township two")
            with pytest.raises(StorageError):
                gateway.get(instance_key("TS02", "1.2", "1.3", "1.4"))
            other = Minio(
                s3.endpoint,
                ts02["TELEREAD_STORAGE_ACCESS_KEY"],
                ts02["TELEREAD_STORAGE_SECRET_KEY"],
                secure=False,
                region="us-east-1",
            )
            other.put_object(BUCKET, "TS02/9.9/9.9.9/9.9.9.9.dcm", BytesIO(b"2"), 1)
            with pytest.raises(S3Error):
                other.put_object(BUCKET, "TS01/9.9/9.9.9/9.9.9.9.dcm", BytesIO(b"2"), 1)
            # teleread doctor at the township probes under the site the county names for it
            gw_settings = StorageSettings(
                backend="s3",
                endpoint=s3.endpoint,
                access_key=SecretStr("GWTS01KEY0001"),
                secret_key=SecretStr("gateway-ts01-s3-secret-0123456789"),
                bucket=BUCKET,
                secure=False,
                region="us-east-1",
            )
            cfg = DoctorConfig(role="gateway", storage=gw_settings, gateway=GatewaySettings())
            [ok] = check_object_store(cfg, CheckState(sites=["TS01"]))
            assert ok.status == "OK" and "under TS01/" in ok.message, ok
            [refused] = check_object_store(cfg, CheckState(sites=["TS02"]))
            assert refused.status == "FAIL"
            # overwriting its own objects stays possible, but every version is kept
            gateway.put(own, b"overwritten")
            versions = list(county.client.list_objects(BUCKET, prefix=own, include_version=True))
            assert len(versions) == 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_migrate_keys_moves_old_objects_under_their_site(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'teleread.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    store = FilesystemStore(tmp_path / "objects")
    blobs = {f"1.2.3.{n}": f"instance {n}".encode() for n in range(1, 6)}
    try:
        with factory.begin() as s:
            for code in ("TS01", "TS02"):
                accounts.create_site(session=s, code=code, name=code, ae_titles=[], now=NOW)
            for n, (sop, blob) in enumerate(blobs.items()):
                site = "TS01" if n < 3 else "TS02"
                study, series = f"1.2.{n + 10}", f"1.2.{n + 10}.1"
                # the first one was stored after keys got their prefix
                if n == 0:
                    key = instance_key(site, study, series, sop)
                else:
                    key = legacy_instance_key(study, series, sop)
                store.put(key, blob)
                record_instances(
                    session=s,
                    site_code=site,
                    calling_ae="",
                    now=NOW,
                    instances=[
                        InstanceArrival(
                            study_instance_uid=study,
                            series_instance_uid=series,
                            sop_instance_uid=sop,
                            sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                            object_key=key,
                            size=len(blob),
                            received_at=NOW,
                            sha256=hashlib.sha256(blob).hexdigest(),
                        )
                    ],
                )
        store.delete(legacy_instance_key("1.2.14", "1.2.14.1", "1.2.3.5"))  # lost before
        assert migrate_keys(factory=factory, store=store, dry_run=True).remaining == 4
        done = migrate_keys(factory=factory, store=store)
        assert (done.moved, done.already, done.skipped, done.remaining) == (3, 0, 1, 0)
        with factory() as s:
            keys = {i.sop_instance_uid: i.object_key for i in s.scalars(select(Instance))}
        for sop, blob in list(blobs.items())[:4]:
            site = "TS01" if sop in ("1.2.3.1", "1.2.3.2", "1.2.3.3") else "TS02"
            assert keys[sop].startswith(f"{site}/")
            assert store.get(keys[sop]) == blob
        assert [o.key for o in store.list() if not o.key.startswith(("TS01/", "TS02/"))] == []
        again = migrate_keys(factory=factory, store=store)
        assert (again.moved, again.skipped) == (0, 1)  # the lost one stays reported
    finally:
        engine.dispose()


def test_a_site_code_that_cannot_prefix_object_keys_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'teleread.db'}"
    assert main(["sites", "add", "TS 01", "--name", "x", "--database-url", url]) == 1
    assert "site code 'TS 01'" in capsys.readouterr().err
