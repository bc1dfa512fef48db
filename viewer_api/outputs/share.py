"""Time-limited share links: an HMAC-signed study UID and expiry, nothing else.

A token is ``base64url("<study uid>.<expiry unix seconds>") + "." + base64url(mac)`` where
the MAC is HMAC-SHA256 under a key derived from the API's secret key (so a share token can
never pass as an access token, nor the other way round). Nothing is stored: revoking every
link means changing the secret key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import UTC, datetime

from pydicom.uid import UID

_DOMAIN = b"teleread share link v1"
MAX_TOKEN_LENGTH = 256


class ShareTokenError(Exception):
    """The share link is not valid."""


class ShareTokenInvalid(ShareTokenError):
    """The share link is malformed or was not issued by this server."""


class ShareTokenExpired(ShareTokenError):
    """The share link has expired; ask the clinic for a new report print."""


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _DOMAIN, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_share_token(*, study_uid: str, expires_at: datetime, secret: str) -> str:
    """A token that opens ``study_uid``'s share page until ``expires_at``."""
    if not UID(study_uid).is_valid:
        raise ValueError("not a valid study instance UID")
    payload = f"{study_uid}.{int(expires_at.astimezone(UTC).timestamp())}".encode("ascii")
    mac = hmac.new(_key(secret), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def read_share_token(token: str, *, secret: str, now: datetime) -> tuple[str, datetime]:
    """The study UID and expiry a genuine, unexpired token names.

    Raises ``ShareTokenInvalid`` (malformed, tampered, another key) or ``ShareTokenExpired``.
    """
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise ShareTokenInvalid()
    payload_text, mac_text = token.split(".")
    try:
        payload = _unb64(payload_text)
        mac = _unb64(mac_text)
    except (binascii.Error, ValueError) as exc:
        raise ShareTokenInvalid() from exc
    expected = hmac.new(_key(secret), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise ShareTokenInvalid()
    try:
        study_uid, _, expiry_text = payload.decode("ascii").rpartition(".")
        expires_at = datetime.fromtimestamp(int(expiry_text), tz=UTC)
    except (UnicodeDecodeError, ValueError, OverflowError, OSError) as exc:
        raise ShareTokenInvalid() from exc
    if not study_uid or not UID(study_uid).is_valid:
        raise ShareTokenInvalid()
    if now >= expires_at:
        raise ShareTokenExpired()
    return study_uid, expires_at


__all__ = [
    "ShareTokenError",
    "ShareTokenExpired",
    "ShareTokenInvalid",
    "make_share_token",
    "read_share_token",
]
