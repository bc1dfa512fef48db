"""A county's day replayed through the real pipeline, time compressed, and every urgent
patient's path from the scan to the clinic read from the study timeline.

    .venv/bin/python bench/county_day.py --seed 1                   # 23 sites, a day in 12 min
    .venv/bin/python bench/county_day.py --seed 1 --sites 3 --scale 0.2 --speed 1440   # smoke

What runs: `teleread serve` (the township gateway, the county API, SQLite and the local
object store: the real processes, on loopback) in a fresh data directory; the sites and
accounts are added to its database. The modalities are dcmtk's `storescu`, one run per
study at its scheduled moment, from the site's CT_ or DR_ AE title. The day: per site
``--scale`` x (20 DR studies of 1-2 images, 8 CT studies of ``--ct-slices`` slices), the
arrivals weighted to the working hours, ``--urgent-share`` of all studies urgent CTs (a
quarter of them chest pain CTA, the rest stroke head CTs; raised from the ~1.25 % of a real
county so there are enough to measure), all drawn from ``--seed``. Each image's acquisition
time is the moment its study is sent. ``--readers`` simulated radiologists take
``POST /api/v1/worklist/next``, read for a drawn time (urgent 4-10 min, DR 2-6, CT 6-15),
record a critical result and sign preliminary (urgent) or sign final (routine); each site's
nurse looks at the site's reports every ``--clinic-poll-minutes`` and opens the new ones.

Time: the schedule, the reading and the nurses' polling are the day's minutes divided by
``--speed``; the machine's own hops (receive, upload, announce, list) run at their real
speed, so the figures for those are real seconds, and the reading and clinic hops are in
compressed time (multiply by ``--speed`` for the day's minutes). Reported: per urgent
patient scan -> on the worklist, scan end -> last image at the county, listed -> report,
report -> clinic read and scan -> clinic read (from ``GET /api/v1/studies/{uid}/timeline``);
per category the period's percentiles hop by hop (``GET /api/v1/ops/turnaround``); the
slowest hop for urgent studies. Not here (see ``bench/uplink.py`` for those): shaped
township links (one gateway serves every site, on loopback), PostgreSQL and an S3 server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np
from pydicom.uid import generate_uid

from teleread.dicom_builders import SeriesInfo, StudyInfo, ct_image, dx_image, write_part10
from teleread.phantoms import chest_ct_slice, chest_radiograph, grid, head_slice, hu_to_stored
from worklist import accounts
from worklist.db import make_engine, make_sessionmaker

CHINA = timezone(timedelta(hours=8))
DAY_SECONDS = 24 * 3600
# arrivals per hour of the day, relative (a township's outpatient day)
HOUR_WEIGHTS = [0.3] * 8 + [3, 3, 3, 3, 1.5, 1.5, 2.5, 2.5, 2.5, 2.5] + [0.7] * 6
PASSWORD = "county-day-password"
STROKE_TEXT = ("头颅CT平扫", "突发右侧肢体无力1小时 急性脑卒中 卒中绿色通道")
CHEST_TEXT = ("胸腹主动脉CTA", "突发撕裂样胸背痛1小时 胸痛中心")
ROUTINE_CT = ("胸部CT平扫", "体检")
ROUTINE_DR = ("胸部正位片", "健康体检")
ENV = {**os.environ, "TCP_NODELAY": "1", "PYTHONUNBUFFERED": "1"}


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


def plan_day(args: argparse.Namespace) -> list[Exam]:
    """The day's studies, drawn from ``args.seed``: every site's DR and CT studies at times
    weighted by the hour, a share of them urgent."""
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
    return exams


class ImageMaker:
    """Pixels made once (a head and a chest CT volume, a chest radiograph), written under
    each study's own UIDs and acquisition time."""

    def __init__(self, ct_size: int, dx_size: int, slices: int, seed: int) -> None:
        x, y = grid(ct_size, ct_size, 0.5)
        self.head = [
            hu_to_stored(head_slice(x, y, i / max(1, slices - 1), bleed=True))
            for i in range(slices)
        ]
        self.chest = [
            hu_to_stored(chest_ct_slice(x, y, i / max(1, slices - 1), contrast=True))
            for i in range(slices)
        ]
        self.dx = chest_radiograph(dx_size, dx_size, np.random.default_rng(seed))

    def write(self, exam: Exam, out: Path) -> None:
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
        for n in range(1, exam.images + 1):
            sop = str(generate_uid())
            if exam.kind == "dr":
                ds = dx_image(
                    study,
                    series,
                    sop_uid=sop,
                    pixels=self.dx,
                    pixel_spacing_mm=0.4,
                    instance_number=n,
                )
            else:
                volume = self.head if exam.category == "stroke" else self.chest
                ds = ct_image(
                    study,
                    series,
                    sop_uid=sop,
                    instance_number=n,
                    stored=volume[(n - 1) % len(volume)],
                    spacing_mm=0.5,
                    thickness_mm=5.0,
                    z_mm=5.0 * n,
                )
            write_part10(ds, out / f"{n:04d}.dcm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def county(data_dir: Path) -> Iterator[tuple[int, int, dict[str, str]]]:
    """`teleread serve` on free loopback ports: (DICOM port, HTTP port, demo logins)."""
    dicom_port, http_port = free_port(), free_port()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = (data_dir / "serve.log").open("wb")
    env = {**ENV, "TELEREAD_WORKLIST_STABLE_SECONDS": "2"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "teleread.cli",
            "serve",
            "--data-dir",
            str(data_dir),
            "--dicom-port",
            str(dicom_port),
            "--http-port",
            str(http_port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        logins_file = data_dir / "demo-logins.txt"
        while not (
            logins_file.exists() and b"Press Ctrl-C" in (data_dir / "serve.log").read_bytes()
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("teleread serve did not start: " + str(data_dir / "serve.log"))
            time.sleep(0.2)
        logins = {}
        for line in logins_file.read_text(encoding="utf-8").splitlines()[1:]:
            username, password, *_ = line.split("\t")
            logins[username] = password
        yield dicom_port, http_port, logins
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def provision(data_dir: Path, sites: int, readers: int) -> None:
    """The sites beyond the demo's two, their AE titles and nurses, the radiologists."""
    engine = make_engine(f"sqlite:///{data_dir / 'teleread.db'}")
    factory = make_sessionmaker(engine)
    now = datetime.now(UTC)
    with factory.begin() as session:
        have = {s.code for s in accounts.list_sites(session=session)}
        for n in range(1, sites + 1):
            code = f"TS{n:02d}"
            aes = [f"CT_{code}", f"DR_{code}"]
            if code in have:
                site = accounts.get_site(session=session, code=code)
                known = {a.ae_title for a in site.ae_titles} if site is not None else set()
                missing = [ae for ae in aes if ae not in known]
                if missing:
                    accounts.add_site_ae_titles(
                        session=session, code=code, ae_titles=missing, now=now
                    )
            else:
                accounts.create_site(
                    session=session, code=code, name=f"{code}镇卫生院", ae_titles=aes, now=now
                )
            accounts.create_user(
                session=session,
                username=f"day_nurse_{code.lower()}",
                password=PASSWORD,
                role="clinic",
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
    engine.dispose()


def client(base: str, username: str, password: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=60)
    r = c.post("/api/v1/auth/token", data={"username": username, "password": password})
    r.raise_for_status()
    c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return c


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


def send(exam: Exam, maker: ImageMaker, port: int, work: Path) -> None:
    out = work / f"exam-{exam.index:05d}"
    maker.write(exam, out)
    ae = f"{'CT' if exam.kind == 'ct' else 'DR'}_{exam.site}"
    exam.sent_at = time.time()
    done = subprocess.run(
        ["storescu", "-aet", ae, "-aec", "TELEREAD", "+sd", "+r", "127.0.0.1", str(port), str(out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    exam.send_seconds = time.time() - exam.sent_at
    if done.returncode != 0:
        exam.error = done.stderr[-300:]
    for path in out.iterdir():
        path.unlink()
    out.rmdir()


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:8.1f}"


def between(hops: dict[str, datetime], start: str, *ends: str) -> float | None:
    found = [hops[e] for e in ends if e in hops]
    if start not in hops or not found:
        return None
    return (min(found) - hops[start]).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sites", type=int, default=23)
    parser.add_argument("--scale", type=float, default=1.0, help="share of a day's volume")
    parser.add_argument("--urgent-share", type=float, default=0.04)
    parser.add_argument("--speed", type=float, default=120.0, help="day minutes per real minute")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--ct-slices", default="40-80", help="CT slices per study, low-high")
    parser.add_argument("--ct-size", type=int, default=256)
    parser.add_argument("--dx-size", type=int, default=512)
    parser.add_argument("--senders", type=int, default=6, help="modalities sending at once")
    parser.add_argument("--clinic-poll-minutes", type=float, default=3.0)
    parser.add_argument(
        "--drain-minutes",
        type=float,
        default=240.0,
        help="day minutes to wait after the last scan for the answers",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    exams = plan_day(args)
    urgent = [e for e in exams if e.category]
    print(
        f"plan: {len(exams)} studies at {args.sites} sites, {len(urgent)} urgent "
        f"({sum(e.category == 'stroke' for e in urgent)} stroke), "
        f"{sum(e.images for e in exams)} images; day in {DAY_SECONDS / args.speed / 60:.1f} min; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    high = int(args.ct_slices.split("-")[1])
    maker = ImageMaker(args.ct_size, args.dx_size, high, args.seed)
    with tempfile.TemporaryDirectory(prefix="county-day-") as tmp:
        data_dir, work = Path(tmp) / "data", Path(tmp) / "work"
        work.mkdir()
        with county(data_dir) as (dicom_port, http_port, logins):
            base = f"http://127.0.0.1:{http_port}"
            provision(data_dir, args.sites, args.readers)
            admin = client(base, "admin", logins["admin"])
            stop = threading.Event()
            counts: dict[str, int] = {
                "signed": 0,
                "clinic_read": 0,
                "reader_errors": 0,
                "nurse_errors": 0,
            }
            seen: set[str] = set()
            threads = [
                threading.Thread(
                    target=reader_loop,
                    daemon=True,
                    args=(base, f"day_reader_{n}", args.seed * 100 + n, args.speed, stop, counts),
                )
                for n in range(1, args.readers + 1)
            ] + [
                threading.Thread(
                    target=nurse_loop,
                    daemon=True,
                    args=(
                        base,
                        f"day_nurse_ts{n:02d}",
                        args.clinic_poll_minutes * 60 / args.speed,
                        stop,
                        seen,
                        counts,
                    ),
                )
                for n in range(1, args.sites + 1)
            ]
            for t in threads:
                t.start()
            start = time.time()
            with ThreadPoolExecutor(max_workers=args.senders) as pool:
                for exam in exams:
                    due = start + exam.day_second / args.speed
                    time.sleep(max(0.0, due - time.time()))
                    pool.submit(send, exam, maker, dicom_port, work)
            sent_done = time.time()
            deadline = sent_done + args.drain_minutes * 60 / args.speed
            while time.time() < deadline and len(seen) < len(exams):
                time.sleep(1)
            stop.set()
            wall = time.time() - start
            figures = admin.get("/api/v1/ops/turnaround", params={"window": "7d"}).json()
            rows = []
            for exam in urgent:
                r = admin.get(f"/api/v1/studies/{exam.study_uid}/timeline")
                if r.status_code != 200:
                    rows.append({"uid": exam.study_uid, "category": exam.category, "missing": True})
                    continue
                timeline = r.json()
                hops = {h["hop"]: datetime.fromisoformat(h["at"]) for h in timeline["hops"]}
                rows.append(
                    {
                        "uid": exam.study_uid,
                        "site": exam.site,
                        "category": exam.category,
                        "images": exam.images,
                        "send_seconds": exam.send_seconds,
                        "triaged": timeline["category"],
                        "scan_to_listed": between(hops, "acquired", "listed"),
                        "scan_end_to_complete": between(hops, "acquired_last", "arrived_last"),
                        "first_image_to_listed": between(hops, "received_first", "listed"),
                        "listed_to_report": between(
                            hops, "listed", "preliminary_signed", "final_signed"
                        ),
                        "report_to_clinic_read": between(
                            hops, "preliminary_signed", "clinic_opened"
                        ),
                        "scan_to_clinic_read": between(hops, "acquired", "clinic_opened"),
                    }
                )
    failed = [e for e in exams if e.error]
    print(
        f"replayed in {wall / 60:.1f} min: {len(exams) - len(failed)}/{len(exams)} sent, "
        f"{counts['signed']} signed, {counts['clinic_read']} read by the clinics, "
        f"errors: send {len(failed)} reader {counts['reader_errors']} "
        f"nurse {counts['nurse_errors']}; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print(
        "\nurgent patients (seconds; reading and clinic hops in compressed time, x speed "
        f"{args.speed:g} for the day's):"
    )
    keys = [
        "scan_to_listed",
        "scan_end_to_complete",
        "first_image_to_listed",
        "listed_to_report",
        "report_to_clinic_read",
        "scan_to_clinic_read",
    ]
    print(f"{'site':5} {'category':10} {'imgs':>4} " + " ".join(f"{k[:18]:>18}" for k in keys))
    for row in rows:
        if row.get("missing"):
            print(f"  {row['uid']}: no timeline")
            continue
        print(
            f"{row['site']:5} {row['category']:10} {row['images']:4d} "
            + " ".join(f"{fmt(row[k]):>18}" for k in keys)
        )
    print("\nper key, urgent: p50 / p95 / max")
    for k in keys:
        values = [r[k] for r in rows if r.get(k) is not None]
        if not values:
            continue
        p50 = statistics.median(values)
        p95 = sorted(values)[max(0, -(-len(values) * 95 // 100) - 1)]
        print(f"  {k:24} {fmt(p50)} {fmt(p95)} {fmt(max(values))}  (n={len(values)})")
    print("\nthe period hop by hop (GET /api/v1/ops/turnaround), seconds p50 / p90 / p95 (n):")
    for cat in figures["categories"]:
        print(f"  {cat['category']} ({cat['studies']} studies)")
        for s in cat["stages"]:
            if s["count"]:
                print(
                    f"    {s['stage']:28} {fmt(s['p50_seconds'])} {fmt(s['p90_seconds'])} "
                    f"{fmt(s['p95_seconds'])}  ({s['count']})"
                )
        if cat["category"] != "routine":
            machine = [
                s
                for s in cat["stages"]
                if s["count"] and s["stage"] in ("gateway_to_listed", "last_image_to_county")
            ]
            human = [
                s
                for s in cat["stages"]
                if s["count"]
                and s["stage"]
                in ("listed_to_claimed", "claimed_to_report", "notified_to_clinic_opened")
            ]
            for group, label in ((machine, "machine"), (human, "people")):
                if group:
                    worst = max(group, key=lambda s: s["p50_seconds"] or 0)
                    print(
                        f"    slowest {label} hop: {worst['stage']} "
                        f"(p50 {worst['p50_seconds']:.1f} s)"
                    )
        for target, states in cat["targets"].items():
            print(f"    {target}: " + ", ".join(f"{k} {v}" for k, v in states.items() if v))
    print(f"\nurgent patients overdue at the end: {len(figures['overdue_urgent'])}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "urgent": rows,
                    "turnaround": figures,
                    "counts": counts,
                },
                ensure_ascii=False,
                indent=1,
                default=str,
            )
        )
    return 1 if failed or any(r.get("missing") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
