"""Files at rest: the data directory, the SQLite index, the objects and the secrets are
private to their user whatever the umask; a stored object altered on disk is refused on
retrieve (and audited), and ``teleread verify`` finds it and records it in the audit trail."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from storage import FilesystemStore
from storage.keys import instance_key
from teleread.embedded import DataDir
from tests.integration.test_api_world import Study, build_world
from worklist.accounts import create_site
from worklist.db import make_engine, make_sessionmaker, upgrade, utcnow
from worklist.ingest import InstanceArrival, record_instances
from worklist.models import AuditEvent

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A shell's usual umask: files 0644 unless their maker says otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _open_to_others(root: Path) -> list[str]:
    out = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            out.append(f"{path.relative_to(root.parent)} {oct(mode)}")
    return out


def _populate(data: DataDir, n: int = 3) -> list[InstanceArrival]:
    upgrade(data.database_url)
    engine = make_engine(data.database_url)
    factory = make_sessionmaker(engine)
    store = FilesystemStore(data.objects)
    study, series = "1.2.3.4", "1.2.3.4.1"
    items = []
    for i in range(n):
        sop = f"1.2.3.4.1.{i + 1}"
        blob = b"\0" * 128 + b"DICM" + f"instance {i}".encode() * 100
        key = instance_key("TS01", study, series, sop)
        digest = hashlib.sha256(blob).hexdigest()
        store.put(key, blob, sha256=digest)
        items.append(
            InstanceArrival(
                study_instance_uid=study,
                series_instance_uid=series,
                sop_instance_uid=sop,
                sop_class_uid=CT,
                object_key=key,
                size=len(blob),
                sha256=digest,
                received_at=utcnow(),
                modality="CT",
                patient_name="王^小明",
            )
        )
    with factory.begin() as session:
        create_site(session=session, code="TS01", name="一号", ae_titles=["CT_TS01"], now=utcnow())
        record_instances(
            session=session, site_code="TS01", calling_ae="CT_TS01", instances=items, now=utcnow()
        )
    engine.dispose()
    return items


def test_the_data_directory_is_private_whatever_the_umask(
    tmp_path: Path, loose_umask: None
) -> None:
    data = DataDir.resolve(tmp_path / "data")
    data.secret("api")
    _populate(data)
    assert (data.root / "teleread.db").exists() and list(data.objects.rglob("*.dcm"))
    assert _open_to_others(data.root) == []


def test_an_existing_open_directory_and_index_are_made_private(
    tmp_path: Path, loose_umask: None
) -> None:
    root = tmp_path / "old"
    root.mkdir(mode=0o755)
    db = root / "teleread.db"
    db.touch(mode=0o644)
    data = DataDir.resolve(root)
    engine = make_engine(data.database_url)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_verify_finds_an_altered_object_and_audits_it(tmp_path: Path) -> None:
    data = DataDir.resolve(tmp_path / "data")
    items = _populate(data)
    cmd = [sys.executable, "-m", "teleread.cli", "verify", "--data-dir", str(data.root)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEREAD_")}
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 objects checked" in ok.stdout and "no problem" in ok.stdout
    # change 100 bytes in the middle of one object, same size; remove another
    altered, gone = items[1], items[2]
    path = data.objects / altered.object_key
    blob = bytearray(path.read_bytes())
    blob[200:300] = b"x" * 100
    path.write_bytes(bytes(blob))
    (data.objects / gone.object_key).unlink()
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    lines = bad.stdout.splitlines()
    assert any(line.startswith("SHA256") and altered.object_key in line for line in lines)
    assert any(line.startswith("MISSING") and gone.object_key in line for line in lines)
    assert "王" not in bad.stdout + bad.stderr
    engine = make_engine(data.database_url)
    with make_sessionmaker(engine)() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "object_integrity_failed")
        ).all()
    engine.dispose()
    assert sorted((r.object_id, r.detail["kind"]) for r in rows) == sorted(
        [(altered.sop_instance_uid, "sha256"), (gone.sop_instance_uid, "missing")]
    )
    assert all(r.outcome == "error" for r in rows)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_altered_object_is_not_served(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    for world in build_world(session_factory, tmp_path):
        study = Study("TS01", "CT", "头颅CT平扫", count=2)
        assert world.announce(study).status_code == 200
        good, bad = study.sop_uids
        path = tmp_path / "objects" / instance_key(study.site, study.uid, study.series_uid, bad)
        blob = bytearray(path.read_bytes())
        blob[130:140] = b"x" * 10  # same size, other bytes
        path.write_bytes(bytes(blob))
        url = f"/api/v1/studies/{study.uid}/instances/{{}}"
        r = world.get("dr_li", url.format(good))
        assert r.status_code == 200 and r.content == study.blobs[good]
        r = world.get("dr_li", url.format(bad))
        assert r.status_code == 502 and r.json()["code"] == "object_corrupt"
        assert bytes(blob) not in r.content
        with world.factory() as session:
            [row] = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "object_integrity_failed")
            ).all()
        assert (row.object_id, row.outcome, row.username) == (bad, "error", "dr_li")
        assert row.detail["study_uid"] == study.uid
