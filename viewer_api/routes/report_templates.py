"""Report templates: the one that best fits a study (to prefill the editor) and the list of
them all."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from viewer_api.deps import Audit, ReaderUser, VisibleStudy
from viewer_api.errors import Misconfigured
from viewer_api.schemas import ReportTemplateOut
from worklist import report_templates
from worklist.audit import AuditAction

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["reports"])


def get_templates(request: Request) -> tuple[report_templates.ReportTemplate, ...]:
    """The app's templates (``app.state.report_templates`` if set, else the settings')."""
    found: tuple[report_templates.ReportTemplate, ...] | None = getattr(
        request.app.state, "report_templates", None
    )
    if found is not None:
        return found
    try:
        return report_templates.default_templates()
    except report_templates.TemplateError as exc:
        logger.error(
            "report templates invalid: %s", exc, extra={"action": "report_templates_invalid"}
        )
        raise Misconfigured("The report templates are misconfigured") from exc


TemplatesDep = Annotated[tuple[report_templates.ReportTemplate, ...], Depends(get_templates)]


def _template_out(template: report_templates.ReportTemplate) -> ReportTemplateOut:
    return ReportTemplateOut(
        key=template.key,
        name=template.name,
        categories=list(template.categories),
        modalities=list(template.modalities),
        keywords=list(template.keywords),
        findings=template.findings,
        impression=template.impression,
        recommendation=template.recommendation,
    )


@router.get(
    "/studies/{study_uid}/report/template",
    response_model=ReportTemplateOut,
    responses={status.HTTP_404_NOT_FOUND: {"description": "No such study, or no template"}},
)
def get_template(
    user: ReaderUser, study: VisibleStudy, audit: Audit, templates: TemplatesDep
) -> ReportTemplateOut:
    """The template that best fits the study (category first, then modality, body part and
    description keywords), to prefill the editor."""
    action = AuditAction.REPORT_TEMPLATE_VIEWED
    with audit.refusals(action, object_id=study.study_instance_uid):
        template = report_templates.best_template(templates, study=study)
    audit(action, object_id=study.study_instance_uid, detail={"template": template.key})
    return _template_out(template)


@router.get("/report-templates", response_model=list[ReportTemplateOut])
def list_templates(user: ReaderUser, templates: TemplatesDep) -> list[ReportTemplateOut]:
    """Every template (built-in and the county's), by key. Holds no patient data, so it
    leaves no audit event."""
    return [_template_out(t) for t in templates]


__all__ = ["TemplatesDep", "get_templates", "router"]
