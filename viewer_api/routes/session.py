"""The web pages' session: who is signed in, and which of the UI's features their role may
use (read from the routes' own role declarations, so a page never offers what the server
would refuse)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request

from viewer_api.access import route_roles
from viewer_api.deps import CurrentUser
from viewer_api.schemas import SessionOut

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

# a feature of the pages -> the route it calls; offered to the roles that route admits
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
}


def capabilities(app: FastAPI, role: str) -> list[str]:
    """The features ``role`` may use on ``app`` (worked out once per app)."""
    table: dict[str, list[str]] | None = getattr(app.state, "capabilities", None)
    if table is None:
        roles = route_roles(app)
        every = {r for admitted in roles.values() for r in admitted}
        table = {
            r: sorted(name for name, op in FEATURES.items() if r in roles.get(op, ()))
            for r in every
        }
        app.state.capabilities = table
    return table.get(role, [])


@router.get("/session", response_model=SessionOut)
def current_session(request: Request, user: CurrentUser) -> SessionOut:
    """The signed-in account and what the web pages may offer it."""
    return SessionOut(
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        site=user.site.code if user.site is not None else None,
        capabilities=capabilities(request.app, user.role),
    )
