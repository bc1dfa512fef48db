"""Running the checks: each in a daemon thread with a time budget, in a fixed order for the
role; the JSON report and the `teleread doctor` entry point.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

from teleread.doctor.config import DoctorConfig
from teleread.doctor.county import (
    check_database,
    check_object_store,
    check_public_url,
    check_secret_key,
)
from teleread.doctor.gateway import check_county_api, check_dicom_port, check_spool
from teleread.doctor.results import (
    CheckResult,
    CheckState,
    Role,
    exit_code,
    format_text,
)
from teleread.doctor.tls import check_tls


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
    state = CheckState()
    budget = cfg.timeout * 3 + 1
    county = cfg.role in ("county", "all")
    gw = cfg.role in ("gateway", "all")
    plan: list[tuple[str, Callable[[], list[CheckResult]]]] = []
    if county:
        plan.append(("database", lambda: check_database(cfg)))
        plan.append(("secret_key", lambda: check_secret_key(cfg)))
        plan.append(("public_url", lambda: check_public_url(cfg)))
    township = cfg.role == "gateway" and cfg.gateway is not None
    if cfg.storage is not None and not township:
        plan.append(("object_store", lambda: check_object_store(cfg, state)))
    if gw and cfg.gateway is not None:
        plan.append(("county_api", lambda: check_county_api(cfg, state)))
        if cfg.storage is not None and township:  # its S3 key may write under its sites only
            plan.append(("object_store", lambda: check_object_store(cfg, state)))
        plan.append(("spool", lambda: check_spool(cfg)))
        plan.append(("dicom_port", lambda: check_dicom_port(cfg, state)))
    plan.append(("tls", lambda: check_tls(cfg)))
    for name, fn in plan:
        results.extend(_bounded(name, fn, budget))
    return results


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


def main(
    *,
    role: Role,
    data_dir: str | None,
    database_url: str | None,
    as_json: bool,
    timeout: float,
    write: Callable[[str], object],
    api_host: str | None = None,
) -> int:
    cfg = DoctorConfig.from_environment(
        role=role,
        data_dir=data_dir,
        database_url=database_url,
        timeout=timeout,
        api_host=api_host,
    )
    results = run_checks(cfg)
    write(format_json(cfg, results) if as_json else format_text(results))
    return exit_code(results)
