"""DICOMweb speed: teleread's /dicomweb versus Orthanc's DICOMweb plugin, same data, one run.

    .venv/bin/python bench/dicomweb.py                 # 300-instance 512x512 CT study
    .venv/bin/python bench/dicomweb.py --instances 100 --requests 50 --no-orthanc

One head CT study (``--instances`` slices of 512x512 int16, Explicit VR LE, a Chinese patient
name) is ingested into teleread as the gateway announces it (header DICOM JSON included) and
POSTed to Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``; its own JSON config, loopback
ports, RemoteAccessAllowed false, SQLite index in a temporary directory). Both are then asked,
over one keep-alive HTTP connection each, for:

- rendered frame as PNG and as JPEG, "scrolling": each request a different slice (as a viewer
  scrolling through the series; no parse or frame cache helps), and "one slice": the same
  slice with a new window each time (window/level dragging; a frame cache helps);
- one instance retrieved (multipart/related; type="application/dicom");
- QIDO: the study by PatientID, and the 300 instances of its series;
- the study's metadata, warm (after one untimed call).

Both servers run at once and take turns request by request, in rounds over all lines (one
untimed warm-up request per line first), so background load falls on both alike; p50 / p95
in milliseconds, their ratio (teleread / Orthanc: below 1 is faster) and the median response
size are printed.

Every teleread request above is audited (searches, metadata, images once per study and few
minutes, retrieves). The audit's cost is printed per request: the time spent taking events
down on the request path, plus the CPU time the writer thread spends writing them (its wall
time, mostly the database's commit waiting for the disk, is printed too), over all requests.
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
from viewer_api.auditing import AuditWriter
from viewer_api.main import create_app
from viewer_api.security import create_access_token
from viewer_api.settings import ApiSettings
from worklist.accounts import create_site, create_user
from worklist.audit import PendingEvent
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


class TimedAuditWriter(AuditWriter):
    """The app's audit writer, timed: ``add`` on the request path, ``flush`` in its thread
    (CPU and wall time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_seconds = self.flush_seconds = self.flush_wall_seconds = 0.0
        self.added = self.written = 0

    def add(self, event: PendingEvent, *, once_per: Any = None) -> None:
        start = time.perf_counter()
        super().add(event, once_per=once_per)
        self.add_seconds += time.perf_counter() - start
        self.added += 1

    def flush(self) -> int:
        start, cpu = time.perf_counter(), time.thread_time()
        written = super().flush()
        self.flush_seconds += time.thread_time() - cpu
        self.flush_wall_seconds += time.perf_counter() - start
        self.written += written
        return written


@contextlib.contextmanager
def teleread(
    tmp: Path, files: list[Path], audit: dict[str, TimedAuditWriter]
) -> Iterator[tuple[str, dict[str, str]]]:
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
    audit["writer"] = app.state.audit_writer = TimedAuditWriter(factory)
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


Sample = tuple[float, int]  # milliseconds, body bytes


def one(client: httpx.Client, url: str, accept: str, params: dict[str, Any] | None) -> Sample:
    start = time.perf_counter()
    r = client.get(url, headers={"Accept": accept}, params=params)
    body = r.content
    elapsed = (time.perf_counter() - start) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"{r.status_code} for {r.url}: {r.text[:300]}")
    return elapsed, len(body)


def p50_p95(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


class Target:
    """One server under test: its DICOMweb root and one keep-alive client."""

    def __init__(self, name: str, root: str, headers: dict[str, str]) -> None:
        self.name = name
        self.root = root
        self.client = httpx.Client(headers=headers, timeout=60)

    def instance(self, uid: tuple[str, str, str]) -> str:
        return f"{self.root}/studies/{uid[0]}/series/{uid[1]}/instances/{uid[2]}"


# each line: (name, how many requests per round, request number -> (path maker, accept, params))
Line = tuple[str, Callable[[Target, int], tuple[str, str, dict[str, Any] | None]]]


def lines(uids: list[tuple[str, str, str]], n: int) -> list[Line]:
    """The measured requests. Rendered "scrolling": request j of a line is slice j of its
    own range (PNG slices 0.., JPEG after them), so each slice is rendered once per server
    and no parse or frame cache can help; both servers get the same slices in the same
    order. "one slice, window dragged": the same slice with a new window each request (what
    a frame cache is for), reported on its own lines."""
    st, se, _ = uids[0]
    count = len(uids)
    warm = uids[-1]  # the warm-up slice (never in a scrolling range)

    def scroll(first: int, accept: str) -> Callable[[Target, int], tuple[str, str, None]]:
        return lambda t, j: (t.instance(uids[(first + j) % count]) + "/rendered", accept, None)

    def drag(accept: str) -> Callable[[Target, int], tuple[str, str, None]]:
        # commas as they are: Orthanc does not split a %2C-escaped window
        return lambda t, j: (
            t.instance(warm) + f"/rendered?window={40 + j % 50},{80 + 2 * (j % 7)},linear",
            accept,
            None,
        )

    return [
        ("rendered PNG, scrolling", scroll(0, "image/png")),
        ("rendered JPEG, scrolling", scroll(n, "image/jpeg")),
        ("rendered PNG, one slice", drag("image/png")),
        ("rendered JPEG, one slice", drag("image/jpeg")),
        (
            "retrieve instance",
            lambda t, j: (
                t.instance(uids[j % count]),
                'multipart/related; type="application/dicom"',
                None,
            ),
        ),
        (
            "QIDO studies",
            lambda t, j: (f"{t.root}/studies", "application/dicom+json", {"PatientID": PATIENT_ID}),
        ),
        (
            "QIDO series instances",
            lambda t, j: (
                f"{t.root}/studies/{st}/series/{se}/instances",
                "application/dicom+json",
                None,
            ),
        ),
        (
            "study metadata (warm)",
            lambda t, j: (f"{t.root}/studies/{st}/metadata", "application/dicom+json", None),
        ),
    ]


def run(
    targets: list[Target], uids: list[tuple[str, str, str]], n: int, rounds: int
) -> dict[str, dict[str, list[Sample]]]:
    """``rounds`` rounds of every line, ``n / rounds`` requests each, the servers taking
    turns request by request (who goes first alternates), so background load falls on both
    alike. One untimed warm-up request per line and server first."""
    if 2 * n + 1 > len(uids):
        print(f"note: {2 * n} scrolled slices > {len(uids) - 1}: some slices repeat")
    measured = lines(uids, n)
    results: dict[str, dict[str, list[Sample]]] = {
        name: {t.name: [] for t in targets} for name, _ in measured
    }
    for _name, make in measured:
        for t in targets:
            url, accept, params = make(t, 0)
            if "scrolling" in _name:  # the warm-up slice, not one of the scrolled ones
                url = t.instance(uids[-1]) + "/rendered"
            one(t.client, url, accept, params)
    per_round = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]
    done = 0
    for r, k in enumerate(per_round):
        order = targets if r % 2 == 0 else targets[::-1]
        for name, make in measured:
            k_line = k if "metadata" not in name else max(2, k // 5)
            for j in range(done, done + k_line):
                for t in order if j % 2 else order[::-1]:
                    results[name][t.name].append(one(t.client, *make(t, j)))
        done += k
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--requests", type=int, default=140, help="per line and server")
    parser.add_argument("--rounds", type=int, default=7)
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
        audit: dict[str, TimedAuditWriter] = {}
        with contextlib.ExitStack() as stack:
            root, headers = stack.enter_context(teleread(tmp / "teleread", files, audit))
            targets = [Target("teleread", root, headers)]
            if not args.no_orthanc:
                root, headers = stack.enter_context(orthanc(tmp / "orthanc", files))
                targets.append(Target("orthanc", root, headers))
            for t in targets:
                stack.callback(t.client.close)
            counts = {}
            for t in targets:
                url = f"{t.root}/studies/{uids[0][0]}/metadata"
                meta = t.client.get(url, headers={"Accept": "application/dicom+json"})
                counts[t.name] = len(meta.json())
            results = run(targets, uids, args.requests, args.rounds)
            audit["writer"].flush()
    names = [t.name for t in targets]
    print(f"\n{'ms (p50 / p95)':28}" + "".join(f"{n:>22}" for n in names), end="")
    print("   p50 ratio   p95 ratio   bytes (median)" if len(names) == 2 else "")
    for key, by_server in results.items():
        stats = {n: p50_p95([ms for ms, _ in by_server[n]]) for n in names}
        cells = "".join(f"{stats[n][0]:>12.1f} / {stats[n][1]:<7.1f}" for n in names)
        if len(names) == 2:
            a, b = stats[names[0]], stats[names[1]]
            sizes = " vs ".join(
                str(int(statistics.median(size for _, size in by_server[n]))) for n in names
            )
            cells += f"{a[0] / b[0]:>12.2f}{a[1] / b[1]:>12.2f}   {sizes}"
        print(f"{key:28}{cells}")
    writer = audit["writer"]
    requests = sum(len(by_server["teleread"]) for by_server in results.values())
    per_request = (writer.add_seconds + writer.flush_seconds) / max(1, requests) * 1000
    rows = max(1, writer.written)
    print(
        f"audit: {writer.added} events taken down, {writer.written} rows written for "
        f"{requests} timed requests (+ warm-ups); {per_request:.3f} ms per request "
        f"({writer.add_seconds / max(1, writer.added) * 1e6:.1f} us per event on the request "
        f"path, {writer.flush_seconds / rows * 1e6:.0f} us CPU per row written, "
        f"{writer.flush_wall_seconds / rows * 1e6:.0f} us wall)"
    )
    samples = {n: len(results["rendered PNG, scrolling"][n]) for n in names}
    print(f"requests per line and server: {samples}, {args.rounds} rounds, servers alternating")
    print(f"metadata entries returned: {counts}")
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}")


if __name__ == "__main__":
    main()
