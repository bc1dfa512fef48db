"""Sites, users and passwords, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from worklist import accounts
from worklist.errors import (
    AETitleTaken,
    InvalidRole,
    SiteExists,
    SiteRequired,
    UnknownSite,
    UserExists,
)

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_hash_and_verify() -> None:
    h = accounts.hash_password("s3cret-密码")
    assert h.startswith("$argon2")
    assert accounts.verify_password(h, "s3cret-密码")
    assert not accounts.verify_password(h, "wrong")
    assert not accounts.verify_password("not a hash", "s3cret")


def test_sites_and_ae_titles(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        site = accounts.create_site(
            session=s, code="TS01", name="镇卫生院一", ae_titles=["CT_TS01"], now=NOW
        )
        assert [a.ae_title for a in site.ae_titles] == ["CT_TS01"]
        with pytest.raises(SiteExists):
            accounts.create_site(session=s, code="TS01", name="again", now=NOW)
        accounts.create_site(session=s, code="TS02", name="二", now=NOW)
        with pytest.raises(AETitleTaken):
            accounts.add_site_ae_titles(session=s, code="TS02", ae_titles=["CT_TS01"], now=NOW)
        accounts.add_site_ae_titles(
            session=s, code="TS01", ae_titles=["CT_TS01", "DR_TS01"], now=NOW
        )
        with pytest.raises(UnknownSite):
            accounts.add_site_ae_titles(session=s, code="NOPE", ae_titles=["X"], now=NOW)
        s.commit()
    with session_factory() as s:
        assert [x.code for x in accounts.list_sites(session=s)] == ["TS01", "TS02"]
        got = accounts.get_site(session=s, code="TS01")
        assert got is not None
        assert [a.ae_title for a in got.ae_titles] == ["CT_TS01", "DR_TS01"]
        assert accounts.get_site(session=s, code="NOPE") is None


def test_users(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        accounts.create_site(session=s, code="TS01", name="一", now=NOW)
        rad = accounts.create_user(
            session=s, username="dr_li", password="pw-li", role="radiologist", now=NOW
        )
        clinic = accounts.create_user(
            session=s, username="ts01", password="pw-c", role="clinic", site_code="TS01", now=NOW
        )
        assert clinic.site_id is not None
        with pytest.raises(UserExists):
            accounts.create_user(session=s, username="dr_li", password="x", role="admin", now=NOW)
        with pytest.raises(InvalidRole):
            accounts.create_user(session=s, username="x", password="x", role="boss", now=NOW)
        with pytest.raises(SiteRequired):
            accounts.create_user(session=s, username="c2", password="x", role="clinic", now=NOW)
        with pytest.raises(UnknownSite):
            accounts.create_user(
                session=s, username="c3", password="x", role="clinic", site_code="NO", now=NOW
            )
        s.commit()
        rad_id = rad.id
    with session_factory() as s:
        assert accounts.count_users(session=s) == 2
        user = accounts.authenticate(session=s, username="dr_li", password="pw-li")
        assert user is not None and user.id == rad_id
        assert accounts.authenticate(session=s, username="dr_li", password="nope") is None
        assert accounts.authenticate(session=s, username="ghost", password="pw-li") is None
        got = accounts.get_user(session=s, user_id=rad_id)
        assert got is not None
        got.is_active = False
        s.commit()
    with session_factory() as s:
        assert accounts.authenticate(session=s, username="dr_li", password="pw-li") is None
