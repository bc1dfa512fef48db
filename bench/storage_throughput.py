"""Put/get throughput of each object-store backend: N objects of S bytes.

    .venv/bin/python bench/storage_throughput.py                  # both, 1000 x 500 KB
    .venv/bin/python bench/storage_throughput.py --backend s3 --threads 4

The S3 run starts its own SeaweedFS (``weed mini``, as the tests do) unless ``--endpoint``
points at a running server. Puts pass the sha256 (as the gateway does), gets read whole
objects (and check the sha256, as ``MinioStore`` always does).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import FilesystemStore, MinioStore, ObjectStore
from storage.keys import instance_key
from storage.settings import StorageSettings


def _timed(label: str, count: int, size: int, threads: int, fn: Callable[[int], None]) -> float:
    started = time.perf_counter()
    if threads == 1:
        for i in range(count):
            fn(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, range(count)))
    elapsed = time.perf_counter() - started
    mb = count * size / 1e6
    print(
        f"  {label:4s} {count} x {size / 1000:.0f} KB in {elapsed:6.2f} s: "
        f"{count / elapsed:7.1f} objects/s, {mb / elapsed:7.1f} MB/s"
    )
    return elapsed


def run(store: ObjectStore, count: int, size: int, threads: int) -> None:
    payloads = [os.urandom(size) for _ in range(8)]
    digests = [hashlib.sha256(p).hexdigest() for p in payloads]
    keys = [
        instance_key("TS01", "1.2.826.0.1.3680043.10.9999", "1.2.3", f"1.2.3.{i + 1}")
        for i in range(count)
    ]

    def put(i: int) -> None:
        store.put(keys[i], payloads[i % 8], sha256=digests[i % 8])

    def get(i: int) -> None:
        assert len(store.get(keys[i])) == size

    _timed("put", count, size, threads, put)
    _timed("get", count, size, threads, get)


@contextlib.contextmanager
def s3_store(endpoint: str | None, access_key: str, secret_key: str) -> Iterator[MinioStore]:
    with contextlib.ExitStack() as stack:
        if endpoint is None:
            from tests.servers.seaweed import run_seaweed

            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            started = time.perf_counter()
            server = stack.enter_context(run_seaweed(workdir))
            print(f"  SeaweedFS ready in {time.perf_counter() - started:.2f} s")
            endpoint, access_key, secret_key = (
                server.endpoint,
                server.access_key,
                server.secret_key,
            )
        settings = StorageSettings(
            backend="s3",
            endpoint=endpoint,
            access_key=SecretStr(access_key),
            secret_key=SecretStr(secret_key),
            bucket=f"bench-{uuid.uuid4().hex[:12]}",
            secure=False,
            region="us-east-1",
        )
        yield MinioStore.from_settings(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["filesystem", "s3", "both"], default="both")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=500_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", type=Path, help="directory for the filesystem store")
    parser.add_argument("--endpoint", help="host:port of a running S3 server")
    parser.add_argument("--access-key", default=os.environ.get("TELEREAD_STORAGE_ACCESS_KEY", ""))
    parser.add_argument("--secret-key", default=os.environ.get("TELEREAD_STORAGE_SECRET_KEY", ""))
    args = parser.parse_args()
    print(f"{args.count} objects of {args.size} bytes, {args.threads} thread(s)")
    if args.backend in ("filesystem", "both"):
        print("filesystem:")
        with tempfile.TemporaryDirectory(dir=args.root) as root:
            run(FilesystemStore(Path(root)), args.count, args.size, args.threads)
    if args.backend in ("s3", "both"):
        print("s3 (SeaweedFS on loopback):")
        with s3_store(args.endpoint, args.access_key, args.secret_key) as store:
            run(store, args.count, args.size, args.threads)


if __name__ == "__main__":
    main()
