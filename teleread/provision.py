"""`teleread init --file county.yaml`: the county's sites, accounts and township gateway
credentials from one declarative file, idempotently (run it again after editing the file).

What it does:
- each site: created if missing, its AE titles added if missing (none are removed), its
  PACS (``pacs``: where its reports' SRs are C-STOREd, ``AE@host:port``) set when given;
- each account, and each site's gateway account: created if missing; a password given as a
  file (``password_file``, a container secret) is set whenever it differs, so the file stays
  the truth; without one a password is made on creation and shown once in ``OUT/new-passwords.txt``;
- the S3 identities of the county's object store (SeaweedFS's ``s3.json``, in ``OUT``): the
  county API's (``s3.admin_*_file``: everything in the bucket) and one per township gateway,
  which may only write and read back under its own site's prefix (``<bucket>/<SITE>/*``,
  see ``storage.keys.instance_key``); keys come from files or are made once and kept;
- ``OUT/townships/<SITE>.env``: what that township's gateway needs from the county (its
  account, its S3 key), to be copied to the township machine.

Files written hold secrets: mode 0600. Nothing is printed but names and paths.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session, sessionmaker

from worklist import accounts
from worklist.db import utcnow
from worklist.errors import WorklistError
from worklist.models import ROLE_GATEWAY, ROLES
from worklist.sr_sends import Destination

S3_CONFIG = "s3.json"
NEW_PASSWORDS = "new-passwords.txt"
ADMIN_IDENTITY = "teleread-county"


class ProvisionError(Exception):
    """The declarative file is wrong."""


@dataclass(frozen=True)
class GatewaySpec:
    username: str
    password_file: Path | None = None
    s3_access_key_file: Path | None = None
    s3_secret_key_file: Path | None = None


@dataclass(frozen=True)
class SiteSpec:
    code: str
    name: str
    ae_titles: tuple[str, ...] = ()
    gateway: GatewaySpec | None = None
    networks: tuple[str, ...] = ()  # where its modalities call from (empty: anywhere)
    # where its reports' SRs are sent ("AE@host:port"; "" none; None: left as it is)
    pacs: str | None = None


@dataclass(frozen=True)
class AccountSpec:
    username: str
    role: str
    site: str | None = None
    display_name: str = ""
    password_file: Path | None = None


@dataclass(frozen=True)
class CountySpec:
    bucket: str = "teleread"
    s3_admin_access_key_file: Path | None = None
    s3_admin_secret_key_file: Path | None = None
    api_url: str = "https://county.example"
    s3_endpoint: str = "county.example:9000"
    sites: tuple[SiteSpec, ...] = ()
    accounts: tuple[AccountSpec, ...] = ()


@dataclass
class Outcome:
    """What one run did, in words (no secrets)."""

    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)


def _path(value: Any, where: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ProvisionError(f"{where}: a file path is expected")
    return Path(value)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProvisionError(f"{where}: a mapping is expected")
    return value


def _str(data: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ProvisionError(f"{where}: '{key}' (text) is required")
    return value.strip()


def load_spec(path: Path) -> CountySpec:
    """Parse and check ``county.yaml``; ``ProvisionError`` names what is wrong and where."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProvisionError(f"cannot read {path}: {exc}") from exc
    data = _mapping(data, str(path))
    s3 = _mapping(data.get("s3") or {}, "s3")
    public = _mapping(data.get("public") or {}, "public")
    sites = []
    codes: set[str] = set()
    for i, raw in enumerate(data.get("sites") or []):
        where = f"sites[{i}]"
        item = _mapping(raw, where)
        code = _str(item, "code", where)
        if not accounts.SITE_CODE.fullmatch(code):
            raise ProvisionError(
                f"{where}: site code {code!r}: letters, digits, '-' and '_', at most 32 "
                "(it is also the site's prefix in the object store)"
            )
        if code in codes:
            raise ProvisionError(f"{where}: site {code} appears twice")
        codes.add(code)
        aes = item.get("ae_titles") or []
        if not isinstance(aes, list) or not all(isinstance(a, str) for a in aes):
            raise ProvisionError(f"{where}: 'ae_titles' is a list of AE titles")
        networks = item.get("networks") or []
        if not isinstance(networks, list) or not all(isinstance(n, str) for n in networks):
            raise ProvisionError(f"{where}: 'networks' is a list of addresses or CIDR blocks")
        try:
            networks = [accounts.clean_network(n) for n in networks]
        except WorklistError as exc:
            raise ProvisionError(f"{where}: {exc}") from None
        gateway = None
        if item.get("gateway") is not None:
            gw = _mapping(item["gateway"], f"{where}.gateway")
            gateway = GatewaySpec(
                username=_str(gw, "username", f"{where}.gateway"),
                password_file=_path(gw.get("password_file"), f"{where}.gateway.password_file"),
                s3_access_key_file=_path(gw.get("s3_access_key_file"), f"{where}.gateway"),
                s3_secret_key_file=_path(gw.get("s3_secret_key_file"), f"{where}.gateway"),
            )
            if (gateway.s3_access_key_file is None) != (gateway.s3_secret_key_file is None):
                raise ProvisionError(
                    f"{where}.gateway: give both s3_access_key_file and s3_secret_key_file, "
                    "or neither (then a key is made)"
                )
        pacs = item.get("pacs")
        if pacs is not None:
            if not isinstance(pacs, str):
                raise ProvisionError(f"{where}: 'pacs' is AE@host:port (or empty for none)")
            try:
                pacs = str(Destination.parse(pacs)) if pacs.strip() else ""
            except WorklistError as exc:
                raise ProvisionError(f"{where}.pacs: {exc}") from None
        name = _str(item, "name", where)
        sites.append(SiteSpec(code, name, tuple(aes), gateway, tuple(networks), pacs))
    people = []
    for i, raw in enumerate(data.get("accounts") or []):
        where = f"accounts[{i}]"
        item = _mapping(raw, where)
        role = _str(item, "role", where)
        if role not in ROLES or role == ROLE_GATEWAY:
            raise ProvisionError(
                f"{where}: role {role!r}: radiologist, clinic or admin (gateway accounts "
                "belong under their site's 'gateway')"
            )
        site = item.get("site")
        if site is not None and site not in codes:
            raise ProvisionError(f"{where}: site {site!r} is not among 'sites'")
        people.append(
            AccountSpec(
                username=_str(item, "username", where),
                role=role,
                site=site,
                display_name=_str(item, "display_name", where, required=False),
                password_file=_path(item.get("password_file"), f"{where}.password_file"),
            )
        )
    return CountySpec(
        bucket=str(s3.get("bucket") or "teleread"),
        s3_admin_access_key_file=_path(s3.get("admin_access_key_file"), "s3"),
        s3_admin_secret_key_file=_path(s3.get("admin_secret_key_file"), "s3"),
        api_url=str(public.get("api_url") or CountySpec.api_url),
        s3_endpoint=str(public.get("s3_endpoint") or CountySpec.s3_endpoint),
        sites=tuple(sites),
        accounts=tuple(people),
    )


def _secret(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ProvisionError(f"cannot read the secret file {path}: {exc.strerror}") from exc
    if not value:
        raise ProvisionError(f"the secret file {path} is empty")
    return value


def _write_private(path: Path, text: str, *, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _account(
    session: Session,
    *,
    username: str,
    role: str,
    site: str | None,
    display_name: str,
    password_file: Path | None,
    outcome: Outcome,
    new_passwords: list[str],
) -> str | None:
    """Create or converge one account; the password when it was made here (else None)."""
    now = utcnow()
    wanted = _secret(password_file) if password_file is not None else None
    user = accounts.get_user_by_username(session=session, username=username)
    if user is None:
        password = wanted or accounts.generate_password()
        accounts.create_user(
            session=session,
            username=username,
            password=password,
            role=role,
            site_code=site,
            display_name=display_name,
            now=now,
        )
        outcome.say(f"account {username} ({role}{', site ' + site if site else ''}) created")
        if wanted is None:
            new_passwords.append(f"{username}\t{password}\t{role}\t{site or ''}")
            return password
        return None
    if user.role != role or (user.site.code if user.site else None) != site:
        raise ProvisionError(
            f"account {username} exists as {user.role}"
            f"{' of ' + user.site.code if user.site else ''}; the file says {role}"
            f"{' of ' + site if site else ''}: change it by hand (`teleread users`) or rename it"
        )
    if wanted is not None and not accounts.verify_password(user.password_hash, wanted):
        accounts.reset_password(session=session, user=user, password=wanted, now=now)
        outcome.say(f"account {username}: password set from {password_file}")
    return None


def _identities(existing: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(existing.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"cannot read {existing}: {exc}") from exc
    return {str(i.get("name")): i for i in data.get("identities", []) if isinstance(i, dict)}


def _key_pair(
    previous: dict[str, Any] | None, access_file: Path | None, secret_file: Path | None
) -> tuple[str, str]:
    if access_file is not None and secret_file is not None:
        return _secret(access_file), _secret(secret_file)
    if previous:
        creds = previous.get("credentials") or [{}]
        if creds[0].get("accessKey") and creds[0].get("secretKey"):
            return str(creds[0]["accessKey"]), str(creds[0]["secretKey"])
    return "GW" + secrets.token_hex(10).upper(), secrets.token_urlsafe(30)


def site_actions(bucket: str, site: str) -> list[str]:
    """A township gateway's S3 rights: write, and read back what it wrote, under its own
    site's prefix only (SeaweedFS action syntax)."""
    return [f"Write:{bucket}/{site}/*", f"Read:{bucket}/{site}/*"]


def provision(
    spec: CountySpec,
    factory: sessionmaker[Session],
    out: Path,
    *,
    new_s3_keys: frozenset[str] = frozenset(),
) -> Outcome:
    """Make the database and ``out`` match ``spec``; see the module docstring. The sites in
    ``new_s3_keys`` get a fresh S3 key for their gateway (the old one stops working when the
    S3 server reloads)."""
    unknown = new_s3_keys - {s.code for s in spec.sites if s.gateway is not None}
    if unknown:
        raise ProvisionError(f"no gateway declared for site(s) {', '.join(sorted(unknown))}")
    outcome = Outcome()
    new_passwords: list[str] = []
    township_env: dict[str, dict[str, str]] = {}
    with factory.begin() as session:
        for site in spec.sites:
            existing = accounts.get_site(session=session, code=site.code)
            if existing is None:
                accounts.create_site(
                    session=session,
                    code=site.code,
                    name=site.name,
                    ae_titles=site.ae_titles,
                    networks=site.networks,
                    now=utcnow(),
                )
                outcome.say(f"site {site.code} created ({', '.join(site.ae_titles) or 'no AE'})")
            else:
                have = {a.ae_title for a in existing.ae_titles}
                missing = [a for a in site.ae_titles if a.strip().upper() not in have]
                if missing:
                    accounts.add_site_ae_titles(
                        session=session, code=site.code, ae_titles=missing, now=utcnow()
                    )
                    outcome.say(f"site {site.code}: AE titles added: {', '.join(missing)}")
                bound = {n.network for n in existing.networks}
                new_networks = [n for n in site.networks if n not in bound]
                if new_networks:
                    accounts.bind_site_devices(
                        session=session, code=site.code, networks=new_networks, now=utcnow()
                    )
                    outcome.say(f"site {site.code}: networks added: {', '.join(new_networks)}")
            if site.pacs is not None:
                changed = accounts.get_site(session=session, code=site.code)
                if changed is not None and changed.sr_destination != site.pacs:
                    accounts.set_site_destination(
                        session=session, code=site.code, destination=site.pacs
                    )
                    outcome.say(f"site {site.code}: reports' SRs go to {site.pacs or 'nowhere'}")
            if site.gateway is not None:
                made = _account(
                    session,
                    username=site.gateway.username,
                    role=ROLE_GATEWAY,
                    site=site.code,
                    display_name="",
                    password_file=site.gateway.password_file,
                    outcome=outcome,
                    new_passwords=new_passwords,
                )
                env = {"TELEREAD_GATEWAY_API_USERNAME": site.gateway.username}
                if made is not None:
                    env["TELEREAD_GATEWAY_API_PASSWORD"] = made
                township_env[site.code] = env
        for person in spec.accounts:
            _account(
                session,
                username=person.username,
                role=person.role,
                site=person.site,
                display_name=person.display_name,
                password_file=person.password_file,
                outcome=outcome,
                new_passwords=new_passwords,
            )
    _write_s3_identities(spec, out, township_env, outcome, new_s3_keys)
    for code, env in township_env.items():
        _write_township(spec, out, code, env, outcome)
    if new_passwords:
        path = out / NEW_PASSWORDS
        old = (
            path.read_text(encoding="utf-8")
            if path.exists()
            else "username\tpassword\trole\tsite\n"
        )
        _write_private(path, old + "\n".join(new_passwords) + "\n")
        outcome.say(
            f"{len(new_passwords)} new password(s) in {path}: hand them out, then delete it"
        )
    return outcome


def _write_s3_identities(
    spec: CountySpec,
    out: Path,
    township_env: dict[str, dict[str, str]],
    outcome: Outcome,
    new_s3_keys: frozenset[str],
) -> None:
    path = out / S3_CONFIG
    previous = _identities(path)
    identities = []
    if spec.s3_admin_access_key_file is not None and spec.s3_admin_secret_key_file is not None:
        access, secret = _key_pair(
            None, spec.s3_admin_access_key_file, spec.s3_admin_secret_key_file
        )
        identities.append(
            {
                "name": ADMIN_IDENTITY,
                "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        )
    for site in spec.sites:
        if site.gateway is None:
            continue
        name = f"gateway-{site.code}"
        kept = None if site.code in new_s3_keys else previous.get(name)
        access, secret = _key_pair(
            kept, site.gateway.s3_access_key_file, site.gateway.s3_secret_key_file
        )
        if site.code in new_s3_keys:
            outcome.say(f"township {site.code}: a new S3 key")
        identities.append(
            {
                "name": name,
                "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": site_actions(spec.bucket, site.code),
            }
        )
        if site.gateway.s3_access_key_file is None:
            township_env[site.code].update(
                TELEREAD_STORAGE_ACCESS_KEY=access, TELEREAD_STORAGE_SECRET_KEY=secret
            )
    text = json.dumps({"identities": identities}, indent=1) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        # readable by the S3 server's own user: the volume holding it is mounted by the init
        # job and the S3 server only
        _write_private(path, text, mode=0o644)
        outcome.say(f"S3 identities written to {path} (reload the S3 server: SIGHUP)")


def _write_township(
    spec: CountySpec, out: Path, code: str, env: dict[str, str], outcome: Outcome
) -> None:
    """``townships/<SITE>.env``: kept from an earlier run for what this run did not make."""
    path = out / "townships" / f"{code}.env"
    kept: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            name, sep, value = line.partition("=")
            if sep and not name.startswith("#"):
                kept[name] = value
    values = {
        "TELEREAD_GATEWAY_API_URL": spec.api_url,
        "TELEREAD_STORAGE_BACKEND": "s3",
        "TELEREAD_STORAGE_ENDPOINT": spec.s3_endpoint,
        "TELEREAD_STORAGE_BUCKET": spec.bucket,
        "TELEREAD_STORAGE_SECURE": "true",
        **kept,
        **env,
    }
    text = (
        f"# township {code}: copy to its gateway machine (mode 0600); made by teleread init\n"
        + "".join(f"{k}={v}\n" for k, v in values.items())
    )
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        _write_private(path, text)
        outcome.say(f"township {code}: gateway settings in {path}")
