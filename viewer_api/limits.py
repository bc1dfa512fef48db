"""A cap on request body size, enforced before a handler reads the body."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = "Request body too large"


class _TooLarge(HTTPException):
    """Raised from ``receive``: the route's body parsing lets an HTTPException through, so
    the app's own handler answers 413 (the middleware answers itself if nothing did)."""

    def __init__(self) -> None:
        super().__init__(413, TOO_LARGE)


class BodySizeLimit:
    """Pure ASGI middleware: 413 for a declared Content-Length over ``max_bytes``, and for a
    streamed (chunked) body as soon as it grows past it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                await _reply(scope, receive, send, 400, "Invalid Content-Length")
                return
            if too_large:
                await _reply(scope, receive, send, 413, TOO_LARGE)
                return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await _reply(scope, receive, send, 413, TOO_LARGE)


async def _reply(scope: Scope, receive: Receive, send: Send, code: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=code)(scope, receive, send)


__all__ = ["BodySizeLimit"]
