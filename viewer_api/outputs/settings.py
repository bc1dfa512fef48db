"""Settings of the report outputs (env prefix ``TELEREAD_API_``, like the rest of the API).

Kept apart from ``ApiSettings`` so the outputs can be configured without touching it; the
app may put an instance on ``app.state.output_settings`` (tests do), otherwise the
environment's is used.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SHARE_TTL_SECONDS = 24 * 3600
# a share link may not live longer than this, whatever the setting says
MAX_SHARE_TTL_SECONDS = 90 * 24 * 3600


class OutputSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TELEREAD_API_", extra="ignore")

    # printed at the top of every report: the county hospital that reads for the townships,
    # and its reading centre
    hospital_name: str = "县人民医院"
    centre_name: str = "远程影像诊断中心"
    # how long a share link made from now on works (TELEREAD_API_SHARE_TTL_SECONDS)
    share_ttl_seconds: int = DEFAULT_SHARE_TTL_SECONDS
    # the address patients and clinics reach the API at (for the QR code); empty: the
    # address of the request that asked for the PDF
    public_url: str = ""
    # the TrueType (.ttf/.ttc) CJK font PDF reports embed; empty: Debian's fonts-wqy-microhei
    # (or another packaged TrueType CJK font) found at run time
    report_font: str = ""
    # report times are printed in this offset from UTC (China Standard Time: +8)
    display_utc_offset_hours: int = 8
    # AE title written into generated SR objects as the station and equipment name, and
    # the calling AE title when an SR is sent back to a site
    sr_station_name: str = "TELEREAD"
    # (a site's DICOM destination is the site's: ``Site.sr_destination``, county.yaml's ``pacs``)
    sr_send_timeout_seconds: float = 10.0
    # a send that fails is tried again after this, doubled each time up to an hour, and
    # given up (state "failed", until the report or the study changes) after so many tries:
    # 48 is about two days of a PACS being down
    sr_send_retry_seconds: float = 5.0
    sr_send_max_attempts: int = Field(default=48, ge=1)

    @field_validator("share_ttl_seconds", mode="after")
    @classmethod
    def _bounded_ttl(cls, value: int) -> int:
        if not 0 < value <= MAX_SHARE_TTL_SECONDS:
            raise ValueError(f"must be between 1 and {MAX_SHARE_TTL_SECONDS} seconds")
        return value


@lru_cache(maxsize=1)
def get_output_settings() -> OutputSettings:
    return OutputSettings()


__all__ = ["DEFAULT_SHARE_TTL_SECONDS", "OutputSettings", "get_output_settings"]
