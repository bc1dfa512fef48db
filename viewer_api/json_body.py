"""JSON answers made by the route itself, in its worker thread.

A plain ``def`` route's return value costs FastAPI a second trip to the thread pool (it
validates the value against ``response_model`` there) and then its serialization on the
event loop, where every other connection (``/healthz`` included) waits for it. The routes
that every open worklist page calls every few seconds return ``JsonBody.response(value)``
instead: the bytes are made where the route runs, by the same pydantic serializer FastAPI
uses, and the route's ``response_model`` still documents the body in the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from fastapi.responses import Response
from pydantic import TypeAdapter

T = TypeVar("T")


class JsonBody(Generic[T]):
    """The serializer of one response shape (``JsonBody(list[WorkflowItem])``), built once."""

    def __init__(self, shape: Any) -> None:
        self._adapter: TypeAdapter[T] = TypeAdapter(shape)

    def response(
        self, value: T, *, status_code: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        """``value`` as the JSON body FastAPI would have sent (aliases as the schema names
        them), with ``headers``."""
        body = self._adapter.dump_json(value, by_alias=True)
        return Response(body, status_code, headers, media_type="application/json")


__all__ = ["JsonBody"]
