"""Worklist ordering, visibility, claims, leases, claim_next under contention."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_worklist_ingest import NOW, arrival, fast_user, seed, study
from worklist.claims import claim_next, claim_study, expire_claims, release_study
from worklist.completion import mark_stable_studies
from worklist.db import make_engine, make_sessionmaker
from worklist.errors import ClaimConflict, NotAReader, NotClaimable, NotClaimHolder, StudyNotFound
from worklist.ingest import record_instances
from worklist.repository import get_study, list_worklist
from worklist.triage_override import override_triage

LEASE = timedelta(minutes=15)
LATER = NOW + timedelta(minutes=5)


def add(s: Session, uid: str, *, site: str = "TS01", minutes: int = 0, text: str = "plain") -> None:
    record_instances(
        session=s,
        site_code=site,
        calling_ae=f"CT_{site}",
        instances=[
            arrival(
                uid,
                f"{uid}.1",
                f"{uid}.1.1",
                study_description=text,
                received_at=NOW + timedelta(minutes=minutes),
            )
        ],
        now=NOW,
    )


def test_ordering_and_visibility(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        rad = fast_user(s, "rad", "radiologist")
        c1 = fast_user(s, "c1", "clinic", "TS01")
        gw = fast_user(s, "gw", "gateway")
        add(s, "9.1", minutes=0)
        add(s, "9.2", minutes=1, site="TS02")
        add(s, "9.3", minutes=2, text="急性脑卒中")
        add(s, "9.4", minutes=3, text="胸痛")
        add(s, "9.5", minutes=-1, site="TS02")
        s.commit()
        uids = [x.study_instance_uid for x in list_worklist(session=s, viewer=rad, now=LATER)]
        assert uids == ["9.3", "9.4", "9.5", "9.1", "9.2"]
        mine = [x.study_instance_uid for x in list_worklist(session=s, viewer=c1, now=LATER)]
        assert mine == ["9.3", "9.4", "9.1"]
        assert list_worklist(session=s, viewer=gw, now=LATER) == []
        assert [
            x.study_instance_uid
            for x in list_worklist(session=s, viewer=rad, now=LATER, site_code="TS02")
        ] == ["9.5", "9.2"]
        assert [
            x.study_instance_uid
            for x in list_worklist(session=s, viewer=rad, now=LATER, category="stroke")
        ] == ["9.3"]
        assert len(list_worklist(session=s, viewer=rad, now=LATER, modality="CT")) == 5
        assert list_worklist(session=s, viewer=rad, now=LATER, modality="MR") == []
        assert len(list_worklist(session=s, viewer=rad, now=LATER, limit=2, offset=1)) == 2
        assert get_study(session=s, study_uid="9.2", viewer=c1) is None
        got = get_study(session=s, study_uid="9.1", viewer=c1)
        assert got is not None and got.site.code == "TS01" and len(got.series) == 1


def test_claim_semantics(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        b = fast_user(s, "b", "radiologist")
        admin = fast_user(s, "boss", "admin")
        clinic = fast_user(s, "c1", "clinic", "TS01")
        add(s, "8.1")
        s.commit()

        st = claim_study(session=s, study_uid="8.1", reader=a, now=NOW, lease=LEASE)
        assert (st.status, st.claimed_by_id, st.claim_expires_at) == ("claimed", a.id, NOW + LEASE)
        assert st.claimed_by is not None and st.claimed_by.username == "a"
        s.commit()
        with pytest.raises(ClaimConflict):
            claim_study(session=s, study_uid="8.1", reader=b, now=LATER, lease=LEASE)
        # re-claiming your own extends the lease
        st = claim_study(session=s, study_uid="8.1", reader=a, now=LATER, lease=LEASE)
        assert st.claim_expires_at == LATER + LEASE
        with pytest.raises(StudyNotFound):
            claim_study(session=s, study_uid="0.0", reader=a, now=NOW)
        with pytest.raises(NotAReader):
            claim_study(session=s, study_uid="8.1", reader=clinic, now=NOW)
        with pytest.raises(NotClaimHolder):
            release_study(session=s, study_uid="8.1", reader=b, now=LATER)
        st = release_study(session=s, study_uid="8.1", reader=admin, now=LATER)
        assert st.claimed_by_id is None and st.status == "ready"
        with pytest.raises(NotClaimHolder):
            release_study(session=s, study_uid="8.1", reader=a, now=LATER)
        st = claim_study(session=s, study_uid="8.1", reader=b, now=LATER, lease=LEASE)
        assert st.claimed_by_id == b.id
        st.status = "final"
        st.claimed_by_id = None
        s.commit()
        with pytest.raises(NotClaimable):
            claim_study(session=s, study_uid="8.1", reader=a, now=LATER)


def test_lease_expiry_returns_study(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        b = fast_user(s, "b", "radiologist")
        add(s, "7.7")
        claim_study(session=s, study_uid="7.7", reader=a, now=NOW, lease=LEASE)
        s.commit()
        # an expired lease can be taken over directly...
        st = claim_study(
            session=s, study_uid="7.7", reader=b, now=NOW + LEASE + timedelta(seconds=1)
        )
        assert st.claimed_by_id == b.id
        s.commit()
        # ...or expire_claims returns the study to the queue
        assert expire_claims(session=s, now=NOW + timedelta(minutes=1)) == 0
        assert expire_claims(session=s, now=NOW + timedelta(hours=2)) == 1
        st = study(s, "7.7")
        assert st.claimed_by_id is None and st.claim_expires_at is None
        assert st.status == "ready"


def test_claim_next_picks_most_urgent(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        add(s, "6.1", minutes=0)
        add(s, "6.2", minutes=1)
        add(s, "6.3", minutes=2, text="STROKE")
        add(s, "6.4", minutes=3)  # routine, still receiving: not handed out yet
        mark_stable_studies(
            session=s, now=NOW + timedelta(minutes=3, seconds=10), stable_seconds=90
        )
        s.commit()
        now = NOW + timedelta(minutes=4)
        order = []
        while (st := claim_next(session=s, reader=a, now=now, lease=LEASE)) is not None:
            assert st.claimed_by_id == a.id and st.status == "claimed"
            order.append(st.study_instance_uid)
            s.commit()
        assert order == ["6.3", "6.1", "6.2"]


N_STUDIES = 200
N_READERS = 50


def test_concurrent_claim_next_each_study_once(db_url: str) -> None:
    """50 readers (threads, each its own session and connection) drain 200 studies with
    claim_next: every study is claimed exactly once."""
    engine = make_engine(db_url, pool_size=N_READERS, max_overflow=10)
    factory = make_sessionmaker(engine)
    try:
        with factory() as s:
            seed(s, sites=("TS01",))
            readers = [fast_user(s, f"r{i}", "radiologist") for i in range(N_READERS)]
            batch = [
                arrival(
                    f"5.{i}",
                    f"5.{i}.1",
                    f"5.{i}.1.1",
                    received_at=NOW + timedelta(seconds=i),
                    study_description="STROKE" if i % 10 == 0 else "plain",
                )
                for i in range(N_STUDIES)
            ]
            record_instances(
                session=s, site_code="TS01", calling_ae="CT_TS01", instances=batch, now=NOW
            )
            mark_stable_studies(session=s, now=NOW + timedelta(hours=1), stable_seconds=90)
            s.commit()
            reader_ids = [r.id for r in readers]
        now = NOW + timedelta(hours=1)
        claims: list[tuple[str, int]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        barrier = threading.Barrier(N_READERS)

        def work(i: int) -> None:
            try:
                with factory() as s:
                    reader = s.get(type(readers[0]), reader_ids[i])
                    assert reader is not None
                    barrier.wait()
                    while True:
                        st = claim_next(session=s, reader=reader, now=now, lease=LEASE)
                        if st is None:
                            s.commit()
                            return
                        uid = st.study_instance_uid
                        s.commit()
                        with lock:
                            claims.append((uid, reader.id))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(N_READERS)]
        started = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - started
        name = engine.dialect.name
        print(f"\n{name}: {N_READERS} readers claimed {len(claims)} studies in {elapsed:.2f}s")
        assert errors == []
        counts = Counter(uid for uid, _ in claims)
        assert len(counts) == N_STUDIES
        assert max(counts.values()) == 1
        assert len({r for _, r in claims}) > 1  # the work was really shared
        with factory() as s:
            st = study(s, "5.0")
            assert st.status == "claimed"
    finally:
        engine.dispose()


def test_override_triage(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        add(s, "4.4", text="急性脑卒中")
        st = override_triage(
            session=s,
            study_uid="4.4",
            user=a,
            priority="routine",
            category=None,
            reason="old infarct, follow-up",
            now=NOW,
        )
        assert (st.priority, st.priority_rank, st.category) == ("routine", 1, None)
        assert st.deadline_at == NOW + timedelta(minutes=1440)
        # later instances with urgent text do not undo a person's decision
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[arrival("4.4", "4.4.1", "4.4.1.2", study_description="STROKE")],
            now=NOW,
        )
        assert study(s, "4.4").priority == "routine"
        with pytest.raises(StudyNotFound):
            override_triage(
                session=s,
                study_uid="0",
                user=a,
                priority="stat",
                category="stroke",
                reason="x",
                now=NOW,
            )
