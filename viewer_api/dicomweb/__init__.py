"""DICOMweb (PS3.18, read side) under ``/dicomweb``: QIDO-RS search from the index tables,
WADO-RS retrieve, metadata, frames, bulk data, rendered and thumbnails. Authorisation as for
the rest of the API: a clinic user sees its own site's studies only (another site's study is
a 404).
Every route runs through ``access.serve`` (see there why); every view is audited."""

from __future__ import annotations

from fastapi import APIRouter

from viewer_api.dicomweb import bulkdata, frames, metadata, qido, rendered, retrieve, thumbnail

router = APIRouter()
# QIDO's /studies/{uid}/series and /instances before WADO's /studies/{uid}/series/{uid}
for _module in (qido, retrieve, metadata, frames, bulkdata, rendered, thumbnail):
    router.include_router(_module.router)

__all__ = ["router"]
