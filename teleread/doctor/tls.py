"""TLS material: every certificate, key and CA file the settings point at, checked for
existence, parsing, key/certificate match and validity dates.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from teleread.doctor.config import DoctorConfig
from teleread.doctor.results import (
    CERT_WARN_DAYS,
    CheckResult,
    TLSFile,
    fail,
    ok,
    warn,
)


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
        return [ok("tls", "no certificate files configured", "未配置证书文件")]
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
                fail(
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
                fail(
                    "tls",
                    f"{label}: {path} is not a PEM/DER certificate: {exc}"[:300],
                    "export the certificate as PEM (`openssl x509 -in X -out Y.pem`)",
                    "证书无法解析",
                )
            ]
        if not certs[role]:
            return [fail("tls", f"{label}: {path} holds no certificate", "", "证书为空")]
    if item.key is not None:
        if not item.key.is_file():
            return [fail("tls", f"{label}: key file {item.key} does not exist", "fix the path", "")]
        try:
            key = serialization.load_pem_private_key(item.key.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as exc:
            return [
                fail(
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
                    fail(
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
                    fail(
                        "tls",
                        f"{label}: {role} {subject} in {path} expired on {end:%Y-%m-%d}: "
                        "connections using it fail",
                        "issue a new certificate and restart the service",
                        f"证书已于 {end:%Y-%m-%d} 过期",
                    )
                )
            elif start > now:
                problems.append(
                    fail(
                        "tls",
                        f"{label}: {role} {subject} in {path} is valid only from "
                        f"{start:%Y-%m-%d %H:%M} UTC (is this machine's clock right?)",
                        "check the clock (NTP), or wait until the certificate is valid",
                        "证书尚未生效",
                    )
                )
            elif end - now < timedelta(days=CERT_WARN_DAYS):
                problems.append(
                    warn(
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
    out.append(ok("tls", f"{label}: {files} readable{until}", "证书有效"))
    return out
