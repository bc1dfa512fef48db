"""The running gateway: intake + SCP (in this process, or acceptor processes, see
``gateway.workers``) + forwarder threads (uploads, recompression ahead, announcements) + MPPS
study-completion thread + site refresh, with
``stop()``.

Why a receiver of our own rather than dcmtk's ``storescp`` (as mercure runs): an instance is
acknowledged only once it is durable in the spool (``gateway.spool``), the calling AE is
checked against the county's site list at association time (``gateway.sites``), and triage
starts at receipt (``gateway.received``, ``gateway.forwarder``) so a stroke study overtakes a
routine backlog on the uplink.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pydicom

from gateway import fastpath
from gateway.config import GatewaySettings
from gateway.control import Doorbell
from gateway.county import CountyClient
from gateway.errors import GatewayError
from gateway.forwarder import Forwarder
from gateway.heartbeat import StatusReporter
from gateway.instance import VERIFIED_PYDICOM, pydicom_free_reads
from gateway.intake import Intake, IntakeLimits
from gateway.metrics import MetricsServer, start_metrics_server
from gateway.mpps import MppsStore
from gateway.ops import clear_state, write_state
from gateway.scp import build_host
from gateway.sites import CountySiteDirectory, SiteDirectory, Sites
from gateway.spool import Spool
from gateway.spool_recovery import recover
from gateway.study_completion import StudyCompletion
from gateway.transport import AssociationHost, tls_context_for, wrap_server_side
from gateway.workers import AcceptorPool, usable_cpus, worker_count
from storage.base import ObjectStore
from worklist.triage import classify

logger = logging.getLogger(__name__)


class Gateway:
    """``Gateway(settings=..., store=...)``, then ``start()`` / ``stop()``.

    ``county`` defaults to a ``CountyClient`` for ``settings.api_url``; ``sites`` defaults to
    the county's allow-list (``CountySiteDirectory``), or pass a ``SiteDirectory`` / mapping.
    """

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        store: ObjectStore,
        county: CountyClient | None = None,
        sites: Sites | Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.county = county or CountyClient(
            settings.api_url,
            settings.api_username,
            settings.api_password.get_secret_value(),
            ca_bundle=settings.api_ca_bundle,
            timeout=settings.api_timeout_seconds,
            insecure_skip_verify=settings.api_tls_insecure_skip_verify,
        )
        self._own_county = county is None
        self.spool = Spool(
            settings.spool_dir,
            max_bytes=settings.spool_max_bytes,
            min_free_bytes=settings.spool_min_free_bytes,
            # acceptor processes (workers > 1) have their own slots; this one receives not
            slot_count=settings.spool_slots if worker_count(settings) <= 1 else 0,
            slot_size=settings.spool_slot_bytes,
        )
        recover(self.spool)  # before anything receives
        self.spool.open_slots()
        self._county_sites: CountySiteDirectory | None = None
        if sites is None:
            self._county_sites = CountySiteDirectory(
                self.county,
                refresh_seconds=settings.config_refresh_seconds,
                cache_file=self.spool.root / "sites.json",
            )
            self.sites: Sites = self._county_sites
        elif isinstance(sites, Mapping):
            self.sites = SiteDirectory(sites)
        else:
            self.sites = sites
        self.forwarder = Forwarder(
            self.spool,
            store,
            self.county,
            batch_size=settings.announce_batch_size,
            announce_delay=settings.announce_delay_seconds,
            backoff_initial=settings.backoff_initial_seconds,
            backoff_max=settings.backoff_max_seconds,
            bandwidth_limit=settings.bandwidth_limit_bytes_per_s,
            prune_after=settings.prune_announced_after_seconds,
            include_dicom_json=settings.include_dicom_json,
            recompress=settings.recompress,
            upload_concurrency=settings.upload_concurrency,
            header_reader=settings.header_reader,
        )
        self.mpps = MppsStore(self.spool.root / "mpps.db")
        self.completion = StudyCompletion(
            self.mpps,
            self.spool.outbox,
            self.county,
            poll_seconds=settings.mpps_poll_seconds,
            backoff_initial=settings.backoff_initial_seconds,
            backoff_max=settings.backoff_max_seconds,
        )
        self.reporter = (
            StatusReporter(self.county, self.spool, seconds=settings.status_report_seconds)
            if settings.status_report_seconds > 0
            else None
        )
        self.host: AssociationHost | None = None  # receiving in this process
        self.pool: AcceptorPool | None = None  # receiving in acceptor processes
        self.intake: Intake | None = None
        self.metrics: MetricsServer | None = None
        self.path: fastpath.PathChoice | None = None
        self.workers = 0
        self._tls: ssl.SSLContext | None = None
        self._port: int | None = None
        self._tls_port: int | None = None
        self._doorbell: Doorbell | None = None
        self._resynced_at = 0.0
        self._stopped = False

    @property
    def port(self) -> int:
        """The port the SCP listens on (useful with ``port=0``)."""
        return self.settings.port if self._port is None else self._port

    @property
    def tls_port(self) -> int | None:
        """The DICOM TLS listener's port (None: TLS is off)."""
        return self.settings.tls_port if self._tls_port is None else self._tls_port

    def start(self, *, forward: bool = True) -> None:
        try:
            self.path = fastpath.choose(self.settings.fast_path)
        except fastpath.FastPathUnavailable as exc:
            raise GatewayError(str(exc)) from exc
        if self.path.warning:
            logger.warning(
                self.path.warning, extra={"action": "fast_path_off", **self.path.as_dict()}
            )
        if self.settings.header_reader == "auto" and not pydicom_free_reads():
            logger.warning(
                f"pydicom {pydicom.__version__}: spooled headers are read with pydicom (the "
                f"reader without it mirrors {VERIFIED_PYDICOM})",
                extra={"action": "header_reader_pydicom", "pydicom": pydicom.__version__},
            )
        self.workers = workers = worker_count(self.settings)
        _warm_triage()
        self._tls = tls_context_for(self.settings)  # bad TLS material: refuse to start
        if self._county_sites is not None:
            if not self._county_sites.snapshot():
                # no cached allow-list: ask now, so the first association is not refused
                # while the first background refresh runs
                self._county_sites.refresh()
            self._county_sites.start()
        # bound now, listening only once whoever receives is ready: a connection to the open
        # port is answered at once
        listeners = [(_bound(self.settings.host, self.settings.port), False)]
        if self._tls is not None and self.settings.tls_port is not None:
            listeners.append((_bound(self.settings.host, self.settings.tls_port), True))
        self._port = int(listeners[0][0].getsockname()[1])
        if len(listeners) > 1:
            self._tls_port = int(listeners[1][0].getsockname()[1])
        self.intake = Intake(listeners, self._deliver, IntakeLimits.from_settings(self.settings))
        address = (self.settings.host, self._port)
        if workers > 1:
            table = getattr(self.sites, "table", None)
            if table is None:
                raise GatewayError("workers > 1 needs a SiteDirectory (an AE -> site mapping)")
            self.pool = AcceptorPool(
                self.settings,
                n=workers,
                fast=self.path.fast,
                address=address,
                sites=table,
                ask_sites=self._ask_sites,
                on_work=self._acceptor_stored,
                on_done=self.intake.association_ended,
            )
            self.pool.start()
            if self._county_sites is not None:
                self._county_sites.add_listener(self.pool.push_sites)
        else:
            intake = self.intake
            self.host = build_host(
                self.settings,
                self.spool,
                self.sites,
                path=self.path,
                mpps=self.mpps,
                on_done=lambda peer: intake.association_ended(str(peer[0])),
            )
            self.host.server_address = address
        if self._county_sites is not None:
            try:
                self._doorbell = Doorbell(self.spool.root, self._county_sites.request_refresh)
                self._doorbell.start()
            except OSError as exc:  # another gateway on this spool: its doorbell
                logger.warning(
                    "site change doorbell not available",
                    extra={"action": "doorbell_failed", "error": str(exc)},
                )
        for listener, _ in listeners:
            listener.listen(128)
        self.intake.start()
        # with acceptor processes receiving, this process's forwarding yields the CPUs to them
        nice = self.settings.forwarder_nice if workers > 1 else 0
        if forward:
            self.forwarder.start(nice=nice)
            self.completion.start()
            if self.reporter is not None:
                self.reporter.start()
        else:  # still read the headers the acceptors left for after the response
            self.forwarder.start(index_only=True, nice=nice)
        if self.settings.metrics_port is not None:
            self.metrics = start_metrics_server(
                self.spool.root, host=self.settings.metrics_host, port=self.settings.metrics_port
            )
        state = self.describe()
        write_state(self.spool.root, state)
        logger.info(
            "gateway listening",
            extra={
                "action": "gateway_started",
                "ae_title": self.settings.ae_title,
                "host": self.settings.host,
                "port": self.port,
                "tls_port": self.tls_port,
                "workers": workers,
                "receiving": state["receiving"],
                "fast_path": self.path.mode,
                "pynetdicom": self.path.pynetdicom,
            },
        )

    def describe(self) -> dict[str, Any]:
        """How this gateway runs (``teleread gateway status`` shows it)."""
        path = self.path.as_dict() if self.path is not None else None
        return {
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(),
            "ae_title": self.settings.ae_title,
            "port": self.port,
            "tls_port": self.tls_port,
            "workers": self.workers,
            "workers_setting": self.settings.workers,
            "cpus": usable_cpus(),
            "receiving": (
                f"{self.workers} acceptor processes" if self.workers > 1 else "in this process"
            ),
            "fast_path": path,
            "header_reader": (
                "without pydicom"
                if pydicom_free_reads(self.settings.header_reader)
                else f"pydicom {pydicom.__version__}"
            ),
        }

    def _deliver(self, conn: socket.socket, peer: tuple[str, int], tls: bool) -> bool:
        """The intake's hand-over: to the acceptor processes, or to this process's host."""
        if self.pool is not None:
            return self.pool.deliver(conn, peer, tls)
        host = self.host
        if host is None:
            conn.close()
            return False
        if tls:
            assert self._tls is not None
            conn = wrap_server_side(self._tls, conn)  # the handshake runs in its thread
        host.process_request(conn, peer)
        return True

    def _ask_sites(self) -> None:
        """An acceptor process met an unknown calling AE: look again, then push the list."""
        if self._county_sites is not None:
            self._county_sites.request_refresh()
        elif self.pool is not None:
            snapshot = getattr(self.sites, "snapshot", None)
            self.pool.push_sites(snapshot() if snapshot is not None else {})

    def _acceptor_stored(self) -> None:
        """An acceptor process spooled an instance: wake the forwarder; keep this process's
        ``spool.held_bytes`` true (the acceptors add, the forwarder here frees)."""
        self.spool.outbox.new_work.set()
        now = time.monotonic()
        if now - self._resynced_at >= 1.0:
            self._resynced_at = now
            self.spool.resync_held_bytes()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.intake is not None:
            self.intake.stop()  # no new connections; waiting ones closed
            self.intake = None
        if self.host is not None:
            self.host.close()
            self.host = None
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
        if self._doorbell is not None:
            self._doorbell.stop()
            self._doorbell = None
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        self.forwarder.stop()
        self.completion.stop()
        if self.reporter is not None:
            self.reporter.stop()
        self.mpps.close()
        if self._county_sites is not None:
            self._county_sites.stop()
        if self._own_county:
            self.county.close()
        clear_state(self.spool.root)
        self.spool.close()
        logger.info("gateway stopped", extra={"action": "gateway_stopped"})


def _bound(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) (port 0: a free one), not listening yet."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GatewayError(f"cannot listen on {host}:{port}: {exc}") from exc
    return sock


def run_gateway(
    settings: GatewaySettings,
    store: ObjectStore,
    county: CountyClient | None = None,
    sites: Sites | Mapping[str, str] | None = None,
) -> Gateway:
    """Start a gateway and return it (call ``stop()`` to end it)."""
    gateway = Gateway(settings=settings, store=store, county=county, sites=sites)
    gateway.start()
    return gateway


def _warm_triage() -> None:
    """Load and compile the triage rules now (0.15-0.2 s of YAML and regular expressions),
    not while the first study after a start waits for its triage."""
    started = time.perf_counter()
    try:
        classify({"StudyDescription": "warm-up"}, modality="CT")
    except Exception as exc:  # the forwarder reports a broken rules file per instance
        logger.error(
            "triage rules not loadable", extra={"action": "triage_rules_failed", "error": str(exc)}
        )
        return
    logger.debug(
        "triage rules loaded",
        extra={"action": "triage_rules_loaded", "seconds": round(time.perf_counter() - started, 3)},
    )
