"""DICOMweb (PS3.18, read side) under ``/dicomweb``: QIDO-RS search from the index tables,
WADO-RS retrieve, metadata, frames, rendered and thumbnails. Authorisation as for the rest
of the API: a clinic user sees its own site's studies only (another site's study is 404)."""

from __future__ import annotations

from fastapi import APIRouter

from viewer_api.dicomweb import frames, metadata, qido, rendered, retrieve, thumbnail

# rendered images and one retrieved instance served without FastAPI's machinery;
# ``create_app`` puts them first
FAST_ROUTES = [*retrieve.FAST_ROUTES, *rendered.FAST_ROUTES]
for _route in FAST_ROUTES:  # Starlette adds HEAD to a GET route; the FastAPI routes do not
    _route.methods = {"GET"}
router = APIRouter()
# QIDO's /studies/{uid}/series and /instances before WADO's /studies/{uid}/series/{uid}
for _module in (qido, retrieve, metadata, frames, rendered, thumbnail):
    router.include_router(_module.router)

__all__ = ["FAST_ROUTES", "router"]
