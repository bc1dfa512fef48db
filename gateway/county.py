"""HTTP client for the county API (docs/contracts.md, "Gateway -> county API").

The county may run several API replicas: ``TELEREAD_GATEWAY_API_URL`` takes one URL (a load
balancer) or a comma-separated list. Each request goes to the URL that answered last; a URL
that fails (no connection, a broken or timed-out answer, 5xx) is passed over at once for the
next one and kept at the back of the order for ``DOWN_SECONDS``; ``CountyUnavailable`` (and
the forwarder's back-off) comes only when every URL has failed this request. With a single
URL the request is tried twice, so a load balancer that answered 502 for a replica that just
died gets a second chance to pick a live one. Every request is safe to repeat: log-in and
configuration are reads, announcements are idempotent by SOP Instance UID.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.errors import CountyRejected, CountyUnavailable, GatewayError

logger = logging.getLogger(__name__)

# with several URLs: a connection to a live replica takes a round trip; one that has not
# connected in this long is given up for the next URL (the request itself still has
# TELEREAD_GATEWAY_API_TIMEOUT_SECONDS). One URL (a load balancer, maybe across a slow
# township uplink) keeps the whole timeout for connecting: there is nowhere else to go
CONNECT_TIMEOUT_SECONDS = 1.5
DOWN_SECONDS = 30.0  # a URL that failed goes to the back of the order for this long


def county_urls(value: str) -> list[str]:
    """``TELEREAD_GATEWAY_API_URL``: one URL or several separated by commas, without the
    trailing slash."""
    urls = [part.strip().rstrip("/") for part in value.split(",")]
    urls = [u for u in urls if u]
    if not urls:
        raise GatewayError("TELEREAD_GATEWAY_API_URL names no county API URL")
    return urls


@dataclass(frozen=True, slots=True)
class SiteConfig:
    code: str
    name: str
    ae_titles: tuple[str, ...]
    networks: tuple[str, ...] = ()  # CIDR blocks its modalities call from
    certificates: tuple[str, ...] = ()  # SHA-256 (hex) of their TLS client certificates


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

    Raises ``CountyUnavailable`` when no county URL answers (network errors, timeouts, 5xx
    from all of them: retry later), ``CountyRejected`` for other refusals (the request
    itself is wrong).
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._username = username
        self._password = password
        self.urls = county_urls(base_url)
        verify = tls_verify(base_url, ca_bundle, insecure_skip_verify=insecure_skip_verify)
        connect = min(timeout, CONNECT_TIMEOUT_SECONDS) if len(self.urls) > 1 else timeout
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=connect), verify=verify)
        self._token: str | None = None
        self._lock = threading.Lock()
        self._clock = clock
        self._current = 0  # index of the URL that answered last
        self._down_until = [0.0] * len(self.urls)

    def close(self) -> None:
        self._http.close()

    def _order(self) -> list[int]:
        """URL indexes to try: the one that answered last, then the others in their order;
        those that failed within ``DOWN_SECONDS`` after every other. With one URL, it twice."""
        now = self._clock()
        n = len(self.urls)
        order = [(self._current + k) % n for k in range(n)]
        order.sort(key=lambda i: self._down_until[i] > now)  # stable: up ones first
        return order if n > 1 else order * 2

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        failures: list[str] = []
        for index in self._order():
            base = self.urls[index]
            try:
                response = self._http.request(method, base + url, **kw)
            except httpx.HTTPError as exc:
                hint = ""
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    hint = (
                        " (the county's TLS certificate is not trusted: set "
                        "TELEREAD_GATEWAY_API_CA_BUNDLE to the CA that signed it)"
                    )
                failures.append(f"{base}: {type(exc).__name__}: {exc}{hint}")
                self._failed(index, failures[-1])
                continue
            if response.status_code >= 500:
                failures.append(f"{base}: answered {response.status_code}")
                self._failed(index, failures[-1])
                continue
            if index != self._current:
                logger.warning(
                    "county API: now using %s",
                    base,
                    extra={"action": "county_failover", "api_url": base},
                )
                self._current = index
            self._down_until[index] = 0.0
            return response
        raise CountyUnavailable(f"{method} {url}: " + "; ".join(failures))

    def _failed(self, index: int, reason: str) -> None:
        self._down_until[index] = self._clock() + DOWN_SECONDS
        if len(self.urls) > 1:
            logger.warning(
                "county API URL failed, trying the next",
                extra={"action": "county_url_failed", "api_url": self.urls[index], "error": reason},
            )

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
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
                networks=tuple(str(n) for n in s.get("networks") or []),
                certificates=tuple(str(c).lower() for c in s.get("certificates") or []),
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
        """``POST /api/v1/gateway/status``: the spool's summary (gateway.heartbeat), and
        ``sent_at``, this clock now: a small request, so the county measures this clock
        against its own with it (its study timelines put this gateway's times on its clock)."""
        body = {**status, "sent_at": datetime.now(UTC).isoformat()}
        self._authorised("POST", "/api/v1/gateway/status", json=body)

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
