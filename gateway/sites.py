"""Which site a calling AE title belongs to, and where that site's devices may call from:
the allow-list checked at association time.

A site's devices are known by their calling AE title. A site may also name the networks
its modalities call from and the DICOM TLS client certificates they hold (``teleread sites
bind``); then an association for one of its AE titles is accepted only from one of those
networks or with one of those certificates (a certificate registered to the site is enough
from any address). A site with neither is accepted from anywhere, as before such bindings
existed. A registered certificate presented with another site's AE title is refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gateway.county import CountyClient, SiteConfig
from gateway.errors import CountyError, GatewayError

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# what crosses processes and the cache file: {"ae_titles": {AE: site}, "devices": {site:
# {"networks": [CIDR, ...], "certificates": [sha256, ...]}}}
SiteTable = dict[str, Any]
Devices = Mapping[str, Mapping[str, Sequence[str]]]


def _norm(ae: str) -> str:
    return ae.strip().upper()


def certificate_sha256(path: Path) -> str:
    """The SHA-256 (hex) of the DER encoding of the first certificate in a PEM file: how a
    modality's TLS client certificate is registered to its site. Raises ``GatewayError``."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
        begin = text.index("-----BEGIN CERTIFICATE-----")
        end = text.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
        der = ssl.PEM_cert_to_DER_cert(text[begin:end])
    except (OSError, ValueError) as exc:
        raise GatewayError(f"{path}: not a PEM certificate ({exc})") from exc
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """Where a site's devices may call from. ``bound`` false (no networks, no certificates
    registered): anywhere. An entry the gateway cannot read still binds the site (never
    silently wider)."""

    networks: tuple[Network, ...] = ()
    certificates: frozenset[str] = frozenset()
    bound: bool = False


def _bindings(devices: Devices | None) -> dict[str, DeviceBinding]:
    out: dict[str, DeviceBinding] = {}
    for site, raw in (devices or {}).items():
        networks: list[Network] = []
        for value in raw.get("networks") or ():
            try:
                networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
            except ValueError:
                # never silently wider: an unreadable entry still binds the site
                logger.warning(
                    "site network unreadable, ignored",
                    extra={"action": "site_network_invalid", "site": site, "network": value},
                )
        certificates = frozenset(str(c).lower() for c in raw.get("certificates") or ())
        bound = bool(raw.get("networks") or raw.get("certificates"))
        out[site] = DeviceBinding(tuple(networks), certificates, bound)
    return out


def _address_in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
    return any(ip in network for network in networks)


def split_table(table: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """(AE -> site, site -> devices) of a ``SiteTable``; a plain AE -> site mapping (an older
    cache file) has no devices."""
    if isinstance(table.get("ae_titles"), Mapping):
        return dict(table["ae_titles"]), dict(table.get("devices") or {})
    return {str(k): str(v) for k, v in table.items() if isinstance(v, str)}, {}


class Sites(Protocol):
    def site_for(self, ae_title: str) -> str | None: ...

    def device_refusal(
        self, site: str, *, address: str, certificate_sha256: str | None = None
    ) -> str | None: ...


class SiteDirectory:
    """A fixed AE title -> site code mapping, with the sites' device bindings (tests,
    isolated use; the county's, ``CountySiteDirectory``)."""

    def __init__(
        self, mapping: Mapping[str, str] | None = None, *, devices: Devices | None = None
    ) -> None:
        self._map: dict[str, str] = {_norm(k): v for k, v in (mapping or {}).items()}
        self._devices_raw: dict[str, Any] = {k: dict(v) for k, v in (devices or {}).items()}
        self._devices = _bindings(devices)
        self._cert_owner = _owners(self._devices)
        self._lock = threading.Lock()

    def site_for(self, ae_title: str) -> str | None:
        with self._lock:
            return self._map.get(_norm(ae_title))

    def device_refusal(
        self, site: str, *, address: str, certificate_sha256: str | None = None
    ) -> str | None:
        """Why a device of ``site`` calling from ``address`` (with a TLS client certificate
        of this SHA-256) is refused, or None when it may associate."""
        with self._lock:
            owner = self._cert_owner.get(certificate_sha256) if certificate_sha256 else None
            binding = self._devices.get(site)
        if owner is not None:
            return None if owner == site else f"its certificate is registered to site {owner}"
        if binding is None or not binding.bound:
            return None
        if _address_in(address, binding.networks):
            return None
        if binding.certificates:
            return "neither its address nor a certificate is registered to the site"
        return "its address is not in the site's networks"

    def replace(self, mapping: Mapping[str, str], devices: Devices | None = None) -> None:
        bindings = _bindings(devices)
        with self._lock:
            self._map = {_norm(k): v for k, v in mapping.items()}
            self._devices_raw = {k: dict(v) for k, v in (devices or {}).items()}
            self._devices = bindings
            self._cert_owner = _owners(bindings)

    def snapshot(self) -> dict[str, str]:
        """AE title -> site."""
        with self._lock:
            return dict(self._map)

    def table(self) -> SiteTable:
        """The whole allow-list as JSON data (``split_table`` reads it back)."""
        with self._lock:
            return {"ae_titles": dict(self._map), "devices": dict(self._devices_raw)}


def _owners(bindings: Mapping[str, DeviceBinding]) -> dict[str, str]:
    return {cert: site for site, b in bindings.items() for cert in b.certificates}


class PushedSites(SiteDirectory):
    """An acceptor process's allow-list, pushed by the gateway process whenever it changes
    (``replace``). An unknown calling AE asks the gateway process to look again (``ask``) and
    waits up to ``wait`` seconds for the next push: a site added a moment ago is accepted at
    once, as in the gateway process itself."""

    def __init__(
        self,
        mapping: Mapping[str, str] | None = None,
        *,
        devices: Devices | None = None,
        ask: Callable[[], None],
        wait: float = 2.0,
    ) -> None:
        super().__init__(mapping, devices=devices)
        self._ask = ask
        self._wait = wait
        self._pushed = threading.Condition()
        self._generation = 0

    def replace(self, mapping: Mapping[str, str], devices: Devices | None = None) -> None:
        super().replace(mapping, devices)
        with self._pushed:
            self._generation += 1
            self._pushed.notify_all()

    def _look_again(self) -> None:
        with self._pushed:
            seen = self._generation
            self._ask()
            self._pushed.wait_for(lambda: self._generation != seen, timeout=self._wait)

    def site_for(self, ae_title: str) -> str | None:
        site = super().site_for(ae_title)
        if site is not None:
            return site
        self._look_again()
        return super().site_for(ae_title)

    def device_refusal(
        self, site: str, *, address: str, certificate_sha256: str | None = None
    ) -> str | None:
        """As the gateway process decides it: a refusal is checked again against a fresh
        list (a network bound a moment ago is accepted at once)."""
        check = super().device_refusal
        if check(site, address=address, certificate_sha256=certificate_sha256) is None:
            return None
        self._look_again()
        return check(site, address=address, certificate_sha256=certificate_sha256)


SitesListener = Callable[[SiteTable], None]


class CountySiteDirectory(SiteDirectory):
    """The allow-list from ``GET /api/v1/gateway/config``, read at start, every
    ``refresh_seconds``, when asked (``request_refresh``: a local process changed the sites,
    ``gateway.control``; an acceptor process met an unknown calling AE) and, here, when an
    unknown AE calls; never more often than every ``MIN_REFRESH_SECONDS``. Listeners
    (``add_listener``) get the list after every change and every asked refresh: the gateway
    process pushes it to its acceptor processes. The last answer is cached in ``cache_file``
    so the gateway keeps accepting while the county is unreachable (also across restarts)."""

    MIN_REFRESH_SECONDS = 0.5

    def __init__(
        self,
        county: CountyClient,
        *,
        refresh_seconds: float = 5.0,
        cache_file: Path | None = None,
    ) -> None:
        super().__init__()
        self._county = county
        self._refresh_seconds = refresh_seconds
        self._cache_file = cache_file
        self._last_refresh = -self.MIN_REFRESH_SECONDS
        self._refresh_lock = threading.Lock()
        self._asked = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[SitesListener] = []
        self._load_cache()

    def add_listener(self, listener: SitesListener) -> None:
        self._listeners.append(listener)

    def _notify(self) -> None:
        table = self.table()
        for listener in self._listeners:
            try:
                listener(table)
            except Exception:  # a listener must not stop the refreshes
                logger.exception("site listener failed", extra={"action": "site_listener_failed"})

    def _load_cache(self) -> None:
        if self._cache_file is None or not self._cache_file.exists():
            return
        try:
            self.replace(*split_table(json.loads(self._cache_file.read_text())))
        except (OSError, ValueError, AttributeError) as exc:
            logger.warning(
                "site cache unreadable",
                extra={"action": "site_cache_unreadable", "error": str(exc)},
            )

    def _save_cache(self, table: SiteTable) -> None:
        if self._cache_file is None:
            return
        tmp = self._cache_file.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(table, sort_keys=True))
            os.replace(tmp, self._cache_file)
        except OSError as exc:
            logger.warning(
                "site cache not written", extra={"action": "site_cache_failed", "error": str(exc)}
            )

    def refresh(self, *, notify: bool = False, since: float | None = None) -> bool:
        """Fetch the configuration now (waiting out ``MIN_REFRESH_SECONDS`` since the last
        fetch first; nothing to do if a fetch started after ``since``); False when the county
        could not be asked. Listeners hear of a change, or of every refresh with ``notify``."""
        with self._refresh_lock:
            if since is not None and self._last_refresh >= since:
                return True  # another caller's fetch began after this one asked
            wait = self._last_refresh + self.MIN_REFRESH_SECONDS - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_refresh = time.monotonic()
            try:
                sites: list[SiteConfig] = self._county.config()
            except CountyError as exc:
                logger.warning(
                    "gateway config not refreshed",
                    extra={"action": "site_config_failed", "error": str(exc)[:300]},
                )
                if notify:
                    self._notify()
                return False
            mapping = {_norm(ae): s.code for s in sites for ae in s.ae_titles}
            devices = {
                s.code: {"networks": list(s.networks), "certificates": list(s.certificates)}
                for s in sites
                if s.networks or s.certificates
            }
            table: SiteTable = {"ae_titles": mapping, "devices": devices}
            changed = table != self.table()
            if changed:
                logger.info(
                    "gateway config changed",
                    extra={
                        "action": "site_config_changed",
                        "ae_titles": sorted(mapping),
                        "bound_sites": sorted(devices),
                    },
                )
                self.replace(mapping, devices)
                self._save_cache(table)
            if changed or notify:
                self._notify()
            return True

    def request_refresh(self) -> None:
        """Refresh soon, in the background thread, and tell the listeners (non-blocking)."""
        self._asked.set()

    def site_for(self, ae_title: str) -> str | None:
        site = super().site_for(ae_title)
        if site is None:
            self.refresh(since=time.monotonic())
            site = super().site_for(ae_title)
        return site

    def device_refusal(
        self, site: str, *, address: str, certificate_sha256: str | None = None
    ) -> str | None:
        """A refusal is checked again after asking the county (a network bound a moment
        ago is accepted at once)."""
        check = super().device_refusal
        if check(site, address=address, certificate_sha256=certificate_sha256) is None:
            return None
        self.refresh(since=time.monotonic())
        return check(site, address=address, certificate_sha256=certificate_sha256)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-sites", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asked = False
        while not self._stop.is_set():
            self.refresh(notify=asked)
            asked = self._asked.wait(self._refresh_seconds)
            self._asked.clear()

    def stop(self) -> None:
        self._stop.set()
        self._asked.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
