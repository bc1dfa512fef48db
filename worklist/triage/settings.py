"""Triage settings (env prefix ``TELEREAD_TRIAGE_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class TriageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TELEREAD_TRIAGE_", extra="ignore")

    # a county's own rules YAML, added to the built-in rules (or replacing them: extends: none)
    rules_file: Path | None = None


@lru_cache(maxsize=1)
def get_settings() -> TriageSettings:
    return TriageSettings()
