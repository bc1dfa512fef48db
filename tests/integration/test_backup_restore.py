"""`teleread backup` / `restore`: a county with studies, reports (signed; amended with an
addendum), audit events and users is backed up and restored into a fresh database,
SQLite -> SQLite, PostgreSQL -> PostgreSQL and SQLite -> PostgreSQL; the restored county
shows the same studies and reports through the API, its users log in with the same
passwords, and new rows get fresh ids. A damaged backup is refused."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Text, cast, null, select, update
from sqlalchemy.orm import Session, sessionmaker

from teleread import backup as bk
from teleread.cli import main as cli_main
from tests.integration.test_api_world import (
    PASSWORDS,
    SECRET,
    Clock,
    Study,
    TestClient,
    World,
    build_world,
)
from tests.servers.postgres import PostgresServer
from viewer_api.main import create_app
from viewer_api.settings import ApiSettings
from worklist import accounts
from worklist.audit import list_events
from worklist.db import make_engine, make_sessionmaker
from worklist.models import AuditEvent, Base, Instance
from worklist.models import Study as StudyRow
from worklist.settings import WorklistSettings

NewDb = Callable[[str], str]


@pytest.fixture
def new_db(
    tmp_path: Path, sqlite_template: Path, request: pytest.FixtureRequest
) -> Iterator[NewDb]:
    """Make a fresh migrated database of a kind ("sqlite" | "postgresql"); dropped after."""
    made: list[str] = []
    server: list[PostgresServer] = []

    def make(kind: str) -> str:
        if kind == "sqlite":
            path = tmp_path / f"db-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(sqlite_template, path)
            return f"sqlite:///{path}"
        if not server:
            server.append(request.getfixturevalue("postgres_server"))
        name = f"t_{uuid.uuid4().hex}"
        with server[0].admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{server[0].template}"')
        made.append(name)
        return server[0].url(name).render_as_string(hide_password=False)

    yield make
    for name in made:
        with server[0].admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _url(study: Study, tail: str = "") -> str:
    return f"/api/v1/studies/{study.uid}{tail}"


def _populate(world: World) -> list[Study]:
    """Three studies: one signed final then amended with an addendum, one signed
    preliminary, one waiting; plus the audit events those actions leave."""
    signed = Study("TS01", "CT", "胸部CT平扫", count=2)
    prelim = Study("TS02", "CT", "腹部CT", count=1)
    waiting = Study("TS01", "DX", "胸部正位片", count=1, patient_name="李^四")
    for study, gw in ((signed, "gw_ts01"), (prelim, "gw_all"), (waiting, "gw_ts01")):
        assert world.announce(study, gateway=gw).status_code == 200
    for study, status in ((signed, "final"), (prelim, "preliminary")):
        assert world.post("dr_li", f"/api/v1/worklist/{study.uid}/claim").status_code == 200
        r = world.put(
            "dr_li", _url(study, "/report"), json={"findings": "所见", "impression": "印象"}
        )
        assert r.status_code == 200, r.text
        world.clock.tick(60)
        r = world.post("dr_li", _url(study, "/report/sign"), json={"status": status})
        assert r.status_code == 200, r.text
    world.clock.tick(600)
    r = world.post(
        "dr_wang",
        _url(signed, "/report/addenda"),
        json={"text": "右肺下叶小结节，约4mm", "reason": "复阅发现遗漏"},
    )
    assert r.status_code == 201, r.text
    # a refusal is audited too
    assert world.put("dr_wang", _url(signed, "/report"), json={"findings": "x"}).status_code == 409
    return [signed, prelim, waiting]


def _views(client: TestClient, tokens: dict[str, str], studies: list[Study]) -> dict[str, Any]:
    """What each role sees through the API (read-only calls)."""

    def get(user: str, path: str) -> Any:
        r = client.get(path, headers={"Authorization": f"Bearer {tokens[user]}"})
        assert r.status_code in (200, 404), (path, r.status_code, r.text)
        return [r.status_code, r.json()]

    seen: dict[str, Any] = {
        "worklist": get("boss", "/api/v1/worklist"),
        "reports/dr_li": get("dr_li", "/api/v1/reports"),
        "reports/nurse_ts01": get("nurse_ts01", "/api/v1/reports"),
        "reports/nurse_ts02": get("nurse_ts02", "/api/v1/reports"),
    }
    for s in studies:
        seen[f"study/{s.uid}"] = get("dr_wang", _url(s))
        seen[f"report/{s.uid}"] = get("dr_wang", _url(s, "/report"))
        seen[f"clinic/{s.uid}"] = get("nurse_ts01", _url(s, "/report"))
    return seen


def _rows(factory: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, ordered by primary key, as the ORM types read them."""
    with factory() as s:
        return {
            t.name: [tuple(r) for r in s.execute(select(t).order_by(*t.primary_key.columns))]
            for t in Base.metadata.sorted_tables
        }


def _sql_nulls(factory: sessionmaker[Session]) -> dict[str, list[bool]]:
    """Per JSON column: which rows hold SQL NULL (a JSON ``null`` is a different value)."""
    out = {}
    with factory() as s:
        for t in Base.metadata.sorted_tables:
            for c in t.columns:
                if bk.column_kind(c) == "json":
                    stmt = select(cast(c, Text).is_(None)).order_by(*t.primary_key.columns)
                    out[f"{t.name}.{c.name}"] = list(s.scalars(stmt))
    return out


def _restored_app(
    url: str, tmp_path: Path, clock: Clock
) -> tuple[TestClient, sessionmaker[Session], Any]:
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    from storage import FilesystemStore

    app = create_app(
        session_factory=factory,
        store=FilesystemStore(tmp_path / "objects"),  # the same objects directory
        settings=ApiSettings(secret_key=SECRET),
        clock=clock,
        worklist_settings=WorklistSettings(stable_seconds=60),
    )
    return TestClient(app), factory, engine


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("sqlite", "sqlite"),
        pytest.param("postgresql", "postgresql", marks=pytest.mark.postgres),
        pytest.param("sqlite", "postgresql", marks=pytest.mark.postgres),
    ],
)
def test_restore_finds_the_same_county(
    source: str, target: str, new_db: NewDb, tmp_path: Path
) -> None:
    src_url = new_db(source)
    src_engine = make_engine(src_url)
    try:
        factory = make_sessionmaker(src_engine)
        world_iter = build_world(factory, tmp_path)
        world = next(world_iter)
        studies = _populate(world)
        before = _views(world.client, world.tokens, studies)
        # the views' audit events are written by the app's writer thread within a second:
        # written now, before the rows are read, not between that and the backup
        world.client.app.state.audit_writer.flush()  # type: ignore[attr-defined]
        clock = world.clock
        with factory.begin() as s:  # one SQL NULL among the JSON nulls the ORM writes
            first = s.scalars(select(Instance.id).order_by(Instance.id).limit(1)).one()
            s.execute(update(Instance).where(Instance.id == first).values(dicom_json=null()))
        rows_before = _rows(factory)
        nulls_before = _sql_nulls(factory)
        with factory() as s:
            audit_before = [(e.id, e.action, e.username, e.outcome) for e in list_events(session=s)]
        summary = bk.backup(src_url, tmp_path / "county.tar.gz")
        world_iter.close()  # leaves the source app's TestClient
    finally:
        src_engine.dispose()
    assert summary.revision == bk.code_head()
    counts = {t.name: t.rows for t in summary.tables}
    assert counts["studies"] == 3 and counts["reports"] == 2 and counts["report_addenda"] == 1
    assert counts["users"] == len(PASSWORDS) and counts["audit_events"] > 5

    dst_url = new_db(target)
    restored = bk.restore(dst_url, tmp_path / "county.tar.gz")
    assert restored.rows == counts and restored.source_dialect == summary.dialect

    client, dst_factory, dst_engine = _restored_app(dst_url, tmp_path, clock)
    try:
        # the same rows, typed the same (datetimes stay UTC-aware, JSON the same, bools)
        assert _rows(dst_factory) == rows_before
        assert _sql_nulls(dst_factory) == nulls_before
        assert any(any(v) for v in nulls_before.values())  # there were some to keep
        with dst_factory() as s:
            audit_after = [(e.id, e.action, e.username, e.outcome) for e in list_events(session=s)]
        assert audit_after == audit_before
        with client:
            # every user logs in with the same password
            for user in ("dr_li", "nurse_ts02", "gw_ts01"):  # argon2 is slow on purpose
                password = PASSWORDS[user]
                form = {"username": user, "password": password}
                r = client.post("/api/v1/auth/token", data=form)
                assert r.status_code == 200 and r.json()["access_token"], (user, r.text)
            # and sees the same studies and reports (the source's tokens: same secret and
            # user ids; a token minted now would be "issued in the future" by the test
            # clock, which has moved ahead of real time)
            tokens = world.tokens
            assert _views(client, tokens, studies) == before

            # new rows get fresh ids (PostgreSQL sequences were moved past the restored ones)
            old_max = max(r[0] for r in rows_before["studies"])
            fresh = Study("TS02", "CT", "头颅CT平扫", count=1)
            r = client.post(
                "/api/v1/ingest/instances",
                headers={"Authorization": f"Bearer {tokens['gw_all']}"},
                json=World.payload(_payload_world(clock, tmp_path), fresh),
            )
            assert r.status_code == 200, r.text
        with dst_factory.begin() as s:
            new_id = s.scalars(
                select(StudyRow.id).where(StudyRow.study_instance_uid == fresh.uid)
            ).one()
            assert new_id > old_max
            user = accounts.create_user(
                session=s,
                username="dr_new",
                password="new-password-9",
                role="radiologist",
                now=clock.now,
            )
            s.add(AuditEvent(at=clock.now, action="test_event", username="dr_new"))
            s.flush()
            assert user.id > max(r[0] for r in rows_before["users"])
    finally:
        dst_engine.dispose()


def _payload_world(clock: Clock, tmp_path: Path) -> World:
    """Enough of a World to build an ingest payload (stores the object in the same dir)."""
    from storage import FilesystemStore

    return World(None, None, FilesystemStore(tmp_path / "objects"), None, clock, {})  # type: ignore[arg-type]


# -- refusals (SQLite: the checks are the backup module's, not the database's) ----------


@pytest.fixture
def small_backup(new_db: NewDb, tmp_path: Path) -> tuple[Path, str]:
    url = new_db("sqlite")
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine).begin() as s:
            accounts.create_site(
                session=s, code="TS01", name="一号", ae_titles=["CT1"], now=Clock().now
            )
            s.add(AuditEvent(at=Clock().now, action="x", detail={"k": [1, "二"]}))
    finally:
        engine.dispose()
    out = tmp_path / "small.tar.gz"
    bk.backup(url, out)
    return out, url


def _rewrite(src: Path, dst: Path, edit: Callable[[str, bytes], bytes]) -> None:
    with tarfile.open(src, "r:gz") as tin, gzip.open(dst, "wb") as gz:
        with tarfile.open(fileobj=gz, mode="w") as tout:
            for member in tin.getmembers():
                fh = tin.extractfile(member)
                assert fh is not None
                data = edit(member.name, fh.read())
                member.size = len(data)
                tout.addfile(member, io.BytesIO(data))


def test_a_damaged_backup_is_refused(
    small_backup: tuple[Path, str], new_db: NewDb, tmp_path: Path
) -> None:
    good, _ = small_backup
    bad = tmp_path / "bad.tar.gz"
    _rewrite(good, bad, lambda n, d: d.replace("一号".encode(), "三号".encode()))
    target = new_db("sqlite")
    with pytest.raises(bk.BackupCorrupt, match=r"sites.*damaged"):
        bk.restore(target, bad)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(bk.BackupCorrupt):
        bk.restore(target, truncated)
    # nothing was written; the good one still restores there
    assert bk.restore(target, good).rows["sites"] == 1


def test_restore_refuses_another_revision_and_a_full_database(
    small_backup: tuple[Path, str], new_db: NewDb, tmp_path: Path
) -> None:
    good, source_url = small_backup
    old = tmp_path / "old.tar.gz"

    def older(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest["revision"] = "0001"
        return json.dumps(manifest).encode()

    _rewrite(good, old, older)
    with pytest.raises(bk.RevisionMismatch, match="from migration 0001"):
        bk.restore(new_db("sqlite"), old)
    with pytest.raises(bk.DatabaseNotEmpty, match="--force"):
        bk.restore(source_url, good)
    assert bk.restore(source_url, good, force=True).rows["audit_events"] == 1


def test_the_cli_backs_up_and_restores(
    small_backup: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = small_backup
    outdir = tmp_path / "backups"
    outdir.mkdir()
    assert cli_main(["backup", str(outdir), "--database-url", url]) == 0
    [made] = list(outdir.glob("teleread-*.tar.gz"))
    assert oct(made.stat().st_mode & 0o777) == "0o600"
    # restore into a database that does not exist yet: the CLI migrates it first
    fresh = f"sqlite:///{tmp_path / 'brand-new.db'}"
    assert cli_main(["restore", str(made), "--database-url", fresh]) == 0
    assert "restored 3 rows" in capsys.readouterr().out
    assert cli_main(["restore", str(made), "--database-url", fresh]) == 1
    assert "already holds rows" in capsys.readouterr().err
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert cli_main(["backup", str(outdir), "--database-url", missing]) == 1
    assert "there is no database" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_the_backup_reads_one_snapshot(db_url: str) -> None:
    """Rows committed by someone else while the backup reads are not half in it."""
    from sqlalchemy import func

    engine = make_engine(db_url)
    writer = make_sessionmaker(make_engine(db_url))
    try:
        with bk.snapshot(engine) as conn:
            count = select(func.count()).select_from(AuditEvent)
            before = conn.execute(count).scalar()
            with writer.begin() as s:
                s.add(AuditEvent(at=Clock().now, action="during_backup"))
            assert conn.execute(count).scalar() == before
        with engine.connect() as conn:
            assert conn.execute(count).scalar() == (before or 0) + 1
    finally:
        engine.dispose()
        writer.kw["bind"].dispose()
