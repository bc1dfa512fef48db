"""Share links: a signed report and its images opened without a log-in, by a link a
signed-in user made on purpose.

Only the sha256 of a link's token is stored; the token itself is handed out once, when the
link is made. A link works until it expires, is revoked, its creator's account is disabled
or has its tokens revoked (``users.tokens_valid_after`` after the link was made), or the
report it was made for is withdrawn.

A signed report is never deleted here; it is withdrawn from a link when it is no longer the
signature the link was made for: a preliminary report reopened as a draft, a report signed
again after the link was made (a preliminary superseded by the final one included: its
``signed_at`` changes), or the study cancelled. An addendum keeps the signature (the final
report stays as signed, addenda follow it), so an amended report keeps its links.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from worklist.errors import WorklistError
from worklist.models import (
    REPORT_AMENDED,
    REPORT_FINAL,
    REPORT_PRELIMINARY,
    STATUS_CANCELLED,
    ShareLink,
    Study,
    User,
)

# secrets.token_urlsafe(32): 43 URL-safe characters
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")

STATE_ACTIVE = "active"
STATE_EXPIRED = "expired"
STATE_REVOKED = "revoked"
# the creator's account was disabled or its tokens revoked after the link was made
STATE_CREATOR_REVOKED = "creator_revoked"
# the signed report the link was made for is no longer the study's (see the module docstring)
STATE_REPORT_WITHDRAWN = "report_withdrawn"
_SIGNED = (REPORT_PRELIMINARY, REPORT_FINAL, REPORT_AMENDED)


class ShareLinkError(WorklistError):
    """The share link does not work."""

    # the link a refused use named, when there is one (for the audit trail)
    link_id: int | None = None
    study_uid: str = ""

    def of(self, link: ShareLink) -> ShareLinkError:
        self.link_id = link.id
        self.study_uid = link.study.study_instance_uid
        return self


class ShareLinkNotFound(ShareLinkError):
    """No such share link."""


class ShareLinkRevoked(ShareLinkError):
    """This share link has been revoked; ask the clinic for a new one."""


class ShareLinkWithdrawn(ShareLinkError):
    """The report this link showed was withdrawn or signed again; ask the clinic for a new link."""


class ShareLinkExpired(ShareLinkError):
    """This share link has expired; ask the clinic for a new one."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def create_share_link(
    *, session: Session, study: Study, creator: User, now: datetime, ttl_seconds: int
) -> tuple[ShareLink, str]:
    """A new link to ``study`` working for ``ttl_seconds``, and its token (never stored)."""
    token = secrets.token_urlsafe(32)
    link = ShareLink(
        token_sha256=token_hash(token),
        study=study,
        created_by=creator,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    session.add(link)
    session.flush()
    return link, token


def report_withdrawn(link: ShareLink) -> bool:
    """Whether the signed report ``link`` was made for is no longer the study's: its study
    cancelled, its report back to a draft, or signed again since the link was made."""
    study = link.study
    report = study.report
    if study.status == STATUS_CANCELLED or report is None or report.status not in _SIGNED:
        return True
    return report.signed_at is None or report.signed_at > link.created_at


def link_state(link: ShareLink, *, now: datetime) -> str:
    """``active``, ``revoked``, ``creator_revoked``, ``report_withdrawn`` or ``expired`` (in
    that precedence: a revocation is the more useful answer)."""
    if link.revoked_at is not None:
        return STATE_REVOKED
    creator = link.created_by
    after = creator.tokens_valid_after
    if not creator.is_active or (after is not None and after >= link.created_at):
        return STATE_CREATOR_REVOKED
    if report_withdrawn(link):
        return STATE_REPORT_WITHDRAWN
    if now >= link.expires_at:
        return STATE_EXPIRED
    return STATE_ACTIVE


def open_share_link(*, session: Session, token: str, now: datetime) -> ShareLink:
    """The working link ``token`` names. ``ShareLinkNotFound`` for a token this server never
    handed out (or a malformed one), ``ShareLinkRevoked`` for a revoked link or one whose
    creator lost their access, ``ShareLinkWithdrawn`` when its report was withdrawn,
    ``ShareLinkExpired`` past its expiry."""
    if not _TOKEN.fullmatch(token):
        raise ShareLinkNotFound()
    link = session.scalars(
        select(ShareLink)
        .where(ShareLink.token_sha256 == token_hash(token))
        .options(
            joinedload(ShareLink.created_by), joinedload(ShareLink.study).joinedload(Study.report)
        )
    ).one_or_none()
    if link is None:
        raise ShareLinkNotFound()
    state = link_state(link, now=now)
    if state == STATE_EXPIRED:
        raise ShareLinkExpired().of(link)
    if state == STATE_REPORT_WITHDRAWN:
        raise ShareLinkWithdrawn().of(link)
    if state != STATE_ACTIVE:
        raise ShareLinkRevoked().of(link)
    return link


def list_share_links(*, session: Session, study: Study) -> list[ShareLink]:
    """Every link made to ``study``, newest first."""
    return list(
        session.scalars(
            select(ShareLink)
            .where(ShareLink.study_id == study.id)
            .options(joinedload(ShareLink.created_by), joinedload(ShareLink.revoked_by))
            .order_by(ShareLink.created_at.desc(), ShareLink.id.desc())
        )
    )


def revoke_share_link(
    *, session: Session, study: Study, link_id: int, actor: User, now: datetime
) -> ShareLink:
    """Revoke link ``link_id`` of ``study`` (``ShareLinkNotFound`` if it is not one of
    the study's); revoking a revoked link changes nothing."""
    link = session.scalars(
        select(ShareLink).where(ShareLink.id == link_id, ShareLink.study_id == study.id)
    ).one_or_none()
    if link is None:
        raise ShareLinkNotFound()
    if link.revoked_at is None:
        link.revoked_at = now
        link.revoked_by = actor
        session.flush()
    return link


__all__ = [
    "STATE_ACTIVE",
    "STATE_CREATOR_REVOKED",
    "STATE_EXPIRED",
    "STATE_REPORT_WITHDRAWN",
    "STATE_REVOKED",
    "ShareLinkError",
    "ShareLinkExpired",
    "ShareLinkNotFound",
    "ShareLinkRevoked",
    "ShareLinkWithdrawn",
    "create_share_link",
    "link_state",
    "list_share_links",
    "open_share_link",
    "report_withdrawn",
    "revoke_share_link",
    "token_hash",
]
