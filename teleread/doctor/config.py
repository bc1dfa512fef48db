"""What the doctor checks: ``DoctorConfig``, read from the environment as `teleread serve`,
`teleread api` and `teleread gateway` would read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from teleread.doctor.results import (
    DEFAULT_TIMEOUT_SECONDS,
    EMBEDDED_GATEWAY_USER,
    Role,
    TLSFile,
)
from teleread.embedded import DataDir


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
    # TELEREAD_API_PUBLIC_URL (None: unset), and the address the API listens on
    public_url: str | None = None
    api_host: str = "127.0.0.1"
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
        api_host: str | None = None,
    ) -> DoctorConfig:
        """Settings as `teleread serve|api|gateway` would read them. For ``all`` (the
        embedded mode) the data directory supplies what `teleread serve` puts there.
        ``api_host``: the address the API listens on (`serve`/`api` ``--host``); default
        ``TELEREAD_HOST`` (all) or ``TELEREAD_API_HOST`` (county), else 127.0.0.1."""
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
            host_variable = "TELEREAD_HOST" if embedded else "TELEREAD_API_HOST"
            cfg.api_host = api_host or os.environ.get(host_variable) or "127.0.0.1"
            try:
                from viewer_api.outputs.settings import OutputSettings

                cfg.public_url = OutputSettings().public_url or None
            except ValidationError as exc:
                cfg.settings_errors.append(("TELEREAD_API_*", _pydantic_message(exc)))
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
