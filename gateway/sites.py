"""Which site a calling AE title belongs to: the allow-list checked at association time."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
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


class CountySiteDirectory(SiteDirectory):
    """The allow-list from ``GET /api/v1/gateway/config``: refreshed in a background thread
    every ``refresh_seconds`` and, at most once a second, when an unknown AE calls. The last
    answer is cached in ``cache_file`` so the gateway keeps accepting while the county is
    unreachable (also across restarts)."""

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
        self._last_refresh = 0.0
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._load_cache()

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
            tmp.write_text(json.dumps(mapping, sort_keys=True))
            os.replace(tmp, self._cache_file)
        except OSError as exc:
            logger.warning(
                "site cache not written", extra={"action": "site_cache_failed", "error": str(exc)}
            )

    def refresh(self) -> bool:
        """Fetch the configuration now; False when the county could not be asked."""
        with self._refresh_lock:
            self._last_refresh = time.monotonic()
            try:
                sites: list[SiteConfig] = self._county.config()
            except CountyError as exc:
                logger.warning(
                    "gateway config not refreshed",
                    extra={"action": "site_config_failed", "error": str(exc)[:300]},
                )
                return False
            mapping = {_norm(ae): s.code for s in sites for ae in s.ae_titles}
            if mapping != self.snapshot():
                logger.info(
                    "gateway config changed",
                    extra={"action": "site_config_changed", "ae_titles": sorted(mapping)},
                )
                self.replace(mapping)
                self._save_cache(mapping)
            return True

    def site_for(self, ae_title: str) -> str | None:
        site = super().site_for(ae_title)
        if site is None and time.monotonic() - self._last_refresh >= 1.0:
            self.refresh()
            site = super().site_for(ae_title)
        return site

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-sites", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self._refresh_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
