"""Report templates per study type, which prefill the report editor.

Each template is one YAML file (English keys, Chinese text): a ``key``, a ``name``, match
rules (``categories``, ``modalities``, ``keywords`` found in the body part or the study and
series descriptions) and prefilled ``findings`` / ``impression`` / ``recommendation``. The
built-in ones live in ``worklist/templates/``; a county adds or replaces templates (same
key) with its own directory, ``TELEREAD_WORKLIST_REPORT_TEMPLATES_DIR``.

Choices: where a finding must be read, not assumed, the text offers the alternatives in
square brackets, ``[未见/可见]`` or ``[无/有（左）/有（右）]``; the radiologist keeps one
(and deletes the brackets). ``unresolved_choices`` finds those left, and a report that has
any cannot be signed (``worklist.reports.sign_report``). The stroke and chest-pain templates
pre-fill no normal finding: each is a choice.

Matching: a template that names modalities or categories applies only to studies that have
one of them, and one that names keywords but no category needs at least one of them found;
among those that apply, a category match counts most, then the modality, then each keyword
found; ties go to the key's alphabetical order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from worklist.errors import WorklistError
from worklist.models import Study

logger = logging.getLogger(__name__)

CATEGORY_WEIGHT = 100
MODALITY_WEIGHT = 10
KEYWORD_WEIGHT = 1
MAX_TEMPLATE_BYTES = 256 * 1024


# a choice left in a report: alternatives separated by "/" in square brackets
CHOICE = re.compile(r"\[([^\[\]\n/]*(?:/[^\[\]\n/]*)+)\]")
REPORT_FIELDS = ("findings", "impression", "recommendation")


def unresolved_choices(*, findings: str, impression: str, recommendation: str) -> list[str]:
    """Where a report still offers a choice: ``"findings line 2: [未见/可见]"``, in reading
    order; empty when every choice is made."""
    places: list[str] = []
    texts = {"findings": findings, "impression": impression, "recommendation": recommendation}
    for field in REPORT_FIELDS:
        for number, line in enumerate(texts[field].splitlines(), start=1):
            places.extend(f"{field} line {number}: {m.group(0)}" for m in CHOICE.finditer(line))
    return places


class TemplateError(WorklistError):
    """A report template file is invalid."""


class NoTemplate(WorklistError):
    """No report template matches this study."""


class TemplateSettings(BaseSettings):
    """Where a county's own templates are (same env prefix as the rest of ``worklist``)."""

    model_config = SettingsConfigDict(env_prefix="TELEREAD_WORKLIST_", extra="ignore")

    report_templates_dir: Path | None = None


class _Match(BaseModel):
    model_config = ConfigDict(extra="forbid")

    categories: list[str] = Field(default_factory=list)
    modalities: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)


class _TemplateFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    name: str = Field(min_length=1, max_length=200)
    match: _Match = Field(default_factory=_Match)
    findings: str = ""
    impression: str = ""
    recommendation: str = ""


@dataclass(frozen=True, slots=True)
class ReportTemplate:
    key: str
    name: str
    categories: tuple[str, ...]
    modalities: tuple[str, ...]
    keywords: tuple[str, ...]
    findings: str
    impression: str
    recommendation: str
    source: str  # "builtin" or the county file's path

    def score(self, *, category: str | None, modalities: set[str], text: str) -> int | None:
        """How well this template fits; None when it does not apply at all."""
        if self.categories and category not in self.categories:
            return None
        if self.modalities and not modalities.intersection(self.modalities):
            return None
        hits = sum(1 for k in self.keywords if k.casefold() in text)
        if self.keywords and not self.categories and not hits:
            return None  # a body-part template (chest DR) is not for a knee
        total = CATEGORY_WEIGHT if self.categories else 0
        total += MODALITY_WEIGHT if self.modalities else 0
        return total + KEYWORD_WEIGHT * hits


def parse_template(raw: str, *, source: str) -> ReportTemplate:
    """One template from YAML text; ``TemplateError`` naming ``source`` if it is invalid."""
    try:
        data: Any = yaml.safe_load(raw)
        parsed = _TemplateFile.model_validate(data)
    except yaml.YAMLError as exc:
        raise TemplateError(f"{source}: not valid YAML ({exc})") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise TemplateError(f"{source}: {problems}") from exc
    return ReportTemplate(
        key=parsed.key,
        name=parsed.name,
        categories=tuple(parsed.match.categories),
        modalities=tuple(m.upper() for m in parsed.match.modalities),
        keywords=tuple(parsed.match.keywords),
        findings=parsed.findings,
        impression=parsed.impression,
        recommendation=parsed.recommendation,
        source=source,
    )


def _builtin() -> list[ReportTemplate]:
    folder = resources.files("worklist").joinpath("templates")
    found = [
        parse_template(entry.read_text(encoding="utf-8"), source="builtin")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    ]
    return found


def _county(directory: Path) -> list[ReportTemplate]:
    if not directory.is_dir():
        raise TemplateError(f"{directory}: report template directory not found")
    found = []
    for path in sorted(directory.glob("*.yaml")):
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"{path}: larger than {MAX_TEMPLATE_BYTES} bytes")
        found.append(parse_template(path.read_text(encoding="utf-8"), source=str(path)))
    return found


def load_templates(extra_dir: Path | None = None) -> tuple[ReportTemplate, ...]:
    """The built-in templates, overlaid (by key) with those in ``extra_dir``; sorted by key.

    Raises ``TemplateError`` for an invalid file or a key used twice in one directory.
    """
    by_key: dict[str, ReportTemplate] = {}
    for group in (_builtin(), _county(extra_dir) if extra_dir is not None else []):
        seen: set[str] = set()
        for template in group:
            if template.key in seen:
                raise TemplateError(f"{template.source}: template key {template.key!r} repeats")
            seen.add(template.key)
            by_key[template.key] = template
    return tuple(by_key[k] for k in sorted(by_key))


@lru_cache(maxsize=4)
def get_templates(extra_dir: Path | None = None) -> tuple[ReportTemplate, ...]:
    """``load_templates`` once per directory (templates change with a restart)."""
    return load_templates(extra_dir)


def default_templates() -> tuple[ReportTemplate, ...]:
    """The templates for this process's settings."""
    return get_templates(TemplateSettings().report_templates_dir)


def _study_text(study: Study) -> str:
    parts: list[str] = [study.study_description]
    for series in study.series:
        parts += [series.body_part_examined, series.series_description]
    parts += [str(v) for v in (study.text_fields or {}).values()]
    return "\n".join(p for p in parts if p).casefold()


def _study_modalities(study: Study) -> set[str]:
    found = {m.strip().upper() for m in re.split(r"[\\/,]", study.modalities) if m.strip()}
    found.update(s.modality.upper() for s in study.series if s.modality)
    return found


def rank_templates(
    templates: Iterable[ReportTemplate], *, study: Study
) -> list[tuple[int, ReportTemplate]]:
    """The templates that apply to ``study``, best first, with their scores."""
    text = _study_text(study)
    modalities = _study_modalities(study)
    scored = []
    for template in templates:
        score = template.score(category=study.category, modalities=modalities, text=text)
        if score is not None:
            scored.append((score, template))
    scored.sort(key=lambda pair: (-pair[0], pair[1].key))
    return scored


def best_template(templates: Sequence[ReportTemplate], *, study: Study) -> ReportTemplate:
    """The best match for ``study``; ``NoTemplate`` when none applies."""
    ranked = rank_templates(templates, study=study)
    if not ranked:
        raise NoTemplate()
    return ranked[0][1]


__all__ = [
    "CHOICE",
    "REPORT_FIELDS",
    "NoTemplate",
    "ReportTemplate",
    "TemplateError",
    "TemplateSettings",
    "best_template",
    "default_templates",
    "get_templates",
    "load_templates",
    "parse_template",
    "rank_templates",
    "unresolved_choices",
]
