"""Every route, called by every kind of caller, against an explicit table of who may.

``ACCESS`` below names each operation of the API (the OpenAPI schema's, plus the routes kept
out of it: the web pages and the docs) with the roles that may call it and how it is
scoped to a site. From it each caller's expected outcome follows:

- no token, a bad or expired token, or a disabled account: 401 (a public route: allowed);
- an authenticated role the route does not admit: 403;
- a clinic or township gateway of site B asking for a site-A object: 404, exactly as for a
  study that does not exist, so UIDs do not leak (``site``); where the request names
  site A in its body (a gateway announcing for another site), 403 (``site_body``); a
  DICOMweb search under a site-A study finds nothing, as for a missing one (``search``);
- otherwise allowed: not 401, 403 or 404, and no server error; and whatever a site-B
  caller is shown never contains a site-A UID (listings are filtered, ``list``).

The table must cover exactly the app's routes, and each entry's roles must be the ones
the route declares (``x-teleread-roles`` in the schema, ``viewer_api.access``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.keys import instance_key, version_key
from tests.dicom_factory import make_ct, part10_bytes
from tests.integration.test_api_world import PASSWORDS, Study, World, build_world
from viewer_api.access import PUBLIC, ROLES_EXTENSION, route_roles
from viewer_api.routes.events import stop_streams
from viewer_api.security import create_access_token
from viewer_api.settings import ApiSettings
from viewer_api.web import ohif
from worklist.accounts import get_site
from worklist.models import User

Scope = Literal["none", "site", "site_body", "search", "list"]

ADMIN = frozenset({"admin"})
READERS = frozenset({"admin", "radiologist"})
RADIOLOGIST = frozenset({"radiologist"})
VIEWERS = frozenset({"admin", "radiologist", "clinic"})
GATEWAY = frozenset({"gateway"})
SIGNED_IN = frozenset({"admin", "radiologist", "clinic", "gateway"})
ANYONE = frozenset({PUBLIC})
CLINIC = frozenset({"clinic"})
CLINIC_DESK = frozenset({"clinic", "admin"})

# caller -> (account, role); None: no account behind the token
CALLERS: dict[str, tuple[str | None, str | None]] = {
    "anonymous": (None, None),
    "bad_token": (None, None),
    "expired": ("dr_li", None),
    "disabled": ("dr_gone", None),
    "admin": ("boss", "admin"),
    "radiologist": ("dr_wang", "radiologist"),
    "clinic_a": ("nurse_ts01", "clinic"),
    "clinic_b": ("nurse_ts02", "clinic"),
    "gateway_a": ("gw_ts01", "gateway"),
    "gateway_b": ("gw_ts02", "gateway"),
    # the all-in-one gateway: bound to no site, sends for every one
    "gateway_all": ("gw_all", "gateway"),
}
FOREIGN = frozenset({"clinic_b", "gateway_b"})
# the callers that may touch a study before it is theirs to read (see Ctx.fresh)
READER_ACCOUNTS = {"admin": "boss", "radiologist": "dr_wang"}


@dataclass
class Req:
    method: str
    url: str
    json: Any = None
    data: dict[str, str] | None = None


@dataclass
class Ctx:
    """The site-A world the requests name: a CT with a signed final report (real images),
    its share token, and fresh studies for the requests that change state."""

    world: World
    study: Study
    share_token: str
    uids: set[str] = field(default_factory=set)
    spare: int = 0

    def fresh(self, *, claimed_by: str | None = None, draft: bool = False) -> str:
        """A new site-A study announced by its gateway, optionally claimed (and drafted)."""
        study = Study(site="TS01", modality="CT", description="头颅CT平扫")
        r = self.world.announce(study)
        assert r.status_code == 200, r.text
        self.uids.add(study.uid)
        if claimed_by is not None:
            r = self.world.post(claimed_by, f"/api/v1/worklist/{study.uid}/claim")
            assert r.status_code == 200, r.text
            if draft:
                body = {"findings": "未见异常", "impression": "正常"}
                r = self.world.put(claimed_by, f"/api/v1/studies/{study.uid}/report", json=body)
                assert r.status_code == 200, r.text
        return study.uid

    def reader(self, caller: str) -> str:
        """The account that holds a claim for ``caller``'s request (its own, if it reads)."""
        return READER_ACCOUNTS.get(caller, "dr_li")

    def spare_user(self) -> str:
        self.spare += 1
        return f"spare{self.spare}"


Build = Callable[[Ctx, str], Req]


def get(path: str) -> Build:
    return lambda ctx, caller: Req("GET", _fill(ctx, path))


def post(path: str, body: Any = None) -> Build:
    return lambda ctx, caller: Req("POST", _fill(ctx, path), json=body)


def _fill(ctx: Ctx, path: str) -> str:
    sop = ctx.study.sop_uids[0]
    return path.format(
        study=ctx.study.uid, series=ctx.study.series_uid, sop=sop, token=ctx.share_token
    )


def on_fresh(
    method: str,
    path: str,
    body: Any = None,
    *,
    claimed: bool = False,
    draft: bool = False,
) -> Build:
    """A request about a new site-A study, claimed by the caller (or dr_li) if asked."""

    def build(ctx: Ctx, caller: str) -> Req:
        holder = ctx.reader(caller) if claimed else None
        uid = ctx.fresh(claimed_by=holder, draft=draft)
        payload = body(ctx) if callable(body) else body
        return Req(method, path.format(uid=uid), json=payload)

    return build


def resent_version(ctx: Ctx, caller: str) -> Req:
    """A kept version of a site-A instance: its first version, replaced by a re-send."""
    study = Study(site="TS01", modality="CT", description="头颅CT平扫")
    payload = ctx.world.payload(study)
    assert ctx.world.post("gw_ts01", "/api/v1/ingest/instances", json=payload).status_code == 200
    blob = b"\0" * 128 + b"DICM" + b"corrected"
    sha = hashlib.sha256(blob).hexdigest()
    item = payload["instances"][0]
    key = version_key("TS01", study.uid, study.series_uid, item["sop_instance_uid"], sha)
    ctx.world.store.put(key, blob, sha256=sha)
    item.update(object_key=key, size=len(blob), sha256=sha)
    payload["instances"] = [item]
    r = ctx.world.post("gw_ts01", "/api/v1/ingest/instances", json=payload)
    assert r.status_code == 200 and r.json()["resends"][0]["outcome"] == "replaced", r.text
    version_id = r.json()["resends"][0]["version_id"]
    return Req("GET", f"/api/v1/studies/{study.uid}/versions/{version_id}")


def critical(ctx: Ctx) -> dict[str, Any]:
    now = ctx.world.clock.now
    return {
        "finding": "右侧基底节区急性脑出血，约12ml",
        "identified_at": (now - timedelta(minutes=5)).isoformat(),
        "communicated_to_name": "张医生",
        "communicated_at": (now - timedelta(minutes=2)).isoformat(),
        "method": "phone",
        "read_back_confirmed": True,
    }


def acknowledge(ctx: Ctx, caller: str) -> Req:
    """A site-A critical result to acknowledge (the clinic's read-back)."""
    uid = ctx.fresh(claimed_by="dr_li", draft=True)
    r = ctx.world.post(
        "dr_li", f"/api/v1/studies/{uid}/report/critical-results", json=critical(ctx)
    )
    assert r.status_code == 201, r.text
    return Req(
        "POST", f"/api/v1/studies/{uid}/report/critical-results/{r.json()['id']}/acknowledge"
    )


def call_ahead(ctx: Ctx, caller: str) -> Req:
    body = {"site": "TS01", "patient_id": "CA1", "category": "stroke", "note": "发病30分钟"}
    return Req("POST", "/api/v1/call-aheads", json=body)


def cancel_call_ahead(ctx: Ctx, caller: str) -> Req:
    body = {"patient_name": "预告^患者", "category": "chest_pain"}
    r = ctx.world.post("nurse_ts01", "/api/v1/call-aheads", json=body)
    assert r.status_code == 201, r.text
    return Req("POST", f"/api/v1/call-aheads/{r.json()['id']}/cancel")


def login(ctx: Ctx, caller: str) -> Req:
    form = {"username": "dr_li", "password": PASSWORDS["dr_li"]}
    return Req("POST", "/api/v1/auth/token", data=form)


def session_login(ctx: Ctx, caller: str) -> Req:
    form = {"username": "dr_li", "password": PASSWORDS["dr_li"]}
    return Req("POST", "/api/v1/auth/session", data=form)


def ingest(ctx: Ctx, caller: str) -> Req:
    study = Study(site="TS01", modality="CT", description="胸部CT平扫")
    ctx.uids.add(study.uid)
    return Req("POST", "/api/v1/ingest/instances", json=ctx.world.payload(study))


def study_complete(ctx: Ctx, caller: str) -> Req:
    body = {"site": "TS01", "study_instance_uid": ctx.study.uid, "expected_instances": 2}
    return Req("POST", "/api/v1/ingest/study-complete", json=body)


def create_user(ctx: Ctx, caller: str) -> Req:
    body = {"username": ctx.spare_user(), "password": "a-long-password", "role": "radiologist"}
    return Req("POST", "/api/v1/users", json=body)


def revoke_share_link(ctx: Ctx, caller: str) -> Req:
    """Revoke a link made for this request (the world's own link stays)."""
    r = ctx.world.post("nurse_ts01", f"/api/v1/studies/{ctx.study.uid}/report/share-links")
    assert r.status_code == 201, r.text
    return Req("DELETE", f"/api/v1/studies/{ctx.study.uid}/report/share-links/{r.json()['id']}")


def on_spare(action: str, body: Any = None, *, role: str = "radiologist") -> Build:
    """An admin action on a throwaway account (so the world's own accounts stay as they are)."""

    def build(ctx: Ctx, caller: str) -> Req:
        name = ctx.spare_user()
        with ctx.world.factory.begin() as session:
            site = get_site(session=session, code="TS01")
            assert site is not None
            session.add(
                User(
                    username=name,
                    password_hash="x",
                    role=role,
                    site_id=site.id if role == "gateway" else None,
                    created_at=ctx.world.clock.now,
                )
            )
        return Req("POST", f"/api/v1/users/{name}/{action}", json=body)

    return build


def resolve_conflict(ctx: Ctx, caller: str) -> Req:
    """An admin's decision on a fresh conflict: a site-B gateway reusing a site-A study UID."""
    uid = ctx.fresh()
    squat = Study(site="TS02", modality="CT", description="腹部CT", count=1, uid=uid)
    r = ctx.world.announce(squat, gateway="gw_all")
    assert r.status_code == 200, r.text
    [held] = r.json()["conflicts"]
    body = {"resolution": "discard"}
    return Req("POST", f"/api/v1/ingest-conflicts/{held['conflict_id']}/resolve", json=body)


# a clinic may not use this readers' tool (the route refuses it), but another site's clinic
# gets 404 first, as everywhere
CLINIC_REFUSED_IN_ROUTE = {"clinic_a": 403}


@dataclass(frozen=True)
class Access:
    """Who may call one operation, and how it is scoped to a site."""

    roles: frozenset[str]
    scope: Scope
    request: Build
    # where the route answers a caller otherwise than the rules say, and why (a comment)
    overrides: dict[str, int] = field(default_factory=dict)


REPORT = "/api/v1/studies/{study}/report"
WADO = "/dicomweb/studies/{study}/series/{series}/instances/{sop}"
ACCESS: dict[tuple[str, str], Access] = {
    # log-in, health, the share link (its token is the credential)
    ("POST", "/api/v1/auth/token"): Access(ANYONE, "none", login),
    ("POST", "/api/v1/auth/session"): Access(ANYONE, "none", session_login),
    ("GET", "/api/v1/auth/session"): Access(SIGNED_IN, "none", get("/api/v1/auth/session")),
    ("DELETE", "/api/v1/auth/session"): Access(
        SIGNED_IN, "none", lambda ctx, caller: Req("DELETE", "/api/v1/auth/session")
    ),
    ("GET", "/healthz"): Access(ANYONE, "none", get("/healthz")),
    ("GET", "/readyz"): Access(ANYONE, "none", get("/readyz")),
    ("GET", "/api/v1/share/{token}"): Access(ANYONE, "none", get("/api/v1/share/{token}")),
    ("GET", "/api/v1/share/{token}/report.pdf"): Access(
        ANYONE, "none", get("/api/v1/share/{token}/report.pdf")
    ),
    ("GET", "/api/v1/share/{token}/instances/{sop_uid}/rendered"): Access(
        ANYONE, "none", get("/api/v1/share/{token}/instances/{sop}/rendered?size=32")
    ),
    # the worklist
    ("GET", "/api/v1/worklist"): Access(VIEWERS, "list", get("/api/v1/worklist")),
    ("POST", "/api/v1/worklist/next"): Access(READERS, "none", post("/api/v1/worklist/next")),
    ("POST", "/api/v1/worklist/{study_uid}/claim"): Access(
        READERS, "site", on_fresh("POST", "/api/v1/worklist/{uid}/claim")
    ),
    ("POST", "/api/v1/worklist/{study_uid}/renew"): Access(
        READERS, "site", on_fresh("POST", "/api/v1/worklist/{uid}/renew", claimed=True)
    ),
    ("POST", "/api/v1/worklist/{study_uid}/release"): Access(
        READERS, "site", on_fresh("POST", "/api/v1/worklist/{uid}/release", claimed=True)
    ),
    ("POST", "/api/v1/worklist/{study_uid}/assign"): Access(
        ADMIN, "site", on_fresh("POST", "/api/v1/worklist/{uid}/assign", {"username": "dr_li"})
    ),
    ("POST", "/api/v1/worklist/{study_uid}/cancel"): Access(
        ADMIN, "site", on_fresh("POST", "/api/v1/worklist/{uid}/cancel", {"reason": "重复检查"})
    ),
    ("POST", "/api/v1/studies/{study_uid}/flag"): Access(
        VIEWERS,
        "site",
        on_fresh(
            "POST", "/api/v1/studies/{uid}/flag", {"category": "stroke", "reason": "肢体无力"}
        ),
    ),
    ("POST", "/api/v1/studies/{study_uid}/unflag"): Access(
        READERS, "site", on_fresh("POST", "/api/v1/studies/{uid}/unflag", {"reason": "非急症"})
    ),
    ("GET", "/api/v1/events"): Access(VIEWERS, "list", get("/api/v1/events")),
    ("GET", "/api/v1/events/recent"): Access(VIEWERS, "list", get("/api/v1/events/recent")),
    # studies and reports
    ("GET", "/api/v1/studies/{study_uid}"): Access(VIEWERS, "site", get("/api/v1/studies/{study}")),
    ("GET", "/api/v1/studies/{study_uid}/instances/{sop_uid}"): Access(
        VIEWERS, "site", get("/api/v1/studies/{study}/instances/{sop}")
    ),
    ("GET", "/api/v1/studies/{study_uid}/priors"): Access(
        READERS, "site", get("/api/v1/studies/{study}/priors")
    ),
    ("GET", "/api/v1/studies/{study_uid}/timeline"): Access(
        VIEWERS, "site", get("/api/v1/studies/{study}/timeline")
    ),
    ("GET", "/api/v1/studies/{study_uid}/report"): Access(VIEWERS, "site", get(REPORT)),
    ("PUT", "/api/v1/studies/{study_uid}/report"): Access(
        READERS,
        "site",
        on_fresh("PUT", "/api/v1/studies/{uid}/report", {"findings": "未见异常"}, claimed=True),
    ),
    ("POST", "/api/v1/studies/{study_uid}/report/sign"): Access(
        READERS,
        "site",
        on_fresh(
            "POST",
            "/api/v1/studies/{uid}/report/sign",
            {"status": "preliminary"},
            claimed=True,
            draft=True,
        ),
    ),
    ("POST", "/api/v1/studies/{study_uid}/report/addenda"): Access(
        RADIOLOGIST, "site", post(REPORT + "/addenda", {"text": "补充", "reason": "漏写"})
    ),
    ("POST", "/api/v1/studies/{study_uid}/report/critical-results"): Access(
        RADIOLOGIST,
        "site",
        lambda ctx, caller: Req("POST", _fill(ctx, REPORT + "/critical-results"), critical(ctx)),
    ),
    ("GET", "/api/v1/studies/{study_uid}/report/critical-results"): Access(
        READERS, "site", get(REPORT + "/critical-results")
    ),
    ("GET", "/api/v1/studies/{study_uid}/report/template"): Access(
        READERS, "site", get(REPORT + "/template")
    ),
    ("GET", "/api/v1/report-templates"): Access(READERS, "none", get("/api/v1/report-templates")),
    ("GET", "/api/v1/reports"): Access(VIEWERS, "list", get("/api/v1/reports")),
    ("GET", "/api/v1/studies/{study_uid}/report.pdf"): Access(
        VIEWERS, "site", get("/api/v1/studies/{study}/report.pdf")
    ),
    ("GET", "/api/v1/studies/{study_uid}/report.html"): Access(
        VIEWERS, "site", get("/api/v1/studies/{study}/report.html")
    ),
    ("GET", "/api/v1/studies/{study_uid}/report.fhir.json"): Access(
        VIEWERS, "site", get("/api/v1/studies/{study}/report.fhir.json")
    ),
    ("POST", "/api/v1/studies/{study_uid}/report/sr"): Access(
        VIEWERS, "site", post(REPORT + "/sr"), overrides=CLINIC_REFUSED_IN_ROUTE
    ),
    ("POST", "/api/v1/studies/{study_uid}/report/share-links"): Access(
        VIEWERS, "site", post(REPORT + "/share-links")
    ),
    ("GET", "/api/v1/studies/{study_uid}/report/share-links"): Access(
        VIEWERS, "site", get(REPORT + "/share-links")
    ),
    ("DELETE", "/api/v1/studies/{study_uid}/report/share-links/{link_id}"): Access(
        VIEWERS, "site", revoke_share_link
    ),
    ("GET", "/api/v1/studies/{study_uid}/report/receipt"): Access(
        VIEWERS, "site", get(REPORT + "/receipt"), overrides=CLINIC_REFUSED_IN_ROUTE
    ),
    # administration
    ("GET", "/api/v1/audit"): Access(ADMIN, "none", get("/api/v1/audit")),
    ("GET", "/api/v1/ingest-conflicts"): Access(ADMIN, "none", get("/api/v1/ingest-conflicts")),
    ("GET", "/api/v1/studies/{study_uid}/versions"): Access(
        ADMIN, "site", get("/api/v1/studies/{study}/versions")
    ),
    ("GET", "/api/v1/studies/{study_uid}/versions/{version_id}"): Access(
        ADMIN, "site", resent_version
    ),
    ("POST", "/api/v1/ingest-conflicts/{conflict_id}/resolve"): Access(
        ADMIN, "none", resolve_conflict
    ),
    ("GET", "/api/v1/audit/export.csv"): Access(ADMIN, "none", get("/api/v1/audit/export.csv")),
    ("GET", "/api/v1/audit/export.fhir.json"): Access(
        ADMIN, "none", get("/api/v1/audit/export.fhir.json")
    ),
    ("GET", "/api/v1/stats"): Access(ADMIN, "none", get("/api/v1/stats")),
    ("GET", "/api/v1/users"): Access(ADMIN, "none", get("/api/v1/users")),
    ("POST", "/api/v1/users"): Access(ADMIN, "none", create_user),
    ("GET", "/api/v1/users/{username}"): Access(ADMIN, "none", get("/api/v1/users/nurse_ts01")),
    ("POST", "/api/v1/users/{username}/disable"): Access(ADMIN, "none", on_spare("disable")),
    ("POST", "/api/v1/users/{username}/enable"): Access(ADMIN, "none", on_spare("enable")),
    ("POST", "/api/v1/users/{username}/password"): Access(
        ADMIN, "none", on_spare("password", {"password": "another-long-password"})
    ),
    ("POST", "/api/v1/users/{username}/revoke"): Access(
        ADMIN, "none", on_spare("revoke", role="gateway")
    ),
    # the clinic hears back
    ("GET", "/api/v1/clinic/alerts"): Access(CLINIC_DESK, "list", get("/api/v1/clinic/alerts")),
    ("POST", "/api/v1/studies/{study_uid}/report/critical-results/{result_id}/acknowledge"): (
        Access(CLINIC, "site", acknowledge)
    ),
    ("POST", "/api/v1/call-aheads"): Access(VIEWERS, "site_body", call_ahead),
    ("GET", "/api/v1/call-aheads"): Access(VIEWERS, "list", get("/api/v1/call-aheads")),
    ("POST", "/api/v1/call-aheads/{call_ahead_id}/cancel"): Access(
        VIEWERS, "site", cancel_call_ahead
    ),
    ("GET", "/api/v1/ops/now"): Access(ADMIN, "none", get("/api/v1/ops/now")),
    ("GET", "/api/v1/ops/turnaround"): Access(ADMIN, "none", get("/api/v1/ops/turnaround")),
    ("GET", "/api/v1/ops/turnaround/weekly"): Access(
        ADMIN, "none", get("/api/v1/ops/turnaround/weekly")
    ),
    # township gateways
    ("POST", "/api/v1/gateway/status"): Access(
        GATEWAY, "none", post("/api/v1/gateway/status", {"pending_urgent": 0})
    ),
    ("GET", "/api/v1/gateway/config"): Access(GATEWAY, "none", get("/api/v1/gateway/config")),
    ("POST", "/api/v1/ingest/instances"): Access(GATEWAY, "site_body", ingest),
    ("POST", "/api/v1/ingest/study-complete"): Access(GATEWAY, "site_body", study_complete),
    # DICOMweb
    ("GET", "/dicomweb/studies"): Access(VIEWERS, "list", get("/dicomweb/studies")),
    ("GET", "/dicomweb/series"): Access(VIEWERS, "list", get("/dicomweb/series")),
    ("GET", "/dicomweb/instances"): Access(VIEWERS, "list", get("/dicomweb/instances")),
    ("GET", "/dicomweb/studies/{study_uid}/series"): Access(
        VIEWERS, "search", get("/dicomweb/studies/{study}/series")
    ),
    ("GET", "/dicomweb/studies/{study_uid}/instances"): Access(
        VIEWERS, "search", get("/dicomweb/studies/{study}/instances")
    ),
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances"): Access(
        VIEWERS, "search", get("/dicomweb/studies/{study}/series/{series}/instances")
    ),
    ("GET", "/dicomweb/studies/{study_uid}"): Access(
        VIEWERS, "site", get("/dicomweb/studies/{study}")
    ),
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}"): Access(
        VIEWERS, "site", get("/dicomweb/studies/{study}/series/{series}")
    ),
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"): Access(
        VIEWERS, "site", get(WADO)
    ),
    ("GET", "/dicomweb/studies/{study_uid}/metadata"): Access(
        VIEWERS, "site", get("/dicomweb/studies/{study}/metadata")
    ),
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/metadata"): Access(
        VIEWERS, "site", get("/dicomweb/studies/{study}/series/{series}/metadata")
    ),
    (
        "GET",
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata",
    ): Access(VIEWERS, "site", get(WADO + "/metadata")),
    (
        "GET",
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_list}",
    ): Access(VIEWERS, "site", get(WADO + "/frames/1")),
    (
        "GET",
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered",
    ): Access(VIEWERS, "site", get(WADO + "/rendered")),
    (
        "GET",
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame}/rendered",
    ): Access(VIEWERS, "site", get(WADO + "/frames/1/rendered")),
    ("GET", "/dicomweb/studies/{study_uid}/thumbnail"): Access(
        VIEWERS, "site", get("/dicomweb/studies/{study}/thumbnail")
    ),
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/thumbnail"): Access(
        VIEWERS, "site", get("/dicomweb/studies/{study}/series/{series}/thumbnail")
    ),
    (
        "GET",
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/thumbnail",
    ): Access(VIEWERS, "site", get(WADO + "/thumbnail")),
    (
        "GET",
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/{path}",
    ): Access(VIEWERS, "site", get(WADO + "/bulkdata/7FE00010")),
    # OHIF's static build (its pages send a caller without a session to the log-in page;
    # its data comes through DICOMweb above), 404 where it is not installed
    ("GET", "/ohif"): Access(ANYONE, "none", get("/ohif")),
    ("GET", "/ohif/app-config.js"): Access(ANYONE, "none", get("/ohif/app-config.js")),
    ("GET", "/ohif/{path}"): Access(ANYONE, "none", get("/ohif/")),
    # outside the schema: the web UI's pages (they hold no data; their scripts call the
    # API with the user's token), and the API's own description
    ("GET", "/"): Access(ANYONE, "none", get("/")),
    ("GET", "/ui"): Access(ANYONE, "none", get("/ui")),
    ("GET", "/ui/{page}"): Access(ANYONE, "none", get("/ui/login")),
    ("GET", "/ui/static/{path}"): Access(ANYONE, "none", get("/ui/static/login.js")),
    ("GET", "/openapi.json"): Access(ANYONE, "none", get("/openapi.json")),
    ("GET", "/docs"): Access(ANYONE, "none", get("/docs")),
    ("GET", "/docs/oauth2-redirect"): Access(ANYONE, "none", get("/docs/oauth2-redirect")),
    ("GET", "/docs/assets/{name}"): Access(ANYONE, "none", get("/docs/assets/swagger-ui.css")),
    ("GET", "/redoc"): Access(ANYONE, "none", get("/redoc")),
    # Prometheus: an admin's token or the metrics token, from any address; the guard reads
    # the token's role before the account, so a disabled radiologist's token gets 403
    ("GET", "/metrics"): Access(ADMIN, "none", get("/metrics"), overrides={"disabled": 403}),
}

# ops changing shared state go last (the stream first: it must be stopped to answer)
_LAST = ("/api/v1/worklist/next",)


def expected(access: Access, caller: str) -> int | str:
    """401, 403, 404, "allowed", or "no match" (an empty search answer)."""
    _, role = CALLERS[caller]
    if caller in access.overrides:
        return access.overrides[caller]
    if access.roles == ANYONE:
        return "allowed"
    if role is None:
        return 401
    if role not in access.roles:
        return 403
    if caller in FOREIGN and access.scope == "site":
        return 404
    if caller in FOREIGN and access.scope == "site_body":
        return 403
    if caller in FOREIGN and access.scope == "search":
        return "no match"
    return "allowed"


def _undeclared_message(missing: set[tuple[str, str]], roles: dict[Any, tuple[str, ...]]) -> str:
    lines = [
        "These routes have no entry in ACCESS (tests/integration/test_access_matrix.py).",
        "Declare each: who may call it (the roles below are what the route's guard admits),",
        "its site scope ('none', 'site', 'site_body', 'search' or 'list') and a realistic request:",
    ]
    for method, path in sorted(missing, key=lambda k: (k[1], k[0])):
        declared = roles.get((method, path), ())
        lines.append(f"    ({method!r}, {path!r}): Access({set(declared)!r}, 'none', ...),")
    return "\n".join(lines)


@dataclass
class Matrix:
    world: World
    ctx: Ctx
    tokens: dict[str, str | None]


def _make_tokens(world: World) -> dict[str, str | None]:
    """One bearer token per caller: the world's, plus another site's gateway, a disabled
    account, an expired token and one signed with another key."""
    settings = world.settings
    now = world.clock.now
    with world.factory.begin() as session:
        ts02 = get_site(session=session, code="TS02")
        assert ts02 is not None
        extra = [
            User(username="gw_ts02", password_hash="x", role="gateway", site_id=ts02.id),
            User(username="dr_gone", password_hash="x", role="radiologist", is_active=False),
        ]
        for user in extra:
            user.created_at = now
            session.add(user)
        session.flush()
        for user in extra:
            world.tokens[user.username] = create_access_token(user=user, settings=settings, now=now)
        dr_li = session.scalars(select(User).where(User.username == "dr_li")).one()
        expired = create_access_token(user=dr_li, settings=settings, now=now - timedelta(days=1))
        other_key = ApiSettings(secret_key="another-secret-key-0123456789-abcdefghij")
        forged = create_access_token(user=dr_li, settings=other_key, now=now)
    tokens: dict[str, str | None] = {}
    for caller, (account, _) in CALLERS.items():
        tokens[caller] = world.tokens[account] if account else None
    tokens["expired"] = expired
    tokens["bad_token"] = forged
    return tokens


def _reported_ct(world: World) -> Study:
    """A real little site-A CT, sent by site A's gateway, read and signed final."""
    study = Study(site="TS01", modality="CT", description="胸部CT平扫", count=2)
    datasets = [
        make_ct(study.uid, series_uid=study.series_uid, sop_uid=sop, instance_number=n)
        for n, sop in enumerate(study.sop_uids, start=1)
    ]
    for ds in datasets:
        blob = study.blobs[ds.SOPInstanceUID] = part10_bytes(ds)
        key = instance_key(study.site, study.uid, study.series_uid, ds.SOPInstanceUID)
        world.store.put(key, blob, sha256=hashlib.sha256(blob).hexdigest())
    payload = world.payload(study)
    for item, ds in zip(payload["instances"], datasets, strict=True):
        item["dicom_json"] = ds.to_json_dict()
    assert world.post("gw_ts01", "/api/v1/ingest/instances", json=payload).status_code == 200
    assert world.post("dr_li", f"/api/v1/worklist/{study.uid}/claim").status_code == 200
    body = {"findings": "双肺纹理清晰。", "impression": "胸部CT平扫未见异常。"}
    assert world.put("dr_li", f"/api/v1/studies/{study.uid}/report", json=body).status_code == 200
    r = world.post("dr_li", f"/api/v1/studies/{study.uid}/report/sign", json={"status": "final"})
    assert r.status_code == 200, r.text
    return study


def _matrix(world: World) -> Matrix:
    tokens = _make_tokens(world)
    study = _reported_ct(world)
    r = world.post("nurse_ts01", f"/api/v1/studies/{study.uid}/report/share-links")
    assert r.status_code == 201, r.text
    share_token = r.json()["url"].rsplit("/share/", 1)[1]
    ctx = Ctx(world, study, share_token, uids={study.uid, study.series_uid, *study.sop_uids})
    # the event stream answers at once when told to stop (else it runs for minutes)
    stop_streams(world.client.app)  # type: ignore[arg-type]
    return Matrix(world, ctx, tokens)


@pytest.fixture
def matrix(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Matrix]:
    build = tmp_path / "ohif"  # an installed OHIF, as far as the routes can tell
    build.mkdir()
    (build / "index.html").write_text("<!doctype html><title>OHIF</title>")
    (build / ohif.MARKER).write_text(ohif.VERSION)
    for world in build_world(session_factory, tmp_path, ohif_dir=build):
        yield _matrix(world)


def _call(matrix: Matrix, req: Req, caller: str) -> httpx.Response:
    token = matrix.tokens[caller]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return matrix.world.client.request(
            req.method,
            req.url,
            headers=headers,
            json=req.json,
            data=req.data,
            follow_redirects=False,
        )
    finally:  # a session log-in's cookie must not authenticate the next caller
        matrix.world.client.cookies.clear()


def _check(matrix: Matrix, key: tuple[str, str], caller: str, req: Req) -> str | None:
    """None when the caller got what the table says for ``req``; else what went wrong."""
    access = ACCESS[key]
    want = expected(access, caller)
    r = _call(matrix, req, caller)
    got = r.status_code
    where = f"{key[0]} {key[1]} as {caller}: {req.method} {req.url} -> {got}"
    if want == "allowed":
        if got in (401, 403, 404) or got >= 500:
            return f"{where}, expected allowed ({r.text[:200]})"
    elif want == "no match":
        if not (got == 204 or (got == 200 and r.json() == [])):
            return f"{where}, expected an empty answer ({r.text[:200]})"
    elif got != want:
        return f"{where}, expected {want} ({r.text[:200]})"
    if caller in FOREIGN and got < 400 and access.roles != ANYONE:
        leaked = [u for u in matrix.ctx.uids if u in r.text]
        if leaked:
            return f"{where}: another site's caller was shown site-A UIDs {leaked}"
    return None


def _order(keys: set[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(keys, key=lambda k: (k[1] in _LAST, k[1], k[0]))


def _run(matrix: Matrix, keys: set[tuple[str, str]]) -> list[str]:
    problems: list[str] = []
    for key in _order(keys):
        access = ACCESS[key]
        # the refused first, then the allowed. The refused change nothing: they share one
        # request (a fresh study, a claim, a draft... made once, by the same holder), as the
        # allowed cannot (each changes what it is given)
        callers = sorted(CALLERS, key=lambda c: expected(access, c) == "allowed")
        refused: dict[str, Req] = {}
        for caller in callers:
            if expected(access, caller) == "allowed":
                req = access.request(matrix.ctx, caller)
            else:
                holder = matrix.ctx.reader(caller)
                if holder not in refused:
                    refused[holder] = access.request(matrix.ctx, caller)
                req = refused[holder]
            problem = _check(matrix, key, caller, req)
            if problem is not None:
                problems.append(problem)
    return problems


def _schema_operations(app: Any) -> dict[tuple[str, str], list[str] | None]:
    schema = app.openapi()
    ops: dict[tuple[str, str], list[str] | None] = {}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            ops[(method.upper(), path)] = operation.get(ROLES_EXTENSION)
    return ops


SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
POSTGRES = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
# the PostgreSQL run: the site-scoped reads and the account routes
POSTGRES_SUBSET = {
    key
    for key, access in ACCESS.items()
    if (key[0] == "GET" and access.scope in ("site", "search", "list")) or "/users" in key[1]
}


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


@SQLITE
def test_the_table_covers_every_route_and_agrees_with_each_declaration(world: World) -> None:
    app = world.client.app
    declared = route_roles(app)  # type: ignore[arg-type]
    schema_ops = _schema_operations(app)
    routes = set(declared) | set(schema_ops)
    missing = routes - set(ACCESS)
    assert not missing, _undeclared_message(missing, declared)
    stale = set(ACCESS) - routes
    assert not stale, f"ACCESS names routes the app no longer has: {sorted(stale)}"
    for key, roles in schema_ops.items():
        assert roles is not None, f"{key} has no {ROLES_EXTENSION} in the OpenAPI schema"
        assert tuple(roles) == declared[key], key
    disagree = {
        key: (sorted(ACCESS[key].roles), list(declared[key]))
        for key in ACCESS
        if tuple(sorted(ACCESS[key].roles)) != declared[key]
    }
    assert not disagree, f"table roles vs the routes' declared roles: {disagree}"
    served = world.client.get("/openapi.json").json()["paths"]
    assert served["/api/v1/users"]["post"][ROLES_EXTENSION] == ["admin"]
    assert served["/healthz"]["get"][ROLES_EXTENSION] == [PUBLIC]


@SQLITE
def test_every_route_by_every_caller(matrix: Matrix) -> None:
    app = matrix.world.client.app
    problems = _run(matrix, set(ACCESS) & set(route_roles(app)))  # type: ignore[arg-type]
    assert not problems, "\n".join(problems)


@POSTGRES
def test_site_scoped_routes_by_every_caller_on_postgresql(matrix: Matrix) -> None:
    app = matrix.world.client.app
    problems = _run(matrix, POSTGRES_SUBSET & set(route_roles(app)))  # type: ignore[arg-type]
    assert not problems, "\n".join(problems)


@SQLITE
def test_a_foreign_sites_404_looks_like_a_missing_study(matrix: Matrix) -> None:
    """The answer to another site's caller is the answer for a UID nobody has."""
    uid = matrix.ctx.study.uid
    for path in ("/api/v1/studies/{}", "/api/v1/studies/{}/report", "/dicomweb/studies/{}"):
        foreign = _call(matrix, Req("GET", path.format(uid)), "clinic_b")
        absent = _call(matrix, Req("GET", path.format("1.2.3.4.5")), "clinic_b")
        assert foreign.status_code == absent.status_code == 404
        assert foreign.text.replace(uid, "") == absent.text.replace("1.2.3.4.5", "")
    # a gateway of site B naming a site-A study under its own site learns nothing either
    body = {"site": "TS02", "study_instance_uid": uid, "expected_instances": 1}
    r = _call(matrix, Req("POST", "/api/v1/ingest/study-complete", json=body), "gateway_b")
    assert r.status_code == 404
