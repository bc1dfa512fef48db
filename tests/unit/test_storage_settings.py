"""StorageSettings and storage.from_settings (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from storage import FilesystemStore, MinioStore, from_settings
from storage.settings import StorageSettings


def test_defaults_are_a_local_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BACKEND", "ROOT", "ENDPOINT"):
        monkeypatch.delenv(f"TELEREAD_STORAGE_{name}", raising=False)
    settings = StorageSettings()
    assert settings.backend == "filesystem"
    assert settings.root == Path("teleread-data/objects")


def test_env_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELEREAD_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("TELEREAD_STORAGE_ENDPOINT", "s3.county.example:9000")
    monkeypatch.setenv("TELEREAD_STORAGE_ACCESS_KEY", "ak")
    monkeypatch.setenv("TELEREAD_STORAGE_SECRET_KEY", "sk")
    monkeypatch.setenv("TELEREAD_STORAGE_SECURE", "false")
    monkeypatch.setenv("TELEREAD_STORAGE_CA_BUNDLE", str(tmp_path / "ca.pem"))
    settings = StorageSettings()
    assert settings.backend == "s3" and settings.endpoint == "s3.county.example:9000"
    assert settings.secret_key.get_secret_value() == "sk"
    assert "sk" not in repr(settings)
    assert settings.secure is False and settings.ca_bundle == tmp_path / "ca.pem"


def test_s3_refuses_missing_credentials() -> None:
    with pytest.raises(ValidationError, match="access_key, secret_key"):
        StorageSettings(backend="s3", endpoint="127.0.0.1:9000")


def test_endpoint_without_scheme() -> None:
    with pytest.raises(ValidationError, match="without scheme"):
        StorageSettings(endpoint="https://s3.example:9000")


def test_from_settings_filesystem(tmp_path: Path) -> None:
    store = from_settings(StorageSettings(root=tmp_path / "objects"))
    assert isinstance(store, FilesystemStore)
    assert (tmp_path / "objects").is_dir()


def test_from_settings_s3_makes_no_network_call() -> None:
    # Port 9 (discard) on loopback is closed: constructing must still succeed, so a
    # township gateway starts while the county is unreachable.
    store = from_settings(
        StorageSettings(
            backend="s3",
            endpoint="127.0.0.1:9",
            access_key=SecretStr("ak"),
            secret_key=SecretStr("sk"),
            secure=False,
        )
    )
    assert isinstance(store, MinioStore)
