"""C-STORE ingest speed: teleread's gateway versus Orthanc, same data, same client (dcmtk).

    .venv/bin/python bench/ingest.py                     # 300 x 512x512 CT, 1 and 4 associations
    .venv/bin/python bench/ingest.py --fast-path off     # stock pynetdicom
    .venv/bin/python bench/ingest.py --slices 100 --workers 1

Data: a 300-slice 512x512 CT series (int16 head phantom, Explicit VR Little Endian, ~525 KB
per file) and three more copies of it under distinct study/series/SOP UIDs. Each round, into
fresh receivers: one ``storescu`` association with the first copy, then four ``storescu``
processes at once with one copy each; teleread and Orthanc take turns going first
(``--rounds``, default 3; medians and each round's figures are printed). Wall time from
starting the client(s) to the last one exiting.

teleread: ``gateway.service.Gateway`` in this process with the gateway's default settings (as
shipped, or as ``TELEREAD_GATEWAY_*`` in the environment say) unless ``--workers`` (acceptor
processes; 1 = the gateway process receives) or ``--fast-path`` (auto|on|off) override them;
the receiving mode and path it chose are printed. Spool on the temp disk, durable before each
response (a slot file overwritten with ``O_DSYNC``, or for what does not fit a new file fsynced
and its directory; the outbox commit is WAL ``synchronous=NORMAL``, see ``gateway.spool``,
``gateway.slots``); the slot files are created before the timed run (``--cold-slots``: not), as
a gateway that ran before has them; ``--slots`` per receiving process (default: the gateway's,
1024); forwarding off (ingest only; the forwarder would use the same CPUs in production, see
``--forward``) except for its header reading (triage, announcement fields, the file's sha256),
which runs after each C-STORE response, at the forwarder's nice value when acceptor processes
receive (``TELEREAD_GATEWAY_FORWARDER_NICE``), and is reported as the time from the end of the
send until every header has been read.
Orthanc (Debian package, ``Orthanc`` on PATH): its own JSON config, SQLite index, storage in
the temp dir, ``RemoteAccessAllowed: false``, DICOM/HTTP on free loopback-test ports,
``MaximumPduLength`` 131072 (its maximum; teleread offers 262144), ``StorageCompression``
off. Both peers get ``TCP_NODELAY=1`` in their environment (dcmtk otherwise leaves Nagle on).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom import dcmread
from pydicom.uid import generate_uid

from gateway import fastpath, slots
from gateway.config import GatewaySettings
from gateway.service import Gateway
from gateway.workers import worker_count
from storage import FilesystemStore
from teleread.dicom_builders import SeriesInfo, StudyInfo, ct_image, write_part10
from teleread.phantoms import grid, head_slice, hu_to_stored

CALLING = "BENCH_CT"
ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_series(outdir: Path, slices: int, size: int) -> Path:
    """One CT series: ``slices`` 512x512 slices through a head phantom."""
    study = StudyInfo(
        study_uid=generate_uid(),
        charset="ISO_IR 192",
        patient_name="BENCH^CT",
        patient_id="B0001",
        patient_sex="M",
        patient_birth_date="19600101",
        patient_age="066Y",
        description="头颅CT平扫",
        accession="B1",
        study_date="20261125",
        study_time="100000",
    )
    series = SeriesInfo(generate_uid(), 1, "head 1mm", "CT", generate_uid())
    spacing = 250.0 / size
    x, y = grid(size, size, spacing)
    folder = outdir / "copy0"
    for i in range(slices):
        z = (i - slices / 2) / slices  # the phantom changes along the series
        stored = hu_to_stored(head_slice(x, y, 0.3 + 0.4 * abs(z), bleed=i % 7 == 0))
        ds = ct_image(
            study,
            series,
            sop_uid=generate_uid(),
            instance_number=i + 1,
            stored=stored,
            spacing_mm=spacing,
            thickness_mm=1.0,
            z_mm=float(i),
        )
        write_part10(ds, folder / f"{i:04d}.dcm")
    return folder


def copy_series(src: Path, dst: Path) -> Path:
    """The same images under new study/series/SOP UIDs."""
    study, series = generate_uid(), generate_uid()
    dst.mkdir(parents=True)
    for path in sorted(src.iterdir()):
        ds = dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        write_part10(ds, dst / path.name)
    return dst


def storescu(port: int, called: str, folder: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *("storescu", "-aet", CALLING, "-aec", called, "+sd", "+r", "-R"),
            *("127.0.0.1", str(port), str(folder)),
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def timed_send(port: int, called: str, folders: list[Path]) -> float:
    # flush earlier writes (the generated data, the previous receiver's files) first: their
    # background writeback would otherwise slow whichever receiver's fsyncs run next
    os.sync()
    started = time.perf_counter()
    procs = [storescu(port, called, f) for f in folders]
    for p in procs:
        _, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - started


def prefill_slots(spool_dir: Path, processes: int) -> float:
    """Create the receiving processes' slot files before the run, as a gateway that has
    run before has them (``gateway.slots``: created once, reused after each announcement);
    seconds it took."""
    started = time.perf_counter()
    pools = [
        slots.SlotPool(spool_dir, count=slots.DEFAULT_COUNT, start=False) for _ in range(processes)
    ]
    for pool in pools:
        pool.fill()
    for pool in pools:
        pool.close()
    return time.perf_counter() - started


def gateway_settings(tmp: Path, args: argparse.Namespace) -> GatewaySettings:
    """The gateway's settings as shipped (or from the environment), but for ``--workers`` and
    ``--fast-path``."""
    chosen: dict[str, object] = {}
    if args.workers is not None:
        chosen["workers"] = args.workers
    if args.fast_path is not None:
        chosen["fast_path"] = args.fast_path
    return GatewaySettings(
        ae_title="TELEREAD",
        host="127.0.0.1",
        port=0,
        spool_dir=tmp / "spool",
        api_url="http://127.0.0.1:9",  # forwarding off: the county is never asked
        spool_min_free_bytes=0,
        **chosen,  # type: ignore[arg-type]
    )


@contextlib.contextmanager
def teleread_gateway(tmp: Path, args: argparse.Namespace) -> Iterator[tuple[int, Gateway]]:
    settings = gateway_settings(tmp, args)
    forward = args.forward
    gw = Gateway(settings=settings, store=FilesystemStore(tmp / "store"), sites={CALLING: "BENCH"})
    gw.start(forward=forward)
    try:
        yield gw.port, gw
    finally:
        gw.stop()


def header_lag(gw: Gateway, timeout: float = 120.0) -> float:
    """Seconds from the end of the send until every spooled header has been read (triage,
    announcement fields: done after each C-STORE response, see gateway.forwarder)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        ((left,),) = gw.spool.outbox.query("SELECT COUNT(*) FROM outbox WHERE indexed = 0", ())
        if not left:
            break
        time.sleep(0.02)
    return time.perf_counter() - started


@contextlib.contextmanager
def orthanc(tmp: Path) -> Iterator[tuple[int, int]]:
    exe = shutil.which("Orthanc")
    if exe is None:
        raise SystemExit("Orthanc not installed: apt-get install -y orthanc")
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(tmp / "orthanc-storage"),
        "IndexDirectory": str(tmp / "orthanc-index"),
        "StorageCompression": False,
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": True,
        "MaximumPduLength": 131072,
        "Plugins": [],
        "SaveJobs": False,
        "HttpServerEnabled": True,
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(tmp / "orthanc.log", "wb")
    proc = subprocess.Popen([exe, str(path)], env=ENV, stdout=log, stderr=log)
    try:
        end = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/system", timeout=1)
                break
            except OSError:
                if time.monotonic() > end or proc.poll() is not None:
                    log_path = tmp / "orthanc.log"
                    raise RuntimeError(f"Orthanc did not start; see {log_path}") from None
                time.sleep(0.2)
        yield dicom_port, http_port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def send_to(
    name: str, run: Path, folders: list[Path], args: argparse.Namespace
) -> tuple[float, float | None]:
    """One timed send of ``folders`` into a fresh receiver: (seconds, teleread's header lag)."""
    expected = len(folders) * args.slices
    if name == "orthanc":
        with orthanc(run) as (port, http_port):
            seconds = timed_send(port, "ORTHANC", folders)
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics") as r:
                stored = json.load(r)["CountInstances"]
        if stored != expected:
            raise RuntimeError(f"Orthanc stored {stored} of {expected}")
        return seconds, None
    if args.slots and not args.cold_slots:
        prefill_slots(run / "spool", worker_count(gateway_settings(run, args)))
    with teleread_gateway(run, args) as (port, gw):
        acceptors = _acceptor_pids()
        before = {pid: cpu_seconds(pid) for pid in [os.getpid(), *acceptors]}
        clients = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds = timed_send(port, "TELEREAD", folders)
        lag = header_lag(gw)
        ((stored,),) = gw.spool.outbox.query("SELECT COUNT(*) FROM outbox", ())
        if args.cpu:
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            per = 1e3 / expected
            used = {pid: (cpu_seconds(pid) - start) * per for pid, start in before.items()}
            client = (after.ru_utime + after.ru_stime - clients.ru_utime - clients.ru_stime) * per
            print(
                f"  CPU ms per instance, {len(folders)} association(s): "
                f"gateway process {used.pop(os.getpid()):.2f}, "
                f"acceptors {sum(used.values()):.2f} ({len(used)}), storescu {client:.2f}"
            )
    if stored != expected:
        raise RuntimeError(f"teleread spooled {stored} of {expected}")
    return seconds, lag


def _acceptor_pids() -> list[int]:
    """This process's acceptor processes (``python -m gateway.acceptor``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"gateway.acceptor" in cmdline:
            found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(
    results: dict[tuple[str, int], list[float]],
    lags: dict[int, list[float]],
    slices: int,
    per_copy: int,
    copies: int,
) -> None:
    print(f"{'receiver':10} {'assocs':>6} {'seconds':>8} {'inst/s':>8} {'MB/s':>7}  per round")
    for n in (1, copies):
        for name in ("teleread", "orthanc"):
            runs = results[(name, n)]
            seconds = statistics.median(runs)
            count, size = n * slices, n * per_copy
            each = " ".join(f"{count / s:.0f}" for s in runs)
            print(
                f"{name:10} {n:>6} {seconds:>8.2f} {count / seconds:>8.1f} "
                f"{size / seconds / 1e6:>7.1f}  {each}"
            )
        pairs = zip(results[("teleread", n)], results[("orthanc", n)], strict=True)
        ratios = [o / t for t, o in pairs]
        print(
            f"{'':10} {n:>6} teleread / orthanc: median {statistics.median(ratios):.2f}x "
            f"(rounds: {' '.join(f'{x:.2f}' for x in ratios)})"
        )
        print(
            f"{'':10} {n:>6} teleread headers all read {statistics.median(lags[n]):.2f} s "
            "after the send (median)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="teleread receiving processes (default: as shipped)",
    )
    parser.add_argument(
        "--fast-path",
        choices=["auto", "on", "off"],
        default=None,
        help="TELEREAD_GATEWAY_FAST_PATH (default: as shipped, auto)",
    )
    parser.add_argument("--forward", action="store_true", help="run the forwarder as well")
    parser.add_argument(
        "--slots",
        type=int,
        default=slots.DEFAULT_COUNT,
        help="slot files per receiving process (gateway.slots; 0: files only)",
    )
    parser.add_argument(
        "--cold-slots", action="store_true", help="no slot files before the run (a new spool)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per receiver; medians reported")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="print teleread's CPU per instance: gateway process, acceptors, storescu (Linux)",
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    slots.DEFAULT_COUNT = args.slots  # this process, and acceptor processes by the environment
    os.environ["TELEREAD_GATEWAY_SPOOL_SLOTS"] = str(args.slots)
    if shutil.which("storescu") is None:
        raise SystemExit("dcmtk not installed: apt-get install -y dcmtk")
    base = Path(tempfile.mkdtemp(prefix="teleread-bench-ingest-"))
    try:
        data = base / "data"
        first = make_series(data, args.slices, args.size)
        copies = [first] + [copy_series(first, data / f"copy{i}") for i in range(1, args.copies)]
        per_copy = sum(p.stat().st_size for p in first.iterdir())
        settings = gateway_settings(base, args)
        workers = worker_count(settings)
        path = fastpath.choose(settings.fast_path)
        print(
            f"data: {args.copies} x {args.slices} CT {args.size}x{args.size}, "
            f"{per_copy / args.slices / 1e3:.0f} KB/file, {per_copy / 1e6:.0f} MB per copy; "
            f"teleread receiving: "
            f"{f'{workers} acceptor processes' if workers > 1 else 'in the gateway process'} "
            f"(TELEREAD_GATEWAY_WORKERS={settings.workers}), fast path {path.mode} "
            f"(TELEREAD_GATEWAY_FAST_PATH={settings.fast_path}, pynetdicom {path.pynetdicom}), "
            f"forward={args.forward} slots={args.slots}{' (cold)' if args.cold_slots else ''}; "
            f"{len(os.sched_getaffinity(0))} CPUs usable, load {os.getloadavg()[0]:.2f}"
        )
        results: dict[tuple[str, int], list[float]] = {}
        lags: dict[int, list[float]] = {}
        for r in range(args.rounds):
            for n in (1, args.copies):
                # alternate who goes first: the page cache and disk state favour neither
                order = ("teleread", "orthanc") if r % 2 == 0 else ("orthanc", "teleread")
                for name in order:
                    run = base / f"run-{r}-{n}-{name}"
                    seconds, lag = send_to(name, run, copies[:n], args)
                    results.setdefault((name, n), []).append(seconds)
                    if lag is not None:
                        lags.setdefault(n, []).append(lag)
                    shutil.rmtree(run, ignore_errors=True)
        report(results, lags, args.slices, per_copy, args.copies)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
