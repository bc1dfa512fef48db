"""Memory of the receiving process while large instances arrive: four parallel 256 MiB C-STOREs
(dcmtk ``storescu``, one association each) into a gateway, and how much the receiving
process's resident memory rose (its peak, ``VmHWM``, over its size just before the send).

    .venv/bin/python bench/store_memory.py                       # as shipped (workers, path)
    .venv/bin/python bench/store_memory.py --workers 1 --fast-path off

The gateway runs as its own process (``Gateway`` with a fixed allow-list, forwarding on to a
county that is not there, so its deferred header reading runs too, as in production); with
acceptor processes, each of them is a receiving process and each is reported. A dataset is
kept in memory up to ``gateway.handlers.SPILL_BYTES`` and streamed to its spool file beyond
that; before, the fast path held an instance about twice over (4 x 256 MiB: ~2 GiB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CALLING = "BENCH_CT"
MULTIFRAME_CT = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
SERVER = """
import json, sys, threading
from pathlib import Path
from gateway.config import GatewaySettings
from gateway.service import Gateway
from storage import FilesystemStore
args = json.loads(sys.argv[1])
base = Path(args["base"])
settings = GatewaySettings(host="127.0.0.1", port=0, spool_dir=base / "spool",
    api_url="http://127.0.0.1:9", spool_min_free_bytes=0, max_instance_bytes=0,
    **args["settings"])
gw = Gateway(settings=settings, store=FilesystemStore(base / "store"), sites={"BENCH_CT": "B"})
gw.start()
print(json.dumps({"port": gw.port, "pids": gw.pool.pids() if gw.pool else []}), flush=True)
sys.stdin.read()
gw.stop()
"""


def big_instance(path: Path, size_mib: int) -> None:
    """An enhanced CT whose pixel data is ``size_mib`` MiB (512x512 16-bit frames)."""
    frames = size_mib * 1024 * 1024 // (512 * 512 * 2)
    ds = Dataset()
    ds.SOPClassUID = MULTIFRAME_CT
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "BENCH^MEMORY", "M1"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 512, 512, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = bytes(frames * 512 * 512 * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="default: as shipped")
    parser.add_argument("--fast-path", choices=["auto", "on", "off"], default=None)
    args = parser.parse_args()
    if shutil.which("storescu") is None:
        raise SystemExit("dcmtk not installed: apt-get install -y dcmtk")
    base = Path(tempfile.mkdtemp(prefix="teleread-bench-memory-"))
    settings: dict[str, object] = {}
    if args.workers is not None:
        settings["workers"] = args.workers
    if args.fast_path is not None:
        settings["fast_path"] = args.fast_path
    try:
        files = []
        for i in range(args.parallel):
            path = base / f"big{i}.dcm"
            big_instance(path, args.size_mib)
            files.append(path)
        import json

        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps({"base": str(base), "settings": settings})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert server.stdout is not None and server.stdin is not None
        started = json.loads(server.stdout.readline())
        receivers = started["pids"] or [server.pid]
        time.sleep(1.0)  # settled
        before = {pid: status_kib(pid, "VmRSS") for pid in receivers}
        peak = dict(before)
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                for pid in receivers:
                    peak[pid] = max(peak[pid], status_kib(pid, "VmRSS"))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        env = {**os.environ, "TCP_NODELAY": "1"}
        t0 = time.perf_counter()
        senders = [
            subprocess.Popen(
                [
                    *("storescu", "-aet", CALLING, "-aec", "TELEREAD", "-to", "600"),
                    *("127.0.0.1", str(started["port"]), str(f)),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for f in files
        ]
        for p in senders:
            _, err = p.communicate(timeout=1800)
            if p.returncode != 0:
                raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-400:]}")
        seconds = time.perf_counter() - t0
        time.sleep(1.0)  # the deferred header reads
        sampling.set()
        sampler.join()
        hwm = {pid: status_kib(pid, "VmHWM") for pid in receivers}
        server.stdin.close()
        server.wait(60)
        mode = f"{len(started['pids'])} acceptor processes" if started["pids"] else "in process"
        print(
            f"{args.parallel} x {args.size_mib} MiB C-STOREs in parallel, {seconds:.1f} s; "
            f"receiving: {mode}; settings {settings or 'as shipped'}; "
            f"load {os.getloadavg()[0]:.2f}"
        )
        for pid in receivers:
            rise = (max(peak[pid], hwm[pid]) - before[pid]) / 1024
            print(f"  pid {pid}: RSS {before[pid] / 1024:.0f} MiB before, peak rise {rise:.0f} MiB")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
