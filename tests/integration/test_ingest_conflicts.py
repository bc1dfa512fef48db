"""Announced instances held as conflicts instead of filed (a study UID of another site, a
series of another study, another patient than the study's, a SOP Instance UID filed in
another study), and their resolution — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_worklist_ingest import arrival, fast_user, seed, study
from worklist.conflicts import list_conflicts, resolve_conflict
from worklist.errors import ConflictAlreadyResolved, ConflictNotFileable, ConflictNotFound
from worklist.ingest import record_instances
from worklist.models import IngestConflict, Instance, Study
from worklist.triage import normalise_person_name

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_a_study_uid_of_another_site_is_held_and_the_owner_untouched(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as s:
        seed(s)
        owner = [arrival("1.5", "1.5.1", f"1.5.1.{i}", patient_id="P1") for i in range(2)]
        record_instances(
            session=s, site_code="TS01", calling_ae="CT_TS01", instances=owner, now=NOW
        )
    squat = [
        arrival(
            "1.5",
            "1.5.9",
            f"1.5.9.{i}",
            patient_id="Q7",
            patient_name="李^四",
            object_key=f"TS02/1.5/1.5.9/1.5.9.{i}.dcm",
            dicom_json={"0020000D": {"vr": "UI", "Value": ["1.5"]}},
        )
        for i in range(2)
    ]
    for attempt in range(2):  # the gateway retrying holds nothing twice
        with session_factory.begin() as s:
            out = record_instances(
                session=s, site_code="TS02", calling_ae="CT_TS02", instances=squat, now=NOW
            )
            assert (out.accepted, out.duplicates) == (0, 0)
            assert [(c.kind, c.new) for c in out.conflicts] == [
                ("study_other_site", attempt == 0)
            ] * 2
    with session_factory() as s:
        st = study(s, "1.5")
        assert (st.num_instances, st.site.code, st.patient_id) == (2, "TS01", "P1")
        rows = list_conflicts(session=s)
        assert len(rows) == 2
        c = rows[-1]
        assert (c.site.code, c.existing_site and c.existing_site.code) == ("TS02", "TS01")
        assert (c.patient_id, c.existing_patient_id) == ("Q7", "P1")
        assert c.sop_instance_uid == "1.5.9.0" and c.object_key.startswith("TS02/")
        ids = [r.id for r in rows]

    # one decision files the clash (both instances) as a study of its own at TS02
    with session_factory.begin() as s:
        admin = fast_user(s, "boss", "admin")
        done = resolve_conflict(
            session=s, conflict_id=ids[1], resolution="separate_study", by=admin, now=NOW
        )
        assert [d.id for d in done] == [ids[1], ids[0]]
        new_uid = done[0].resolved_study_uid
        assert new_uid is not None and {d.resolved_study_uid for d in done} == {new_uid}
        with pytest.raises(ConflictAlreadyResolved):
            resolve_conflict(session=s, conflict_id=ids[0], resolution="discard", by=admin, now=NOW)
        with pytest.raises(ConflictNotFound):
            resolve_conflict(session=s, conflict_id=10**6, resolution="discard", by=admin, now=NOW)
    with session_factory() as s:
        refiled = study(s, new_uid)
        assert (refiled.site.code, refiled.num_instances, refiled.patient_id) == ("TS02", 2, "Q7")
        inst = s.scalars(select(Instance).where(Instance.sop_instance_uid == "1.5.9.0")).one()
        assert inst.study_id == refiled.id
        assert inst.object_key == "TS02/1.5/1.5.9/1.5.9.0.dcm"  # the object stays where it is
        assert inst.dicom_json == {"0020000D": {"vr": "UI", "Value": [new_uid]}}
        assert study(s, "1.5").num_instances == 2
        assert list_conflicts(session=s) == []
        assert len(list_conflicts(session=s, state="resolved")) == 2


def test_another_patient_in_a_study_is_held(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        seed(s)
        batch = [
            arrival("1.6", "1.6.1", "1.6.1.1", patient_id="P1", patient_name="Wang^Fang"),
            # same patient: trailing empty components and case do not count
            arrival("1.6", "1.6.1", "1.6.1.2", patient_id="P1", patient_name="WANG^FANG^^^"),
            # no patient ID on this one: nothing to compare it by
            arrival("1.6", "1.6.1", "1.6.1.3", patient_id="", patient_name=""),
            arrival("1.6", "1.6.1", "1.6.1.4", patient_id="P2", patient_name="Wang^Fang"),
        ]
        out = record_instances(
            session=s, site_code="TS01", calling_ae="CT_TS01", instances=batch, now=NOW
        )
        assert out.accepted == 3
        assert [(c.kind, c.sop_instance_uid) for c in out.conflicts] == [
            ("patient_mismatch", "1.6.1.4")
        ]
    with session_factory.begin() as s:
        later = arrival(
            "1.6",
            "1.6.2",
            "1.6.2.1",
            patient_id="P1",
            patient_name="Li^Si",
            received_at=NOW + timedelta(minutes=1),
        )
        out = record_instances(
            session=s, site_code="TS01", calling_ae="CT_TS01", instances=[later], now=NOW
        )
        assert (out.accepted, [c.kind for c in out.conflicts]) == (0, ["patient_mismatch"])
    with session_factory.begin() as s:
        st = study(s, "1.6")
        assert (st.num_instances, st.patient_id, len(st.series)) == (3, "P1", 1)
        assert st.last_instance_at == NOW  # the held instance did not touch the study
        rows = list_conflicts(session=s)
        assert {(r.patient_id, r.existing_patient_id) for r in rows} == {("P2", "P1"), ("P1", "P1")}
        admin = fast_user(s, "boss", "admin")
        for r in rows:
            resolve_conflict(session=s, conflict_id=r.id, resolution="discard", by=admin, now=NOW)
    with session_factory() as s:
        assert study(s, "1.6").num_instances == 3
        assert all(c.resolved_at == NOW for c in s.scalars(select(IngestConflict)))
        assert (
            s.scalars(select(Instance).where(Instance.sop_instance_uid == "1.6.1.4")).first()
            is None
        )


def test_a_series_of_another_study_is_held_and_leaves_no_empty_study(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as s:
        seed(s)
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[arrival("1.7", "1.7.1", "1.7.1.1")],
            now=NOW,
        )
    with session_factory.begin() as s:
        out = record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[arrival("1.8", "1.7.1", "1.8.1.1")],
            now=NOW,
        )
        assert (out.accepted, [c.kind for c in out.conflicts]) == (0, ["series_other_study"])
    with session_factory() as s:
        assert s.scalars(select(Study).where(Study.study_instance_uid == "1.8")).first() is None
        assert study(s, "1.7").num_instances == 1


def test_a_conflict_whose_instance_is_already_filed_is_not_fileable(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as s:
        seed(s)
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[arrival("1.9", "1.9.1", "1.9.1.1")],
            now=NOW,
        )
        record_instances(  # TS02 reuses both the study UID and the SOP Instance UID
            session=s,
            site_code="TS02",
            calling_ae="CT_TS02",
            instances=[arrival("1.9", "1.9.2", "1.9.1.1", object_key="TS02/x.dcm")],
            now=NOW,
        )
    with session_factory() as s:
        [c] = list_conflicts(session=s)
        admin = fast_user(s, "boss", "admin")
        with pytest.raises(ConflictNotFileable):
            resolve_conflict(
                session=s, conflict_id=c.id, resolution="separate_study", by=admin, now=NOW
            )


def test_a_sop_instance_uid_filed_in_another_study_is_held(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as s:
        seed(s)
        record_instances(
            session=s,
            site_code="TS01",
            calling_ae="CT_TS01",
            instances=[arrival("2.1", "2.1.1", "2.1.1.1", patient_id="P1")],
            now=NOW,
        )
    # TS02's own study, one of whose SOP Instance UIDs TS01 filed first; then a study of
    # reused UIDs only
    reused = arrival(
        "2.2",
        "2.2.1",
        "2.1.1.1",
        object_key="TS02/2.2/2.2.1/2.1.1.1.dcm",
        dicom_json={"00080018": {"vr": "UI", "Value": ["2.1.1.1"]}},
    )
    fresh = arrival("2.2", "2.2.1", "2.2.1.2", object_key="TS02/2.2/2.2.1/2.2.1.2.dcm")
    alone = arrival("2.3", "2.3.1", "2.1.1.1", object_key="TS02/2.3/2.3.1/2.1.1.1.dcm")
    for attempt in range(2):  # the gateway retrying holds nothing twice
        with session_factory.begin() as s:
            out = record_instances(
                session=s,
                site_code="TS02",
                calling_ae="CT_TS02",
                instances=[reused, fresh, alone],
                now=NOW,
            )
            assert out.accepted == (1 if attempt == 0 else 0)
            assert [(c.kind, c.sop_instance_uid, c.new) for c in out.conflicts] == [
                ("sop_other_study", "2.1.1.1", attempt == 0)
            ] * 2
    with session_factory() as s:
        assert (study(s, "2.1").num_instances, study(s, "2.1").site.code) == (1, "TS01")
        assert (study(s, "2.2").num_instances, study(s, "2.2").site.code) == (1, "TS02")
        assert s.scalars(select(Study).where(Study.study_instance_uid == "2.3")).first() is None
        [filed] = s.scalars(select(Instance).where(Instance.sop_instance_uid == "2.1.1.1")).all()
        assert filed.study_id == study(s, "2.1").id  # untouched
        conflicts = list_conflicts(session=s)
        assert {
            (c.existing_study_uid, c.existing_site and c.existing_site.code) for c in conflicts
        } == {("2.1", "TS01")}
        held = next(c for c in conflicts if c.study_instance_uid == "2.2")
        admin = fast_user(s, "boss", "admin")
        [done] = resolve_conflict(
            session=s, conflict_id=held.id, resolution="separate_study", by=admin, now=NOW
        )
        # filed as a study of its own, under a SOP Instance UID of its own
        moved = s.scalars(select(Instance).where(Instance.object_key == held.object_key)).one()
        assert moved.study_id == study(s, str(done.resolved_study_uid)).id
        assert moved.sop_instance_uid not in ("2.1.1.1", "") and moved.sop_instance_uid.startswith(
            "2.25."
        )
        assert moved.dicom_json == {"00080018": {"vr": "UI", "Value": [moved.sop_instance_uid]}}


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Wang^Fang", "WANG^FANG^^^", True),
        ("Wang^Fang=王^芳", "Wang^Fang", True),
        (" Wang ^ Fang", "Wang^Fang", True),
        ("Wang^Fang", "Wang^Li", False),
        ("王^芳", "王^方", False),
    ],
)
def test_person_names_compare_as_a_person_would(a: str, b: str, same: bool) -> None:
    assert (normalise_person_name(a) == normalise_person_name(b)) is same
