"""DICOMweb speed: teleread's /dicomweb versus Orthanc's DICOMweb plugin, same data, one run.

    .venv/bin/python bench/dicomweb.py                 # 300-instance 512x512 CT study
    .venv/bin/python bench/dicomweb.py --instances 100 --requests 50 --no-orthanc

One head CT study (``--instances`` slices of 512x512 int16, Explicit VR LE, a Chinese patient
name) is ingested into teleread as the gateway announces it (header DICOM JSON included) and
POSTed to Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``; its own JSON config, loopback
ports, RemoteAccessAllowed false, SQLite index in a temporary directory). Both are then asked,
over one keep-alive HTTP connection each, for:

- rendered frame as PNG and as JPEG (each request a different slice, so no frame cache helps);
- one instance retrieved (multipart/related; type="application/dicom");
- QIDO: the study by PatientID, and the 300 instances of its series;
- the study's metadata, warm (after one untimed call).

and p50 / p95 in milliseconds are printed side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from pydicom import dcmread
from pydicom.uid import generate_uid

from gateway.instance import read_instance, spooled_header_json
from storage import FilesystemStore
from teleread.services import ApiServer
from tests.dicom_factory import make_ct, part10_bytes
from viewer_api.main import create_app
from viewer_api.security import create_access_token
from viewer_api.settings import ApiSettings
from worklist.accounts import create_site, create_user
from worklist.db import make_engine, make_sessionmaker, upgrade, utcnow

ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SECRET = "bench-secret-key-0123456789-abcdefghijklmnop"
PATIENT_ID = "BENCH001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_study(folder: Path, n: int) -> list[Path]:
    study, series = generate_uid(), generate_uid()
    first = make_ct(
        study,
        series_uid=series,
        rows=512,
        cols=512,
        patient_name="王^小明",
        patient_id=PATIENT_ID,
        study_description="头颅CT平扫",
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        ds = copy.deepcopy(first)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-125.0, -125.0, 5.0 * i]
        path = folder / f"{i:04d}.dcm"
        path.write_bytes(part10_bytes(ds))
        paths.append(path)
    return paths


@contextlib.contextmanager
def teleread(tmp: Path, files: list[Path]) -> Iterator[tuple[str, dict[str, str]]]:
    url = f"sqlite:///{tmp / 'teleread.db'}"
    upgrade(url)
    factory = make_sessionmaker(make_engine(url))
    settings = ApiSettings(secret_key=SECRET)
    now = utcnow()
    with factory.begin() as session:
        create_site(
            session=session, code="BENCH", name="基准卫生院", ae_titles=["CT_BENCH"], now=now
        )
        reader = create_user(
            session=session, username="reader", password="reader-pw-1", role="radiologist", now=now
        )
        gateway = create_user(
            session=session,
            username="gw",
            password="gateway-pw-1",
            role="gateway",
            site_code="BENCH",
            now=now,
        )
        tokens = {
            u.username: create_access_token(user=u, settings=settings, now=now)
            for u in (reader, gateway)
        }
    store = FilesystemStore(tmp / "objects")
    app = create_app(session_factory=factory, store=store, settings=settings)
    port = free_port()
    server = ApiServer(app, host="127.0.0.1", port=port)
    server.start()
    try:
        items = []
        for path in files:
            blob = path.read_bytes()
            ds = dcmread(path, stop_before_pixels=True)
            received = read_instance(
                blob,
                ds.file_meta,
                site="BENCH",
                calling_ae="CT_BENCH",
                called_ae="TELEREAD",
                urgent_called_aes={},
            )
            digest = hashlib.sha256(blob).hexdigest()
            store.put(received.object_key, blob, sha256=digest)
            item = dict(received.payload)
            item.update(size=len(blob), sha256=digest, received_at=now.isoformat())
            item["dicom_json"] = spooled_header_json(path, item["patient_name"])
            items.append(item)
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/ingest/instances",
            headers={"Authorization": f"Bearer {tokens['gw']}"},
            json={
                "site": "BENCH",
                "calling_ae": "CT_BENCH",
                "called_ae": "TELEREAD",
                "instances": items,
            },
            timeout=120,
        )
        r.raise_for_status()
        yield f"http://127.0.0.1:{port}/dicomweb", {"Authorization": f"Bearer {tokens['reader']}"}
    finally:
        server.stop()


@contextlib.contextmanager
def orthanc(tmp: Path, files: list[Path]) -> Iterator[tuple[str, dict[str, str]]]:
    exe = shutil.which("Orthanc")
    if exe is None or not ORTHANC_PLUGIN.exists():
        raise SystemExit("Orthanc not installed: apt-get install -y orthanc orthanc-dicomweb")
    http_port = free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(tmp / "orthanc-storage"),
        "IndexDirectory": str(tmp / "orthanc-index"),
        "StorageCompression": False,
        "DicomServerEnabled": False,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(ORTHANC_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "SaveJobs": False,
    }
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "orthanc.json").write_text(json.dumps(config))
    log = open(tmp / "orthanc.log", "wb")
    proc = subprocess.Popen([exe, str(tmp / "orthanc.json")], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{http_port}"
    try:
        end = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/system", timeout=1)
                break
            except OSError:
                if time.monotonic() > end or proc.poll() is not None:
                    raise RuntimeError(
                        f"Orthanc did not start; see {tmp / 'orthanc.log'}"
                    ) from None
                time.sleep(0.2)
        with httpx.Client(timeout=60) as client:
            for path in files:
                client.post(f"{base}/instances", content=path.read_bytes()).raise_for_status()
        yield f"{base}/dicom-web", {}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def timed(n: int, call: Callable[[int], httpx.Response]) -> tuple[float, float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        r = call(i)
        r.raise_for_status()
        _ = r.content
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def run(root: str, headers: dict[str, str], uids: list[tuple[str, str, str]], n: int) -> dict:
    st, se, _ = uids[0]
    results: dict[str, tuple[float, float]] = {}
    with httpx.Client(headers=headers, timeout=60) as client:

        def instance_url(i: int) -> str:
            s, e, o = uids[i % len(uids)]
            return f"{root}/studies/{s}/series/{e}/instances/{o}"

        def get(url: str, accept: str, **params: Any) -> httpx.Response:
            return client.get(url, headers={"Accept": accept}, params=params or None)

        get(f"{root}/studies/{st}/metadata", "application/dicom+json").raise_for_status()
        results["rendered PNG"] = timed(
            n, lambda i: get(instance_url(i) + "/rendered", "image/png")
        )
        results["rendered JPEG"] = timed(
            n, lambda i: get(instance_url(n + i) + "/rendered", "image/jpeg")
        )
        results["retrieve instance"] = timed(
            n, lambda i: get(instance_url(i), 'multipart/related; type="application/dicom"')
        )
        results["QIDO studies"] = timed(
            n, lambda i: get(f"{root}/studies", "application/dicom+json", PatientID=PATIENT_ID)
        )
        results["QIDO series instances"] = timed(
            n,
            lambda i: get(f"{root}/studies/{st}/series/{se}/instances", "application/dicom+json"),
        )
        metadata = f"{root}/studies/{st}/metadata"
        results["study metadata (warm)"] = timed(
            max(10, n // 5), lambda i: get(metadata, "application/dicom+json")
        )
        r = get(metadata, "application/dicom+json")
        results["_count"] = (float(len(r.json())), 0.0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--no-orthanc", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dicomweb-") as name:
        tmp = Path(name)
        t0 = time.perf_counter()
        files = make_study(tmp / "files", args.instances)
        print(f"made {len(files)} instances in {time.perf_counter() - t0:.1f} s")
        uids = []
        for path in files:
            ds = dcmread(path, stop_before_pixels=True)
            uids.append((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
        table: dict[str, dict] = {}
        with teleread(tmp / "teleread", files) as (root, headers):
            table["teleread"] = run(root, headers, uids, args.requests)
        if not args.no_orthanc:
            with orthanc(tmp / "orthanc", files) as (root, headers):
                table["orthanc"] = run(root, headers, uids, args.requests)
    names = list(table)
    print(f"\n{'ms (p50 / p95)':28}" + "".join(f"{n:>22}" for n in names))
    for key in table["teleread"]:
        if key.startswith("_"):
            continue
        cells = "".join(f"{table[n][key][0]:>12.1f} / {table[n][key][1]:<7.1f}" for n in names)
        print(f"{key:28}{cells}")
    counts = ", ".join(f"{n}: {int(table[n]['_count'][0])}" for n in names)
    print(f"metadata entries returned: {counts}")
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}")


if __name__ == "__main__":
    main()
