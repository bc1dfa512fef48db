"""Triage's exception hierarchy; each class's docstring is its default message."""

from __future__ import annotations


class TriageError(Exception):
    """Triage failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class RulesError(TriageError):
    """The triage rules file is not valid."""


class UnknownCategory(TriageError):
    """Unknown triage category (known: stroke, chest_pain)."""
