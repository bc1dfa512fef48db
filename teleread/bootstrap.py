"""First start of the all-in-one mode: a demo county with two township sites and accounts."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from teleread.embedded import DataDir
from worklist import accounts
from worklist.db import utcnow
from worklist.models import ROLE_ADMIN, ROLE_CLINIC, ROLE_GATEWAY, ROLE_RADIOLOGIST

GATEWAY_USER = "gateway-embedded"


@dataclass(frozen=True, slots=True)
class Login:
    username: str
    password: str
    role: str
    site: str | None


DEMO_SITES = (
    ("TS01", "青山镇卫生院", ("CT_TS01", "DR_TS01")),
    ("TS02", "白水镇卫生院", ("CT_TS02", "DR_TS02")),
)
# user name, role, site, display name, professional title
DEMO_USERS = (
    ("admin", ROLE_ADMIN, None, "信息科管理员", ""),
    ("dr_li", ROLE_RADIOLOGIST, None, "李医生", "主治医师"),
    ("dr_wang", ROLE_RADIOLOGIST, None, "王医生", "副主任医师"),
    ("nurse_ts01", ROLE_CLINIC, "TS01", "青山镇护士", "护士"),
    ("nurse_ts02", ROLE_CLINIC, "TS02", "白水镇护士", "护士"),
)


def ensure_demo_accounts(factory: sessionmaker[Session], data_dir: DataDir) -> list[Login]:
    """Create the demo sites and users when the database has no users; return new logins."""
    with factory.begin() as session:
        if accounts.count_users(session=session) > 0:
            return []
        now = utcnow()
        for code, name, aes in DEMO_SITES:
            accounts.create_site(session=session, code=code, name=name, ae_titles=aes, now=now)
        logins = []
        for username, role, site, display, title in DEMO_USERS:
            password = secrets.token_urlsafe(9)
            accounts.create_user(
                session=session,
                username=username,
                password=password,
                role=role,
                site_code=site,
                display_name=display,
                title=title,
                now=now,
            )
            logins.append(Login(username, password, role, site))
    _write_logins(data_dir, logins)
    return logins


def ensure_gateway_user(factory: sessionmaker[Session], data_dir: DataDir) -> tuple[str, str]:
    """The all-in-one gateway's credential (unbound: it serves every site)."""
    password = data_dir.secret("gateway")
    with factory.begin() as session:
        if accounts.authenticate(session=session, username=GATEWAY_USER, password=password):
            return GATEWAY_USER, password
        user = accounts.get_user_by_username(session=session, username=GATEWAY_USER)
        if user is None:
            accounts.create_user(
                session=session,
                username=GATEWAY_USER,
                password=password,
                role=ROLE_GATEWAY,
                display_name="embedded gateway",
                now=utcnow(),
            )
        else:
            accounts.set_password(session=session, user=user, password=password)
    return GATEWAY_USER, password


def _write_logins(data_dir: DataDir, logins: list[Login]) -> None:
    lines = [f"{lg.username}\t{lg.password}\t{lg.role}\t{lg.site or ''}" for lg in logins]
    fd = os.open(data_dir.logins_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("username\tpassword\trole\tsite\n" + "\n".join(lines) + "\n")
