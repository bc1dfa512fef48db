"""CPU per instance of the gateway's deferred header read (``Forwarder._index``), old vs new.

    .venv/bin/python bench/header_read.py [--n 300] [--dx-size 2048]

``_index`` reads a spooled file (``Spool.read_bytes``: a slot record for the 525 KB bench CT,
a plain file for a DR too big for a slot), reads its header (``read_instance(data, None)``)
and takes the file's sha256. "old" is the pydicom path (``read_instance_pydicom``:
``dcmread(stop_before_pixels=True)``, extract_text, classify); "new" is ``read_instance``
(``gateway.header_read`` + caches), both for the first instance of a series (every cache
cleared before each call) and for the instances after it (what a 300-slice series costs).
CPU is process time per instance on one core; the instance is the one ``bench/ingest.py``
sends (512x512 CT, ISO_IR 192, 头颅CT平扫). Prints a table and a JSON summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from pydicom import dcmread
from pydicom.uid import generate_uid

from bench.ingest import make_series
from gateway import slots, spooled_header
from gateway.instance import read_instance, read_instance_pydicom
from gateway.part10 import PREAMBLE, StoreMeta, encode_meta
from teleread.demo import SeriesInfo, StudyInfo, dx_image, write_part10
from teleread.phantoms import chest_radiograph
from worklist.triage.classify import clear_memo

ARGS: dict[str, Any] = {
    "site": "bench",
    "calling_ae": "CT01",
    "called_ae": "TELEREAD",
    "urgent_called_aes": {},
}


def spooled(path: Path) -> bytes:
    """The file as the gateway spools it: its own file meta, then the dataset as sent."""
    raw = path.read_bytes()
    ds = dcmread(path, stop_before_pixels=True)
    meta = StoreMeta(ds.SOPClassUID, ds.SOPInstanceUID, str(ds.file_meta.TransferSyntaxUID))
    prefix = PREAMBLE + encode_meta(
        meta, calling_ae="CT01", called_ae="TELEREAD", spool_info={"site": "bench"}
    )
    offset = 144 + int.from_bytes(raw[140:144], "little")
    return prefix + raw[offset:]


def make_dx(folder: Path, size: int) -> Path:
    study = StudyInfo(
        study_uid=generate_uid(),
        charset="GB18030",
        patient_name="张^丽",
        patient_id="B0002",
        patient_sex="F",
        patient_birth_date="19700101",
        patient_age="056Y",
        description="胸部正位 体检",
        accession="B2",
        study_date="20261125",
        study_time="100000",
    )
    series = SeriesInfo(generate_uid(), 1, "胸部 后前位", "DX")
    ds = dx_image(
        study,
        series,
        sop_uid=generate_uid(),
        pixels=chest_radiograph(size, size, np.random.default_rng(0)),
        pixel_spacing_mm=round(430.0 / size, 4),
    )
    return write_part10(ds, folder / "dx.dcm")


def clear_caches() -> None:
    spooled_header.text_cache.clear()
    clear_memo()


def per_call(fn: Callable[[], object], n: int, before: Callable[[], None] | None = None) -> float:
    """Median-free simple mean of process time per call, in microseconds."""
    fn()
    total = 0.0
    for _ in range(n):
        if before is not None:
            before()
        start = time.process_time()
        fn()
        total += time.process_time() - start
    return total / n * 1e6


def measure(name: str, data: bytes, read: Callable[[], bytes], n: int) -> dict[str, float]:
    assert read() == data
    old = read_instance_pydicom(data, None, **ARGS)
    assert read_instance(data, None, **ARGS) == old
    assert spooled_header.read_spooled(data, **ARGS) is not None, "not on the pydicom-free path"
    figures = {
        "read": per_call(read, n),
        "header_old": per_call(lambda: read_instance_pydicom(data, None, **ARGS), n),
        "header_new_first": per_call(lambda: read_instance(data, None, **ARGS), n, clear_caches),
        "header_new_series": per_call(lambda: read_instance(data, None, **ARGS), n),
        "sha256": per_call(lambda: hashlib.sha256(data).hexdigest(), n),
    }
    figures["index_old"] = figures["read"] + figures["header_old"] + figures["sha256"]
    figures["index_new"] = figures["read"] + figures["header_new_series"] + figures["sha256"]
    print(f"{name}: {len(data) / 1e6:.2f} MB")
    for key, value in figures.items():
        print(f"  {key:<18} {value:8.1f} us")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="calls per figure")
    parser.add_argument("--dx-size", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ct = spooled(sorted(make_series(root, 1, 512).iterdir())[0])
        dx = spooled(make_dx(root, args.dx_size))
        slot = root / "slot"  # the CT as a slot record, read as Spool.read_at reads it
        offset = 144 + int.from_bytes(ct[140:144], "little")
        dataset_sha = hashlib.sha256(memoryview(ct)[offset:]).hexdigest()
        slot.write_bytes(slots.header(ct, offset, dataset_sha, time.time()) + ct)
        dx_path = root / "dx.spooled"
        dx_path.write_bytes(dx)
        results = {
            "ct_slot": measure("CT 512x512 (slot)", ct, lambda: slots.read_payload(slot), args.n),
            "dx_file": measure(f"DX {args.dx_size}^2 (file)", dx, dx_path.read_bytes, args.n),
        }
    print(json.dumps({k: {f: round(v, 1) for f, v in r.items()} for k, r in results.items()}))


if __name__ == "__main__":
    main()
