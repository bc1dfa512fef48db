"""Which site a calling AE title belongs to: the allow-list checked at association time."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from gateway.county import CountyClient, SiteConfig
from gateway.errors import CountyError

logger = logging.getLogger(__name__)


def _norm(ae: str) -> str:
    return ae.strip().upper()


class Sites(Protocol):
    def site_for(self, ae_title: str) -> str | None: ...


class SiteDirectory:
    """A fixed AE title -> site code mapping (tests, isolated use)."""

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        self._map: dict[str, str] = {_norm(k): v for k, v in (mapping or {}).items()}
        self._lock = threading.Lock()

    def site_for(self, ae_title: str) -> str | None:
        with self._lock:
            return self._map.get(_norm(ae_title))

    def replace(self, mapping: Mapping[str, str]) -> None:
        with self._lock:
            self._map = {_norm(k): v for k, v in mapping.items()}

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._map)


class PushedSites(SiteDirectory):
    """An acceptor process's allow-list, pushed by the gateway process whenever it changes
    (``replace``). An unknown calling AE asks the gateway process to look again (``ask``) and
    waits up to ``wait`` seconds for the next push: a site added a moment ago is accepted at
    once, as in the gateway process itself."""

    def __init__(
        self,
        mapping: Mapping[str, str] | None = None,
        *,
        ask: Callable[[], None],
        wait: float = 2.0,
    ) -> None:
        super().__init__(mapping)
        self._ask = ask
        self._wait = wait
        self._pushed = threading.Condition()
        self._generation = 0

    def replace(self, mapping: Mapping[str, str]) -> None:
        super().replace(mapping)
        with self._pushed:
            self._generation += 1
            self._pushed.notify_all()

    def site_for(self, ae_title: str) -> str | None:
        site = super().site_for(ae_title)
        if site is not None:
            return site
        with self._pushed:
            seen = self._generation
            self._ask()
            self._pushed.wait_for(lambda: self._generation != seen, timeout=self._wait)
        return super().site_for(ae_title)


SitesListener = Callable[[dict[str, str]], None]


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
        mapping = self.snapshot()
        for listener in self._listeners:
            try:
                listener(mapping)
            except Exception:  # a listener must not stop the refreshes
                logger.exception("site listener failed", extra={"action": "site_listener_failed"})

    def _load_cache(self) -> None:
        if self._cache_file is None or not self._cache_file.exists():
            return
        try:
            self.replace(json.loads(self._cache_file.read_text()))
        except (OSError, ValueError) as exc:
            logger.warning(
                "site cache unreadable",
                extra={"action": "site_cache_unreadable", "error": str(exc)},
            )

    def _save_cache(self, mapping: dict[str, str]) -> None:
        if self._cache_file is None:
            return
        tmp = self._cache_file.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(mapping, sort_keys=True))
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
            changed = mapping != self.snapshot()
            if changed:
                logger.info(
                    "gateway config changed",
                    extra={"action": "site_config_changed", "ae_titles": sorted(mapping)},
                )
                self.replace(mapping)
                self._save_cache(mapping)
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
