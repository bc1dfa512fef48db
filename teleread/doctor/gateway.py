"""Gateway checks: the county API (login, configuration, clock skew), the spool directory,
the DICOM port (and DICOM TLS port).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import ssl
import time
import uuid
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from teleread.doctor.config import DoctorConfig
from teleread.doctor.results import (
    SKEW_FAIL_SECONDS,
    SKEW_WARN_SECONDS,
    CheckResult,
    CheckState,
    existing_ancestor,
    fail,
    is_loopback,
    ok,
    warn,
)


def _verify(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    if ca_bundle:
        return ssl.create_default_context(cafile=str(ca_bundle))
    return True


def check_county_api(cfg: DoctorConfig, state: CheckState) -> list[CheckResult]:
    """For each county URL (``TELEREAD_GATEWAY_API_URL`` may list the API replicas): GET
    /healthz, log in with the gateway credential, fetch /api/v1/gateway/config; the clock
    skew comes from the ``Date`` header of the health answer."""
    from gateway.county import county_urls

    return [
        result
        for base in county_urls(str(cfg.gateway.api_url))
        for result in _check_url(base, cfg, state)
    ]


def _check_url(base: str, cfg: DoctorConfig, state: CheckState) -> list[CheckResult]:
    import httpx

    gw = cfg.gateway
    out: list[CheckResult] = []
    parts = urlsplit(base)
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        out.append(
            warn(
                "county_api",
                f"{base} is plain http: reports and patient data cross the network unencrypted",
                "serve the API over HTTPS and use an https:// TELEREAD_GATEWAY_API_URL",
                "县级接口未使用 HTTPS",
            )
        )
    if getattr(gw, "api_tls_insecure_skip_verify", False):
        out.append(
            warn(
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
            fail(
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
                    fail(
                        "county_api",
                        f"{base}/healthz answered {health.status_code}",
                        "the API runs but is unhealthy: its database may be down; see its log",
                        "县级接口运行异常",
                    ),
                ]
            if health.status_code != 200:
                return [
                    *out,
                    fail(
                        "county_api",
                        f"{base}/healthz answered {health.status_code}: this is not a teleread "
                        "county API (or a proxy in front of it does not pass /healthz)",
                        "check TELEREAD_GATEWAY_API_URL: scheme, host and port of the county "
                        "API, without a path",
                        "该地址不是县级接口",
                    ),
                ]
            out.append(ok("county_api", f"{base} answers /healthz", "县级接口可以访问"))
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
        out.append(fail("county_api", f"cannot reach {base}: {text}", hint, "无法访问县级接口"))
    return out


def _gateway_login(http: Any, cfg: DoctorConfig, state: CheckState) -> list[CheckResult]:
    gw = cfg.gateway
    password = gw.api_password.get_secret_value()
    if not password:
        return [
            fail(
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
            fail(
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
            fail(
                "gateway_login",
                f"{gw.api_username!r} logged in but /api/v1/gateway/config answered "
                f"{conf.status_code}",
                "the account must have the role 'gateway'",
                "账号不是网关角色",
            )
        ]
    sites = conf.json().get("sites", [])
    state.ae_titles = [ae for s in sites for ae in s.get("ae_titles", [])]
    state.sites = [str(s.get("code")) for s in sites if s.get("code")]
    if not sites:
        return [
            warn(
                "gateway_login",
                f"logged in as {gw.api_username!r}, but no site is configured for it: every "
                "modality will be refused",
                "on the county: `teleread sites add CODE --name NAME --ae CT_AE`",
                "没有配置乡镇站点",
            )
        ]
    codes = ", ".join(f"{s.get('code')} ({len(s.get('ae_titles', []))} AE)" for s in sites)
    return [ok("gateway_login", f"logged in as {gw.api_username!r}; sites: {codes}")]


def _clock_result(date_header: str | None, local: float) -> CheckResult:
    why = (
        "tokens expire and reading deadlines are computed from clock times: a wrong clock "
        "logs users out early or late and misstates deadlines"
    )
    if not date_header:
        return warn(
            "clock",
            "the county API sent no Date header: cannot measure clock skew",
            "check a proxy is not stripping it",
            "无法检测时钟偏差",
        )
    try:
        remote = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return warn("clock", f"unreadable Date header {date_header!r}", "", "无法检测时钟偏差")
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
        return fail("clock", f"{text}: {why}", fix, f"时钟偏差 {abs(seconds):.0f} 秒：请开启 NTP")
    if magnitude > SKEW_WARN_SECONDS:
        return warn("clock", f"{text}: {why}", fix, f"时钟偏差 {abs(seconds):.0f} 秒：请开启 NTP")
    return ok(
        "clock", f"clock agrees with the county API (within {SKEW_WARN_SECONDS:.0f} s)", "时钟一致"
    )


# -- gateway: spool, DICOM port ------------------------------------------------------------


def check_spool(cfg: DoctorConfig) -> list[CheckResult]:
    gw = cfg.gateway
    spool = Path(gw.spool_dir).absolute()
    existing = existing_ancestor(spool)
    if not existing.is_dir():
        return [
            fail(
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
            fail(
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
            fail(
                "spool",
                f"{where}: {free / gib:.1f} GiB free, below the {gw.spool_min_free_bytes / gib:.1f}"
                " GiB minimum: the gateway refuses new images (out of resources)",
                "free disk space, or move the spool to a bigger disk",
                "网关缓存磁盘空间不足",
            )
        ]
    if gw.spool_max_bytes and free < gw.spool_max_bytes:
        return [
            warn(
                "spool",
                f"{where}: {free / gib:.1f} GiB free, less than the spool cap "
                f"{gw.spool_max_bytes / gib:.1f} GiB: during a long outage the disk fills first",
                "free disk space or lower TELEREAD_GATEWAY_SPOOL_MAX_BYTES",
                "磁盘剩余空间小于缓存上限",
            )
        ]
    return [ok("spool", f"{where}: writable, {free / gib:.1f} GiB free", "网关缓存目录可写")]


def _reusable_socket(host: str) -> socket.socket:
    """An unbound TCP socket for ``host`` (IPv6 when it has a colon), SO_REUSEADDR set: the
    probe for "can the gateway listen there?"."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def check_dicom_port(cfg: DoctorConfig, state: CheckState) -> list[CheckResult]:
    """The DICOM port is free for the gateway, or our gateway already answers on it."""
    gw = cfg.gateway
    host = gw.host or "0.0.0.0"
    port = int(gw.port)
    if port == 0:
        return [ok("dicom_port", "port 0: the gateway picks a free port at start")]
    sock = _reusable_socket(host)
    try:
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return [_echo_result(cfg, state, host, port)]
        if exc.errno == errno.EACCES:
            return [
                fail(
                    "dicom_port",
                    f"port {port} needs root privileges to listen on",
                    "use a port above 1023 (DICOM's usual 11112, or 2762 for DICOM TLS) or "
                    "grant CAP_NET_BIND_SERVICE",
                    "端口需要特权",
                )
            ]
        return [
            fail(
                "dicom_port",
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                "check TELEREAD_GATEWAY_HOST is an address of this machine",
                "无法监听 DICOM 端口",
            )
        ]
    finally:
        sock.close()
    out = [ok("dicom_port", f"{host}:{port} is free for the gateway", "DICOM 端口空闲")]
    return out + _check_tls_port(cfg, host)


def _check_tls_port(cfg: DoctorConfig, host: str) -> list[CheckResult]:
    """The DICOM TLS port (``TELEREAD_GATEWAY_TLS_PORT``), when set: free, or speaking TLS."""
    port = getattr(cfg.gateway, "tls_port", None)
    if not port:
        return []
    sock = _reusable_socket(host)
    try:
        sock.bind((host, port))
        return [ok("dicom_tls", f"{host}:{port} is free for the DICOM TLS listener")]
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return [
                fail(
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
            fail(
                "dicom_tls",
                f"port {port} is in use by a program that does not complete a TLS handshake "
                f"({exc})",
                f"stop that program (`ss -ltnp 'sport = :{port}'`) or change "
                "TELEREAD_GATEWAY_TLS_PORT",
                "DICOM TLS 端口被占用",
            )
        ]
    return [ok("dicom_tls", f"port {port} answers TLS ({version}): the gateway is running")]


def _echo_result(cfg: DoctorConfig, state: CheckState, host: str, port: int) -> CheckResult:
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
                return ok(
                    "dicom_port",
                    f"port {port} is in use by a DICOM node answering C-ECHO as {gw.ae_title} "
                    "(the gateway is running)",
                    "网关正在运行，C-ECHO 正常",
                )
            return warn(
                "dicom_port",
                f"port {port}: association accepted but C-ECHO failed",
                "look at the gateway's log",
                "C-ECHO 失败",
            )
        if assoc.is_rejected:
            return ok(
                "dicom_port",
                f"port {port} is in use by a DICOM node that refused calling AE {calling!r} "
                "(the gateway refuses AE titles no site lists): the gateway is running",
                "网关正在运行",
            )
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
    return fail(
        "dicom_port",
        f"port {port} is in use by another program that does not speak DICOM",
        f"stop that program (`ss -ltnp 'sport = :{port}'` shows it) or set "
        "TELEREAD_GATEWAY_PORT to a free port",
        "DICOM 端口被其他程序占用",
    )
