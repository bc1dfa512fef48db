"""Settings of the object store (env prefix ``TELEREAD_STORAGE_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageSettings(BaseSettings):
    """Where objects live: a local directory or an S3 bucket (MinIO, SeaweedFS, AWS...)."""

    model_config = SettingsConfigDict(env_prefix="TELEREAD_STORAGE_", extra="ignore")

    backend: Literal["filesystem", "s3"] = "filesystem"
    root: Path = Path("teleread-data/objects")
    endpoint: str = ""
    """``host:port`` of the S3 server, no scheme (``secure`` chooses http or https)."""
    access_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")
    bucket: str = "teleread"
    secure: bool = True
    region: str | None = None
    ca_bundle: Path | None = None
    """PEM file of the CA that signed the S3 server's certificate (a county's own CA)."""
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    retries: int = 2

    @field_validator("endpoint")
    @classmethod
    def _no_scheme(cls, value: str) -> str:
        value = value.strip()
        if "://" in value or "/" in value:
            raise ValueError(
                "endpoint is host:port without scheme or path; "
                "set TELEREAD_STORAGE_SECURE=false for plain http"
            )
        return value

    @model_validator(mode="after")
    def _s3_needs_credentials(self) -> StorageSettings:
        if self.backend == "s3":
            missing = [
                name
                for name, present in (
                    ("endpoint", bool(self.endpoint)),
                    ("access_key", bool(self.access_key.get_secret_value())),
                    ("secret_key", bool(self.secret_key.get_secret_value())),
                )
                if not present
            ]
            if missing:
                raise ValueError(f"backend 's3' needs {', '.join(missing)}")
        return self


@lru_cache(maxsize=1)
def get_settings() -> StorageSettings:
    return StorageSettings()
