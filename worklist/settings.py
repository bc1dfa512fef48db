"""worklist's settings (env prefix ``TELEREAD_WORKLIST_``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///teleread-data/teleread.db"
DEFAULT_CLAIM_LEASE_SECONDS = 900
DEFAULT_STABLE_SECONDS = 90
DEFAULT_DEADLINE_STROKE_MINUTES = 20
DEFAULT_DEADLINE_CHEST_PAIN_MINUTES = 30
DEFAULT_DEADLINE_ROUTINE_MINUTES = 1440


@dataclass(frozen=True, slots=True)
class Deadlines:
    """How long after the first instance a study must be read, by triage category."""

    stroke: timedelta = timedelta(minutes=DEFAULT_DEADLINE_STROKE_MINUTES)
    chest_pain: timedelta = timedelta(minutes=DEFAULT_DEADLINE_CHEST_PAIN_MINUTES)
    routine: timedelta = timedelta(minutes=DEFAULT_DEADLINE_ROUTINE_MINUTES)

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

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.claim_lease_seconds)

    @property
    def deadlines(self) -> Deadlines:
        return Deadlines(
            stroke=timedelta(minutes=self.deadline_stroke_minutes),
            chest_pain=timedelta(minutes=self.deadline_chest_pain_minutes),
            routine=timedelta(minutes=self.deadline_routine_minutes),
        )


@lru_cache(maxsize=1)
def get_settings() -> WorklistSettings:
    return WorklistSettings()


__all__ = [
    "DEFAULT_DEADLINES",
    "DEFAULT_LEASE",
    "Deadlines",
    "WorklistSettings",
    "get_settings",
]
