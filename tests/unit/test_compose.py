"""docker-compose.yml: valid structure, and everything it names exists in the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from teleread.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _settings_env_names() -> set[str]:
    from gateway.config import GatewaySettings
    from storage.settings import StorageSettings
    from viewer_api.settings import ApiSettings
    from worklist.settings import WorklistSettings

    names = set()
    for cls in (GatewaySettings, StorageSettings, ApiSettings, WorklistSettings):
        prefix = str(cls.model_config.get("env_prefix", ""))
        names |= {(prefix + field).upper() for field in cls.model_fields}
    return names


def test_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "migrate", "api", "gateway"} <= services.keys()
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    for name in ("postgres", "minio", "api"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for svc in services.values():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            assert source in compose["volumes"], f"undeclared volume {source}"


def test_commands_exist_in_the_cli(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name in ("migrate", "api", "gateway"):
        command = compose["services"][name]["command"]
        parser.parse_args(command)  # exits (SystemExit) on an unknown command or option


def test_every_teleread_variable_is_a_setting(compose: dict[str, Any]) -> None:
    known = _settings_env_names()
    for name, svc in compose["services"].items():
        for var in svc.get("environment", {}):
            if var.startswith("TELEREAD_") and not var.startswith("TELEREAD_DATA_DIR"):
                assert var in known, f"{name}: {var} is not read by any settings class"


def test_no_default_secrets(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "TELEREAD_API_SECRET_KEY"):
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses, secret
        assert all(u.startswith(":?") for u in uses), f"{secret} must be required, not defaulted"
    ports = [p for svc in compose["services"].values() for p in svc.get("ports", [])]
    assert "8000:8000" in ports and "11112:11112" in ports
