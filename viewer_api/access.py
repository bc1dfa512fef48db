"""Who may call each route, read from the route itself and published in the OpenAPI schema.

A route's roles come from its guard dependencies: ``deps.require_roles(...)`` (the
``ViewerUser``, ``ReaderUser``, ``GatewayUser``, ``AdminUser`` annotations) and
``deps.get_current_user`` (any role) carry the roles they admit; a guard written by hand
is marked with ``deps.declare_roles`` where it is defined (the event stream's, the metrics
scrape's, the DICOMweb routes'). Where a route has several, the roles are those every
guard admits. A route with none is public (log-in,
health, the share-link pages, the web UI's static pages).

``install(app)`` makes ``app.openapi()`` add ``x-teleread-roles`` to every operation: the
sorted roles, or ``["public"]``. Site scoping is not in the declaration: a clinic or a
township gateway sees only its own site's objects, and another site's answer 404 (the
repository filters), which the access matrix test checks for every route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from viewer_api.deps import ROLES_ATTRIBUTE

ROLES_EXTENSION = "x-teleread-roles"
PUBLIC = "public"
# the methods an OpenAPI path item may hold (Starlette adds HEAD to every GET route)
_OPENAPI_METHODS = ("get", "put", "post", "delete", "options", "patch", "trace")


def _guard_roles(dependant: Dependant) -> Iterator[frozenset[str]]:
    roles: frozenset[str] | None = getattr(dependant.call, ROLES_ATTRIBUTE, None)
    if roles is not None:
        yield roles
    for sub in dependant.dependencies:
        yield from _guard_roles(sub)


def roles_of(dependant: Dependant | None) -> tuple[str, ...]:
    """The roles a route with this dependency tree admits, sorted; ``("public",)`` when it
    has no guard."""
    if dependant is None:
        return (PUBLIC,)
    found = list(_guard_roles(dependant))
    if not found:
        return (PUBLIC,)
    return tuple(sorted(frozenset.intersection(*found)))


def route_roles(app: FastAPI) -> dict[tuple[str, str], tuple[str, ...]]:
    """(METHOD, path) -> roles, for every route of ``app`` (in the schema or not: the web
    pages, the schema and the docs pages too). HEAD is left out: it answers as GET does."""
    table: dict[tuple[str, str], tuple[str, ...]] = {}
    for context in iter_route_contexts(app.routes):
        path = context.path_format or context.path
        if path is None:
            continue
        dependant: Dependant | None = getattr(context, "dependant", None)
        roles = roles_of(dependant)
        for method in sorted(context.methods or {"GET"}):
            if method != "HEAD":
                table[(method, path)] = roles
    return table


def annotate(schema: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """Add ``x-teleread-roles`` to each operation of ``schema`` (in place; idempotent)."""
    roles = route_roles(app)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method in _OPENAPI_METHODS and isinstance(operation, dict):
                found = roles.get((method.upper(), path))
                if found is not None:
                    operation[ROLES_EXTENSION] = list(found)
    return schema


# a feature of the web pages -> the route it calls; offered to the roles that route admits
FEATURES: dict[str, tuple[str, str]] = {
    "events": ("GET", "/api/v1/events"),
    "assign": ("POST", "/api/v1/worklist/{study_uid}/assign"),
    "cancel": ("POST", "/api/v1/worklist/{study_uid}/cancel"),
    "flag": ("POST", "/api/v1/studies/{study_uid}/flag"),
    "template": ("GET", "/api/v1/studies/{study_uid}/report/template"),
    "critical": ("POST", "/api/v1/studies/{study_uid}/report/critical-results"),
    "addenda": ("POST", "/api/v1/studies/{study_uid}/report/addenda"),
    "receipt": ("GET", "/api/v1/studies/{study_uid}/report/receipt"),
    "pdf": ("GET", "/api/v1/studies/{study_uid}/report.pdf"),
    "share": ("POST", "/api/v1/studies/{study_uid}/report/share-links"),
    # OHIF at /ohif/ reads through DICOMweb (offered only when its build is installed)
    "ohif": ("GET", "/dicomweb/studies"),
}


def capabilities(app: FastAPI, role: str) -> list[str]:
    """The web pages' features ``role`` may use on ``app`` (``FEATURES`` whose route admits
    the role), worked out once per app."""
    table: dict[str, list[str]] | None = getattr(app.state, "capabilities", None)
    if table is None:
        roles = route_roles(app)
        every = {r for admitted in roles.values() for r in admitted}
        table = {
            r: sorted(name for name, op in FEATURES.items() if r in roles.get(op, ()))
            for r in every
        }
        if getattr(app.state, "ohif_dir", None) is None:
            table = {r: [f for f in features if f != "ohif"] for r, features in table.items()}
        app.state.capabilities = table
    return table.get(role, [])


def install(app: FastAPI) -> None:
    """Publish every route's roles in ``app.openapi()`` (and so in ``/openapi.json``)."""
    original: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        return annotate(original(), app)

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = [
    "FEATURES",
    "PUBLIC",
    "ROLES_EXTENSION",
    "annotate",
    "capabilities",
    "install",
    "roles_of",
    "route_roles",
]
