"""Limits every request meets before a handler sees it: a cap on the body size (enforced
before the body is read), and URL inputs a database can store (``check_url_inputs``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.keys import is_valid_uid
from viewer_api.errors import CODES_BY_STATUS, InvalidParameter, InvalidUID, answer

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
            if not declared.isascii() or not declared.isdigit():
                await _reply(scope, receive, send, 400, "Invalid Content-Length")
                return
            if int(declared) > self.max_bytes:
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
    await answer(code, CODES_BY_STATUS[code], detail)(scope, receive, send)


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


__all__ = ["UID_PATTERN", "BodySizeLimit", "check_url_inputs", "document_url_rules"]
