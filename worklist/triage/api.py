"""Triage's public API in one place (``worklist.triage`` re-exports it; the CLI imports
``read_paths`` from here). The code lives in charset.py, normalise.py, rules.py (+ rules.yaml),
classify.py and extract.py."""

from __future__ import annotations

from worklist.triage.charset import decode_text
from worklist.triage.classify import (
    DEFAULT_CALLED_AE_CATEGORIES,
    category_for_called_ae,
    classify,
    merge_results,
)
from worklist.triage.codes import (
    CODE_ITEM_TAGS,
    CODE_SEQUENCE_KEYWORDS,
    REQUEST_CODE_SEQUENCE_KEYWORDS,
)
from worklist.triage.errors import RulesError, TriageError, UnknownCategory
from worklist.triage.extract import (
    REQUEST_KEYWORDS,
    extract_text,
    extract_text_values,
    log_notes,
    read_paths,
    triage_dataset,
    triage_file,
)
from worklist.triage.normalise import normalise
from worklist.triage.result import (
    ROUTINE,
    STAT,
    TRIAGE_KEYWORDS,
    ExtractedText,
    Priority,
    Reason,
    TriageResult,
)
from worklist.triage.rules import CATEGORIES, Category, Rules, default_rules, load_rules

__all__ = [
    "CATEGORIES",
    "CODE_ITEM_TAGS",
    "CODE_SEQUENCE_KEYWORDS",
    "DEFAULT_CALLED_AE_CATEGORIES",
    "REQUEST_CODE_SEQUENCE_KEYWORDS",
    "REQUEST_KEYWORDS",
    "ROUTINE",
    "STAT",
    "TRIAGE_KEYWORDS",
    "Category",
    "ExtractedText",
    "Priority",
    "Reason",
    "Rules",
    "RulesError",
    "TriageError",
    "TriageResult",
    "UnknownCategory",
    "category_for_called_ae",
    "classify",
    "decode_text",
    "default_rules",
    "extract_text",
    "extract_text_values",
    "load_rules",
    "log_notes",
    "merge_results",
    "normalise",
    "read_paths",
    "triage_dataset",
    "triage_file",
]
