"""Triage: is this study a stroke or chest-pain case? Pure code, no database.

Public API (stable; the gateway and the worklist both use it):

- ``TRIAGE_KEYWORDS``: the DICOM keywords whose text is read; ``REQUEST_KEYWORDS`` those
  read in Request Attributes Sequence items too; ``CODE_SEQUENCE_KEYWORDS`` (top level) and
  ``REQUEST_CODE_SEQUENCE_KEYWORDS`` (request items): the code sequences whose items
  (``CODE_ITEM_TAGS``) are read as codes (``worklist.triage.codes``).
- ``extract_text(ds) -> ExtractedText``: decoded, normalised text fields of a dataset
  (header only is enough), plus notes on how the text was decoded.
- ``classify(fields, *, modality=None, explicit=None) -> TriageResult``: decide from
  decoded text fields (keyword -> text).
- ``triage_dataset(ds, *, explicit=None) -> TriageResult``: both steps.
- ``Reason``: one reason as data (code, category, family, term, found, field, by, note);
  ``to_json()`` / ``Reason.from_json(value)`` are its stored and sent form, ``str()`` its
  English wording. The pages word reasons in the reader's language from the code.
- ``decode_text(raw, declared_charsets) -> tuple[str, list[str]]``: one value's bytes to
  clean Unicode, with notes (used for patient names too).

Also: ``merge_results(previous, new)`` (never silently downgrades a stat result),
``category_for_called_ae(called_ae, mapping)``, ``read_paths(paths)`` (``teleread triage``),
``load_rules(path)`` (a county's own YAML), ``patients_differ(...)`` and
``normalise_person_name(value)`` (is an instance of another patient than its study:
``worklist.triage.patient``). Evaluate: ``python -m worklist.triage.evaluate``.
"""

from worklist.triage.api import (
    CODE_ITEM_TAGS,
    CODE_SEQUENCE_KEYWORDS,
    REQUEST_CODE_SEQUENCE_KEYWORDS,
    REQUEST_KEYWORDS,
    TRIAGE_KEYWORDS,
    Category,
    ExtractedText,
    Reason,
    TriageResult,
    category_for_called_ae,
    classify,
    decode_text,
    extract_text,
    extract_text_values,
    load_rules,
    log_notes,
    merge_results,
    read_paths,
    triage_dataset,
)
from worklist.triage.patient import normalise_person_name, patients_differ

__all__ = [
    "CODE_ITEM_TAGS",
    "CODE_SEQUENCE_KEYWORDS",
    "REQUEST_CODE_SEQUENCE_KEYWORDS",
    "REQUEST_KEYWORDS",
    "TRIAGE_KEYWORDS",
    "Category",
    "ExtractedText",
    "Reason",
    "TriageResult",
    "category_for_called_ae",
    "classify",
    "decode_text",
    "extract_text",
    "extract_text_values",
    "load_rules",
    "log_notes",
    "merge_results",
    "normalise_person_name",
    "patients_differ",
    "read_paths",
    "triage_dataset",
]
