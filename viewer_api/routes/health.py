"""Liveness: the process answers and the database does too."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from viewer_api.deps import SessionDep
from viewer_api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(session: SessionDep) -> Health:
    session.execute(text("SELECT 1"))
    return Health()
