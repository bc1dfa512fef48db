"""``GET /metrics``: the county API's figures in the Prometheus text format (version 0.0.4).

Two kinds of figures:

- **Requests**, counted by a pure ASGI middleware (``RequestMetrics``) in this process: a count
  and a latency histogram by method, route *template* (``/api/v1/studies/{study_uid}``, never
  the concrete path: UIDs are patient-linked) and status class (``2xx``...). A request that
  matched no route is labelled ``<unmatched>``. The latency runs to the end of the response;
  for an event stream (``text/event-stream``) only to its start, so open streams do not
  swamp the histogram. The worker processes of one API (``TELEREAD_API_WORKERS``) share
  their figures (prometheus-client's multiprocess mode: ``ApiMetrics.exposed``), so one
  scrape shows them all; scrape every API replica separately, and ``sum()`` them in PromQL.
- **Turnaround**, observed in this process when a study's hop is recorded
  (``turnaround``): the headline stages of its timeline (scan -> listed -> claimed ->
  report -> clinic opened) as a histogram by stage, site and category; each stage is
  observed once, by the process that handled the request that ended it.
- **The worklist**, read from the database at scrape time (``worklist.metrics_queries``):
  open studies by category and priority, deadline breaches, the oldest waiting urgent study,
  active claims, studies and instances ingested. Cached ``cache_seconds`` (5 s) per process so
  frequent scrapes do not load the database; the running total of late finalisations (the one
  figure no index answers) ``late_cache_seconds`` (300 s).

Who may scrape: ``Authorization: Bearer <TELEREAD_API_METRICS_TOKEN>`` or an admin's bearer
token, from any address. A loopback client is not trusted on its address alone: a reverse
proxy or any local process would pass for one. Otherwise 401 (no or an invalid credential)
or 403 (a valid token of another role).

``prometheus-client`` keeps the figures (one ``CollectorRegistry`` per app, not the
library's global one) and writes the text format; counters and histograms carry its
``_created`` series too. The middleware is the part that must be cheap: a few microseconds
of bookkeeping per request (``bench/metrics.py``), against the 2-4 ms the hot routes take.

Layout: ``http_requests`` (request figures and the middleware), ``turnaround`` (the
stage histograms and the session events that feed them), ``database`` (the app's
registry and the cached worklist figures), ``authorization`` (who may scrape); this module
holds the route and ``install``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client.exposition import generate_latest

from viewer_api.deps import declare_roles
from viewer_api.metrics.authorization import authorize
from viewer_api.metrics.database import ApiMetrics
from viewer_api.metrics.http_requests import HttpMetrics, RequestMetrics
from worklist.models import ROLE_ADMIN

PATH = "/metrics"
# the text format, version 0.0.4 (what generate_latest writes)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

router = APIRouter(tags=["metrics"])


@router.get(PATH, include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Admins may scrape (also the metrics token: no account)."""
    await authorize(request)
    state: ApiMetrics = request.app.state.metrics
    clock: Callable[[], datetime] = request.app.state.clock
    await state.database_figures(request.app.state.session_factory, clock())
    body = generate_latest(state.exposed)
    return Response(body, media_type=None, headers={"Content-Type": CONTENT_TYPE})


declare_roles(metrics, (ROLE_ADMIN,))  # published as x-teleread-roles (viewer_api.access)


def install(app: FastAPI, **options: Any) -> ApiMetrics:
    """Serve ``GET /metrics`` on ``app``, time every request (call it after the other
    middleware, so this one is outermost and counts their answers too) and observe the
    turnaround of the transactions of ``app.state.session_factory``."""
    state = ApiMetrics(**options)
    state.turnaround.watch(app.state.session_factory)
    app.state.metrics = state
    app.include_router(router)
    app.add_middleware(RequestMetrics, metrics=state.http)
    return state


__all__ = ["CONTENT_TYPE", "PATH", "ApiMetrics", "HttpMetrics", "RequestMetrics", "install"]
