"""A report's share links: what the clinic and readers see of them (never the token, which
only the answer that made the link carries, in ``url``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from worklist.models import ShareLink


class ShareLinkOut(BaseModel):
    id: int
    study_instance_uid: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    # active | expired | revoked | creator_revoked (the creator's account was disabled or
    # its tokens revoked) | report_withdrawn (reopened, signed again, or its study cancelled)
    state: str
    revoked_at: datetime | None
    revoked_by: str | None
    # the link itself: only in the answer that made it (the server keeps only its hash)
    url: str | None = None

    @classmethod
    def from_link(cls, link: ShareLink, *, state: str, url: str | None = None) -> ShareLinkOut:
        return cls(
            id=link.id,
            study_instance_uid=link.study.study_instance_uid,
            created_by=link.created_by.username,
            created_at=link.created_at,
            expires_at=link.expires_at,
            state=state,
            revoked_at=link.revoked_at,
            revoked_by=link.revoked_by.username if link.revoked_by else None,
            url=url,
        )


__all__ = ["ShareLinkOut"]
