"""The running gateway: SCP (in this process, or acceptor processes when ``workers`` > 1) +
forwarder thread + MPPS study-completion thread + site refresh, with ``stop()``."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from pynetdicom.transport import ThreadedAssociationServer

from gateway.config import GatewaySettings
from gateway.county import CountyClient
from gateway.errors import GatewayError
from gateway.forwarder import Forwarder
from gateway.metrics import MetricsServer, start_metrics_server
from gateway.mpps import MppsStore
from gateway.scp import start_scp
from gateway.sites import CountySiteDirectory, SiteDirectory, Sites
from gateway.spool import Spool
from gateway.spool_recovery import recover
from gateway.study_completion import StudyCompletion
from gateway.transport import tls_context_for
from gateway.workers import AcceptorPool, worker_count
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
        self.server: ThreadedAssociationServer | None = None
        self.tls_server: ThreadedAssociationServer | None = None
        self.pool: AcceptorPool | None = None
        self.metrics: MetricsServer | None = None
        self._resynced_at = 0.0

    @property
    def port(self) -> int:
        """The port the SCP listens on (useful with ``port=0``)."""
        if self.pool is not None:
            return self.pool.port
        if self.server is None:
            return self.settings.port
        return int(self.server.server_address[1])

    @property
    def tls_port(self) -> int | None:
        """The DICOM TLS listener's port (None: TLS is off)."""
        if self.pool is not None:
            return self.pool.tls_port
        if self.tls_server is not None:
            return int(self.tls_server.server_address[1])
        return self.settings.tls_port

    def start(self, *, forward: bool = True) -> None:
        workers = worker_count(self.settings)
        _warm_triage()
        tls = tls_context_for(self.settings)  # bad TLS material: refuse to start, say why
        if self._county_sites is not None:
            if not self._county_sites.snapshot():
                # no cached allow-list: ask now, so the first association is not refused
                # while the first background refresh runs
                self._county_sites.refresh()
            self._county_sites.start()
        if workers > 1:
            snapshot = getattr(self.sites, "snapshot", None)
            if snapshot is None:
                raise GatewayError("workers > 1 needs a SiteDirectory (an AE -> site mapping)")
            self.pool = AcceptorPool(
                self.settings, n=workers, sites=snapshot, on_work=self._acceptor_stored
            )
            self.pool.start()
        else:
            self.server = start_scp(self.settings, self.spool, self.sites, mpps=self.mpps)
            if tls is not None:
                self.tls_server = start_scp(
                    self.settings,
                    self.spool,
                    self.sites,
                    mpps=self.mpps,
                    port=self.settings.tls_port,
                    ssl_context=tls,
                )
        # with acceptor processes receiving, this process's forwarding yields the CPUs to them
        nice = self.settings.forwarder_nice if workers > 1 else 0
        if forward:
            self.forwarder.start(nice=nice)
            self.completion.start()
        else:  # still read the headers the acceptors left for after the response
            self.forwarder.start(index_only=True, nice=nice)
        if self.settings.metrics_port is not None:
            self.metrics = start_metrics_server(
                self.spool.root, host=self.settings.metrics_host, port=self.settings.metrics_port
            )
        logger.info(
            "gateway listening",
            extra={
                "action": "gateway_started",
                "ae_title": self.settings.ae_title,
                "host": self.settings.host,
                "port": self.port,
                "tls_port": self.tls_port,
                "workers": workers,
            },
        )

    def _acceptor_stored(self) -> None:
        """An acceptor process spooled an instance: wake the forwarder; keep this process's
        ``spool.held_bytes`` true (the acceptors add, the forwarder here frees)."""
        self.spool.outbox.new_work.set()
        now = time.monotonic()
        if now - self._resynced_at >= 1.0:
            self._resynced_at = now
            self.spool.resync_held_bytes()

    def stop(self) -> None:
        for server in (self.server, self.tls_server):
            if server is None:
                continue
            ae = server.ae
            server.shutdown()
            for assoc in ae.active_associations:  # a peer mid-send gets an abort, not a hang
                assoc.abort()
                assoc.join(5)
        self.server = self.tls_server = None
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        self.forwarder.stop()
        self.completion.stop()
        self.mpps.close()
        if self._county_sites is not None:
            self._county_sites.stop()
        if self._own_county:
            self.county.close()
        self.spool.close()
        logger.info("gateway stopped", extra={"action": "gateway_stopped"})


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
