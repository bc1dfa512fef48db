"""The reading worklist: list (filtered, paged), claim, renew, release, claim the next most
urgent study. Admin reassign/cancel and urgency flags live in ``routes/admin.py``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.orm import Session

from viewer_api.deps import (
    Audit,
    NowDep,
    ReaderUser,
    SessionDep,
    ViewerUser,
    WorklistSettingsDep,
    reads_only,
)
from viewer_api.json_body import JsonBody
from viewer_api.schemas import MAX_OFFSET, WorkflowItem
from viewer_api.worklist_pages import Page, WorklistPages
from worklist import claims, events, repository
from worklist.audit import AuditAction
from worklist.models import Study, User

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/worklist", tags=["worklist"])

MAX_PAGE = 500
TOTAL_HEADER = "X-Total-Count"
CAPPED_HEADER = "X-Total-Count-Capped"
WORKLIST_JSON: JsonBody[list[WorkflowItem]] = JsonBody(list[WorkflowItem])


def publish_claim_event(
    *, session: Session, kind: str, study: Study, user: User, now: datetime, **extra: object
) -> None:
    """Tell every reader's worklist page that a study was taken or given back."""
    events.publish_study_event(
        session=session,
        kind=kind,
        study=study,
        site_code=study.site.code,
        now=now,
        extra={"by": user.username, **extra},
    )


@router.get("", response_model=list[WorkflowItem])
@reads_only
def list_worklist(
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    audit: Audit,
    now: NowDep,
    site: Annotated[str | None, Query(max_length=32)] = None,
    modality: Annotated[str | None, Query(max_length=16)] = None,
    category: Annotated[str | None, Query(max_length=32)] = None,
    study_status: Annotated[str | None, Query(alias="status", max_length=16)] = None,
    reader: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    """Visible studies, most urgent then oldest; the total (all pages) in ``X-Total-Count``
    (at most ``COUNT_CAP``; ``X-Total-Count-Capped: true`` when there are more). ``q``
    finds a patient by name ("王小明" or "王"), patient ID or accession number, in any
    status unless ``status`` narrows it.

    Every open worklist page asks for this every few seconds: a page read in the last
    second is served again unless studies changed since (``viewer_api.worklist_pages``;
    ``Cache-Control: no-cache`` asks for a fresh read). The view is audited off the request
    path (``Auditor.view``), so the request only reads; the body is made here, in the
    worker thread (``viewer_api.json_body``), and the read transaction ended here too (one
    trip to the thread pool per request, not two)."""
    filters = {
        "site_code": site,
        "modality": modality,
        "category": category,
        "status": study_status,
        "reader": reader,
        "search": q.strip() if q and q.strip() else None,
    }
    pages: WorklistPages = request.app.state.worklist_pages

    def read() -> Page:
        rows = repository.list_worklist(
            session=session, viewer=user, now=now, limit=limit, offset=offset, **filters
        )
        total = repository.page_total(len(rows), limit=limit, offset=offset)
        if total is None:  # a full page, or one past the end: count
            total = repository.count_worklist(
                session=session, viewer=user, cap=repository.COUNT_CAP + 1, **filters
            )
        return Page(rows, total)

    fresh = "no-cache" in request.headers.get("cache-control", "")
    page = pages.page(user, filters, limit=limit, offset=offset, fresh=fresh, read=read)
    headers: dict[str, str] = {}
    total = page.total
    if total > repository.COUNT_CAP:  # a backlog this deep is not counted to the last study
        total = repository.COUNT_CAP
        headers[CAPPED_HEADER] = "true"
    headers[TOTAL_HEADER] = str(total)
    audit.view(
        AuditAction.WORKLIST_VIEW,
        detail={
            "count": len(page.rows),
            "total": total,
            "offset": offset,
            "filters": {k: v for k, v in filters.items() if v is not None},
        },
    )
    response = WORKLIST_JSON.response(
        [WorkflowItem.from_study_at(s, now) for s in page.rows], headers=headers
    )
    session.commit()  # the read ends here: get_db then has no I/O left to hand to a thread
    return response


@router.post(
    "/next",
    response_model=WorkflowItem,
    responses={status.HTTP_204_NO_CONTENT: {"description": "Nothing is waiting"}},
)
def claim_next(
    session: SessionDep,
    user: ReaderUser,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
) -> WorkflowItem | Response:
    """Claim the most urgent, then oldest, free study; 204 when nothing waits."""
    study = claims.claim_next(session=session, reader=user, now=now, lease=wl_settings.lease)
    if study is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    audit(AuditAction.STUDY_CLAIMED, object_id=study.study_instance_uid, detail={"next": True})
    publish_claim_event(
        session=session, kind=events.KIND_STUDY_CLAIMED, study=study, user=user, now=now
    )
    return WorkflowItem.from_study_at(study, now)


@router.post(
    "/{study_uid}/claim",
    response_model=WorkflowItem,
    responses={status.HTTP_409_CONFLICT: {"description": "Another reader holds it"}},
)
def claim(
    study_uid: str,
    session: SessionDep,
    user: ReaderUser,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
) -> WorkflowItem:
    study = claims.claim_study(
        session=session, study_uid=study_uid, reader=user, now=now, lease=wl_settings.lease
    )
    audit(AuditAction.STUDY_CLAIMED, object_id=study.study_instance_uid)
    publish_claim_event(
        session=session, kind=events.KIND_STUDY_CLAIMED, study=study, user=user, now=now
    )
    return WorkflowItem.from_study_at(study, now)


@router.post(
    "/{study_uid}/renew",
    response_model=WorkflowItem,
    responses={status.HTTP_403_FORBIDDEN: {"description": "You do not hold the claim"}},
)
def renew(
    study_uid: str,
    session: SessionDep,
    user: ReaderUser,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
) -> WorkflowItem:
    """Extend your lease (the reader calls this while it works on the study)."""
    study = claims.renew_claim(
        session=session, study_uid=study_uid, reader=user, now=now, lease=wl_settings.lease
    )
    expires_at = study.claim_expires_at.isoformat() if study.claim_expires_at else ""
    audit(
        AuditAction.CLAIM_RENEWED,
        object_id=study.study_instance_uid,
        detail={"expires_at": expires_at},
    )
    return WorkflowItem.from_study_at(study, now)


@router.post("/{study_uid}/release", response_model=WorkflowItem)
def release(
    study_uid: str,
    session: SessionDep,
    user: ReaderUser,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
) -> WorkflowItem:
    study = claims.release_study(
        session=session,
        study_uid=study_uid,
        reader=user,
        now=now,
        stable_seconds=wl_settings.stable_seconds,
    )
    audit(AuditAction.STUDY_RELEASED, object_id=study.study_instance_uid)
    publish_claim_event(
        session=session, kind=events.KIND_STUDY_RELEASED, study=study, user=user, now=now
    )
    return WorkflowItem.from_study_at(study, now)
