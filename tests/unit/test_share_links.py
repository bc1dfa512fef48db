"""A share link's state: revoked, its creator's access gone, its report withdrawn, expired,
or active."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worklist.models import Report, ShareLink, Study, User
from worklist.share_links import link_state, token_hash

NOW = datetime(2026, 12, 6, 10, tzinfo=UTC)


def _link(**user: object) -> ShareLink:
    creator = User(username="nurse", role="clinic", **({"is_active": True} | user))
    study = Study(study_instance_uid="1.2.3", status="final")
    study.report = Report(status="final", signed_at=NOW - timedelta(minutes=5))
    return ShareLink(
        token_sha256=token_hash("t"),
        study=study,
        created_by=creator,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=24),
    )


def test_states() -> None:
    assert link_state(_link(), now=NOW) == "active"
    assert link_state(_link(), now=NOW + timedelta(hours=24)) == "expired"
    revoked = _link()
    revoked.revoked_at = NOW
    assert link_state(revoked, now=NOW + timedelta(hours=25)) == "revoked"
    assert link_state(_link(is_active=False), now=NOW) == "creator_revoked"
    assert link_state(_link(tokens_valid_after=NOW), now=NOW) == "creator_revoked"
    # a revocation of the creator's tokens before the link was made does not touch it
    earlier = NOW - timedelta(seconds=1)
    assert link_state(_link(tokens_valid_after=earlier), now=NOW) == "active"


def test_the_link_dies_with_the_signature_it_was_made_for() -> None:
    amended = _link()
    assert amended.study.report is not None
    amended.study.report.status = amended.study.status = "amended"  # addenda keep it
    assert link_state(amended, now=NOW) == "active"
    reopened = _link()
    assert reopened.study.report is not None
    reopened.study.report.status, reopened.study.report.signed_at = "draft", None
    assert link_state(reopened, now=NOW) == "report_withdrawn"
    signed_again = _link()
    assert signed_again.study.report is not None
    signed_again.study.report.signed_at = NOW + timedelta(seconds=1)
    assert link_state(signed_again, now=NOW) == "report_withdrawn"
    cancelled = _link()
    cancelled.study.status = "cancelled"
    assert link_state(cancelled, now=NOW) == "report_withdrawn"
    # withdrawn before expired: the more useful answer
    assert link_state(cancelled, now=NOW + timedelta(hours=25)) == "report_withdrawn"


def test_only_the_hash_is_kept() -> None:
    assert token_hash("abc") != "abc" and len(token_hash("abc")) == 64
