"""A mixed load against a running county API, for ``bench/load.py`` and the load acceptance
test: radiologist and clinic accounts polling the worklist, searching (QIDO), viewing
rendered frames, reading reports and studies, while event streams stay open and a probe
times ``/healthz``.

Clients are asyncio tasks on one aiohttp ``ClientSession`` each, of one keep-alive
connection (as a browser tab's), in a closed loop with a random think time. The load runs
on the machine it measures, and what the generator takes the server does not get: on
aiohttp it took 0.4 ms of CPU a request against httpx's 1.0 (``bench/load.py``, 200
clients, 500 streams). Set-up (``seed_*``, ``sign_reports``) uses httpx, as the tests do.
Every answer is classified: ``200`` is correct; ``503`` and ``429`` are correct only with a
``Retry-After`` header; anything else (a ``500`` above all) is an error of its route.

Set-up lives here too (``seed``): sites, accounts (written to the database directly, tokens
minted with the API's secret) and studies announced through the API as a gateway would,
their files put in the API's object store, and signed reports through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import hashlib
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from gateway.instance import read_instance, spooled_header_json
from storage.base import ObjectStore
from tests.dicom_factory import make_ct, part10_bytes
from viewer_api.security import create_access_token
from viewer_api.settings import ApiSettings
from worklist.accounts import create_site, list_sites
from worklist.db import utcnow
from worklist.models import User

# argon2 of a password nobody uses: accounts are reached by minted tokens, not log-ins
_UNUSED_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$0123456789abcdefghijklmnopqrstuv"
SITES = ("TS01", "TS02", "TS03")
# the ceiling on the wait, after the load, for every event stream to be opened or refused
STREAMS_SETTLE_SECONDS = 60.0


@dataclass(frozen=True)
class StudyRef:
    site: str
    study: str
    series: str
    sops: tuple[str, ...]
    reported: bool = False


@dataclass
class LoadWorld:
    base_url: str
    readers: list[str]  # tokens
    clinics: dict[str, list[str]]  # site -> tokens
    streamers: list[str]  # tokens of accounts that hold the event streams
    studies: list[StudyRef]
    # the API replicas behind the county's front door, when there are several: client i (and
    # stream i) keeps to replica i mod n, as a load balancer keeps a browser's connection
    replicas: tuple[str, ...] = ()

    def url_for(self, i: int) -> str:
        return self.replicas[i % len(self.replicas)] if self.replicas else self.base_url


# --- set-up -------------------------------------------------------------------------------
def seed_accounts(
    factory: sessionmaker[Session],
    settings: ApiSettings,
    *,
    readers: int,
    clinics_per_site: int,
    streamers: int,
) -> tuple[list[str], dict[str, list[str]], list[str], str]:
    """Sites and accounts; (reader tokens, clinic tokens by site, streamer tokens, gateway)."""
    now = utcnow()
    with factory.begin() as session:
        for code in SITES:
            name = f"{code} 卫生院"
            create_site(session=session, code=code, name=name, ae_titles=[f"CT_{code}"], now=now)
        site_ids = {s.code: s.id for s in list_sites(session=session)}
        users: list[tuple[str, User]] = []

        def add(kind: str, name: str, role: str, site: str | None = None) -> None:
            user = User(
                username=name,
                password_hash=_UNUSED_HASH,
                role=role,
                site_id=site_ids[site] if site else None,
                created_at=now,
            )
            session.add(user)
            users.append((kind, user))

        for i in range(readers):
            add("reader", f"dr_{i:03d}", "radiologist")
        for code in SITES:
            for i in range(clinics_per_site):
                add(f"clinic:{code}", f"nurse_{code}_{i:02d}", "clinic", code)
        for i in range(streamers):
            # half radiologists, half clinic staff, as the reading room and clinics would
            if i % 2:
                add("stream", f"tab_{i:03d}", "clinic", SITES[i % len(SITES)])
            else:
                add("stream", f"tab_{i:03d}", "radiologist")
        add("gateway", "gw_all", "gateway")
        session.flush()
        tokens = [(k, create_access_token(user=u, settings=settings, now=now)) for k, u in users]
    reader_tokens = [t for k, t in tokens if k == "reader"]
    clinic_tokens = {code: [t for k, t in tokens if k == f"clinic:{code}"] for code in SITES}
    stream_tokens = [t for k, t in tokens if k == "stream"]
    gateway = next(t for k, t in tokens if k == "gateway")
    return reader_tokens, clinic_tokens, stream_tokens, gateway


def seed_studies(
    base_url: str,
    store: ObjectStore,
    gateway_token: str,
    folder: Path,
    *,
    studies_per_site: int,
    instances: int,
    size: int = 256,
) -> list[StudyRef]:
    """Small CT studies announced as each site's gateway would (one account for all sites:
    a gateway account without a site may send for any)."""
    refs: list[StudyRef] = []
    now = utcnow()
    folder.mkdir(parents=True, exist_ok=True)
    with httpx.Client(base_url=base_url, timeout=120) as http:
        for code in SITES:
            for n in range(studies_per_site):
                study, series = generate_uid(), generate_uid()
                first = make_ct(
                    study,
                    series_uid=series,
                    rows=size,
                    cols=size,
                    patient_name="王^小明",
                    patient_id=f"{code}{n:04d}",
                    study_description="头颅CT平扫",
                )
                items: list[dict[str, Any]] = []
                sops: list[str] = []
                for i in range(instances):
                    ds = copy.deepcopy(first)
                    ds.SOPInstanceUID = generate_uid()
                    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                    ds.InstanceNumber = i + 1
                    path = folder / f"{ds.SOPInstanceUID}.dcm"
                    blob = part10_bytes(ds)
                    path.write_bytes(blob)
                    received = read_instance(
                        blob,
                        dcmread(path, stop_before_pixels=True).file_meta,
                        site=code,
                        calling_ae=f"CT_{code}",
                        called_ae="TELEREAD",
                        urgent_called_aes={},
                    )
                    digest = hashlib.sha256(blob).hexdigest()
                    store.put(received.object_key, blob, sha256=digest)
                    item = dict(received.payload)
                    item.update(size=len(blob), sha256=digest, received_at=now.isoformat())
                    item["dicom_json"] = spooled_header_json(path, item["patient_name"])
                    items.append(item)
                    sops.append(ds.SOPInstanceUID)
                    path.unlink()
                r = http.post(
                    "/api/v1/ingest/instances",
                    headers={"Authorization": f"Bearer {gateway_token}"},
                    json={"site": code, "calling_ae": f"CT_{code}", "instances": items},
                )
                r.raise_for_status()
                refs.append(StudyRef(code, study, series, tuple(sops)))
    return refs


def sign_reports(base_url: str, reader_token: str, studies: list[StudyRef]) -> list[StudyRef]:
    """Claim, write and sign a report for each study; the refs marked ``reported``."""
    out = []
    headers = {"Authorization": f"Bearer {reader_token}"}
    with httpx.Client(base_url=base_url, timeout=60, headers=headers) as http:
        for ref in studies:
            http.post(f"/api/v1/worklist/{ref.study}/claim").raise_for_status()
            body = {"findings": "脑实质未见异常密度影。", "impression": "颅脑CT平扫未见异常。"}
            http.put(f"/api/v1/studies/{ref.study}/report", json=body).raise_for_status()
            sign = {"status": "final", "no_critical_result_reason": "未见危急征象"}
            http.post(f"/api/v1/studies/{ref.study}/report/sign", json=sign).raise_for_status()
            out.append(StudyRef(ref.site, ref.study, ref.series, ref.sops, reported=True))
    return out


# --- figures ------------------------------------------------------------------------------
@dataclass
class RouteFigures:
    latencies: list[float] = field(default_factory=list)  # seconds, every answer
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # what was wrong, counted

    def add(self, seconds: float, answer: Answer | None, problem: str | None) -> None:
        self.latencies.append(seconds)
        if answer is not None:
            self.statuses[answer.status] += 1
        if problem is not None:
            self.errors[problem] += 1

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.latencies),
            "p50_ms": round(self.percentile(0.50) * 1000, 1),
            "p95_ms": round(self.percentile(0.95) * 1000, 1),
            "p99_ms": round(self.percentile(0.99) * 1000, 1),
            "statuses": dict(sorted(self.statuses.items())),
            "errors": dict(self.errors),
        }


@dataclass
class LoadResult:
    seconds: float
    routes: dict[str, RouteFigures]
    health: RouteFigures
    streams: Counter[str]  # "200", "429+RA", ..., and "events" (received), "closed_early"
    after: dict[str, int]  # route -> status, once each after the load stopped and settled
    streams_seconds: float = 0.0  # how long the streams took to open, before the clients

    @property
    def total(self) -> int:
        return sum(len(f.latencies) for f in self.routes.values())

    def count(self, status: int) -> int:
        return sum(f.statuses[status] for f in self.routes.values())

    def errors(self) -> dict[str, dict[str, int]]:
        return {name: dict(f.errors) for name, f in self.routes.items() if f.errors}

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "requests": self.total,
            "throughput_per_s": round(self.total / self.seconds, 1) if self.seconds else 0,
            "routes": {name: f.summary() for name, f in sorted(self.routes.items())},
            "healthz": self.health.summary(),
            "streams": dict(self.streams),
            "streams_open_seconds": round(self.streams_seconds, 1),
            "after": self.after,
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """What the load keeps of a response (its body read whole, then dropped)."""

    status: int
    retry_after: str | None


def classify(answer: Answer) -> str | None:
    """None when the answer is acceptable under load, else what was wrong."""
    code = answer.status
    if code == 200:
        return None
    if code in (429, 503):
        return None if answer.retry_after else f"{code} without Retry-After"
    return f"status {code}"


# --- the load -----------------------------------------------------------------------------
# what a request may fail with, short of an answer
CLIENT_ERRORS = (aiohttp.ClientError, TimeoutError)


class Client:
    """One simulated user's keep-alive connection to one server (``base_url``: scheme,
    host and port, with or without a path prefix such as Orthanc's ``/dicom-web``)."""

    def __init__(self, base_url: str, timeout: float | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=30),
            # no cookie jar: a bearer token is all the load sends
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def get(
        self,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        """GET ``path``, its body read whole."""
        async with self.session.get(
            self.base_url + path, headers=headers, params=params
        ) as response:
            await response.read()
            return Answer(response.status, response.headers.get("Retry-After"))


Action = Callable[[Client, random.Random], Awaitable[tuple[str, Answer]]]


def actions(world: LoadWorld) -> list[tuple[float, str, Action]]:
    """(weight, route name, request) of the mix."""
    reported = [s for s in world.studies if s.reported] or world.studies

    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def reader(rng: random.Random) -> dict[str, str]:
        return auth(rng.choice(world.readers))

    def clinic(rng: random.Random, site: str) -> dict[str, str]:
        return auth(rng.choice(world.clinics[site]))

    async def worklist(http: Client, rng: random.Random) -> tuple[str, Answer]:
        return "worklist", await http.get("/api/v1/worklist?limit=50", headers=reader(rng))

    async def clinic_worklist(http: Client, rng: random.Random) -> tuple[str, Answer]:
        site = rng.choice(list(world.clinics))
        r = await http.get("/api/v1/worklist?limit=50", headers=clinic(rng, site))
        return "worklist (clinic)", r

    async def qido(http: Client, rng: random.Random) -> tuple[str, Answer]:
        study = rng.choice(world.studies)
        params = {"StudyInstanceUID": study.study, "includefield": "StudyDescription"}
        r = await http.get("/dicomweb/studies", params=params, headers=reader(rng))
        return "qido studies", r

    async def rendered(http: Client, rng: random.Random) -> tuple[str, Answer]:
        s = rng.choice(world.studies)
        path = f"/dicomweb/studies/{s.study}/series/{s.series}/instances/{rng.choice(s.sops)}"
        headers = {**reader(rng), "Accept": "image/jpeg"}
        return "rendered frame", await http.get(f"{path}/rendered", headers=headers)

    async def report(http: Client, rng: random.Random) -> tuple[str, Answer]:
        s = rng.choice(reported)
        who = clinic(rng, s.site) if rng.random() < 0.5 else reader(rng)
        return "report", await http.get(f"/api/v1/studies/{s.study}/report", headers=who)

    async def study(http: Client, rng: random.Random) -> tuple[str, Answer]:
        s = rng.choice(world.studies)
        return "study", await http.get(f"/api/v1/studies/{s.study}", headers=reader(rng))

    return [
        (30, "worklist", worklist),
        (10, "worklist (clinic)", clinic_worklist),
        (15, "qido studies", qido),
        (20, "rendered frame", rendered),
        (15, "report", report),
        (10, "study", study),
    ]


async def _client(
    world: LoadWorld,
    mix: list[tuple[float, str, Action]],
    figures: dict[str, RouteFigures],
    deadline: float,
    think: float,
    seed: int,
    base_url: str,
) -> None:
    rng = random.Random(seed)
    weights = [w for w, _, _ in mix]
    await asyncio.sleep(rng.random() * min(1.0, think or 0.2))  # not all at the same instant
    async with Client(base_url, 60) as http:
        while time.monotonic() < deadline:
            _, name, action = rng.choices(mix, weights)[0]
            started = time.monotonic()
            try:
                _, answer = await action(http, rng)
            except CLIENT_ERRORS as exc:
                figures[name].add(time.monotonic() - started, None, type(exc).__name__)
                continue
            figures[name].add(time.monotonic() - started, answer, classify(answer))
            if answer.status in (429, 503):
                retry = answer.retry_after or "1"
                await asyncio.sleep(float(retry) if retry.isdigit() else 1.0)
            elif think:
                await asyncio.sleep(rng.expovariate(1 / think))


async def _stream(
    base_url: str,
    token: str,
    stop: asyncio.Event,
    settled: asyncio.Event,
    counts: Counter[str],
) -> None:
    """One EventSource: opened, and opened again after a 503 (shed while the server was
    busy) once its Retry-After has passed, as a browser's would; a 429 (over the account's
    cap) is final here. ``settled`` is set at its final answer (open, refused, or an error),
    and the stream stays open until ``stop``: a 503 is retried for as long as ``stop`` is not
    set, however long the load lasts. Counts each answer: ``200``, ``429+Retry-After``,
    ``503+Retry-After`` (the retried ones), and ``closed_early`` for a stream the server
    ended during the run."""
    params = {"access_token": token}
    async with Client(base_url, None) as http:
        while not stop.is_set():
            try:
                async with http.session.get(
                    f"{http.base_url}/api/v1/events", params=params
                ) as response:
                    code = response.status
                    retry = response.headers.get("Retry-After")
                    counts[f"{code}" + ("+Retry-After" if retry else "")] += 1
                    if code == 503 and retry:
                        await asyncio.sleep(float(retry) if retry.isdigit() else 1.0)
                        continue
                    settled.set()
                    if code != 200:
                        return
                    reader = asyncio.ensure_future(_count_events(response, counts))
                    stopper = asyncio.ensure_future(stop.wait())
                    done, _ = await asyncio.wait(
                        {reader, stopper}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if reader in done:
                        counts["closed_early"] += 1
                    for task in (reader, stopper):
                        task.cancel()
                    return
            except CLIENT_ERRORS as exc:
                counts[f"stream {type(exc).__name__}"] += 1
                settled.set()
                return
    settled.set()  # stopped before a final answer: counted as 503s only


async def _count_events(response: aiohttp.ClientResponse, counts: Counter[str]) -> None:
    async for line in response.content:
        if line.startswith(b"data:"):
            counts["events"] += 1


# /healthz timed from a process of its own (a new connection each time, as a load balancer's
# check): the load generator's own CPU must not count as the server's latency
_PROBE = r"""
import http.client, json, sys, time
host, port, seconds, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
out = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    started = time.monotonic()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/healthz")
        status = conn.getresponse().status
        conn.close()
    except OSError as exc:
        status = type(exc).__name__
    out.append([time.monotonic() - started, status])
    time.sleep(max(0.0, every - (time.monotonic() - started)))
json.dump(out, sys.stdout)
"""


async def _probe(base_url: str, seconds: float, figures: RouteFigures, every: float) -> None:
    url = httpx.URL(base_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PROBE,
        str(url.host),
        str(url.port),
        str(seconds),
        str(every),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    for latency, status in json.loads(out or b"[]"):
        figures.latencies.append(latency)
        if isinstance(status, int):
            figures.statuses[status] += 1
            if status != 200:
                figures.errors[f"status {status}"] += 1
        else:
            figures.errors[status] += 1


async def _after(world: LoadWorld, mix: list[tuple[float, str, Action]]) -> dict[str, int]:
    """Each route once more (on each replica: `` @2`` names the second's answers)."""
    rng = random.Random(0)
    out: dict[str, int] = {}
    for n, url in enumerate(world.replicas or (world.base_url,), 1):
        at = f" @{n}" if n > 1 else ""
        async with Client(url, 30) as http:
            for _, name, action in mix:
                _, answer = await action(http, rng)
                out[name + at] = answer.status
            out["/healthz" + at] = (await http.get("/healthz")).status
            out["/readyz" + at] = (await http.get("/readyz")).status
    return out


async def run_load(
    world: LoadWorld,
    *,
    clients: int,
    seconds: float,
    streams: int = 0,
    think: float = 0.5,
    settle: float = 5.0,
    probe_every: float = 0.1,
    seed: int = 1,
) -> LoadResult:
    """``clients`` closed-loop clients for ``seconds`` (plus ``streams`` event streams held
    open over the ``world.streamers`` accounts, round robin), ``/healthz`` timed every
    ``probe_every`` seconds throughout; the streams are closed once each has been opened or
    refused (those shed under the load retry until then, up to ``STREAMS_SETTLE_SECONDS``);
    then, ``settle`` seconds later, each route once more.

    The streams are opened first and the clients start once each has its answer (or
    ``STREAMS_SETTLE_SECONDS`` passed): the load is measured with the streams open, as a
    reading room holds them all day, not with 500 stream set-ups and 200 first requests
    arriving in the same half second (a restart's reconnect storm, a scenario of its own:
    ``LoadResult.streams_seconds`` says how long the opening took)."""
    mix = actions(world)
    figures = {name: RouteFigures() for _, name, _ in mix}
    health = RouteFigures()
    stream_counts: Counter[str] = Counter()
    stop_streams = asyncio.Event()
    settled = [asyncio.Event() for _ in range(streams if world.streamers else 0)]
    stream_tasks = [
        asyncio.create_task(
            _stream(
                world.url_for(i),
                world.streamers[i % len(world.streamers)],
                stop_streams,
                done,
                stream_counts,
            )
        )
        for i, done in enumerate(settled)
    ]
    opening = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(done.wait() for done in settled)), STREAMS_SETTLE_SECONDS
        )
    streams_seconds = time.monotonic() - opening
    # a stall of this process counts as the server's latency for every request in flight:
    # its full garbage collections, scanning every object it holds (the modules, and the
    # streams' connections, kept to the end), took 100-330 ms every few seconds at 200
    # clients. What exists now is frozen out of the collector's sight; unfrozen after the run
    gc.freeze()
    started = time.monotonic()
    deadline = started + seconds
    # each replica's /healthz, as the front door checks each
    probes = [
        asyncio.create_task(_probe(url, seconds, health, probe_every))
        for url in (world.replicas or (world.base_url,))
    ]
    try:
        await asyncio.gather(
            *(
                _client(world, mix, figures, deadline, think, seed * 100_000 + i, world.url_for(i))
                for i in range(clients)
            )
        )
    finally:
        gc.unfreeze()
    elapsed = time.monotonic() - started
    await asyncio.gather(*probes)
    # every stream shed while the load lasted opens (or is refused over its account's cap)
    # once the server has room: wait for that before closing the open ones, or a stream
    # still retrying would take the place of one just closed
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(done.wait() for done in settled)), STREAMS_SETTLE_SECONDS
        )
    stop_streams.set()
    await asyncio.gather(*stream_tasks, return_exceptions=True)
    await asyncio.sleep(settle)
    after = await _after(world, mix)
    return LoadResult(elapsed, figures, health, stream_counts, after, streams_seconds)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def dumps(result: LoadResult) -> str:
    return json.dumps(result.summary(), ensure_ascii=False, indent=1)


__all__ = [
    "CLIENT_ERRORS",
    "Answer",
    "Client",
    "LoadResult",
    "LoadWorld",
    "RouteFigures",
    "StudyRef",
    "classify",
    "run_load",
    "seed_accounts",
    "seed_studies",
    "sign_reports",
]
