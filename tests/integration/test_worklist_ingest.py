"""Ingest: idempotence, counts, triage, concurrency — on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from worklist import accounts
from worklist.completion import mark_stable_studies
from worklist.errors import UnknownSite
from worklist.ingest import InstanceArrival, record_instances
from worklist.models import Instance, Series, Study, User
from worklist.triage import Reason

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
CT = "1.2.840.10008.5.1.4.1.1.2"


def arrival(study: str, series: str, sop: str, **kw: Any) -> InstanceArrival:
    base: dict[str, Any] = {
        "study_instance_uid": study,
        "series_instance_uid": series,
        "sop_instance_uid": sop,
        "sop_class_uid": CT,
        "object_key": f"{study}/{series}/{sop}.dcm",
        "size": 1000,
        "sha256": "0" * 64,
        "received_at": NOW,
        "modality": "CT",
        "patient_name": "王^小明",
        "study_description": "头颅CT平扫",
    }
    base.update(kw)
    return InstanceArrival(**base)


def seed(session: Session, *, sites: tuple[str, ...] = ("TS01", "TS02")) -> None:
    for code in sites:
        accounts.create_site(
            session=session, code=code, name=code, ae_titles=[f"CT_{code}"], now=NOW
        )


def fast_user(session: Session, username: str, role: str, site_code: str | None = None) -> User:
    """A user without the argon2 cost (tests that never log in)."""
    site_id = None
    if site_code is not None:
        site = accounts.get_site(session=session, code=site_code)
        assert site is not None
        site_id = site.id
    user = User(username=username, password_hash="x", role=role, site_id=site_id, created_at=NOW)
    session.add(user)
    session.flush()
    return user


def study(session: Session, uid: str) -> Study:
    return session.scalars(
        select(Study)
        .where(Study.study_instance_uid == uid)
        .execution_options(populate_existing=True)
    ).one()


def test_record_counts_and_idempotence(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        batch = [arrival("1.2.3", "1.2.3.1", f"1.2.3.1.{i}", instance_number=i) for i in range(3)]
        batch.append(arrival("1.2.3", "1.2.3.2", "1.2.3.2.1", modality="SR"))
        out = record_instances(
            session=s, site_code="TS01", calling_ae="CT_TS01", instances=batch, now=NOW
        )
        assert (out.accepted, out.duplicates, out.study_uids) == (4, 0, ["1.2.3"])
        s.commit()
    with session_factory() as s:
        again = [
            arrival("1.2.3", "1.2.3.1", "1.2.3.1.0"),
            arrival("1.2.3", "1.2.3.1", "1.2.3.1.9", received_at=NOW + timedelta(seconds=30)),
            arrival("1.2.3", "1.2.3.1", "1.2.3.1.9"),  # twice in one batch
        ]
        out = record_instances(
            session=s, site_code="TS01", calling_ae="CT_TS01", instances=again, now=NOW
        )
        assert (out.accepted, out.duplicates) == (1, 2)
        s.commit()
    with session_factory() as s:
        st = study(s, "1.2.3")
        assert st.num_instances == 5
        assert st.modalities == "CT\\SR"
        assert st.patient_name == "王^小明"
        assert st.status == "receiving"
        assert st.received_at == NOW
        assert st.last_instance_at == NOW + timedelta(seconds=30)
        assert st.priority == "routine" and st.category is None
        assert st.deadline_at == NOW + timedelta(minutes=1440)
        counts = dict(s.execute(select(Series.series_instance_uid, Series.num_instances)).all())
        assert counts == {"1.2.3.1": 4, "1.2.3.2": 1}
        assert s.scalars(select(Instance.id)).all().__len__() == 5


def test_unknown_site_and_mismatch(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        with pytest.raises(UnknownSite):
            record_instances(
                session=s,
                site_code="NOPE",
                calling_ae="X",
                instances=[arrival("1.9", "1.9.1", "1.9.1.1")],
                now=NOW,
            )
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[arrival("1.9", "1.9.1", "1.9.1.1")],
            now=NOW,
        )
        s.commit()
        # another site's study UID is held as a conflict (test_ingest_conflicts.py)
        out = record_instances(
            session=s,
            site_code="TS02",
            calling_ae="CT_TS02",
            instances=[arrival("1.9", "1.9.1", "1.9.1.2")],
            now=NOW,
        )
        assert (out.accepted, [c.kind for c in out.conflicts]) == (0, ["study_other_site"])
        s.commit()
    with session_factory() as s:
        assert study(s, "1.9").num_instances == 1


@pytest.mark.parametrize(
    ("text", "category", "minutes"),
    [
        ("头颅CT平扫 急性脑卒中", "stroke", 20),
        ("STROKE protocol", "stroke", 20),
        ("胸痛 CTA", "chest_pain", 30),
    ],
)
def test_triage_sets_stat(
    session_factory: sessionmaker[Session], text: str, category: str, minutes: int
) -> None:
    with session_factory() as s:
        seed(s)
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[
                arrival(
                    "2.1",
                    "2.1.1",
                    "2.1.1.1",
                    study_description=text,
                    text_fields={"StudyDescription": text},
                )
            ],
            now=NOW,
        )
        s.commit()
    with session_factory() as s:
        st = study(s, "2.1")
        assert (st.priority, st.priority_rank, st.category) == ("stat", 0, category)
        assert st.triage_reasons
        assert st.deadline_at == NOW + timedelta(minutes=minutes)


def test_triage_never_downgrades_and_merges_text(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[arrival("3.1", "3.1.1", "3.1.1.1", series_description="急性脑卒中 平扫")],
            now=NOW,
        )
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[arrival("3.1", "3.1.2", "3.1.2.1", series_description="routine recon")],
            now=NOW,
        )
        s.commit()
        st = study(s, "3.1")
        assert st.priority == "stat" and st.category == "stroke"
        assert st.text_fields["SeriesDescription"] == "急性脑卒中 平扫 | routine recon"


def test_triage_reads_codes_merged_across_instances(
    session_factory: sessionmaker[Session],
) -> None:
    """The county re-runs triage on the merged text fields: a code field's items from two
    instances (joined with `` | ``) are read as codes, and the code is the reason."""
    old = {"AdmittingDiagnosesCodeSequence": "I69.300^ICD-10^脑梗死"}
    new = {"AdmittingDiagnosesCodeSequence": "I63.900^ICD-10^脑梗死 ; I10^I10^高血压"}
    with session_factory() as s:
        seed(s)
        for sop, fields in (("6.1.1.1", old), ("6.1.1.2", old), ("6.1.1.3", new)):
            record_instances(
                session=s,
                site_code="TS01",
                calling_ae="CT_TS01",
                instances=[arrival("6.1", "6.1.1", sop, text_fields=fields)],
                now=NOW,
            )
            if sop == "6.1.1.2":
                assert study(s, "6.1").priority == "routine"  # a sequela code is history
        s.commit()
        st = study(s, "6.1")
        assert (st.priority, st.category) == ("stat", "stroke")
        assert st.text_fields["AdmittingDiagnosesCodeSequence"] == (
            "I69.300^ICD-10^脑梗死 | I63.900^ICD-10^脑梗死 ; I10^I10^高血压"
        )
        assert str(Reason.from_json(st.triage_reasons[0])) == (
            "AdmittingDiagnosesCodeSequence: code I63.900 (ICD-10) '脑梗死' "
            "(stroke: ICD-10 I63 脑梗死 cerebral infarction)"
        )


def test_override_leaves_triage_alone(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        admin = fast_user(s, "boss", "admin")
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[arrival("4.1", "4.1.1", "4.1.1.1")],
            now=NOW,
        )
        st = study(s, "4.1")
        st.triage_override_by_id = admin.id
        s.flush()
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[arrival("4.1", "4.1.1", "4.1.1.2", series_description="STROKE")],
            now=NOW,
        )
        assert study(s, "4.1").priority == "routine"


def test_urgent_hint_counts_as_stat(session_factory: sessionmaker[Session]) -> None:
    hint = {"category": "chest_pain", "priority": "stat", "reasons": ["called AE URGENT"]}
    with session_factory() as s:
        seed(s)
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[
                arrival("5.1", "5.1.1", "5.1.1.1", study_description="plain", urgent_hint=hint)
            ],
            now=NOW,
        )
        st = study(s, "5.1")
        assert (st.priority, st.category) == ("stat", "chest_pain")
        # an older gateway's reason in words is kept as words
        assert {"code": "text", "note": "called AE URGENT"} in st.triage_reasons


def test_mark_stable(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[arrival("6.1", "6.1.1", "6.1.1.1")],
            now=NOW,
        )
        assert (
            mark_stable_studies(session=s, now=NOW + timedelta(seconds=30), stable_seconds=90) == []
        )
        assert mark_stable_studies(
            session=s, now=NOW + timedelta(seconds=91), stable_seconds=90
        ) == ["6.1"]
        assert study(s, "6.1").status == "ready"
        # a late instance makes it 'receiving' again
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[
                arrival("6.1", "6.1.1", "6.1.1.2", received_at=NOW + timedelta(seconds=100))
            ],
            now=NOW,
        )
        assert study(s, "6.1").status == "receiving"


def test_concurrent_first_instances(session_factory: sessionmaker[Session]) -> None:
    """Many requests announce the first instances of one study at once: no IntegrityError,
    no lost counts, duplicates counted once."""
    with session_factory() as s:
        seed(s)
        s.commit()
    n_threads, per_thread = 8, 5
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []
    totals = {"accepted": 0, "duplicates": 0}
    lock = threading.Lock()

    def work(t: int) -> None:
        try:
            batch = [
                arrival(
                    "7.1",
                    f"7.1.{i % 2}",
                    f"7.1.{i % 2}.{t}.{i}",
                    text_fields={"StudyDescription": f"part {t}"},
                )
                for i in range(per_thread)
            ]
            batch.append(arrival("7.1", "7.1.0", "7.1.0.shared"))  # everyone sends this one
            barrier.wait()
            with session_factory() as s:
                out = record_instances(
                    session=s, site_code="TS01", calling_ae="CT_TS01", instances=batch, now=NOW
                )
                s.commit()
            with lock:
                totals["accepted"] += out.accepted
                totals["duplicates"] += out.duplicates
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert totals == {"accepted": n_threads * per_thread + 1, "duplicates": n_threads - 1}
    with session_factory() as s:
        st = study(s, "7.1")
        assert st.num_instances == n_threads * per_thread + 1
        series_total = sum(s.scalars(select(Series.num_instances)).all())
        assert series_total == st.num_instances
        assert len(st.text_fields["StudyDescription"].split(" | ")) >= n_threads
