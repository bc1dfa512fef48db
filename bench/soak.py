"""The issue's kill -9 soak: 1,000 instances sent by dcmtk storescu, the gateway (``python -m
gateway``, a real process) SIGKILLed 20 times at random points of the sends, restarted on the
same spool each time, storescu resending what got no success.

    .venv/bin/python bench/soak.py [--instances 1000] [--kills 20] [--seed N]

Reports: instances with a success status, how many are in the object store byte-identical
(dataset bytes), how many the county's index holds (exactly once: it is a set keyed by SOP
Instance UID, as the real API's), duplicate POSTs (a crash between an announcement and its
outbox mark re-announces; the API answers those as duplicates), problems (must be none).
Exit status 1 on any problem. The machinery is ``tests/integration/test_gateway_durability``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.test_gateway_durability import run_soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="teleread-soak-"))
    result = run_soak(workdir, instances=args.instances, kills=args.kills, seed=args.seed)
    report = dataclasses.asdict(result)
    report["workdir"] = str(workdir) if args.keep else None
    print(json.dumps(report, indent=1))
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    ok = not result.problems and result.stored_ok == result.announced_once == result.succeeded
    return 0 if ok and result.succeeded == result.instances else 1


if __name__ == "__main__":
    sys.exit(main())
