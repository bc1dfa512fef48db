"""A share link's state: revoked, its creator's access gone, expired, or active."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worklist.models import ShareLink, User
from worklist.share_links import link_state, token_hash

NOW = datetime(2026, 12, 6, 10, tzinfo=UTC)


def _link(**user: object) -> ShareLink:
    creator = User(username="nurse", role="clinic", **({"is_active": True} | user))
    return ShareLink(
        token_sha256=token_hash("t"),
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


def test_only_the_hash_is_kept() -> None:
    assert token_hash("abc") != "abc" and len(token_hash("abc")) == 64
