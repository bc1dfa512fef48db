"""Shared set-up for the DICOMweb tests (no tests here): the API test world served by a real
uvicorn on loopback, instances ingested as the gateway does it (its own header parse and
DICOM JSON), and ``dicomweb-client`` clients per account."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from dicomweb_client.api import DICOMwebClient
from fastapi import FastAPI
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from gateway.instance import read_instance, spooled_header_json
from teleread.services import ApiServer
from tests.integration.test_api_world import World, build_world
from viewer_api.main import create_app
from worklist.models import AuditEvent
from worklist.settings import WorklistSettings

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Served:
    world: World
    root: str  # http://127.0.0.1:port/dicomweb
    tmp: Path
    app: FastAPI  # the served app (``world.client`` has its own)

    def audited(self, action: str) -> list[AuditEvent]:
        """The served app's ``action`` events, its audit writer's pending ones written."""
        self.app.state.audit_writer.flush()
        with self.world.factory() as session:
            return list(
                session.scalars(
                    select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
                )
            )

    def client(self, username: str | None) -> DICOMwebClient:
        headers = {"Authorization": f"Bearer {self.world.tokens[username]}"} if username else {}
        return DICOMwebClient(url=self.root, headers=headers)

    def ingest(
        self,
        blobs: list[bytes],
        *,
        site: str = "TS01",
        gateway: str = "gw_ts01",
        with_json: bool = True,
    ) -> list[Dataset]:
        """Put Part-10 ``blobs`` in the store and announce them, header JSON included."""
        items: list[dict[str, Any]] = []
        datasets = []
        for n, blob in enumerate(blobs):
            ds = dcmread(BytesIO(blob))
            datasets.append(ds)
            received = read_instance(
                blob,
                ds.file_meta,
                site=site,
                calling_ae=f"CT_{site}",
                called_ae="TELEREAD",
                urgent_called_aes={},
            )
            item = dict(received.payload)
            digest = hashlib.sha256(blob).hexdigest()
            self.world.store.put(received.object_key, blob, sha256=digest)
            item.update(
                size=len(blob),
                sha256=digest,
                received_at=self.world.clock.now.isoformat(),
            )
            if with_json:
                path = self.tmp / f"spooled-{digest[:16]}-{n}.dcm"
                path.write_bytes(blob)
                header = spooled_header_json(path, item["patient_name"])
                assert header is not None
                item["dicom_json"] = header
            items.append(item)
        r = self.world.post(
            gateway,
            "/api/v1/ingest/instances",
            json={
                "site": site,
                "calling_ae": f"CT_{site}",
                "called_ae": "TELEREAD",
                "instances": items,
            },
        )
        assert r.status_code == 200, r.text
        return datasets


def serve(factory: Any, tmp_path: Path) -> Iterator[Served]:
    for world in build_world(factory, tmp_path):
        app = create_app(
            session_factory=world.factory,
            store=world.store,
            settings=world.settings,
            clock=world.clock,
            worklist_settings=WorklistSettings(stable_seconds=60),
        )
        port = free_port()
        server = ApiServer(app, host="127.0.0.1", port=port)
        server.start()
        try:
            yield Served(world, f"http://127.0.0.1:{port}/dicomweb", tmp_path, app)
        finally:
            server.stop()
