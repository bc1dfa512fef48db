"""County checks: the database and its migration, the API secret key, the public URL, the
object store."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError

from teleread.doctor.config import DoctorConfig
from teleread.doctor.results import (
    PROBE_PREFIX,
    CheckResult,
    CheckState,
    existing_ancestor,
    fail,
    is_loopback,
    ok,
    warn,
)


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
            fail(
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
        return [fail("database", f"cannot parse the database URL: {exc}", "fix the URL", "")]
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        db = parsed.database or ""
        if db and db != ":memory:" and not db.startswith("file:") and not Path(db).is_file():
            return [
                fail(
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
        return [fail("database", f"{shown}: {exc}", "fix TELEREAD_WORKLIST_DATABASE_URL", "")]
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        return [
            fail(
                "database",
                f"{shown}: cannot connect: {reason}",
                "is the server running and reachable from here? check host, port, user, "
                "password and database name in TELEREAD_WORKLIST_DATABASE_URL",
                "无法连接数据库：检查地址、端口、用户名、密码",
            )
        ]
    finally:
        engine.dispose()
    out = [ok("database", f"{shown} is reachable ({backend})", "数据库可以连接")]
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    known = {rev.revision for rev in script.walk_revisions()}
    if current is None:
        out.append(
            fail(
                "migrations",
                "the database has no tables yet (no migration applied)",
                upgrade_hint,
                "数据库尚未初始化：运行 teleread db upgrade",
            )
        )
    elif current == head:
        out.append(ok("migrations", f"at the latest migration {head}", "数据库结构是最新的"))
    elif current in known:
        out.append(
            fail(
                "migrations",
                f"the database is at migration {current}; this teleread needs {head}",
                upgrade_hint,
                "数据库结构版本过旧：运行 teleread db upgrade",
            )
        )
    else:
        out.append(
            fail(
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
                ok(
                    "secret_key",
                    "no TELEREAD_API_SECRET_KEY: `teleread serve` makes a random one in the "
                    "data directory on first start",
                    "首次启动时自动生成密钥",
                )
            ]
        return [
            fail(
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
            fail(
                "secret_key",
                f"the API secret key ({cfg.api_secret_source}) is a default or shorter than "
                f"{MIN_SECRET_KEY_LENGTH} characters: anyone who guesses it can mint tokens",
                f"replace it with a long random value, e.g. `{gen}`, and restart the API "
                "(everyone logs in again)",
                "API 密钥是默认值或太短：请更换为随机长密钥",
            )
        ]
    return [ok("secret_key", f"the API secret key ({cfg.api_secret_source}) is strong enough")]


# -- public URL ----------------------------------------------------------------------------

PUBLIC_URL_HINT = (
    "set TELEREAD_API_PUBLIC_URL to the address phones and clinic PCs reach the API at "
    "(the reverse proxy's name, e.g. https://pacs.xx-county.cn) and restart the API"
)


def check_public_url(cfg: DoctorConfig) -> list[CheckResult]:
    """TELEREAD_API_PUBLIC_URL, the base of share links and QR codes: set when the API is
    reached from other machines, not a loopback address then, and answering ``/healthz``."""
    import httpx

    name = "public_url"
    wide = not is_loopback(cfg.api_host)  # the API listens beyond this machine
    url = cfg.public_url
    if not url:
        if cfg.role == "all" and not wide:
            return [
                ok(
                    name,
                    f"TELEREAD_API_PUBLIC_URL is unset; the API listens on {cfg.api_host} only, "
                    "so links can only be opened on this machine anyway",
                    "未设置对外地址（仅本机访问）",
                )
            ]
        where = f"listens on {cfg.api_host}" if wide else "runs behind a proxy"
        return [
            warn(
                name,
                f"TELEREAD_API_PUBLIC_URL is unset while the API {where}: share links and QR "
                "codes carry whatever address a request came in on (the proxy's internal one, "
                "or 127.0.0.1), which a phone cannot open",
                PUBLIC_URL_HINT,
                "未设置对外地址 TELEREAD_API_PUBLIC_URL：分享链接和二维码可能无法在手机上打开",
            )
        ]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return [
            fail(
                name,
                f"TELEREAD_API_PUBLIC_URL={url!r} is not an http(s) address without query",
                PUBLIC_URL_HINT,
                "对外地址格式错误",
            )
        ]
    out: list[CheckResult] = []
    if is_loopback(parts.hostname) and (wide or cfg.role == "county"):
        out.append(
            warn(
                name,
                f"TELEREAD_API_PUBLIC_URL={url} is a loopback address: every link and QR code "
                "would send the phone that opens it to itself",
                PUBLIC_URL_HINT,
                "对外地址是本机回环地址：手机无法打开",
            )
        )
    elif parts.scheme == "http" and not is_loopback(parts.hostname):
        out.append(
            warn(
                name,
                f"TELEREAD_API_PUBLIC_URL={url} is plain http: reports opened through share "
                "links cross the network unencrypted",
                "put the API behind the TLS proxy (docker-compose.yml) and use its https address",
                "对外地址未加密（http）",
            )
        )
    probe = url.rstrip("/") + "/healthz"
    try:
        with httpx.Client(timeout=cfg.timeout, follow_redirects=True) as http:
            r = http.get(probe)
    except httpx.HTTPError as exc:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        if "certificate" in reason.lower():
            hint = (
                "its certificate is not trusted here, and phones will not trust it either: "
                "use a certificate for this name from a CA they know, or install the CA "
                "(Caddy's internal one: docs/deploy.md) where the links are opened"
            )
        else:
            hint = (
                "check that the name resolves and the proxy forwards it to the API; a phone on "
                "the clinic's network must reach it too"
            )
        return [
            *out,
            warn(name, f"{probe} is not reachable from here: {reason}", hint, "对外地址无法访问"),
        ]
    try:
        healthy = r.status_code == 200 and r.json() == {"status": "ok"}
    except ValueError:
        healthy = False
    if not healthy:
        return [
            *out,
            warn(
                name,
                f"{probe} answered {r.status_code}, not the county API's health answer: the "
                "address leads somewhere else",
                "point the proxy (or TELEREAD_API_PUBLIC_URL) at the county API",
                "对外地址指向的不是本系统",
            ),
        ]
    if not out:
        out.append(ok(name, f"{url} reaches the county API", "对外地址可以访问"))
    return out


# -- object store --------------------------------------------------------------------------


def check_object_store(cfg: DoctorConfig, state: CheckState | None = None) -> list[CheckResult]:
    """Bucket or directory exists; a probe object can be written, read back and deleted. A
    township gateway's S3 key may write under its own site's prefix only (``teleread init``):
    with the sites the county named for it (``state``) the probe goes there, and a key that
    may not look at the bucket itself is not a fault."""
    from minio.error import S3Error

    import storage
    from storage.base import ObjectStore
    from storage.errors import StorageError

    township = cfg.role == "gateway" and state is not None and bool(state.sites)
    prefix = f"{state.sites[0]}/" if township and state is not None else ""

    settings = cfg.storage
    t = cfg.timeout
    out: list[CheckResult] = []
    if settings.backend == "s3":
        settings = settings.model_copy(
            update={"connect_timeout_seconds": t, "read_timeout_seconds": t, "retries": 0}
        )
        where = f"bucket {settings.bucket!r} at {settings.endpoint}"
        host = settings.endpoint.rsplit(":", 1)[0]
        if not settings.secure and not is_loopback(host):
            out.append(
                warn(
                    "object_store",
                    f"S3 over plain http to {settings.endpoint}: images cross the network "
                    "unencrypted",
                    "serve S3 over TLS (the compose stack's proxy, port 9000) and set "
                    "TELEREAD_STORAGE_SECURE=true "
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
        except S3Error as exc:
            if not (township and exc.code == "AccessDenied"):
                return [*out, _s3_failure(where, exc)]
            exists = True  # a key limited to its site's prefix; the probe below tells
        except Exception as exc:
            return [*out, _s3_failure(where, exc)]
        if not exists:
            return [
                *out,
                fail(
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
                fail(
                    "object_store",
                    f"{where} is not a directory",
                    "point TELEREAD_STORAGE_ROOT at a directory",
                    "对象存储路径不是目录",
                )
            ]
        if not root.is_dir():
            parent = existing_ancestor(root)
            if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
                return [
                    warn(
                        "object_store",
                        f"{where} does not exist yet; teleread creates it at start. If this "
                        "county already holds images, their disk is probably not mounted",
                        f"check the disk is mounted, or create it (`mkdir -p {root}`), or fix "
                        "TELEREAD_STORAGE_ROOT",
                        "对象存储目录尚不存在（启动时创建）；如已有影像，请检查磁盘是否挂载",
                    )
                ]
            return [
                fail(
                    "object_store",
                    f"{where} does not exist and cannot be created under {parent}",
                    f"create it (`mkdir -p {root}`) for the teleread user, or fix "
                    "TELEREAD_STORAGE_ROOT; check the disk is mounted",
                    "对象存储目录不存在",
                )
            ]
        store = storage.FilesystemStore(root)
    key = f"{prefix}{PROBE_PREFIX}/probe-{uuid.uuid4().hex}.txt"
    data = f"teleread doctor probe {datetime.now(UTC).isoformat()}".encode()
    step = "write"
    try:
        store.put(key, data, content_type="text/plain", sha256=hashlib.sha256(data).hexdigest())
        step = "read back"
        if store.get(key) != data:
            return [
                *out,
                fail(
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
                fail(
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
            fail(
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
    under = f" (under {prefix})" if prefix else ""
    out.append(
        ok("object_store", f"{where}{under}: write, read and delete work", "对象存储读写正常")
    )
    return out


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
    return fail("object_store", f"{where}: cannot {step}: {text}", hint, "无法访问对象存储")
