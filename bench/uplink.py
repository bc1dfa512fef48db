"""Time to a complete stroke study at the county over a real 20 Mbit/s uplink, urgent-first
versus first-in-first-out. Needs root (network namespace, veth, tc), dcmtk and SeaweedFS.

    sudo .venv/bin/python bench/uplink.py                 # 2000 routine DX + a 40-slice stroke CT
    sudo .venv/bin/python bench/uplink.py --routine 500 --rate 20mbit

The county (SeaweedFS S3 + ``teleread api`` on SQLite) runs inside a fresh network namespace
behind a veth pair; the gateway side of the veth gets
``tc qdisc add dev <veth> root tbf rate 20mbit burst 32kbit latency 400ms``. The gateway runs
in this process with a fresh spool per mode. Per mode: ``--routine`` DX radiographs
(``--dx-size`` square, 16-bit) are received by the gateway with forwarding off, then the
stroke CT (``--slices`` 512x512, sent to the called AE ``STROKE``; its description reads
急性脑卒中, so triage agrees); then forwarding starts and the clock runs until every stroke
instance is announced to the county (the API acknowledged it: it is on the worklist with its
object in S3). FIFO is the same queue with priorities ignored: the bench sets every spooled
row to the routine rank before forwarding starts, so the stroke study sits behind the
backlog it arrived after. The namespace and veth are removed in all cases.

The gateway runs with its defaults, lossless recompression (``--recompress``, default the
gateway's own: JPEG-LS) and uploads in flight at once (``--upload-concurrency``, default the
gateway's own) included. Reported per mode: the stroke study complete at the county
(every instance announced) and its first instance at the county, both from the moment
forwarding starts; and against the stroke study's raw transfer time at link rate (its bytes
as received, over ``--rate``). The stroke CT is by default made from pydicom's real CT
(``--ct real``, ``bench/realistic_ct.py``: real anatomy and CT-like noise, JPEG-LS about 3x);
``--ct phantom`` sends the noise-free synthetic head of earlier runs, which JPEG-LS shrinks
60-fold and so says nothing about compression.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from pydicom.uid import generate_uid
from realistic_ct import write_real_ct

from gateway.config import GatewaySettings
from gateway.service import Gateway
from storage import MinioStore, StorageSettings
from teleread.dicom_builders import SeriesInfo, StudyInfo, ct_image, dx_image, write_part10
from teleread.phantoms import chest_radiograph, grid, head_slice, hu_to_stored

NS_ADDR, HOST_ADDR = "10.231.7.2", "10.231.7.1"
S3_PORT, API_PORT = 8333, 8000
ENV = {**os.environ, "TCP_NODELAY": "1"}
GW_PASSWORD = "uplink-bench-" + uuid.uuid4().hex


def run(*cmd: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


# -- data ----------------------------------------------------------------------------------


def _study(description: str, name: str) -> StudyInfo:
    return StudyInfo(
        study_uid=generate_uid(),
        charset="ISO_IR 192",
        patient_name=name,
        patient_id="U" + uuid.uuid4().hex[:8],
        patient_sex="F",
        patient_birth_date="19600101",
        patient_age="066Y",
        description=description,
        accession="U1",
        study_date="20261125",
        study_time="080000",
    )


def make_routine(folder: Path, count: int, size: int) -> int:
    """``count`` chest radiographs, two per study (PA and lateral)."""
    pixels = chest_radiograph(size, size, np.random.default_rng(1))
    total = 0
    for i in range(0, count, 2):
        study = _study("胸部正侧位 体检", "ROUTINE^DX")
        series = SeriesInfo(generate_uid(), 1, "胸部", "DX")
        for j in range(min(2, count - i)):
            ds = dx_image(
                study,
                series,
                sop_uid=generate_uid(),
                pixels=pixels,
                pixel_spacing_mm=round(430.0 / size, 4),
                instance_number=j + 1,
            )
            total += write_part10(ds, folder / f"{i + j:05d}.dcm").stat().st_size
    return total


def make_stroke(folder: Path, slices: int) -> tuple[str, int]:
    study = _study("头颅CT平扫 急性脑卒中", "STROKE^CT")
    series = SeriesInfo(generate_uid(), 1, "头颅 5mm", "CT", generate_uid())
    x, y = grid(512, 512, 250.0 / 512)
    total = 0
    for i in range(slices):
        stored = hu_to_stored(head_slice(x, y, 0.3 + 0.01 * i, bleed=i % 5 == 0))
        ds = ct_image(
            study,
            series,
            sop_uid=generate_uid(),
            instance_number=i + 1,
            stored=stored,
            spacing_mm=250.0 / 512,
            thickness_mm=5.0,
            z_mm=5.0 * i,
        )
        total += write_part10(ds, folder / f"{i:04d}.dcm").stat().st_size
    return study.study_uid, total


# -- the slow uplink -----------------------------------------------------------------------


@contextlib.contextmanager
def namespace(rate: str) -> Iterator[tuple[str, str]]:
    tag = f"{os.getpid() % 100000}"
    ns, host_if, ns_if = f"trl-uplink-{tag}", f"trlh{tag}", f"trln{tag}"
    try:
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", ns)
        run("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{NS_ADDR}/30", "dev", ns_if)
        run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        run(
            *("tc", "qdisc", "add", "dev", host_if, "root", "tbf"),
            *("rate", rate, "burst", "32kbit", "latency", "400ms"),
        )
        yield ns, host_if
    finally:
        run("ip", "link", "del", host_if, check=False)
        run("ip", "netns", "del", ns, check=False)


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited early; see {log}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer; see {log}")


def _weed_ports() -> dict[str, int]:
    """Ports for weed mini's services, of this process's own (gRPC at each + 10000)."""
    base = 21000 + (os.getpid() % 4000) * 5
    return {svc: base + i for i, svc in enumerate(("master", "volume", "filer", "admin"))}


@contextlib.contextmanager
def county(ns: str, work: Path) -> Iterator[StorageSettings]:
    """SeaweedFS and the teleread API inside the namespace."""
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    access, secret = "uplink", uuid.uuid4().hex
    (work / "weed").mkdir(parents=True)
    (work / "s3.json").write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "teleread",
                        "credentials": [{"accessKey": access, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        log = open(work / "weed.log", "wb")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [
                    *("ip", "netns", "exec", ns, weed, "mini", f"-dir={work / 'weed'}"),
                    f"-ip={NS_ADDR}",
                    f"-ip.bind={NS_ADDR}",
                    "-master.telemetry=false",
                    "-admin.ui=false",
                    "-webdav=false",
                    # SeaweedFS names its unix sockets in /tmp after its ports: another
                    # weed mini on the machine with the defaults (another bench) would be
                    # reached through them; ports of our own keep the county ours
                    *(f"-{svc}.port={port}" for svc, port in _weed_ports().items()),
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                    f"-s3.port={S3_PORT}",
                    f"-s3.config={work / 's3.json'}",
                    f"-s3.localSocket={work / 's3.sock'}",
                    f"-filer.localSocket={work / 'filer.sock'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work,
            )
        )
        storage = StorageSettings(
            backend="s3",
            endpoint=f"{NS_ADDR}:{S3_PORT}",
            access_key=access,
            secret_key=secret,
            bucket="teleread",
            secure=False,
        )
        env = {
            **os.environ,
            "TELEREAD_WORKLIST_DATABASE_URL": f"sqlite:///{work / 'worklist.db'}",
            "TELEREAD_API_SECRET_KEY": "uplink-bench-" + uuid.uuid4().hex,
            "TELEREAD_STORAGE_BACKEND": "s3",
            "TELEREAD_STORAGE_ENDPOINT": storage.endpoint,
            "TELEREAD_STORAGE_ACCESS_KEY": access,
            "TELEREAD_STORAGE_SECRET_KEY": secret,
            "TELEREAD_STORAGE_BUCKET": storage.bucket,
            "TELEREAD_STORAGE_SECURE": "false",
        }
        teleread = str(Path(sys.executable).parent / "teleread")
        run(teleread, "db", "upgrade", env=env)
        run(teleread, "sites", "add", "TS01", "--name", "Uplink", "--ae", "BENCH_DX", env=env)
        run(teleread, "sites", "add-ae", "TS01", "--ae", "BENCH_CT", env=env)
        run(
            *(teleread, "users", "add", "gw", "--role", "gateway", "--password-stdin"),
            input=GW_PASSWORD,
            env=env,
        )
        log = open(work / "api.log", "wb")
        logs.append(log)
        api = subprocess.Popen(
            [
                *("ip", "netns", "exec", ns, teleread, "api"),
                *("--host", NS_ADDR, "--http-port", str(API_PORT)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        procs.append(api)
        _wait_http(f"http://{NS_ADDR}:{API_PORT}/healthz", api, work / "api.log")
        end = time.monotonic() + 60
        while True:
            try:
                MinioStore.from_settings(storage).ensure_bucket()
                break
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.5)
        yield storage
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()


# -- one mode ------------------------------------------------------------------------------


def send(port: int, calling: str, called: str, folder: Path) -> None:
    subprocess.run(
        [
            *("storescu", "-aet", calling, "-aec", called, "+sd", "+r"),
            *("127.0.0.1", str(port), str(folder)),
        ],
        check=True,
        env=ENV,
        capture_output=True,
    )


def one_mode(
    mode: str,
    work: Path,
    storage: StorageSettings,
    routine: Path,
    stroke: Path,
    stroke_uid: str,
    recompress: str | None,
    upload_concurrency: int | None,
) -> dict[str, float]:
    settings = GatewaySettings(
        **({"recompress": recompress} if recompress else {}),
        **({"upload_concurrency": upload_concurrency} if upload_concurrency else {}),
        ae_title="TELEREAD",
        host="127.0.0.1",
        port=0,
        spool_dir=work / f"spool-{mode}",
        api_url=f"http://{NS_ADDR}:{API_PORT}",
        api_username="gw",
        api_password=GW_PASSWORD,
        spool_min_free_bytes=0,
    )
    gw = Gateway(settings=settings, store=MinioStore.from_settings(storage))
    gw.start(forward=False)
    try:
        send(gw.port, "BENCH_DX", "TELEREAD", routine)
        send(gw.port, "BENCH_CT", "STROKE", stroke)
        q = gw.spool.outbox.query
        while q("SELECT COUNT(*) FROM outbox WHERE indexed = 0", ())[0][0]:
            time.sleep(0.05)  # headers (triage) are read just after each C-STORE response
        (((urgent,),)) = q("SELECT COUNT(*) FROM outbox WHERE priority_rank = 0", ())
        if mode == "fifo":
            # the bench's own spool: ignore priorities (a connection of its own to the file)
            with contextlib.closing(sqlite3.connect(gw.spool.outbox.path)) as db, db:
                db.execute("UPDATE outbox SET priority_rank = 1")
        n_stroke = len(list(stroke.iterdir()))
        started = time.monotonic()
        gw.forwarder.start()
        done_at = first_at = None
        while time.monotonic() - started < 3600:
            ((announced,),) = q(
                "SELECT COUNT(*) FROM outbox WHERE study_instance_uid = ? AND state = 'announced'",
                (stroke_uid,),
            )
            if announced and first_at is None:
                first_at = time.monotonic()
            if announced >= n_stroke:
                done_at = time.monotonic()
                break
            time.sleep(0.02)
        if done_at is None:
            raise RuntimeError("stroke study not announced within an hour")
        ((uploaded_routine,),) = q(
            "SELECT COUNT(*) FROM outbox WHERE study_instance_uid != ? AND state != 'received'",
            (stroke_uid,),
        )
        ((sent_bytes, raw_bytes),) = q(
            "SELECT SUM(CASE WHEN upload_size > 0 THEN upload_size ELSE size END), SUM(size) "
            "FROM outbox WHERE study_instance_uid = ?",
            (stroke_uid,),
        )
        assert first_at is not None
        return {
            "seconds": done_at - started,
            "first_seconds": first_at - started,
            "stroke_bytes_sent": float(sent_bytes),
            "stroke_bytes_received": float(raw_bytes),
            "urgent_rows": float(urgent),
            "routine_uploaded_first": float(uploaded_routine),
        }
    finally:
        gw.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--routine", type=int, default=2000)
    parser.add_argument("--dx-size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--rate", default="20mbit")
    parser.add_argument("--ct", choices=("real", "phantom"), default="real")
    parser.add_argument("--recompress", choices=("none", "jpegls", "j2k", "deflate"), default=None)
    parser.add_argument("--upload-concurrency", type=int, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (ip netns, tc)")
    for tool in ("storescu", "ip", "tc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found")
    base = Path(tempfile.mkdtemp(prefix="teleread-bench-uplink-"))
    try:
        routine_bytes = make_routine(base / "routine", args.routine, args.dx_size)
        if args.ct == "real":
            stroke_uid, stroke_bytes = write_real_ct(base / "stroke", args.slices)
        else:
            stroke_uid, stroke_bytes = make_stroke(base / "stroke", args.slices)
        raw_seconds = stroke_bytes * 8 / link_bits_per_s(args.rate)
        recompress = args.recompress or GatewaySettings.model_fields["recompress"].default
        concurrency = (
            args.upload_concurrency or GatewaySettings.model_fields["upload_concurrency"].default
        )
        print(
            f"backlog: {args.routine} DX {args.dx_size}x{args.dx_size} "
            f"({routine_bytes / 1e6:.0f} MB); stroke CT ({args.ct}): {args.slices} x 512x512 "
            f"({stroke_bytes / 1e6:.1f} MB, {raw_seconds:.1f} s raw at {args.rate}); "
            f"recompress {recompress}; {concurrency} uploads in flight"
        )
        results = {}
        with namespace(args.rate) as (ns, _veth), county(ns, base / "county") as storage:
            for mode in ("urgent", "fifo"):
                # same images both times: empty the bucket so FIFO uploads them again
                # (the county API counts the re-announcements as duplicates)
                if mode == "fifo":
                    _clear_bucket(storage)
                results[mode] = one_mode(
                    mode,
                    base / "gw",
                    storage,
                    base / "routine",
                    base / "stroke",
                    stroke_uid,
                    args.recompress,
                    args.upload_concurrency,
                )
                r = results[mode]
                print(
                    f"{mode:6}: stroke study complete at the county after {r['seconds']:.1f} s "
                    f"({r['seconds'] / raw_seconds:.2f}x its raw transfer time), first image "
                    f"after {r['first_seconds']:.2f} s; stroke bytes sent "
                    f"{r['stroke_bytes_sent'] / 1e6:.1f} MB of "
                    f"{r['stroke_bytes_received'] / 1e6:.1f} MB "
                    f"({r['stroke_bytes_received'] / r['stroke_bytes_sent']:.2f}x); "
                    f"{int(r['routine_uploaded_first'])} routine instances sent meanwhile"
                )
        urgent = results["urgent"]
        ratio = urgent["seconds"] / results["fifo"]["seconds"]
        print(
            f"urgent-first: {urgent['seconds'] / raw_seconds:.2f}x raw transfer time "
            f"(target <= 0.5), {ratio:.1%} of FIFO (target <= 40%), first image "
            f"{urgent['first_seconds']:.2f} s (target <= 2 s)"
        )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def link_bits_per_s(rate: str) -> float:
    """tc's rate ("20mbit", "512kbit", "1gbit", "2000000bit") in bits per second."""
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)):
        if rate.endswith(unit):
            return float(rate.removesuffix(unit)) * scale
    raise SystemExit(f"--rate {rate!r}: give it as tc does, e.g. 20mbit")


def _clear_bucket(storage: StorageSettings) -> None:
    store = MinioStore.from_settings(storage)
    names = [o.object_name for o in store.client.list_objects(storage.bucket, recursive=True)]
    for name in names:
        if name:
            store.client.remove_object(storage.bucket, name)


if __name__ == "__main__":
    main()
