"""Shared set-up for the API tests (no tests here): a real app over a migrated database
(SQLite or PostgreSQL, from the ``db_url`` fixture) and a real ``FilesystemStore``, two
sites, one account per role, and helpers that announce instances like the gateway does."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import StarletteDeprecationWarning

from storage import FilesystemStore
from storage.keys import instance_key
from viewer_api.main import create_app
from viewer_api.security import create_access_token
from viewer_api.settings import ApiSettings
from worklist.accounts import create_site, hash_password, list_sites
from worklist.db import utcnow
from worklist.models import User
from worklist.settings import WorklistSettings

with warnings.catch_warnings():
    # starlette 1.x prefers the httpx2 package and warns when it falls back to httpx
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SECRET = "test-secret-key-0123456789-abcdefghijklmnop"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
PASSWORDS = {
    "dr_li": "li-password-1",
    "dr_wang": "wang-password-2",
    "boss": "admin-password-3",
    "nurse_ts01": "nurse-password-4",
    "nurse_ts02": "nurse-password-5",
    "gw_ts01": "gateway-password-6",
    "gw_all": "gateway-password-7",
}
ACCOUNTS: dict[str, tuple[str, str | None]] = {
    "dr_li": ("radiologist", None),
    "dr_wang": ("radiologist", None),
    "boss": ("admin", None),
    "nurse_ts01": ("clinic", "TS01"),
    "nurse_ts02": ("clinic", "TS02"),
    "gw_ts01": ("gateway", "TS01"),
    "gw_all": ("gateway", None),
}


class Clock:
    """The app's clock, moved by hand (starting now, so real-time token expiry agrees)."""

    def __init__(self) -> None:
        self.now = utcnow().replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class Study:
    """A synthetic study as the gateway would announce it."""

    site: str
    modality: str
    description: str
    patient_name: str = "张^三"
    count: int = 2
    uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    sop_uids: list[str] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sop_uids:
            self.sop_uids = [generate_uid() for _ in range(self.count)]


@dataclass
class World:
    client: TestClient
    factory: sessionmaker[Session]
    store: FilesystemStore
    settings: ApiSettings
    clock: Clock
    tokens: dict[str, str]

    def headers(self, username: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[username]}"} if username else {}

    def get(self, username: str | None, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, headers=self.headers(username), **kw)

    def post(self, username: str | None, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, headers=self.headers(username), **kw)

    def put(self, username: str | None, path: str, **kw: Any) -> httpx.Response:
        return self.client.put(path, headers=self.headers(username), **kw)

    def announce(
        self, study: Study, *, gateway: str = "gw_ts01", calling_ae: str = ""
    ) -> httpx.Response:
        """Store the study's objects, then announce them, as the gateway's forwarder does."""
        return self.post(
            gateway,
            "/api/v1/ingest/instances",
            json=self.payload(study, calling_ae=calling_ae),
        )

    def payload(self, study: Study, *, calling_ae: str = "") -> dict[str, Any]:
        items = []
        for number, sop_uid in enumerate(study.sop_uids, start=1):
            key = instance_key(study.site, study.uid, study.series_uid, sop_uid)
            blob = study.blobs.get(sop_uid)
            if blob is None:
                blob = b"\0" * 128 + b"DICM" + f"{sop_uid}|{study.description}".encode()
                study.blobs[sop_uid] = blob
                digest = hashlib.sha256(blob).hexdigest()
                self.store.put(key, blob, sha256=digest)
            items.append(
                {
                    "study_instance_uid": study.uid,
                    "series_instance_uid": study.series_uid,
                    "sop_instance_uid": sop_uid,
                    "sop_class_uid": CT_IMAGE if study.modality == "CT" else DX_IMAGE,
                    "transfer_syntax_uid": EXPLICIT_LE,
                    "object_key": key,
                    "size": len(blob),
                    "sha256": hashlib.sha256(blob).hexdigest(),
                    "received_at": self.clock.now.isoformat(),
                    "modality": study.modality,
                    "patient_name": study.patient_name,
                    "patient_id": "P001",
                    "patient_sex": "M",
                    "patient_birth_date": "19600101",
                    "accession_number": "A1",
                    "study_date": self.clock.now.strftime("%Y%m%d"),
                    "study_time": "100000",
                    "study_description": study.description,
                    "series_number": 1,
                    "series_description": study.description,
                    "body_part_examined": "HEAD" if study.modality == "CT" else "CHEST",
                    "instance_number": number,
                    "text_fields": {"StudyDescription": study.description},
                }
            )
        return {
            "site": study.site,
            "calling_ae": calling_ae or f"{study.modality}_{study.site}",
            "called_ae": "TELEREAD",
            "instances": items,
        }


@cache
def _password_hash(username: str) -> str:
    """argon2 is slow on purpose: hash each test password once per test run."""
    return hash_password(PASSWORDS[username])


def build_world(factory: sessionmaker[Session], tmp_path: Path, **settings: Any) -> Iterator[World]:
    """Sites TS01/TS02 and one account per role (rows written directly with cached hashes,
    tokens minted directly: log-in itself is tested on its own) to keep set-up cheap."""
    clock = Clock()
    with factory.begin() as session:
        create_site(
            session=session,
            code="TS01",
            name="一号乡镇卫生院",
            ae_titles=["CT_TS01", "DX_TS01"],
            now=clock.now,
        )
        create_site(
            session=session,
            code="TS02",
            name="二号乡镇卫生院",
            ae_titles=["CT_TS02"],
            now=clock.now,
        )
        sites = {s.code: s.id for s in list_sites(session=session)}
        users = [
            User(
                username=name,
                password_hash=_password_hash(name),
                role=role,
                site_id=sites[site] if site else None,
                created_at=clock.now,
            )
            for name, (role, site) in ACCOUNTS.items()
        ]
        session.add_all(users)
    api_settings = ApiSettings(secret_key=SECRET, **settings)
    tokens = {
        u.username: create_access_token(user=u, settings=api_settings, now=clock.now) for u in users
    }
    store = FilesystemStore(tmp_path / "objects")
    app = create_app(
        session_factory=factory,
        store=store,
        settings=api_settings,
        clock=clock,
        worklist_settings=WorklistSettings(stable_seconds=60),
    )
    with TestClient(app) as client:
        yield World(client, factory, store, api_settings, clock, tokens)
