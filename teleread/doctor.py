"""`teleread doctor`: check a configuration end to end and say in plain words what is wrong.

One line per check, OK / WARN / FAIL, with how to fix it (and a Chinese line). Every check
runs with a short timeout in a daemon thread, so a dead server never hangs the doctor.
Which checks run depends on the role: ``county`` (database, migrations, object store,
secret key, TLS files), ``gateway`` (county API, clock, object store, spool, DICOM port,
TLS files) or ``all`` (the embedded all-in-one: everything).

Wiring only: the checks use each package's own settings and clients; they create and
remove one probe object and one probe file, and change nothing else.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError

from teleread.embedded import DataDir

Status = Literal["OK", "WARN", "FAIL"]
Role = Literal["county", "gateway", "all"]
ROLES: tuple[Role, ...] = ("county", "gateway", "all")

DEFAULT_TIMEOUT_SECONDS = 5.0
SKEW_WARN_SECONDS = 5.0
SKEW_FAIL_SECONDS = 60.0
CERT_WARN_DAYS = 30
EMBEDDED_GATEWAY_USER = "gateway-embedded"  # teleread.bootstrap.GATEWAY_USER
PROBE_PREFIX = "teleread-doctor"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    message: str
    hint: str = ""
    zh: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class TLSFile:
    """Certificate material one setting points at: a CA bundle, or a cert with its key."""

    setting: str
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None


@dataclass
class DoctorConfig:
    """What to check. Built from the environment by ``from_environment``; tests build it."""

    role: Role = "all"
    database_url: str | None = None
    storage: Any = None  # storage.StorageSettings
    gateway: Any = None  # gateway.config.GatewaySettings
    api_secret_key: str | None = None
    api_secret_source: str = "TELEREAD_API_SECRET_KEY"
    api_tls: list[TLSFile] = field(default_factory=list)
    settings_errors: list[tuple[str, str]] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def from_environment(
        cls,
        *,
        role: Role = "all",
        data_dir: str | None = None,
        database_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> DoctorConfig:
        """Settings as `teleread serve|api|gateway` would read them. For ``all`` (the
        embedded mode) the data directory supplies what `teleread serve` puts there."""
        from teleread.embedded import database_url as resolve_url

        cfg = cls(role=role, timeout=timeout)
        embedded = role == "all"
        root = _data_dir(data_dir) if (embedded or role == "county") else None
        if role in ("county", "all"):
            cfg.database_url = resolve_url(root, database_url) if root else database_url
            env_secret = os.environ.get("TELEREAD_API_SECRET_KEY")
            if env_secret is not None:
                cfg.api_secret_key = env_secret
            elif embedded and root is not None and (root.root / "api.secret").is_file():
                cfg.api_secret_key = (root.root / "api.secret").read_text("ascii").strip()
                cfg.api_secret_source = str(root.root / "api.secret")
        storage_overrides: dict[str, Any] = {}
        if embedded and root is not None and "TELEREAD_STORAGE_ROOT" not in os.environ:
            storage_overrides["root"] = root.objects
        try:
            from storage.settings import StorageSettings

            cfg.storage = StorageSettings(**storage_overrides)
        except ValidationError as exc:
            cfg.settings_errors.append(("TELEREAD_STORAGE_*", _pydantic_message(exc)))
        if role in ("gateway", "all"):
            gw_overrides: dict[str, Any] = {}
            if embedded and root is not None:
                if "TELEREAD_GATEWAY_SPOOL_DIR" not in os.environ:
                    gw_overrides["spool_dir"] = root.spool
                if "TELEREAD_GATEWAY_API_URL" not in os.environ:
                    port = os.environ.get("TELEREAD_API_PORT", "8000")
                    gw_overrides["api_url"] = f"http://127.0.0.1:{port}"
                secret = root.root / "gateway.secret"
                if "TELEREAD_GATEWAY_API_PASSWORD" not in os.environ and secret.is_file():
                    gw_overrides["api_username"] = EMBEDDED_GATEWAY_USER
                    gw_overrides["api_password"] = SecretStr(secret.read_text("ascii").strip())
            try:
                from gateway.config import GatewaySettings

                cfg.gateway = GatewaySettings(**gw_overrides)
            except ValidationError as exc:
                cfg.settings_errors.append(("TELEREAD_GATEWAY_*", _pydantic_message(exc)))
        return cfg


def _data_dir(value: str | None) -> DataDir:
    """The data directory as `teleread serve` resolves it, without creating it."""
    raw = value or os.environ.get("TELEREAD_DATA_DIR") or "teleread-data"
    return DataDir(Path(raw).expanduser().resolve())


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "settings"
        parts.append(f"{loc}: {err.get('msg', '')}")
    return "; ".join(parts)


# -- running ------------------------------------------------------------------------------


def _bounded(name: str, fn: Callable[[], list[CheckResult]], timeout: float) -> list[CheckResult]:
    """Run one check in a daemon thread; a check that outlives ``timeout`` is a FAIL."""
    box: list[list[CheckResult]] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            box.append(fn())
        except Exception as exc:
            errors.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=target, name=f"doctor-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        return [
            CheckResult(
                name,
                "FAIL",
                f"no answer within {timeout:.0f} s",
                "the service or disk behind this check hangs; look at its host and network",
                f"{timeout:.0f} 秒内没有响应",
                elapsed,
            )
        ]
    if errors:
        exc = errors[0]
        return [
            CheckResult(
                name, "FAIL", f"check crashed: {type(exc).__name__}: {exc}", "", "检查出错", elapsed
            )
        ]
    return [
        CheckResult(r.name, r.status, r.message, r.hint, r.zh, round(elapsed, 3)) for r in box[0]
    ]


def run_checks(cfg: DoctorConfig) -> list[CheckResult]:
    """Every check the role calls for, in a fixed order."""
    results: list[CheckResult] = [
        CheckResult("settings", "FAIL", f"{prefix}: {msg}", "fix the variable(s) named", "配置有误")
        for prefix, msg in cfg.settings_errors
    ]
    state = _State()
    budget = cfg.timeout * 3 + 1
    county = cfg.role in ("county", "all")
    gw = cfg.role in ("gateway", "all")
    plan: list[tuple[str, Callable[[], list[CheckResult]]]] = []
    if county:
        plan.append(("database", lambda: check_database(cfg)))
        plan.append(("secret_key", lambda: check_secret_key(cfg)))
    if cfg.storage is not None:
        plan.append(("object_store", lambda: check_object_store(cfg)))
    if gw and cfg.gateway is not None:
        plan.append(("county_api", lambda: check_county_api(cfg, state)))
        plan.append(("spool", lambda: check_spool(cfg)))
        plan.append(("dicom_port", lambda: check_dicom_port(cfg, state)))
    plan.append(("tls", lambda: check_tls(cfg)))
    for name, fn in plan:
        results.extend(_bounded(name, fn, budget))
    return results


def exit_code(results: Iterable[CheckResult]) -> int:
    return 1 if any(r.status == "FAIL" for r in results) else 0


def format_text(results: Sequence[CheckResult]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r.status:<4}  {r.name:<12}  {r.message}")
        if r.hint and r.status != "OK":
            lines.append(f"{'':<20}fix: {r.hint}")
        if r.zh:
            lines.append(f"{'':<20}{r.zh}")
    fails = sum(r.status == "FAIL" for r in results)
    warns = sum(r.status == "WARN" for r in results)
    lines.append(
        "all checks passed" if not fails and not warns else f"{fails} failed, {warns} warnings"
    )
    return "\n".join(lines)


def format_json(cfg: DoctorConfig, results: Sequence[CheckResult]) -> str:
    return json.dumps(
        {
            "ok": exit_code(results) == 0,
            "role": cfg.role,
            "checks": [asdict(r) for r in results],
        },
        ensure_ascii=False,
        indent=2,
    )


@dataclass
class _State:
    """What one check learns that a later one uses (the county's AE titles for C-ECHO)."""

    ae_titles: list[str] = field(default_factory=list)


def _ok(name: str, message: str, zh: str = "") -> CheckResult:
    return CheckResult(name, "OK", message, "", zh)


def _warn(name: str, message: str, hint: str, zh: str = "") -> CheckResult:
    return CheckResult(name, "WARN", message, hint, zh)


def _fail(name: str, message: str, hint: str, zh: str = "") -> CheckResult:
    return CheckResult(name, "FAIL", message, hint, zh)


# -- county: database, migrations, secret key ---------------------------------------------


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def check_database(cfg: DoctorConfig) -> list[CheckResult]:
    """Reachable, and at the migration head of this teleread."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from worklist.db import alembic_config, normalise_url

    upgrade_hint = "run `teleread db upgrade` (same database settings)"
    url = cfg.database_url
    if not url:
        return [
            _fail(
                "database",
                "no database configured",
                "set TELEREAD_WORKLIST_DATABASE_URL or --database-url / --data-dir",
                "未配置数据库",
            )
        ]
    shown = _safe_url(url)
    try:
        parsed = normalise_url(url)
    except ArgumentError as exc:
        return [_fail("database", f"cannot parse the database URL: {exc}", "fix the URL", "")]
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        db = parsed.database or ""
        if db and db != ":memory:" and not db.startswith("file:") and not Path(db).is_file():
            return [
                _fail(
                    "database",
                    f"{shown}: the database file does not exist",
                    f"check the path; a new installation: {upgrade_hint} creates it",
                    "数据库文件不存在",
                )
            ]
    elif backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": max(1, int(cfg.timeout))}
    try:
        engine = create_engine(parsed, pool_pre_ping=False, **kwargs)
    except Exception as exc:
        return [_fail("database", f"{shown}: {exc}", "fix TELEREAD_WORKLIST_DATABASE_URL", "")]
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        return [
            _fail(
                "database",
                f"{shown}: cannot connect: {reason}",
                "is the server running and reachable from here? check host, port, user, "
                "password and database name in TELEREAD_WORKLIST_DATABASE_URL",
                "无法连接数据库：检查地址、端口、用户名、密码",
            )
        ]
    finally:
        engine.dispose()
    out = [_ok("database", f"{shown} is reachable ({backend})", "数据库可以连接")]
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    known = {rev.revision for rev in script.walk_revisions()}
    if current is None:
        out.append(
            _fail(
                "migrations",
                "the database has no tables yet (no migration applied)",
                upgrade_hint,
                "数据库尚未初始化：运行 teleread db upgrade",
            )
        )
    elif current == head:
        out.append(_ok("migrations", f"at the latest migration {head}", "数据库结构是最新的"))
    elif current in known:
        out.append(
            _fail(
                "migrations",
                f"the database is at migration {current}; this teleread needs {head}",
                upgrade_hint,
                "数据库结构版本过旧：运行 teleread db upgrade",
            )
        )
    else:
        out.append(
            _fail(
                "migrations",
                f"the database is at migration {current}, which this teleread does not know "
                f"(it knows up to {head}): a newer teleread upgraded it",
                "run the same (newer) teleread version everywhere",
                "数据库由更新版本的 teleread 升级过：请统一版本",
            )
        )
    return out


def check_secret_key(cfg: DoctorConfig) -> list[CheckResult]:
    from viewer_api.errors import InsecureSecretKey
    from viewer_api.settings import MIN_SECRET_KEY_LENGTH, ApiSettings

    gen = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
    if cfg.api_secret_key is None:
        if cfg.role == "all":
            return [
                _ok(
                    "secret_key",
                    "no TELEREAD_API_SECRET_KEY: `teleread serve` makes a random one in the "
                    "data directory on first start",
                    "首次启动时自动生成密钥",
                )
            ]
        return [
            _fail(
                "secret_key",
                "TELEREAD_API_SECRET_KEY is not set: the county API refuses to start",
                f"set it to a long random value, e.g. `{gen}`",
                "未设置 API 密钥",
            )
        ]
    try:
        ApiSettings(secret_key=SecretStr(cfg.api_secret_key))
    except (InsecureSecretKey, ValidationError):
        return [
            _fail(
                "secret_key",
                f"the API secret key ({cfg.api_secret_source}) is a default or shorter than "
                f"{MIN_SECRET_KEY_LENGTH} characters: anyone who guesses it can mint tokens",
                f"replace it with a long random value, e.g. `{gen}`, and restart the API "
                "(everyone logs in again)",
                "API 密钥是默认值或太短：请更换为随机长密钥",
            )
        ]
    return [_ok("secret_key", f"the API secret key ({cfg.api_secret_source}) is strong enough")]


# -- object store --------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_object_store(cfg: DoctorConfig) -> list[CheckResult]:
    """Bucket or directory exists; a probe object can be written, read back and deleted."""
    import storage
    from storage.base import ObjectStore
    from storage.errors import StorageError

    settings = cfg.storage
    t = cfg.timeout
    out: list[CheckResult] = []
    if settings.backend == "s3":
        settings = settings.model_copy(
            update={"connect_timeout_seconds": t, "read_timeout_seconds": t, "retries": 0}
        )
        where = f"bucket {settings.bucket!r} at {settings.endpoint}"
        host = settings.endpoint.rsplit(":", 1)[0]
        if not settings.secure and not _is_loopback(host):
            out.append(
                _warn(
                    "object_store",
                    f"S3 over plain http to {settings.endpoint}: images cross the network "
                    "unencrypted",
                    "enable TLS on MinIO and set TELEREAD_STORAGE_SECURE=true "
                    "(TELEREAD_STORAGE_CA_BUNDLE for your own CA)",
                    "对象存储未加密传输",
                )
            )
        s3 = storage.MinioStore(
            storage.minio_store.make_client(settings), settings.bucket, create_bucket=False
        )
        store: ObjectStore = s3
        try:
            exists = s3.client.bucket_exists(settings.bucket)
        except Exception as exc:
            return [*out, _s3_failure(where, exc)]
        if not exists:
            return [
                *out,
                _fail(
                    "object_store",
                    f"{where} does not exist",
                    f"create it: `mc mb ALIAS/{settings.bucket}` (docker compose creates it at "
                    "start), or fix TELEREAD_STORAGE_BUCKET",
                    "存储桶不存在",
                ),
            ]
    else:
        root = Path(settings.root).absolute()
        where = f"directory {root}"
        if root.exists() and not root.is_dir():
            return [
                _fail(
                    "object_store",
                    f"{where} is not a directory",
                    "point TELEREAD_STORAGE_ROOT at a directory",
                    "对象存储路径不是目录",
                )
            ]
        if not root.is_dir():
            parent = _existing_ancestor(root)
            if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
                return [
                    _warn(
                        "object_store",
                        f"{where} does not exist yet; teleread creates it at start. If this "
                        "county already holds images, their disk is probably not mounted",
                        f"check the disk is mounted, or create it (`mkdir -p {root}`), or fix "
                        "TELEREAD_STORAGE_ROOT",
                        "对象存储目录尚不存在（启动时创建）；如已有影像，请检查磁盘是否挂载",
                    )
                ]
            return [
                _fail(
                    "object_store",
                    f"{where} does not exist and cannot be created under {parent}",
                    f"create it (`mkdir -p {root}`) for the teleread user, or fix "
                    "TELEREAD_STORAGE_ROOT; check the disk is mounted",
                    "对象存储目录不存在",
                )
            ]
        store = storage.FilesystemStore(root)
    key = f"{PROBE_PREFIX}/probe-{uuid.uuid4().hex}.txt"
    data = f"teleread doctor probe {datetime.now(UTC).isoformat()}".encode()
    step = "write"
    try:
        store.put(key, data, content_type="text/plain", sha256=hashlib.sha256(data).hexdigest())
        step = "read back"
        if store.get(key) != data:
            return [
                *out,
                _fail(
                    "object_store",
                    f"{where}: the probe object read back differs from what was written",
                    "the store corrupts data: check the disk or the S3 server",
                    "读回的数据不一致",
                ),
            ]
        step = "delete"
        store.delete(key)
        if store.exists(key):
            return [
                *out,
                _fail(
                    "object_store",
                    f"{where}: the probe object is still there after delete",
                    "check the bucket's object lock / retention settings",
                    "删除失败",
                ),
            ]
    except (StorageError, OSError) as exc:
        if settings.backend == "s3":
            return [*out, _s3_failure(where, exc, step)]
        return [
            _fail(
                "object_store",
                f"{where}: cannot {step} a probe object: {exc}",
                "give the user running teleread write permission (chown / chmod), check the "
                "disk is mounted read-write and not full",
                "对象存储目录不可写",
            )
        ]
    finally:
        if settings.backend == "filesystem":
            _remove_empty_dir(Path(settings.root).absolute() / PROBE_PREFIX)
    out.append(_ok("object_store", f"{where}: write, read and delete work", "对象存储读写正常"))
    return out


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _remove_empty_dir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _s3_failure(where: str, exc: BaseException, step: str = "reach") -> CheckResult:
    text = f"{type(exc).__name__}: {exc}"[:300]
    lowered = text.lower()
    if "certificate" in lowered or "ssl" in lowered:
        hint = "the server's certificate is not trusted: set TELEREAD_STORAGE_CA_BUNDLE"
    elif "accessdenied" in lowered or "signature" in lowered or "invalidaccesskey" in lowered:
        hint = "check TELEREAD_STORAGE_ACCESS_KEY / SECRET_KEY and the key's bucket policy"
    else:
        hint = "is MinIO running and TELEREAD_STORAGE_ENDPOINT (host:port) right?"
    return _fail("object_store", f"{where}: cannot {step}: {text}", hint, "无法访问对象存储")


# -- gateway: county API and clock ---------------------------------------------------------


def _verify(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    if ca_bundle:
        return ssl.create_default_context(cafile=str(ca_bundle))
    return True


def check_county_api(cfg: DoctorConfig, state: _State) -> list[CheckResult]:
    """GET /healthz, log in with the gateway credential, fetch /api/v1/gateway/config; the
    clock skew comes from the ``Date`` header of the health answer."""
    import httpx

    gw = cfg.gateway
    base = str(gw.api_url).rstrip("/")
    out: list[CheckResult] = []
    parts = urlsplit(base)
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        out.append(
            _warn(
                "county_api",
                f"{base} is plain http: reports and patient data cross the network unencrypted",
                "serve the API over HTTPS and use an https:// TELEREAD_GATEWAY_API_URL",
                "县级接口未使用 HTTPS",
            )
        )
    if getattr(gw, "api_tls_insecure_skip_verify", False):
        out.append(
            _warn(
                "county_api",
                "TELEREAD_GATEWAY_API_TLS_INSECURE_SKIP_VERIFY is on: the gateway would send "
                "patient data to anyone who intercepts the connection",
                "turn it off and set TELEREAD_GATEWAY_API_CA_BUNDLE to the county's CA",
                "已关闭证书校验：存在中间人风险",
            )
        )
    try:
        verify: ssl.SSLContext | bool = (
            False
            if getattr(gw, "api_tls_insecure_skip_verify", False)
            else _verify(gw.api_ca_bundle)
        )
    except (OSError, ssl.SSLError) as exc:
        return [
            *out,
            _fail(
                "county_api",
                f"cannot load TELEREAD_GATEWAY_API_CA_BUNDLE {gw.api_ca_bundle}: {exc}",
                "point it at a PEM file with the county's CA certificate",
                "CA 证书文件无法读取",
            ),
        ]
    try:
        with httpx.Client(base_url=base, timeout=cfg.timeout, verify=verify) as http:
            t0 = time.time()
            health = http.get("/healthz")
            t1 = time.time()
            if health.status_code >= 500:
                return [
                    *out,
                    _fail(
                        "county_api",
                        f"{base}/healthz answered {health.status_code}",
                        "the API runs but is unhealthy: its database may be down; see its log",
                        "县级接口运行异常",
                    ),
                ]
            if health.status_code != 200:
                return [
                    *out,
                    _fail(
                        "county_api",
                        f"{base}/healthz answered {health.status_code}: this is not a teleread "
                        "county API (or a proxy in front of it does not pass /healthz)",
                        "check TELEREAD_GATEWAY_API_URL: scheme, host and port of the county "
                        "API, without a path",
                        "该地址不是县级接口",
                    ),
                ]
            out.append(_ok("county_api", f"{base} answers /healthz", "县级接口可以访问"))
            out.append(_clock_result(health.headers.get("date"), (t0 + t1) / 2))
            out.extend(_gateway_login(http, cfg, state))
    except httpx.HTTPError as exc:
        text = f"{type(exc).__name__}: {exc}"[:300]
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
            hint = (
                "the county's certificate is not trusted: set TELEREAD_GATEWAY_API_CA_BUNDLE "
                "to its CA file (and check the host name matches the certificate)"
            )
        else:
            hint = (
                "is the county API running (`teleread api`, or `teleread serve` for the "
                "all-in-one), and TELEREAD_GATEWAY_API_URL right? check the network / "
                "firewall between this township and the county"
            )
        out.append(_fail("county_api", f"cannot reach {base}: {text}", hint, "无法访问县级接口"))
    return out


def _gateway_login(http: Any, cfg: DoctorConfig, state: _State) -> list[CheckResult]:
    gw = cfg.gateway
    password = gw.api_password.get_secret_value()
    if not password:
        return [
            _fail(
                "gateway_login",
                "TELEREAD_GATEWAY_API_PASSWORD is not set",
                "create a gateway account on the county (`teleread users add NAME --role gateway "
                "--site CODE --password-stdin`) and set TELEREAD_GATEWAY_API_USERNAME/PASSWORD",
                "未设置网关账号密码",
            )
        ]
    r = http.post("/api/v1/auth/token", data={"username": gw.api_username, "password": password})
    if r.status_code != 200:
        return [
            _fail(
                "gateway_login",
                f"logging in as {gw.api_username!r} failed ({r.status_code})",
                "check TELEREAD_GATEWAY_API_USERNAME / PASSWORD; the account may be disabled "
                "or its credential revoked by the county admin",
                "网关账号登录失败",
            )
        ]
    token = r.json().get("access_token", "")
    conf = http.get("/api/v1/gateway/config", headers={"Authorization": f"Bearer {token}"})
    if conf.status_code != 200:
        return [
            _fail(
                "gateway_login",
                f"{gw.api_username!r} logged in but /api/v1/gateway/config answered "
                f"{conf.status_code}",
                "the account must have the role 'gateway'",
                "账号不是网关角色",
            )
        ]
    sites = conf.json().get("sites", [])
    state.ae_titles = [ae for s in sites for ae in s.get("ae_titles", [])]
    if not sites:
        return [
            _warn(
                "gateway_login",
                f"logged in as {gw.api_username!r}, but no site is configured for it: every "
                "modality will be refused",
                "on the county: `teleread sites add CODE --name NAME --ae CT_AE`",
                "没有配置乡镇站点",
            )
        ]
    codes = ", ".join(f"{s.get('code')} ({len(s.get('ae_titles', []))} AE)" for s in sites)
    return [_ok("gateway_login", f"logged in as {gw.api_username!r}; sites: {codes}")]


def _clock_result(date_header: str | None, local: float) -> CheckResult:
    why = (
        "tokens expire and reading deadlines are computed from clock times: a wrong clock "
        "logs users out early or late and misstates deadlines"
    )
    if not date_header:
        return _warn(
            "clock",
            "the county API sent no Date header: cannot measure clock skew",
            "check a proxy is not stripping it",
            "无法检测时钟偏差",
        )
    try:
        remote = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return _warn("clock", f"unreadable Date header {date_header!r}", "", "无法检测时钟偏差")
    if remote.tzinfo is None:
        remote = remote.replace(tzinfo=UTC)
    skew = datetime.fromtimestamp(local, UTC) - remote
    seconds = skew.total_seconds()
    # the header has one-second resolution
    magnitude = max(0.0, abs(seconds) - 1.0)
    side = "ahead of" if seconds > 0 else "behind"
    text = f"this machine's clock is {abs(seconds):.0f} s {side} the county API's"
    fix = "run NTP on both machines (`timedatectl set-ntp true`, chrony)"
    if magnitude > SKEW_FAIL_SECONDS:
        return _fail("clock", f"{text}: {why}", fix, f"时钟偏差 {abs(seconds):.0f} 秒：请开启 NTP")
    if magnitude > SKEW_WARN_SECONDS:
        return _warn("clock", f"{text}: {why}", fix, f"时钟偏差 {abs(seconds):.0f} 秒：请开启 NTP")
    return _ok(
        "clock", f"clock agrees with the county API (within {SKEW_WARN_SECONDS:.0f} s)", "时钟一致"
    )


# -- gateway: spool, DICOM port ------------------------------------------------------------


def check_spool(cfg: DoctorConfig) -> list[CheckResult]:
    gw = cfg.gateway
    spool = Path(gw.spool_dir).absolute()
    existing = _existing_ancestor(spool)
    if not existing.is_dir():
        return [
            _fail(
                "spool",
                f"{existing} (on the way to the spool {spool}) is not a directory",
                "point TELEREAD_GATEWAY_SPOOL_DIR at a directory",
                "缓存目录路径错误",
            )
        ]
    probe = existing / f".teleread-doctor-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return [
            _fail(
                "spool",
                f"cannot write in {existing}: {exc.strerror or exc}",
                "give the user running the gateway write permission, and check the disk is "
                "mounted read-write",
                "网关缓存目录不可写",
            )
        ]
    free = shutil.disk_usage(existing).free
    where = spool if spool.exists() else f"{spool} (created at start under {existing})"
    gib = 1024**3
    if free < gw.spool_min_free_bytes:
        return [
            _fail(
                "spool",
                f"{where}: {free / gib:.1f} GiB free, below the {gw.spool_min_free_bytes / gib:.1f}"
                " GiB minimum: the gateway refuses new images (out of resources)",
                "free disk space, or move the spool to a bigger disk",
                "网关缓存磁盘空间不足",
            )
        ]
    if gw.spool_max_bytes and free < gw.spool_max_bytes:
        return [
            _warn(
                "spool",
                f"{where}: {free / gib:.1f} GiB free, less than the spool cap "
                f"{gw.spool_max_bytes / gib:.1f} GiB: during a long outage the disk fills first",
                "free disk space or lower TELEREAD_GATEWAY_SPOOL_MAX_BYTES",
                "磁盘剩余空间小于缓存上限",
            )
        ]
    return [_ok("spool", f"{where}: writable, {free / gib:.1f} GiB free", "网关缓存目录可写")]


def check_dicom_port(cfg: DoctorConfig, state: _State) -> list[CheckResult]:
    """The DICOM port is free for the gateway, or our gateway already answers on it."""
    gw = cfg.gateway
    host = gw.host or "0.0.0.0"
    port = int(gw.port)
    if port == 0:
        return [_ok("dicom_port", "port 0: the gateway picks a free port at start")]
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return [_echo_result(cfg, state, host, port)]
        if exc.errno == errno.EACCES:
            return [
                _fail(
                    "dicom_port",
                    f"port {port} needs root privileges to listen on",
                    "use a port above 1023 (DICOM's usual 11112, or 2762 for DICOM TLS) or "
                    "grant CAP_NET_BIND_SERVICE",
                    "端口需要特权",
                )
            ]
        return [
            _fail(
                "dicom_port",
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                "check TELEREAD_GATEWAY_HOST is an address of this machine",
                "无法监听 DICOM 端口",
            )
        ]
    finally:
        sock.close()
    out = [_ok("dicom_port", f"{host}:{port} is free for the gateway", "DICOM 端口空闲")]
    return out + _check_tls_port(cfg, host)


def _check_tls_port(cfg: DoctorConfig, host: str) -> list[CheckResult]:
    """The DICOM TLS port (``TELEREAD_GATEWAY_TLS_PORT``), when set: free, or speaking TLS."""
    port = getattr(cfg.gateway, "tls_port", None)
    if not port:
        return []
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        return [_ok("dicom_tls", f"{host}:{port} is free for the DICOM TLS listener")]
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return [
                _fail(
                    "dicom_tls",
                    f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                    "choose another TELEREAD_GATEWAY_TLS_PORT (DICOM TLS is usually 2762)",
                    "无法监听 DICOM TLS 端口",
                )
            ]
    finally:
        sock.close()
    target = "127.0.0.1" if host in ("0.0.0.0", "") else host
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only: does something speak TLS there?
    try:
        with (
            socket.create_connection((target, port), timeout=cfg.timeout) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            version = tls.version()
    except (OSError, ssl.SSLError) as exc:
        return [
            _fail(
                "dicom_tls",
                f"port {port} is in use by a program that does not complete a TLS handshake "
                f"({exc})",
                f"stop that program (`ss -ltnp 'sport = :{port}'`) or change "
                "TELEREAD_GATEWAY_TLS_PORT",
                "DICOM TLS 端口被占用",
            )
        ]
    return [_ok("dicom_tls", f"port {port} answers TLS ({version}): the gateway is running")]


def _echo_result(cfg: DoctorConfig, state: _State, host: str, port: int) -> CheckResult:
    from pynetdicom import AE

    gw = cfg.gateway
    target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    calling = state.ae_titles[0] if state.ae_titles else "TELEREAD_DOCTOR"
    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.timeout
    ae.connection_timeout = cfg.timeout
    assoc = ae.associate(target, port, ae_title=gw.ae_title)
    try:
        if assoc.is_established:
            status = assoc.send_c_echo()
            if status and getattr(status, "Status", None) == 0:
                return _ok(
                    "dicom_port",
                    f"port {port} is in use by a DICOM node answering C-ECHO as {gw.ae_title} "
                    "(the gateway is running)",
                    "网关正在运行，C-ECHO 正常",
                )
            return _warn(
                "dicom_port",
                f"port {port}: association accepted but C-ECHO failed",
                "look at the gateway's log",
                "C-ECHO 失败",
            )
        if assoc.is_rejected:
            return _ok(
                "dicom_port",
                f"port {port} is in use by a DICOM node that refused calling AE {calling!r} "
                "(the gateway refuses AE titles no site lists): the gateway is running",
                "网关正在运行",
            )
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
    return _fail(
        "dicom_port",
        f"port {port} is in use by another program that does not speak DICOM",
        f"stop that program (`ss -ltnp 'sport = :{port}'` shows it) or set "
        "TELEREAD_GATEWAY_PORT to a free port",
        "DICOM 端口被其他程序占用",
    )


# -- TLS material ------------------------------------------------------------------------


def tls_material(cfg: DoctorConfig) -> list[TLSFile]:
    """Every certificate, key and CA file the settings of this role point at."""
    items: list[TLSFile] = []
    if cfg.storage is not None and getattr(cfg.storage, "ca_bundle", None):
        items.append(TLSFile("TELEREAD_STORAGE_CA_BUNDLE", ca=Path(cfg.storage.ca_bundle)))
    if cfg.role in ("gateway", "all") and cfg.gateway is not None:
        gw = cfg.gateway
        if getattr(gw, "api_ca_bundle", None):
            items.append(TLSFile("TELEREAD_GATEWAY_API_CA_BUNDLE", ca=Path(gw.api_ca_bundle)))
        items.extend(_gateway_dicom_tls(gw))
    if cfg.role in ("county", "all"):
        items.extend(cfg.api_tls)
    return items


def _gateway_dicom_tls(gw: Any) -> list[TLSFile]:
    """The gateway's DICOM TLS listener files (``TELEREAD_GATEWAY_TLS_CERT/KEY/CA``)."""
    cert, key, ca = (getattr(gw, name, None) for name in ("tls_cert", "tls_key", "tls_ca"))
    if not (cert or key or ca):
        return []
    names = [
        f"TELEREAD_GATEWAY_TLS_{n.upper()}"
        for n, v in (("cert", cert), ("key", key), ("ca", ca))
        if v
    ]
    return [
        TLSFile(
            "/".join(names),
            cert=Path(cert) if cert else None,
            key=Path(key) if key else None,
            ca=Path(ca) if ca else None,
        )
    ]


def check_tls(cfg: DoctorConfig) -> list[CheckResult]:
    items = tls_material(cfg)
    if not items:
        return [_ok("tls", "no certificate files configured", "未配置证书文件")]
    out: list[CheckResult] = []
    now = datetime.now(UTC)
    for item in items:
        out.extend(_check_tls_item(item, now))
    return out


def _load_certs(path: Path) -> list[Any]:
    from cryptography import x509

    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return list(x509.load_pem_x509_certificates(data))
    return [x509.load_der_x509_certificate(data)]


def _cert_dates(cert: Any) -> tuple[datetime, datetime]:
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def _check_tls_item(item: TLSFile, now: datetime) -> list[CheckResult]:
    from cryptography.hazmat.primitives import serialization

    out: list[CheckResult] = []
    label = item.setting
    certs: dict[str, list[Any]] = {}
    for role, path in (("certificate", item.cert), ("CA bundle", item.ca)):
        if path is None:
            continue
        if not path.is_file():
            return [
                _fail(
                    "tls",
                    f"{label}: {role} file {path} does not exist",
                    "fix the path, or copy the file there (readable by the teleread user)",
                    "证书文件不存在",
                )
            ]
        try:
            certs[role] = _load_certs(path)
        except (ValueError, OSError) as exc:
            return [
                _fail(
                    "tls",
                    f"{label}: {path} is not a PEM/DER certificate: {exc}"[:300],
                    "export the certificate as PEM (`openssl x509 -in X -out Y.pem`)",
                    "证书无法解析",
                )
            ]
        if not certs[role]:
            return [_fail("tls", f"{label}: {path} holds no certificate", "", "证书为空")]
    if item.key is not None:
        if not item.key.is_file():
            return [
                _fail("tls", f"{label}: key file {item.key} does not exist", "fix the path", "")
            ]
        try:
            key = serialization.load_pem_private_key(item.key.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as exc:
            return [
                _fail(
                    "tls",
                    f"{label}: {item.key} is not an unencrypted PEM private key: {exc}"[:300],
                    "the gateway cannot type a passphrase: store the key unencrypted, mode 0600",
                    "私钥无法读取",
                )
            ]
        if "certificate" in certs:
            fmt = serialization.PublicFormat.SubjectPublicKeyInfo
            enc = serialization.Encoding.DER
            cert_pub = certs["certificate"][0].public_key().public_bytes(enc, fmt)
            if key.public_key().public_bytes(enc, fmt) != cert_pub:
                return [
                    _fail(
                        "tls",
                        f"{label}: the key {item.key} does not belong to the certificate "
                        f"{item.cert}",
                        "install the key the certificate was issued for",
                        "私钥与证书不匹配",
                    )
                ]
    problems: list[CheckResult] = []
    for role, chain in certs.items():
        path = item.cert if role == "certificate" else item.ca
        for cert in chain:
            start, end = _cert_dates(cert)
            subject = cert.subject.rfc4514_string() or "(no subject)"
            if end < now:
                problems.append(
                    _fail(
                        "tls",
                        f"{label}: {role} {subject} in {path} expired on {end:%Y-%m-%d}: "
                        "connections using it fail",
                        "issue a new certificate and restart the service",
                        f"证书已于 {end:%Y-%m-%d} 过期",
                    )
                )
            elif start > now:
                problems.append(
                    _fail(
                        "tls",
                        f"{label}: {role} {subject} in {path} is valid only from "
                        f"{start:%Y-%m-%d %H:%M} UTC (is this machine's clock right?)",
                        "check the clock (NTP), or wait until the certificate is valid",
                        "证书尚未生效",
                    )
                )
            elif end - now < timedelta(days=CERT_WARN_DAYS):
                problems.append(
                    _warn(
                        "tls",
                        f"{label}: {role} {subject} in {path} expires on {end:%Y-%m-%d} "
                        f"({(end - now).days} days)",
                        "renew it now; connections fail the day it expires",
                        f"证书将于 {end:%Y-%m-%d} 过期",
                    )
                )
    if problems:
        return problems
    files = ", ".join(str(p) for p in (item.cert, item.key, item.ca) if p is not None)
    ends = [_cert_dates(c)[1] for chain in certs.values() for c in chain]
    until = f", valid until {min(ends):%Y-%m-%d}" if ends else ""
    out.append(_ok("tls", f"{label}: {files} readable{until}", "证书有效"))
    return out


def main(
    *,
    role: Role,
    data_dir: str | None,
    database_url: str | None,
    as_json: bool,
    timeout: float,
    write: Callable[[str], object],
) -> int:
    cfg = DoctorConfig.from_environment(
        role=role, data_dir=data_dir, database_url=database_url, timeout=timeout
    )
    results = run_checks(cfg)
    write(format_json(cfg, results) if as_json else format_text(results))
    return exit_code(results)


__all__ = [
    "ROLES",
    "CheckResult",
    "DoctorConfig",
    "TLSFile",
    "check_county_api",
    "check_database",
    "check_dicom_port",
    "check_object_store",
    "check_secret_key",
    "check_spool",
    "check_tls",
    "exit_code",
    "format_json",
    "format_text",
    "main",
    "run_checks",
    "tls_material",
]
