"""Limits every request meets before a handler sees it: ``RequestGate`` (body size, a token
before a large body, slow senders, and how many requests run at once), and URL inputs a
database can store (``check_url_inputs``)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.keys import is_valid_uid
from viewer_api.errors import CODES_BY_STATUS, InvalidParameter, InvalidToken, InvalidUID, answer
from viewer_api.security import SESSION_COOKIE, decode_access_token
from viewer_api.settings import ApiSettings

logger = logging.getLogger(__name__)

TOO_LARGE = "Request body too large"
BUSY = "The server is busy; retry shortly"
# answered without a slot: cheap, async, no database (a probe must answer under any load)
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# long-lived responses: the slot is held while the stream is set up, not while it stays open
STREAM_PATHS = frozenset({"/api/v1/events"})
# the only bodies larger than ``max_json_bytes``: a gateway's batch of announced instances
LARGE_BODY_PREFIXES = ("/api/v1/ingest/",)
IMAGE_PREFIXES = ("/dicomweb/",)
GROUP_API = "api"
GROUP_IMAGES = "images"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# the gate's answers' codes (viewer_api.errors: every error is {"detail", "code"})
_CODES = {408: "request_timeout", 413: "too_large", 503: "busy"}


class Slots:
    """At most ``limit`` holders at once; up to ``queue_depth`` more wait, first come first
    served, each up to the time it is given. Thread-safe and not tied to one event loop (a
    test client may run each request on a loop of its own)."""

    def __init__(self, name: str, limit: int, queue_depth: int) -> None:
        self.name = name
        self.limit = limit
        self.queue_depth = queue_depth
        self.active = 0
        self.refused = 0
        self._waiters: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, wait_seconds: float) -> bool:
        """True with a slot held (give it back with ``release``); False when none came free
        in ``wait_seconds`` or too many are waiting already."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.active < self.limit and not self._waiters:
                self.active += 1
                return True
            if len(self._waiters) >= self.queue_depth:
                self.refused += 1
                return False
            waiter = _Waiter(loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await asyncio.wait((waiter.future,), timeout=wait_seconds)
        except asyncio.CancelledError:
            if not self._withdraw(waiter):
                self.release()  # handed over just as we were cancelled: pass it on
            raise
        if self._withdraw(waiter):
            self.refused += 1
            return False
        return True

    def _withdraw(self, waiter: _Waiter) -> bool:
        """Stop waiting; False when the slot was already handed to ``waiter``."""
        with self._lock:
            if waiter.granted:
                return False
            self._waiters.remove(waiter)
            return True

    def release(self) -> None:
        """Give a slot back: to the longest waiter, else to the pool."""
        while True:
            with self._lock:
                if not self._waiters:
                    self.active -= 1
                    return
                waiter = self._waiters.popleft()
                waiter.granted = True
            try:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
                return
            except RuntimeError:  # its event loop is gone, and the request with it
                continue


@dataclass(slots=True, eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def group_for(path: str) -> str:
    return GROUP_IMAGES if path.startswith(IMAGE_PREFIXES) else GROUP_API


def body_cap(path: str, settings: ApiSettings) -> int:
    if path.startswith(LARGE_BODY_PREFIXES):
        return settings.max_request_bytes
    return min(settings.max_json_bytes, settings.max_request_bytes)


def key_cap(path: str, settings: ApiSettings) -> int:
    if path.startswith(LARGE_BODY_PREFIXES):
        return settings.max_ingest_json_keys
    return settings.max_json_keys


def count_keys(body: bytes) -> int:
    """The keys of a JSON document, counted without parsing it: each is a string followed
    by a colon (a ``":`` inside a string value counts too: an upper bound)."""
    return body.count(b'":')


class _Refused(Exception):
    def __init__(self, code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.headers = headers


class RequestGate:
    """Pure ASGI middleware that every request meets before a handler sees it, in order:

    1. the probes (``EXEMPT_PATHS``) go straight through;
    2. a declared ``Content-Length`` over the route's cap (``body_cap``) is 413, unread;
    3. a body over ``unauthenticated_body_bytes`` (or of unknown length) without a valid
       bearer token or session cookie is 401, unread (the token's signature and expiry;
       the account and the CSRF token are the route's to check);
    4. the body is read whole (413 as soon as a streamed one passes the cap; 408 when the
       client sends nothing for ``body_idle_seconds``), so a slow client never holds a slot;
       a JSON body with more keys than the route's cap (``key_cap``: a few thousand, the
       ingest routes' half a million) is 413 before anything parses it, so a body of a
       million unknown keys costs a byte count, not seconds of parsing and validation;
    5. a slot of the route's group (``api_concurrency`` / ``image_concurrency``): when all
       are taken the request waits up to ``queue_seconds``, then 503 with ``Retry-After``.
       An event stream gives its slot back once its response has started.

    The thread pool is sized here too (``settings.worker_threads``, the anyio default
    limiter of the running loop), so threads, slots and database connections
    (``settings.database_connections``) are sized together from one place.
    """

    def __init__(self, app: ASGIApp, *, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings
        self.groups = {
            GROUP_API: Slots(GROUP_API, settings.api_concurrency, settings.queue_depth),
            GROUP_IMAGES: Slots(GROUP_IMAGES, settings.image_concurrency, settings.queue_depth),
        }
        self.retry_after = str(max(1, math.ceil(settings.queue_seconds)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        limiter = anyio.to_thread.current_default_thread_limiter()
        if limiter.total_tokens != self.settings.worker_threads:
            limiter.total_tokens = self.settings.worker_threads
        try:
            receive = await self._read_body(scope, receive)
        except _Refused as refused:
            await _reply(scope, send, refused.code, refused.detail, refused.headers)
            return
        except _Disconnected:
            return
        slots = self.groups[group_for(scope["path"])]
        if not await slots.acquire(self.settings.queue_seconds):
            logger.warning(
                "request refused: busy",
                extra={"action": "request_shed", "group": slots.name, "path": scope["path"]},
            )
            await _reply(scope, send, 503, BUSY, {"Retry-After": self.retry_after})
            return
        held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                slots.release()

        send_on: Send = send
        if scope["path"] in STREAM_PATHS:

            async def releasing_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    give_back()
                await send(message)

            send_on = releasing_send
        try:
            await self.app(scope, receive, send_on)
        finally:
            give_back()

    async def _read_body(self, scope: Scope, receive: Receive) -> Receive:
        """The request's body read whole (checked as above), replayed to the app."""
        if scope["method"] not in _BODY_METHODS:
            return receive
        headers = Headers(scope=scope)
        cap = body_cap(scope["path"], self.settings)
        declared = headers.get("content-length")
        length: int | None = None
        if declared is not None:
            if not declared.isascii() or not declared.isdigit():
                raise _Refused(400, "Invalid Content-Length")
            length = int(declared)
            if length > cap:
                raise _Refused(413, TOO_LARGE)
            if length == 0:
                return receive
        elif "chunked" not in headers.get("transfer-encoding", "").lower():
            return receive  # no body
        if (length is None or length > self.settings.unauthenticated_body_bytes) and not (
            self._has_valid_token(headers)
        ):
            raise _Refused(401, "Not authenticated", {"WWW-Authenticate": "Bearer"})
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.settings.body_idle_seconds)
            except TimeoutError:
                logger.info(
                    "request body timed out",
                    extra={"action": "request_body_timeout", "path": scope["path"]},
                )
                raise _Refused(
                    408, "Request body not received in time", {"Connection": "close"}
                ) from None
            if message["type"] == "http.disconnect":
                raise _Disconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise _Refused(413, TOO_LARGE)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        keys = key_cap(scope["path"], self.settings)
        if "json" in headers.get("content-type", "").lower() and count_keys(body) > keys:
            raise _Refused(413, f"The JSON body has more than {keys} keys")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        return replay

    def _has_valid_token(self, headers: Headers) -> bool:
        """A bearer token, or the web pages' session cookie, that is signed and unexpired
        (whether its account still honours it, and the CSRF check, are the route's)."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            token = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE, "")
        if not token.strip():
            return False
        try:
            decode_access_token(token.strip(), settings=self.settings)
        except InvalidToken:
            return False
        return True


class _Disconnected(Exception):
    """The client went away while sending its body."""


async def _reply(
    scope: Scope, send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    code = _CODES.get(status) or CODES_BY_STATUS.get(status, "error")
    await answer(status, code, detail, headers)(scope, no_body, send)


class ThreadedJSONRequest(Request):
    """A request whose JSON body is parsed in a worker thread, not on the event loop (a
    gateway's announcement runs to megabytes: parsing it on the loop would stall every
    other connection, ``/healthz`` included)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await run_in_threadpool(json.loads, body)
        return self._json


class ThreadedJSONRoute(APIRoute):
    """An ``APIRoute`` that hands its endpoint a ``ThreadedJSONRequest``: the route class of
    the routers whose bodies may be large (the gateway's)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def threaded(request: Request) -> Response:
            return await handler(ThreadedJSONRequest(request.scope, request.receive))

        return threaded


async def check_url_inputs(request: Request) -> None:
    """App-wide dependency, before the route's own: no NUL in any path or query parameter
    (PostgreSQL cannot store or even compare it), and a path parameter named ``*_uid``
    must follow the DICOM UID grammar (at most 64 characters of digits and dots)."""
    for name, value in request.path_params.items():
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            raise InvalidParameter(f"{name} must not contain NUL")
        if name.endswith("_uid") and not is_valid_uid(value):
            raise InvalidUID(f"{name} is not a DICOM UID")
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise InvalidParameter("query parameters must not contain NUL")


UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"


def document_url_rules(app: FastAPI) -> None:
    """Show ``check_url_inputs``' UID rule in the OpenAPI schema: every ``*_uid`` path
    parameter gets the UID grammar as its pattern and 64 as its maximum length."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for parameter in operation.get("parameters", []):
                        if parameter.get("in") == "path" and parameter["name"].endswith("_uid"):
                            rules = {"pattern": UID_PATTERN, "minLength": 1, "maxLength": 64}
                            parameter.setdefault("schema", {}).update(rules)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = [
    "EXEMPT_PATHS",
    "STREAM_PATHS",
    "UID_PATTERN",
    "RequestGate",
    "Slots",
    "ThreadedJSONRequest",
    "ThreadedJSONRoute",
    "body_cap",
    "check_url_inputs",
    "count_keys",
    "document_url_rules",
    "group_for",
    "key_cap",
]
