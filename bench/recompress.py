"""Lossless recompression before upload: bytes saved and CPU per instance, CT and DR.

    .venv/bin/python bench/recompress.py [--ct-slices 20] [--dx-size 2048] [--real-ct-slices 20]

Uses teleread's demo studies (512x512 head CT slices, 16-bit; a DR chest radiograph), a CT
series from real anatomy (``bench/realistic_ct.py``: pydicom's real CT slice at 512x512 with
CT-like noise per slice; ``--real-ct-slices``) and ``gateway.recompress.recompress`` exactly
as the forwarder calls it: encode, rebuild the received file from the result (decoding it)
and compare, wrap with the file meta note. CPU is process time per instance (one core).
Prints one line per (set, method) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realistic_ct import write_real_ct

from gateway.recompress import recompress
from teleread.demo import write_demo_studies

METHODS = ("jpegls", "j2k", "deflate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ct-slices", type=int, default=20)
    parser.add_argument("--dx-size", type=int, default=2048)
    parser.add_argument("--real-ct-slices", type=int, default=20)
    parser.add_argument("--noise-hu", type=float, default=12.0, help="the real CT's added noise")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        studies = write_demo_studies(
            Path(tmp), ct_slices=args.ct_slices, ct_size=512, dx_size=args.dx_size
        )
        sets: dict[str, list[bytes]] = {
            "CT 512x512": [],
            "real CT 512": [],
            f"DR {args.dx_size}": [],
        }
        write_real_ct(Path(tmp) / "real", args.real_ct_slices, noise_hu=args.noise_hu)
        sets["real CT 512"] = [f.read_bytes() for f in sorted((Path(tmp) / "real").iterdir())]
        for study in studies:
            for f in study.files:
                data = f.read_bytes()
                if study.modality == "CT" and len(sets["CT 512x512"]) < args.ct_slices:
                    sets["CT 512x512"].append(data)
                elif study.modality in ("DX", "CR"):
                    sets[f"DR {args.dx_size}"].append(data)
    results = []
    for name, files in sets.items():
        if not files:
            continue
        original = sum(len(d) for d in files)
        for method in METHODS:
            t0 = time.process_time()
            w0 = time.perf_counter()
            sizes = []
            for data in files:
                out = recompress(data, method)
                sizes.append(len(out.data) if out else len(data))
            cpu_ms = (time.process_time() - t0) * 1000 / len(files)
            wall_ms = (time.perf_counter() - w0) * 1000 / len(files)
            sent = sum(sizes)
            row = {
                "set": name,
                "method": method,
                "instances": len(files),
                "mb_per_instance": round(original / len(files) / 1e6, 3),
                "ratio": round(original / sent, 2),
                "saved_percent": round(100 * (1 - sent / original), 1),
                "cpu_ms_per_instance": round(cpu_ms, 1),
                "wall_ms_per_instance": round(wall_ms, 1),
            }
            results.append(row)
            print(
                f"{name:12} {method:8} {len(files):3} inst  {row['mb_per_instance']:.3f} MB each  "
                f"ratio {row['ratio']:5.2f}  saved {row['saved_percent']:5.1f}%  "
                f"CPU {row['cpu_ms_per_instance']:7.1f} ms/inst"
            )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
