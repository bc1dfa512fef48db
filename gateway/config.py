"""The gateway's settings: one pydantic-settings class, env prefix ``TELEREAD_GATEWAY_``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1024**3


class GatewaySettings(BaseSettings):
    """Everything a township gateway needs to know; see docs/contracts.md."""

    model_config = SettingsConfigDict(env_prefix="TELEREAD_GATEWAY_", extra="ignore")

    # DICOM side
    ae_title: str = Field(default="TELEREAD", min_length=1, max_length=16)
    # called AE titles answered besides ae_title and the urgent_called_aes; any other is
    # refused (A-ASSOCIATE-RJ, called AE title not recognised) unless accept_any_called_ae
    called_ae_titles: list[str] = Field(default_factory=list)
    accept_any_called_ae: bool = False
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    max_pdu: int = Field(default=262_144, ge=0)  # 0: unlimited
    # associations at once (counted from the A-ASSOCIATE-RQ, gateway.intake), and from one
    # source address; beyond either, A-ASSOCIATE-RJ (transient, local limit exceeded)
    max_associations: int = Field(default=16, ge=1)
    max_associations_per_address: int = Field(default=8, ge=1)
    # a connection has this long to deliver its A-ASSOCIATE-RQ (an ARTIM-style timer; it
    # holds no association slot meanwhile); at most this many wait per source address (one
    # more closes that address's oldest) and in all
    association_request_timeout_seconds: float = Field(default=5.0, gt=0)
    max_pending_per_address: int = Field(default=32, ge=1)
    max_pending_connections: int = Field(default=512, ge=1)
    network_timeout_seconds: float = 60.0
    dimse_timeout_seconds: float = 60.0
    acse_timeout_seconds: float = 30.0
    # DICOM TLS (docs/tls.md): a second listener, off unless tls_port is set (the DICOM
    # convention is 2762); TLS 1.2 or later. With tls_ca, client certificates it signed are
    # verified (required with tls_require_client_cert, otherwise checked when offered).
    tls_port: int | None = Field(default=None, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_require_client_cert: bool = False
    # called AE title -> triage category (a modality sending to STROKE flags its study)
    include_dicom_json: bool = True  # the header (no bulk data) as DICOM JSON in the announcement
    urgent_called_aes: dict[str, str] = Field(
        default_factory=lambda: {"STROKE": "stroke", "CHESTPAIN": "chest_pain"}
    )

    # spool (durable outbox)
    spool_dir: Path = Path("teleread-spool")
    spool_max_bytes: int = Field(default=50 * GIB, ge=0)
    # one DIMSE message (a C-STORE's dataset) larger than this aborts its association instead
    # of growing the receiving process's memory without end (0: no cap)
    max_instance_bytes: int = Field(default=4 * GIB, ge=0)
    spool_min_free_bytes: int = Field(default=1 * GIB, ge=0)
    # pre-written slot files per receiving process (gateway.slots; 0: off) and their size:
    # an instance that fits is made durable with one O_DSYNC overwrite, a bigger one as a file
    spool_slots: int = Field(default=1024, ge=0, le=65536)
    spool_slot_bytes: int = Field(default=1 << 20, ge=64 * 1024, le=1 << 30)
    prune_announced_after_seconds: float = 14 * 24 * 3600.0

    # county API: one URL (a load balancer), or the API replicas' URLs comma-separated, which
    # gateway.county fails over between
    api_url: str = "http://127.0.0.1:8000"
    api_username: str = "gateway"
    api_password: SecretStr = SecretStr("")
    api_ca_bundle: Path | None = None  # PEM CA bundle for the county's HTTPS certificate
    # switch off HTTPS certificate verification: never in production; logged loudly
    api_tls_insecure_skip_verify: bool = False
    api_timeout_seconds: float = 30.0
    config_refresh_seconds: float = Field(default=5.0, gt=0)
    # how often the gateway tells the county its queue and last error (gateway.heartbeat);
    # 0: never
    status_report_seconds: float = Field(default=30.0, ge=0)

    # forwarder
    announce_batch_size: int = Field(default=100, ge=1, le=1000)
    announce_delay_seconds: float = Field(default=0.5, ge=0)
    backoff_initial_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=60.0, gt=0)
    bandwidth_limit_bytes_per_s: int | None = Field(default=None, gt=0)
    # uploads in flight at once, most urgent first: with 2 one upload's requests overlap the
    # other's transfer (bench/uplink.py); 1: strictly one after the other
    upload_concurrency: int = Field(default=2, ge=1, le=8)

    # lossless recompression before upload (gateway.recompress), done ahead of the uplink
    # (gateway.lookahead); the stored object rebuilds the received file bit for bit and the
    # spool keeps the original until it is announced; "none": upload files as received
    recompress: Literal["none", "jpegls", "j2k", "deflate"] = "jpegls"
    # Prometheus text exposition (gateway.metrics) on http://metrics_host:metrics_port/metrics;
    # None: no metrics server
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    # receiving processes (gateway.workers): 0 = chosen at start, one acceptor process per
    # CPU this process may use when there is more than one, else in this process;
    # 1 = in this process; N > 1 = N acceptor processes
    workers: int = Field(default=0, ge=0, le=64)
    # pynetdicom's internals copied for speed (gateway.fastpath): auto = only on the
    # pynetdicom version they were verified on, else stock pynetdicom (logged, in status)
    fast_path: Literal["auto", "on", "off"] = "auto"
    # the deferred header read (gateway.instance): auto = without pydicom on the pydicom
    # version gateway.header_read mirrors, else pydicom; pydicom = always pydicom
    header_reader: Literal["auto", "pydicom"] = "auto"
    # with workers > 1: the nice value of this process's forwarder threads (header reading,
    # recompression, uploads), so that a burst from the modalities is received first;
    # 0: no change
    forwarder_nice: int = Field(default=10, ge=0, le=19)
    # MPPS study-complete announcements (gateway/mpps.py)
    mpps_poll_seconds: float = Field(default=1.0, gt=0)

    @field_validator("api_url", mode="after")
    @classmethod
    def _http_urls(cls, value: str) -> str:
        urls = [u.strip() for u in value.split(",") if u.strip()]
        if not urls or any(not u.startswith(("http://", "https://")) for u in urls):
            raise ValueError(
                "TELEREAD_GATEWAY_API_URL: one http(s):// URL, or several separated by commas"
            )
        return value

    @model_validator(mode="after")
    def _tls_material(self) -> GatewaySettings:
        if self.tls_port is not None and (self.tls_cert is None or self.tls_key is None):
            raise ValueError(
                "TELEREAD_GATEWAY_TLS_PORT needs TELEREAD_GATEWAY_TLS_CERT and "
                "TELEREAD_GATEWAY_TLS_KEY (PEM files)"
            )
        if self.tls_require_client_cert and self.tls_ca is None:
            raise ValueError(
                "TELEREAD_GATEWAY_TLS_REQUIRE_CLIENT_CERT needs TELEREAD_GATEWAY_TLS_CA "
                "(the CA that signs the modalities' certificates)"
            )
        return self


def accepted_called_aes(settings: GatewaySettings) -> frozenset[str] | None:
    """The called AE titles the gateway answers to (upper case), or None: any."""
    if settings.accept_any_called_ae:
        return None
    titles = [settings.ae_title, *settings.called_ae_titles, *settings.urgent_called_aes]
    return frozenset(t.strip().upper() for t in titles if t.strip())


@lru_cache(maxsize=1)
def get_settings() -> GatewaySettings:
    return GatewaySettings()
