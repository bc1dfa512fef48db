"""worklist's settings (env prefix ``TELEREAD_WORKLIST_``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///teleread-data/teleread.db"
DEFAULT_CLAIM_LEASE_SECONDS = 900
DEFAULT_STABLE_SECONDS = 90
DEFAULT_DEADLINE_STROKE_MINUTES = 20
DEFAULT_DEADLINE_CHEST_PAIN_MINUTES = 30
DEFAULT_DEADLINE_ROUTINE_MINUTES = 1440
# a stroke / chest-pain study read in time (preliminary report) is due final this long
# after it arrived
DEFAULT_DEADLINE_FINAL_MINUTES = 1440
# a modality's clock: the UTC offset of a header's local date and time when it carries no
# TimezoneOffsetFromUTC (China Standard Time)
DEFAULT_MODALITY_UTC_OFFSET_HOURS = 8.0
DEFAULT_MODALITY_UTC_OFFSET = timedelta(hours=DEFAULT_MODALITY_UTC_OFFSET_HOURS)
MIN_WEBHOOK_SECRET = 16
# Retention (0 = keep forever). Audit: six years by default; China's medical-record rules
# expect long retention, so the admin sets this to the rule that applies to the hospital.
DEFAULT_AUDIT_RETENTION_DAYS = 2190
DEFAULT_EVENT_RETENTION_DAYS = 7
DEFAULT_WEBHOOK_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 36500


@dataclass(frozen=True, slots=True)
class Deadlines:
    """How long after the first instance a study must be read, by triage category."""

    stroke: timedelta = timedelta(minutes=DEFAULT_DEADLINE_STROKE_MINUTES)
    chest_pain: timedelta = timedelta(minutes=DEFAULT_DEADLINE_CHEST_PAIN_MINUTES)
    routine: timedelta = timedelta(minutes=DEFAULT_DEADLINE_ROUTINE_MINUTES)
    final: timedelta = timedelta(minutes=DEFAULT_DEADLINE_FINAL_MINUTES)

    def for_category(self, category: str | None) -> timedelta:
        if category == "stroke":
            return self.stroke
        if category == "chest_pain":
            return self.chest_pain
        return self.routine


DEFAULT_DEADLINES = Deadlines()
DEFAULT_LEASE = timedelta(seconds=DEFAULT_CLAIM_LEASE_SECONDS)


class WorklistSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TELEREAD_WORKLIST_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    claim_lease_seconds: int = DEFAULT_CLAIM_LEASE_SECONDS
    stable_seconds: int = DEFAULT_STABLE_SECONDS
    deadline_stroke_minutes: int = DEFAULT_DEADLINE_STROKE_MINUTES
    deadline_chest_pain_minutes: int = DEFAULT_DEADLINE_CHEST_PAIN_MINUTES
    deadline_routine_minutes: int = DEFAULT_DEADLINE_ROUTINE_MINUTES
    deadline_final_minutes: int = DEFAULT_DEADLINE_FINAL_MINUTES
    # sites whose patient IDs are one county-wide scheme (a resident health card number, a
    # county MPI): a patient's prior studies are looked for across them; elsewhere, priors
    # are the same patient ID at the same site. Comma-separated site codes.
    linked_sites: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # the UTC offset of the modalities' clocks, for acquisition times whose headers carry
    # no TimezoneOffsetFromUTC (the study timeline)
    modality_utc_offset_hours: float = Field(
        default=DEFAULT_MODALITY_UTC_OFFSET_HOURS, ge=-14, le=14
    )
    # --- workflow: webhooks receive every event, signed with the shared secret ---
    # a JSON list or comma-separated: TELEREAD_WORKLIST_WEBHOOK_URLS=https://a/hook,https://b/x
    webhook_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_secret: str = ""
    webhook_timeout_seconds: float = 5.0
    webhook_max_attempts: int = 10
    # deliveries in flight at once per webhook URL (and API process)
    webhook_parallel: int = Field(default=4, ge=1, le=64)
    # --- retention: worklist.retention.purge_expired, run by the housekeeping ---
    audit_retention_days: int = Field(
        default=DEFAULT_AUDIT_RETENTION_DAYS, ge=0, le=MAX_RETENTION_DAYS
    )
    event_retention_days: int = Field(
        default=DEFAULT_EVENT_RETENTION_DAYS, ge=0, le=MAX_RETENTION_DAYS
    )
    webhook_retention_days: int = Field(
        default=DEFAULT_WEBHOOK_RETENTION_DAYS, ge=0, le=MAX_RETENTION_DAYS
    )

    # a re-sent instance with other bytes (``worklist.resends``): ``same_source`` serves the
    # newest version from the same site and calling AE, ``always`` the newest from the same
    # site, ``never`` keeps the first; every other version is kept for an admin either way
    overwrite_policy: Literal["never", "same_source", "always"] = "same_source"

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [u.strip() for u in text.split(",") if u.strip()]
        return value

    @field_validator("linked_sites", mode="before")
    @classmethod
    def _split_sites(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [code.strip() for code in value.replace(" ", ",").split(",") if code.strip()]
        return value

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> WorklistSettings:
        if self.webhook_urls and len(self.webhook_secret) < MIN_WEBHOOK_SECRET:
            raise ValueError(
                "TELEREAD_WORKLIST_WEBHOOK_SECRET must be set (at least "
                f"{MIN_WEBHOOK_SECRET} characters) when webhook URLs are configured"
            )
        for url in self.webhook_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook URL must be http(s): {url!r}")
        return self

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.claim_lease_seconds)

    @property
    def modality_utc_offset(self) -> timedelta:
        return timedelta(hours=self.modality_utc_offset_hours)

    @property
    def deadlines(self) -> Deadlines:
        return Deadlines(
            stroke=timedelta(minutes=self.deadline_stroke_minutes),
            chest_pain=timedelta(minutes=self.deadline_chest_pain_minutes),
            routine=timedelta(minutes=self.deadline_routine_minutes),
            final=timedelta(minutes=self.deadline_final_minutes),
        )


@lru_cache(maxsize=1)
def get_settings() -> WorklistSettings:
    return WorklistSettings()


__all__ = [
    "DEFAULT_DEADLINES",
    "DEFAULT_LEASE",
    "DEFAULT_MODALITY_UTC_OFFSET",
    "Deadlines",
    "WorklistSettings",
    "get_settings",
]
