"""Events that never skip, across replicas: two ``teleread api`` processes on one
PostgreSQL, a burst of concurrent claims, releases and signs on both, several event streams
on each, and a webhook receiver. Every event reaches every stream exactly once, in id order,
and the webhook receiver exactly once, most within 2 s of the event (p95)."""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from storage import FilesystemStore
from tests.integration.test_workflow_support import WEBHOOK_SECRET, Receiver, start_receiver
from tests.load_client import seed_accounts, seed_studies
from tests.processes import SECRET_KEY, api_replicas
from viewer_api.settings import ApiSettings
from worklist import events
from worklist.db import make_engine, make_sessionmaker
from worklist.models import Event

pytestmark = pytest.mark.postgres

BURST_SECONDS = 30.0
WORKERS_PER_REPLICA = 4
STREAMS_PER_REPLICA = 2
KEEP_UNSIGNED = 2 * WORKERS_PER_REPLICA * 2
TIMEOUT = httpx.Timeout(30.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from start_receiver()


class Stream:
    """One event stream read in a thread: the ids of its events, in order."""

    def __init__(self, base_url: str, token: str, after: int) -> None:
        self.ids: list[int] = []
        self.opened = threading.Event()
        self.status = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(base_url, token, after), daemon=True)
        self.thread.start()
        assert self.opened.wait(30), "stream did not open"

    def _run(self, base_url: str, token: str, after: int) -> None:
        params = {"access_token": token, "after": str(after)}
        with (
            httpx.Client(base_url=base_url, timeout=TIMEOUT) as client,
            client.stream("GET", "/api/v1/events", params=params) as response,
        ):
            self.status = response.status_code
            self.opened.set()
            for line in response.iter_lines():
                if line.startswith("id:"):
                    self.ids.append(int(line[3:].strip()))
                if self._stop.is_set():
                    break


def burst(
    base_urls: list[str], tokens: list[str], studies: list[str], seconds: float
) -> Counter[str]:
    """Readers on both replicas claim random studies, then release them (most) or write and
    sign a report (some), until ``seconds`` have passed."""
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    left = list(studies)

    def worker(n: int) -> None:
        rng = random.Random(n)
        base = base_urls[n % len(base_urls)]
        headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
        with httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT) as http:
            while time.monotonic() < deadline:
                with lock:
                    if not left:
                        return
                    uid = rng.choice(left)
                r = http.post(f"/api/v1/worklist/{uid}/claim")
                with lock:
                    outcomes[f"claim {r.status_code}"] += 1
                if r.status_code != 200:
                    continue
                with lock:
                    # keep some studies unsigned so the claims and releases go on for the
                    # whole burst however fast this machine signs
                    may_sign = len(left) > KEEP_UNSIGNED
                if may_sign and rng.random() < 0.1:
                    body = {"findings": "未见异常。", "impression": "未见异常。"}
                    http.put(f"/api/v1/studies/{uid}/report", json=body).raise_for_status()
                    sign = {"status": "final", "no_critical_result_reason": "无"}
                    r = http.post(f"/api/v1/studies/{uid}/report/sign", json=sign)
                    with lock:
                        outcomes[f"sign {r.status_code}"] += 1
                        if r.status_code == 200 and uid in left:
                            left.remove(uid)
                else:
                    r = http.post(f"/api/v1/worklist/{uid}/release")
                    with lock:
                        outcomes[f"release {r.status_code}"] += 1

    threads = [
        threading.Thread(target=worker, args=(n,))
        for n in range(WORKERS_PER_REPLICA * len(base_urls))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_every_event_once_on_every_stream_and_webhook_across_replicas(
    pg_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    engine = make_engine(pg_url, pool_size=2, max_overflow=0)
    factory = make_sessionmaker(engine)
    settings = ApiSettings(secret_key=SECRET_KEY)
    readers, _, _, gateway = seed_accounts(
        factory, settings, readers=WORKERS_PER_REPLICA * 2, clinics_per_site=0, streamers=0
    )
    objects = tmp_path / "objects"
    env = {
        "TELEREAD_STORAGE_BACKEND": "filesystem",
        "TELEREAD_STORAGE_ROOT": str(objects),
        "TELEREAD_WORKLIST_WEBHOOK_URLS": receiver.url,
        "TELEREAD_WORKLIST_WEBHOOK_SECRET": WEBHOOK_SECRET,
        # replicas as docker-compose.yml runs them: one API process each (the default of
        # several worker processes per replica would be 4 API processes on a 2-core CI
        # machine, beside the database and the other test workers)
        "TELEREAD_API_WORKERS": "1",
    }
    try:
        with api_replicas(database_url=pg_url, env=env, logs=tmp_path) as bases:
            studies = seed_studies(
                bases[0],
                FilesystemStore(objects),
                gateway,
                tmp_path / "dicom",
                studies_per_site=20,
                instances=1,
                size=16,
            )
            with factory() as session:
                start = events.last_id(session=session)
            # radiologists' streams (they see every event), on both replicas, from before the burst
            streams = [
                Stream(bases[i % 2], readers[i], start) for i in range(2 * STREAMS_PER_REPLICA)
            ]
            assert [s.status for s in streams] == [200] * len(streams)
            began = time.monotonic()
            outcomes = burst(bases, readers, [s.study for s in studies], BURST_SECONDS)
            # the whole burst: the studies did not run out (all signed) before it was over
            assert time.monotonic() - began >= BURST_SECONDS, outcomes
            assert outcomes["claim 200"] > 20 and outcomes["release 200"] > 10, outcomes
            assert outcomes["sign 200"] > 0, outcomes
            assert not [k for k in outcomes if k.split()[1].startswith("5")], outcomes
            with factory() as session:
                made = {
                    e.id: e.created_at
                    for e in session.scalars(
                        select(Event).where(Event.id > start).order_by(Event.id)
                    )
                }
            expected = list(made)

            def complete() -> bool:
                return all(len(s.ids) >= len(expected) for s in streams) and len(
                    receiver.received
                ) >= len(expected)

            deadline = time.monotonic() + 60
            while not complete() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)  # anything more (a duplicate) would arrive now
            for stream in streams:
                assert stream.ids == expected  # each event once, in id order, none skipped
            got = Counter(r.body["id"] for r in receiver.received)
            assert sorted(got) == expected and max(got.values()) == 1
            assert all(r.signature_ok for r in receiver.received)
            late = sorted(r.at - made[r.body["id"]].timestamp() for r in receiver.received)
            p95 = late[int(len(late) * 0.95)]
            assert p95 <= 2.0, f"webhook p95 {p95:.2f} s over {len(late)} events"
            print(
                f"{len(expected)} events in {BURST_SECONDS:.0f} s on 2 replicas, {outcomes}; "
                f"webhook delay p50 {statistics.median(late):.3f} s p95 {p95:.3f} s"
            )
    finally:
        engine.dispose()
