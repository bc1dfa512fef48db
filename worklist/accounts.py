"""Sites (with their calling AE titles, and where their devices may call from) and users
(argon2 password hashes)."""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, selectinload

from worklist.errors import (
    AETitleTaken,
    CertificateTaken,
    InvalidAETitle,
    InvalidCertificate,
    InvalidNetwork,
    InvalidRole,
    InvalidSiteCode,
    SiteExists,
    SiteRequired,
    UnknownSite,
    UserExists,
)
from worklist.models import (
    ROLE_CLINIC,
    ROLE_GATEWAY,
    ROLES,
    Site,
    SiteAE,
    SiteCertificate,
    SiteNetwork,
    User,
    WebSession,
)
from worklist.sr_sends import Destination

logger = logging.getLogger(__name__)

_hasher = PasswordHasher()
AE_TITLE_MAX = 16
# a site code also prefixes the site's object keys (storage.keys.instance_key)
SITE_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def hash_password(pw: str) -> str:
    """An argon2id hash of ``pw``."""
    return _hasher.hash(pw)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so a miss costs as much as a wrong
    password. Made once, on the first miss, not at import: argon2 is slow on purpose, and
    every process and CLI call imports this module. (Two first misses at once may both make
    one: either hash does.)"""
    return _hasher.hash("teleread-no-such-user")


def verify_password(hash: str, pw: str) -> bool:
    """True when ``pw`` matches ``hash``; False for a mismatch or a malformed hash."""
    try:
        return _hasher.verify(hash, pw)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _clean_ae(ae: str) -> str:
    title = ae.strip()
    if not title or len(title) > AE_TITLE_MAX or "\\" in title or not title.isprintable():
        raise InvalidAETitle(f"invalid AE title {ae!r}")
    return title


def clean_network(value: str) -> str:
    """``value`` (an address or CIDR block) as its network's normal form: ``10.1.2.7/24`` is
    ``10.1.2.0/24``, an address alone is its /32 (/128). Raises ``InvalidNetwork``."""
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise InvalidNetwork(f"invalid network {value[:60]!r}: {InvalidNetwork.__doc__}") from None


def _clean_fingerprint(value: str) -> str:
    hexed = value.strip().replace(":", "").lower()
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise InvalidCertificate(f"invalid certificate fingerprint {value[:100]!r}")
    return hexed


_SITE_LOADS = (
    selectinload(Site.ae_titles),
    selectinload(Site.networks),
    selectinload(Site.certificates),
)


def get_site(*, session: Session, code: str) -> Site | None:
    query = select(Site).where(Site.code == code).options(*_SITE_LOADS)
    return session.scalars(query).one_or_none()


def list_sites(*, session: Session) -> list[Site]:
    return list(session.scalars(select(Site).order_by(Site.code).options(*_SITE_LOADS)))


def _attach_networks(*, site: Site, networks: Sequence[str]) -> None:
    for raw in networks:
        network = clean_network(raw)
        if not any(n.network == network for n in site.networks):
            site.networks.append(SiteNetwork(network=network))


def _attach_certificates(
    *, session: Session, site: Site, certificates: Sequence[tuple[str, str]]
) -> None:
    for raw, label in certificates:
        sha256 = _clean_fingerprint(raw)
        owner = session.scalars(
            select(SiteCertificate).where(SiteCertificate.sha256 == sha256)
        ).one_or_none()
        if owner is not None:
            if owner.site_id == site.id:
                continue
            raise CertificateTaken(f"certificate {sha256[:16]}... belongs to another site")
        if not any(c.sha256 == sha256 for c in site.certificates):
            site.certificates.append(SiteCertificate(sha256=sha256, label=label[:200]))


def bind_site_devices(
    *,
    session: Session,
    code: str,
    networks: Sequence[str] = (),
    certificates: Sequence[tuple[str, str]] = (),
    now: datetime,
) -> Site:
    """Let the site's modalities call from ``networks`` (addresses or CIDR blocks) and with
    ``certificates`` (``(sha256 of the DER, label)``, DICOM TLS): from then on its AE titles
    are accepted only from one of its networks or with one of its certificates. Raises
    ``UnknownSite``, ``InvalidNetwork``, ``InvalidCertificate``, ``CertificateTaken``."""
    site = get_site(session=session, code=code)
    if site is None:
        raise UnknownSite(f"no site {code!r}")
    _attach_networks(site=site, networks=networks)
    _attach_certificates(session=session, site=site, certificates=certificates)
    session.flush()
    logger.info(
        "site devices bound",
        extra={"action": "site_devices_bound", "site": code, "networks": list(networks)},
    )
    return site


def unbind_site_devices(
    *,
    session: Session,
    code: str,
    networks: Sequence[str] = (),
    certificates: Sequence[str] = (),
    now: datetime,
) -> Site:
    """Forget networks and certificates (by fingerprint) of the site; with none left, its AE
    titles are accepted from any address again. Raises ``UnknownSite``, ``InvalidNetwork``,
    ``InvalidCertificate``."""
    site = get_site(session=session, code=code)
    if site is None:
        raise UnknownSite(f"no site {code!r}")
    gone_networks = {clean_network(n) for n in networks}
    gone_certs = {_clean_fingerprint(c) for c in certificates}
    site.networks[:] = [n for n in site.networks if n.network not in gone_networks]
    site.certificates[:] = [c for c in site.certificates if c.sha256 not in gone_certs]
    session.flush()
    logger.info(
        "site devices unbound",
        extra={"action": "site_devices_unbound", "site": code, "networks": sorted(gone_networks)},
    )
    return site


def _attach_ae_titles(*, session: Session, site: Site, ae_titles: Sequence[str]) -> None:
    for raw in ae_titles:
        title = _clean_ae(raw)
        owner = session.scalars(select(SiteAE).where(SiteAE.ae_title == title)).one_or_none()
        if owner is not None:
            if owner.site_id == site.id:
                continue
            raise AETitleTaken(f"AE title {title!r} belongs to another site")
        if any(a.ae_title == title for a in site.ae_titles):
            continue
        site.ae_titles.append(SiteAE(ae_title=title))


def set_site_destination(*, session: Session, code: str, destination: str) -> Site:
    """Where the site's reports' SRs are C-STOREd, ``AE@host:port`` ("": nowhere). Raises
    ``UnknownSite``, ``InvalidDestination``."""
    site = get_site(session=session, code=code)
    if site is None:
        raise UnknownSite(f"no site {code!r}")
    value = str(Destination.parse(destination)) if destination.strip() else ""
    if site.sr_destination != value:
        site.sr_destination = value
        session.flush()
        logger.info(
            "site SR destination set",
            extra={"action": "site_sr_destination_set", "site": code, "destination": value},
        )
    return site


def create_site(
    *,
    session: Session,
    code: str,
    name: str,
    ae_titles: Sequence[str] = (),
    networks: Sequence[str] = (),
    certificates: Sequence[tuple[str, str]] = (),
    now: datetime,
) -> Site:
    """A new site, with its modalities' AE titles and, optionally, the networks and TLS
    certificates they call from (``bind_site_devices``). Raises ``InvalidSiteCode``,
    ``SiteExists``, ``AETitleTaken``, ``InvalidAETitle``, ``InvalidNetwork``,
    ``InvalidCertificate``, ``CertificateTaken``."""
    code = code.strip()
    if SITE_CODE.fullmatch(code) is None:
        raise InvalidSiteCode(f"site code {code[:40]!r}: {InvalidSiteCode.__doc__}")
    if session.scalars(select(Site.id).where(Site.code == code)).first() is not None:
        raise SiteExists(f"site {code!r} already exists")
    site = Site(code=code, name=name, created_at=now, ae_titles=[], networks=[], certificates=[])
    session.add(site)
    session.flush()
    _attach_ae_titles(session=session, site=site, ae_titles=ae_titles)
    _attach_networks(site=site, networks=networks)
    _attach_certificates(session=session, site=site, certificates=certificates)
    session.flush()
    logger.info("site created", extra={"action": "site_created", "site": code})
    return site


def add_site_ae_titles(
    *, session: Session, code: str, ae_titles: Sequence[str], now: datetime
) -> Site:
    """Allow more calling AE titles for a site (titles it already has are ignored)."""
    site = get_site(session=session, code=code)
    if site is None:
        raise UnknownSite(f"no site {code!r}")
    _attach_ae_titles(session=session, site=site, ae_titles=ae_titles)
    session.flush()
    logger.info(
        "site AE titles added",
        extra={"action": "site_ae_added", "site": code, "ae_titles": list(ae_titles)},
    )
    return site


def create_user(
    *,
    session: Session,
    username: str,
    password: str,
    role: str,
    site_code: str | None = None,
    display_name: str = "",
    title: str = "",
    now: datetime,
) -> User:
    """A new user. Raises ``InvalidRole``, ``SiteRequired`` (clinic), ``UnknownSite``,
    ``UserExists``."""
    if role not in ROLES:
        raise InvalidRole(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role == ROLE_CLINIC and not site_code:
        raise SiteRequired()
    site_id: int | None = None
    if site_code:
        site = get_site(session=session, code=site_code)
        if site is None:
            raise UnknownSite(f"no site {site_code!r}")
        site_id = site.id
    username = username.strip()
    if not username:
        raise UserExists("a user name is required")
    if get_user_by_username(session=session, username=username) is not None:
        raise UserExists(f"user {username!r} already exists")
    user = User(
        username=username,
        display_name=display_name,
        title=title,
        password_hash=hash_password(password),
        role=role,
        site_id=site_id,
        is_active=True,
        created_at=now,
    )
    session.add(user)
    session.flush()
    logger.info(
        "user created",
        extra={"action": "user_created", "user_id": user.id, "role": role, "site": site_code},
    )
    return user


def get_user(*, session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def get_user_by_username(*, session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).one_or_none()


def list_users(*, session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def count_users(*, session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(User)) or 0)


def set_password(*, session: Session, user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    session.flush()


def revoke_tokens(*, session: Session, user: User, now: datetime) -> User:
    """Refuse every token of ``user`` issued at or before ``now`` (an API process may still
    accept one it checked in the last few seconds: see ``viewer_api.security.UserCache``)."""
    user.tokens_valid_after = now
    session.flush()
    logger.info("tokens revoked", extra={"action": "user_tokens_revoked", "user_id": user.id})
    return user


def disable_user(*, session: Session, user: User, now: datetime) -> User:
    """The account can no longer log in, and its tokens are refused (also after a later
    ``enable_user``: the person logs in again)."""
    user.is_active = False
    revoke_tokens(session=session, user=user, now=now)
    logger.info("user disabled", extra={"action": "user_disabled", "user_id": user.id})
    return user


def enable_user(*, session: Session, user: User, now: datetime) -> User:
    """The account can log in again (its old tokens stay refused)."""
    user.is_active = True
    session.flush()
    logger.info("user enabled", extra={"action": "user_enabled", "user_id": user.id})
    return user


def reset_password(*, session: Session, user: User, password: str, now: datetime) -> User:
    """A new password; the tokens issued so far are refused."""
    user.password_hash = hash_password(password)
    revoke_tokens(session=session, user=user, now=now)
    logger.info("password reset", extra={"action": "user_password_reset", "user_id": user.id})
    return user


def generate_password() -> str:
    """A random password for a machine account (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def rotate_password(*, session: Session, user: User, now: datetime) -> str:
    """Give the account (a gateway credential) a fresh random password, refuse its tokens,
    and return the password: it is shown once and stored nowhere in clear."""
    password = generate_password()
    reset_password(session=session, user=user, password=password, now=now)
    return password


def revoke_credential(*, session: Session, user: User, now: datetime) -> str | None:
    """Revoke the account's tokens; a gateway credential (a machine's password, possibly
    copied off the township machine) is also given a fresh password, returned (None for a
    person's account: an admin resets that with ``reset_password`` if it leaked)."""
    if user.role == ROLE_GATEWAY:
        return rotate_password(session=session, user=user, now=now)
    revoke_tokens(session=session, user=user, now=now)
    return None


def authenticate(*, session: Session, username: str, password: str) -> User | None:
    """The active user with this name and password, else None."""
    user = get_user_by_username(session=session, username=username)
    if user is None:
        verify_password(_dummy_hash(), password)
        return None
    if not verify_password(user.password_hash, password) or not user.is_active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        session.flush()
    return user


def start_web_session(*, session: Session, user: User, now: datetime, ttl: timedelta) -> WebSession:
    """A new signed-in browser session for ``user``, valid until ``now + ttl``. The user's
    sessions that expired are deleted here, so the table holds only recent ones."""
    session.execute(
        delete(WebSession).where(WebSession.user_id == user.id, WebSession.expires_at <= now)
    )
    web = WebSession(
        id=secrets.token_urlsafe(32), user_id=user.id, created_at=now, expires_at=now + ttl
    )
    session.add(web)
    session.flush()
    return web


def web_session_open(*, session: Session, session_id: str, user_id: int, now: datetime) -> bool:
    """Whether the session is ``user_id``'s, not ended and not expired."""
    web = session.get(WebSession, session_id)
    return (
        web is not None and web.user_id == user_id and web.ended_at is None and web.expires_at > now
    )


def end_web_session(*, session: Session, session_id: str, now: datetime) -> bool:
    """End the session (log-out); False if it was unknown or already ended."""
    web = session.get(WebSession, session_id)
    if web is None or web.ended_at is not None:
        return False
    web.ended_at = now
    session.flush()
    return True


__all__ = [
    "add_site_ae_titles",
    "authenticate",
    "bind_site_devices",
    "clean_network",
    "count_users",
    "create_site",
    "create_user",
    "disable_user",
    "enable_user",
    "end_web_session",
    "generate_password",
    "get_site",
    "get_user",
    "get_user_by_username",
    "hash_password",
    "list_sites",
    "list_users",
    "reset_password",
    "revoke_credential",
    "revoke_tokens",
    "rotate_password",
    "set_password",
    "set_site_destination",
    "start_web_session",
    "unbind_site_devices",
    "verify_password",
    "web_session_open",
]
