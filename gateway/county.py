"""HTTP client for the county API (docs/contracts.md, "Gateway -> county API")."""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.errors import CountyRejected, CountyUnavailable, GatewayError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SiteConfig:
    code: str
    name: str
    ae_titles: tuple[str, ...]


def tls_verify(
    base_url: str, ca_bundle: Path | None, *, insecure_skip_verify: bool = False
) -> ssl.SSLContext | bool:
    """httpx's ``verify`` for the county API: the system CAs, or ``ca_bundle`` (PEM) alone.

    Certificate checks are only switched off by ``insecure_skip_verify`` (the setting
    ``TELEREAD_GATEWAY_API_TLS_INSECURE_SKIP_VERIFY``), and that is logged as an error at
    every start: a township gateway that does not check the county's certificate hands patient
    data to whoever answers on the network."""
    if insecure_skip_verify:
        logger.error(
            "county API certificate verification is OFF (api_tls_insecure_skip_verify); "
            "anyone on the network path can read and alter what this gateway sends",
            extra={"action": "county_tls_insecure", "api_url": base_url},
        )
        return False
    if ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise GatewayError(f"cannot load the county CA bundle {ca_bundle}: {exc}") from exc


class CountyClient:
    """Token, site configuration and "these instances arrived". Thread-safe.

    Raises ``CountyUnavailable`` for network errors, timeouts and 5xx answers (retry later),
    ``CountyRejected`` for other refusals (the request itself is wrong).
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        ca_bundle: Path | None = None,
        timeout: float = 30.0,
        insecure_skip_verify: bool = False,
    ) -> None:
        self._username = username
        self._password = password
        verify = tls_verify(base_url, ca_bundle, insecure_skip_verify=insecure_skip_verify)
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, verify=verify)
        self._token: str | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            hint = ""
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                hint = (
                    " (the county's TLS certificate is not trusted: set "
                    "TELEREAD_GATEWAY_API_CA_BUNDLE to the CA that signed it)"
                )
            raise CountyUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}{hint}") from exc

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 500:
            raise CountyUnavailable(f"county API answered {response.status_code}")
        if response.status_code >= 400:
            raise CountyRejected(
                f"county API answered {response.status_code}: {response.text[:300]}",
                status_code=response.status_code,
            )
        return response

    def _login(self) -> str:
        response = self._check(
            self._send(
                "POST",
                "/api/v1/auth/token",
                data={"username": self._username, "password": self._password},
            )
        )
        token = str(response.json()["access_token"])
        self._token = token
        return token

    def _authorised(self, method: str, url: str, **kw: Any) -> httpx.Response:
        with self._lock:
            token = self._token or self._login()
        response = self._send(method, url, headers={"Authorization": f"Bearer {token}"}, **kw)
        if response.status_code == 401:  # expired token: log in again, once
            with self._lock:
                token = self._login()
            response = self._send(method, url, headers={"Authorization": f"Bearer {token}"}, **kw)
        return self._check(response)

    def config(self) -> list[SiteConfig]:
        """The sites (and their calling AE titles) this gateway may send for."""
        data = self._authorised("GET", "/api/v1/gateway/config").json()
        return [
            SiteConfig(
                code=str(s["code"]),
                name=str(s.get("name", "")),
                ae_titles=tuple(str(a) for a in s.get("ae_titles", [])),
            )
            for s in data.get("sites", [])
        ]

    def announce(
        self, *, site: str, calling_ae: str, called_ae: str, instances: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """``POST /api/v1/ingest/instances``; idempotent by SOP Instance UID."""
        body = {
            "site": site,
            "calling_ae": calling_ae,
            "called_ae": called_ae,
            "instances": instances,
        }
        result: dict[str, Any] = self._authorised(
            "POST", "/api/v1/ingest/instances", json=body
        ).json()
        return result

    def report_status(self, status: dict[str, Any]) -> None:
        """``POST /api/v1/gateway/status``: the spool's summary (gateway.heartbeat)."""
        self._authorised("POST", "/api/v1/gateway/status", json=status)

    def study_complete(
        self, *, site: str, study_instance_uid: str, expected_instances: int
    ) -> dict[str, Any]:
        """``POST /api/v1/ingest/study-complete``; idempotent. The answer's ``ready`` is false
        while the county holds fewer than ``expected_instances`` of the study."""
        body = {
            "site": site,
            "study_instance_uid": study_instance_uid,
            "expected_instances": expected_instances,
        }
        result: dict[str, Any] = self._authorised(
            "POST", "/api/v1/ingest/study-complete", json=body
        ).json()
        return result
