"""Re-sent instances at the county (``worklist.resends``): the overwrite policy, the versions
kept, the study's header following the served version, and a signed report flagged, never
changed — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_worklist_ingest import NOW, arrival, fast_user, seed, study
from worklist.ingest import InstanceArrival, record_instances
from worklist.models import (
    CONFLICT_PATIENT_MISMATCH,
    REPORT_FINAL,
    VERSION_NOT_APPLIED,
    VERSION_SUPERSEDED,
    Event,
    Instance,
    InstanceVersion,
    Report,
)
from worklist.resends import KEPT_FIRST, OLDER, REPLACED
from worklist.settings import DEFAULT_DEADLINES

STUDY, SERIES, SOP = "1.2.3", "1.2.3.1", "1.2.3.1.1"
FIRST_KEY = f"TS01/{STUDY}/{SERIES}/{SOP}.dcm"


def version(tag: str, **kw: Any) -> InstanceArrival:
    """The instance under ``FIRST_KEY`` (tag "") or a re-sent version of it."""
    key = FIRST_KEY if not tag else FIRST_KEY.removesuffix(".dcm") + f"_{tag * 16}.dcm"
    kw.setdefault("sha256", (tag or "0") * 64)
    kw.setdefault("patient_id", "P1")
    return arrival(STUDY, SERIES, SOP, object_key=key, **kw)


def ingest(s: Session, *items: InstanceArrival, ae: str = "CT_TS01", policy: str = "same_source"):  # type: ignore[no-untyped-def]
    return record_instances(
        session=s,
        site_code="TS01",
        calling_ae=ae,
        instances=list(items),
        now=NOW,
        overwrite_policy=policy,
    )


def served(s: Session) -> Instance:
    return s.scalars(
        select(Instance)
        .where(Instance.sop_instance_uid == SOP)
        .execution_options(populate_existing=True)
    ).one()


def test_a_corrected_resend_replaces_the_served_version_and_keeps_the_first(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as s:
        seed(s)
        other = arrival(STUDY, SERIES, "1.2.3.1.2", patient_name="WANG^FANG", patient_id="P1")
        ingest(s, version("", patient_name="WANG^FANG"), other)
        s.commit()
    later = NOW + timedelta(minutes=5)
    with session_factory() as s:
        out = ingest(s, version("a", patient_name="WANG^FANG^^^", received_at=later))
        assert out.duplicates == 0 and out.conflicts == []  # a correction, not a clash
        out = ingest(s, version("b", patient_name="WANG^FENG", received_at=later))
        assert [r.outcome for r in out.resends] == [REPLACED]
        s.commit()
    with session_factory() as s:
        inst = served(s)
        assert inst.object_key.endswith("_" + "b" * 16 + ".dcm") and inst.sha256 == "b" * 64
        st = study(s, STUDY)
        assert st.patient_name == "WANG^FENG" and st.num_instances == 2
        assert st.updated_after_report_at is None  # no report yet
        kept = s.scalars(select(InstanceVersion).order_by(InstanceVersion.id)).all()
        assert [(v.object_key, v.status) for v in kept] == [
            (FIRST_KEY, VERSION_SUPERSEDED),
            (FIRST_KEY.removesuffix(".dcm") + "_" + "a" * 16 + ".dcm", VERSION_SUPERSEDED),
        ]
        assert kept[1].detail["changed"] == ["patient_name"]  # names only, never values
        # announced again (a gateway retrying): nothing changes
        again = [version(t, patient_name="WANG^FENG", received_at=later) for t in "ab"]
        out = ingest(s, *again)
        assert (out.accepted, out.duplicates, out.resends) == (0, 2, [])


@pytest.mark.parametrize(
    ("policy", "ae", "outcome"),
    [
        ("same_source", "DR_TS01", KEPT_FIRST),
        ("never", "CT_TS01", KEPT_FIRST),
        ("always", "DR_TS01", REPLACED),
    ],
)
def test_the_policy_decides(
    session_factory: sessionmaker[Session], policy: str, ae: str, outcome: str
) -> None:
    with session_factory() as s:
        seed(s)
        ingest(s, version(""))
        out = ingest(s, version("c", received_at=NOW + timedelta(seconds=1)), ae=ae, policy=policy)
        [r] = out.resends
        assert r.outcome == outcome
        assert r.object_key == FIRST_KEY.removesuffix(".dcm") + "_" + "c" * 16 + ".dcm"
        inst = served(s)
        assert inst.sha256 == ("c" * 64 if outcome == REPLACED else "0" * 64)
        [kept] = s.scalars(select(InstanceVersion)).all()
        assert kept.status == (VERSION_SUPERSEDED if outcome == REPLACED else VERSION_NOT_APPLIED)
        if outcome == KEPT_FIRST:
            assert policy in kept.reason and kept.calling_ae == ae


def test_an_older_version_arriving_late_is_kept_not_served(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as s:
        seed(s)
        # the re-send and the first version in one announcement, the newer listed first
        out = ingest(s, version("d", received_at=NOW + timedelta(seconds=5)), version(""))
        assert out.accepted == 1 and [r.outcome for r in out.resends] == [OLDER]
        out = ingest(s, version("e", received_at=NOW + timedelta(seconds=1)))
        assert [r.outcome for r in out.resends] == [OLDER]
        assert served(s).sha256 == "d" * 64


def test_a_signed_report_is_flagged_not_changed(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        ingest(s, version(""))
        reader = fast_user(s, "dr_li", "radiologist")
        st = study(s, STUDY)
        s.add(
            Report(
                study_id=st.id,
                author_id=reader.id,
                status=REPORT_FINAL,
                findings="未见异常",
                created_at=NOW,
                updated_at=NOW,
                signed_by_id=reader.id,
                signed_at=NOW,
            )
        )
        s.commit()
    with session_factory() as s:
        out = ingest(s, version("f", received_at=NOW + timedelta(hours=1)))
        [r] = out.resends
        assert r.outcome == REPLACED and r.after_signed_report
        s.commit()
    with session_factory() as s:
        st = study(s, STUDY)
        assert st.updated_after_report_at is not None
        assert st.report is not None and st.report.findings == "未见异常"
        kinds = s.scalars(select(Event.kind)).all()
        assert "study_updated_after_report" in kinds


def test_a_correction_that_makes_the_study_urgent_moves_its_deadline(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as s:
        seed(s)
        ingest(s, version("", study_description="头颅CT平扫"))
        s.commit()
    with session_factory() as s:
        st = study(s, STUDY)
        assert st.priority == "routine"
        assert st.deadline_at == st.received_at + DEFAULT_DEADLINES.routine
    with session_factory() as s:
        later = NOW + timedelta(minutes=2)
        out = ingest(s, version("g", study_description="头颅CT平扫 急性脑卒中", received_at=later))
        assert [r.outcome for r in out.resends] == [REPLACED]
        s.commit()
    with session_factory() as s:
        st = study(s, STUDY)
        assert (st.priority, st.category) == ("stat", "stroke")
        assert st.deadline_at == st.received_at + DEFAULT_DEADLINES.stroke
        [urgent] = s.scalars(select(Event).where(Event.kind == "study_urgent")).all()
        assert urgent.payload["deadline_at"] == st.deadline_at.isoformat()


def test_a_resend_naming_another_patient_id_is_held_as_before(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as s:
        seed(s)
        ingest(s, version(""))
        out = ingest(s, version("9", patient_id="P2", received_at=NOW + timedelta(seconds=1)))
        assert out.resends == [] and [c.kind for c in out.conflicts] == [CONFLICT_PATIENT_MISMATCH]
        assert served(s).sha256 == "0" * 64
