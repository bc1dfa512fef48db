"""Access tokens: HS256 JWTs carrying the user id (``sub``), the role, the issue time, an
expiry and, for a browser's session cookie, the web session (``sid``); the CSRF token that
goes with a session cookie; the short-lived cache of the accounts that valid tokens name;
and the failed-login throttle."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import jwt
from cachetools import LRUCache, TTLCache
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import make_transient_to_detached

from viewer_api.errors import InvalidToken
from viewer_api.settings import ApiSettings
from worklist.models import User

ALGORITHM = "HS256"
TOKEN_URL = "/api/v1/auth/token"
# the web pages' session: an HttpOnly, SameSite=Strict cookie holding a token with a ``sid``,
# and for each state-changing request the header below with the session's CSRF token
SESSION_COOKIE = "teleread_session"
CSRF_HEADER = "X-CSRF-Token"

oauth2_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    role: str
    expires_at: datetime
    # None for a token without ``iat`` (refused once the account's tokens were revoked)
    issued_at: datetime | None = None
    # the web session a browser's cookie token belongs to (accepted while it is open)
    session_id: str | None = None


def _issued_at(now: datetime) -> float:
    """``iat`` to the millisecond (RFC 7519 allows a fraction), so a revocation refuses the
    tokens issued before it in the same second but not those issued a moment after."""
    return math.floor(now.timestamp() * 1000) / 1000


def create_access_token(
    *, user: User, settings: ApiSettings, now: datetime, session_id: str | None = None
) -> str:
    """A signed token for ``user`` valid for ``settings.token_ttl_seconds`` from ``now``; with
    ``session_id``, the token of that web session (valid only while the session is open)."""
    payload: dict[str, object] = {
        "sub": str(user.id),
        "role": user.role,
        "iat": _issued_at(now),
        "exp": int((now + timedelta(seconds=settings.token_ttl_seconds)).timestamp()),
    }
    if session_id is not None:
        payload["sid"] = session_id
    return jwt.encode(payload, settings.secret_key.get_secret_value(), algorithm=ALGORITHM)


def csrf_token(session_token: str, *, settings: ApiSettings) -> str:
    """The CSRF token that goes with a session cookie's token (an HMAC of it: nothing to
    store; another site can neither read the cookie nor compute this)."""
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, b"csrf\0" + session_token.encode(), hashlib.sha256).hexdigest()


def csrf_matches(session_token: str, given: str | None, *, settings: ApiSettings) -> bool:
    expected = csrf_token(session_token, settings=settings)
    return given is not None and hmac.compare_digest(expected, given)


def decode_access_token(token: str, *, settings: ApiSettings) -> TokenClaims:
    """The claims of a valid, unexpired token; ``InvalidToken`` otherwise."""
    try:
        payload = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp"]},
        )
        user_id = int(payload["sub"])
        role = str(payload.get("role", ""))
        expires_at = datetime.fromtimestamp(int(payload["exp"]), UTC)
        iat = payload.get("iat")
        issued_at = datetime.fromtimestamp(float(iat), UTC) if iat is not None else None
        sid = payload.get("sid")
        session_id = str(sid) if sid is not None else None
    except (jwt.PyJWTError, ValueError, TypeError, KeyError, OverflowError, OSError) as exc:
        raise InvalidToken() from exc
    return TokenClaims(
        user_id=user_id,
        role=role,
        expires_at=expires_at,
        issued_at=issued_at,
        session_id=session_id,
    )


def account_accepts(user: User, claims: TokenClaims) -> bool:
    """Whether ``user`` (the account ``claims`` names) still honours the token: active, the
    same role, and the token issued after the account's tokens were last revoked."""
    if not user.is_active or user.role != claims.role:
        return False
    revoked_at = user.tokens_valid_after
    if revoked_at is None:
        return True
    return claims.issued_at is not None and claims.issued_at > revoked_at


class UserCache:
    """Token -> a detached copy of the active account it names, trusted for ``ttl`` seconds.

    Saves decoding the token and loading the account on every request. The price: an
    account disabled, or given another role or site, keeps working with a token it already
    used for at most ``ttl`` seconds in each API process (``TELEREAD_API_USER_CACHE_SECONDS``,
    2 s by default, 10 s at most; 0 turns the cache off). The same bound holds for a
    revocation (``tokens_valid_after``): the process that revokes drops the account from its
    own cache at once (``discard_user``); the other replicas, and every API process when the
    ``teleread users`` command revokes, honour it within ``ttl``. Keyed by the whole token,
    so a new token (new ``iat``, role) is always checked against the database first; a
    token's expiry is checked on every hit. Holds at most ``max_entries`` tokens (the
    oldest go first).
    """

    def __init__(self, ttl: float, *, max_entries: int = 4096) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        # token -> (account, the token's expiry); cachetools drops an entry ``ttl`` seconds
        # after it was put, and the least recently used one when full
        self._items: TTLCache[str, tuple[User, float]] = TTLCache(
            maxsize=max_entries, ttl=max(ttl, 0.001), timer=time.monotonic
        )
        self._lock = threading.Lock()  # a TTLCache is not thread-safe

    def get(self, token: str) -> User | None:
        """The cached account (detached: ``session.merge(user, load=False)`` it), or None."""
        if self.ttl <= 0:
            return None
        with self._lock:
            item = self._items.get(token)
            if item is None:
                return None
            user, expires_at = item
            if time.time() >= expires_at:
                del self._items[token]
                return None
            return user

    def put(self, token: str, user: User, claims: TokenClaims) -> None:
        """Remember ``user`` (already checked active, with the token's role) for ``token``."""
        if self.ttl <= 0:
            return
        copy = User(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            password_hash=user.password_hash,
            role=user.role,
            site_id=user.site_id,
            is_active=user.is_active,
            created_at=user.created_at,
            tokens_valid_after=user.tokens_valid_after,
        )
        make_transient_to_detached(copy)
        with self._lock:
            self._items[token] = (copy, claims.expires_at.timestamp())

    def discard(self, token: str) -> None:
        """Forget one token (its web session ended)."""
        with self._lock:
            self._items.pop(token, None)

    def discard_user(self, user_id: int) -> None:
        """Forget every token of one account (after disabling it or revoking its tokens)."""
        with self._lock:
            for token in [t for t, (u, _) in self._items.items() if u.id == user_id]:
                del self._items[token]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass(slots=True)
class _AccountFailures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


@dataclass(slots=True)
class _AddressFailures:
    # the times of the last ``max_failures_per_address`` failures
    times: deque[float]
    # name -> when it last failed from this address (at most ``max_failures_per_address``)
    names: OrderedDict[str, float] = field(default_factory=OrderedDict)


class LoginThrottle:
    """Failed log-ins: an account locked out with exponential back-off, and an address that
    fails too often held back for the names it failed with, never for the others.

    - **Per account** (the name as typed, case and outer spaces aside; from any address, so
      rotating addresses does not help a guesser): after ``max_failures`` failures the
      account is locked for ``lockout_seconds``, and each failure after a lock ends locks it
      for twice as long as the one before, up to ``lockout_max_seconds``. While locked, its
      log-ins are refused (429) before the password is checked. A successful log-in clears
      the count; so does ``forget_seconds`` without a failure.
    - **Per address**, counting failures only: once an address has had
      ``max_failures_per_address`` failures within ``window_seconds``, a name that fails from
      it is refused there until the window has moved on (one guess per name and window
      for a sprayer). Names that have not failed from the address are still checked, so the
      other users behind a clinic's NAT log in with their right passwords whatever one of
      them, or an intruder among them, does.

    Times are the app clock's (seconds), so tests can move them. Thread-safe; at most
    ``max_entries`` accounts and as many addresses are remembered (the least recently
    touched go first: cachetools' ``LRUCache``), so a flood of invented names cannot exhaust
    memory. Hand-written around that cache: a lock-out that doubles is a few lines, and the
    rate-limit libraries (limits, slowapi) count requests per key in fixed or moving windows,
    with neither the back-off nor the per-name hold.

    In-process, like the account cache: with several API replicas each counts on its own, so
    an account gets up to ``max_failures`` x replicas failures before it is locked (the
    back-off doubles from there in each).
    """

    # the back-off stops doubling here (2**30 lockouts is beyond any cap)
    MAX_DOUBLINGS = 30

    def __init__(
        self,
        *,
        max_failures: int,
        lockout_seconds: float,
        lockout_max_seconds: float,
        forget_seconds: float,
        max_failures_per_address: int,
        window_seconds: float,
        max_entries: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self.lockout_max_seconds = max(lockout_max_seconds, lockout_seconds)
        # a lock is never forgotten before it ends
        self.forget_seconds = max(forget_seconds, self.lockout_max_seconds)
        self.max_failures_per_address = max_failures_per_address
        self.window = window_seconds
        self._accounts: LRUCache[str, _AccountFailures] = LRUCache(maxsize=max_entries)
        self._addresses: LRUCache[str, _AddressFailures] = LRUCache(maxsize=max_entries)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> LoginThrottle:
        return cls(
            max_failures=settings.login_max_failures,
            lockout_seconds=settings.login_lockout_seconds,
            lockout_max_seconds=settings.login_lockout_max_seconds,
            forget_seconds=settings.login_forget_seconds,
            max_failures_per_address=settings.login_max_failures_per_address,
            window_seconds=settings.login_window_seconds,
            max_entries=settings.login_throttle_max_entries,
        )

    @staticmethod
    def _name(username: str) -> str:
        return username.strip().casefold()[:64]

    def lockout_for(self, count: int) -> float:
        """How long an account is locked after its ``count``-th failure (0: not locked)."""
        if self.max_failures <= 0 or count < self.max_failures:
            return 0.0
        doublings = min(count - self.max_failures, self.MAX_DOUBLINGS)
        return min(self.lockout_seconds * 2**doublings, self.lockout_max_seconds)

    def _account(self, name: str, now: float) -> _AccountFailures | None:
        state = self._accounts.get(name)
        if state is not None and now - state.last > self.forget_seconds:
            del self._accounts[name]
            return None
        return state

    def _address(self, address: str, now: float) -> _AddressFailures | None:
        state = self._addresses.get(address)
        if state is None:
            return None
        while state.times and state.times[0] <= now - self.window:
            state.times.popleft()
        while state.names and next(iter(state.names.values())) <= now - self.window:
            state.names.popitem(last=False)
        if not state.times:
            del self._addresses[address]
            return None
        return state

    def retry_after(self, username: str, address: str, now: float) -> int:
        """Seconds to wait before trying again (at least 1), or 0: go ahead."""
        name, address = self._name(username), address[:64]
        wait = 0.0
        with self._lock:
            account = self._account(name, now)
            if account is not None:
                wait = account.locked_until - now
            limit = self.max_failures_per_address
            state = self._address(address, now) if limit > 0 else None
            if state is not None and len(state.times) >= limit and name in state.names:
                # held until the address is under its limit or this name's failure is old
                ends = min(state.times[-limit], state.names[name]) + self.window
                wait = max(wait, ends - now)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def failed(self, username: str, address: str, now: float) -> None:
        """Count one failed attempt."""
        name, address = self._name(username), address[:64]
        with self._lock:
            if self.max_failures > 0:
                account = self._account(name, now) or _AccountFailures()
                account.count += 1
                account.last = now
                lockout = self.lockout_for(account.count)
                if lockout:
                    account.locked_until = now + lockout
                self._accounts[name] = account
            limit = self.max_failures_per_address
            if limit > 0:
                state = self._address(address, now) or _AddressFailures(deque(maxlen=limit))
                state.times.append(now)
                state.names.pop(name, None)
                state.names[name] = now
                while len(state.names) > limit:
                    state.names.popitem(last=False)
                self._addresses[address] = state

    def succeeded(self, username: str, address: str) -> None:
        """The name logged in (from this address): forget its failures."""
        name, address = self._name(username), address[:64]
        with self._lock:
            self._accounts.pop(name, None)
            state = self._addresses.get(address)
            if state is not None:
                state.names.pop(name, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._accounts) + len(self._addresses)


__all__ = [
    "ALGORITHM",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "TOKEN_URL",
    "LoginThrottle",
    "TokenClaims",
    "UserCache",
    "account_accepts",
    "create_access_token",
    "csrf_matches",
    "csrf_token",
    "decode_access_token",
    "oauth2_scheme",
]
