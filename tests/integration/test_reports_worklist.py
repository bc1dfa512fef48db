"""worklist.reports / worklist.critical on SQLite and PostgreSQL: addenda chained to the
signed hash, the critical-result rule at signing, and the critical-result checks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_worklist_ingest import NOW, arrival, fast_user, seed, study
from worklist.claims import claim_study
from worklist.critical import (
    CriticalResultNotAllowed,
    InvalidCriticalResult,
    critical_results_for,
    record_critical_result,
)
from worklist.errors import NoReport, ReportSigned
from worklist.ingest import record_instances
from worklist.models import Study, User
from worklist.report_hashes import addendum_hash, verify_addendum, verify_report
from worklist.reports import (
    AddendumNotAllowed,
    CriticalResultRequired,
    NotARadiologist,
    add_addendum,
    addenda_for,
    get_report,
    save_draft,
    sign_report,
)


def _drafted(s: Session, uid: str, reader: User, description: str) -> Study:
    record_instances(
        session=s,
        site_code="TS01",
        calling_ae="CT_TS01",
        instances=[arrival(uid, f"{uid}.1", f"{uid}.1.1", study_description=description)],
        now=NOW,
    )
    claim_study(session=s, study_uid=uid, reader=reader, now=NOW)
    save_draft(
        session=s, study=study(s, uid), author=reader, findings="所见", impression="印象", now=NOW
    )
    return study(s, uid)


def _critical(s: Session, st: Study, who: User, **kw: object) -> None:
    args: dict[str, object] = {
        "finding": "急性脑出血",
        "identified_at": NOW,
        "communicated_to_name": "张医生",
        "communicated_to_role": "急诊",
        "communicated_to_phone": "110",
        "communicated_at": NOW + timedelta(minutes=2),
        "method": "phone",
        "read_back_confirmed": True,
        "now": NOW + timedelta(minutes=3),
    }
    args.update(kw)
    record_critical_result(session=s, study=st, recorder=who, **args)  # type: ignore[arg-type]


def test_addenda_chain_to_the_signed_hash(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        b = fast_user(s, "b", "radiologist")
        boss = fast_user(s, "boss", "admin")
        st = _drafted(s, "5.1", a, "腹部CT")
        with pytest.raises(AddendumNotAllowed):
            add_addendum(session=s, study=st, author=b, text="t", reason="r", now=NOW)
        t1 = NOW + timedelta(minutes=5)
        signed = sign_report(session=s, study=st, signer=a, status="final", now=t1)
        sha = signed.content_sha256
        assert sha is not None
        s.commit()

        with pytest.raises(NotARadiologist):
            add_addendum(session=s, study=st, author=boss, text="t", reason="r", now=t1)
        with pytest.raises(ValueError, match="reason"):
            add_addendum(session=s, study=st, author=b, text="t", reason="  ", now=t1)
        t2 = NOW + timedelta(hours=2)
        first = add_addendum(session=s, study=st, author=b, text=" 补充 ", reason="漏报", now=t2)
        assert first.text == "补充" and first.created_at == t2
        assert first.content_sha256 == addendum_hash(
            report_sha256=sha, text="补充", reason="漏报", author="b", created_at=t2
        )
        s.commit()
        report = get_report(session=s, study=st)
        assert report is not None
        assert (report.status, report.content_sha256, report.findings) == ("amended", sha, "所见")
        assert study(s, "5.1").status == "amended"
        assert verify_report(report) and verify_addendum(first, report)
        # still immutable, and a further addendum appends
        with pytest.raises(ReportSigned):
            save_draft(session=s, study=st, author=a, findings="x", impression="y", now=t2)
        with pytest.raises(ReportSigned):
            sign_report(session=s, study=st, signer=a, status="final", now=t2)
        add_addendum(session=s, study=st, author=a, text="更正", reason="笔误", now=t2)
        s.commit()
        found = addenda_for(session=s, report_ids=[report.id])[report.id]
        assert [x.author.username for x in found] == ["b", "a"]

        # tampering with an addendum or the report is detectable
        found[0].text = "改过"
        assert not verify_addendum(found[0], report)
        report.impression = "改过"
        assert not verify_report(report)
        s.rollback()

        bare = Study(study_instance_uid="5.9", site_id=st.site_id, received_at=NOW)
        bare.last_instance_at = NOW
        s.add(bare)
        s.flush()
        with pytest.raises(NoReport):
            add_addendum(session=s, study=bare, author=a, text="t", reason="r", now=t2)


def test_signing_final_prompts_for_a_critical_result(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        stroke = _drafted(s, "6.1", a, "头颅CT平扫 急性脑卒中")
        assert stroke.category == "stroke"
        sign_report(session=s, study=stroke, signer=a, status="preliminary", now=NOW)
        with pytest.raises(CriticalResultRequired):
            sign_report(session=s, study=stroke, signer=a, status="final", now=NOW)
        with pytest.raises(CriticalResultRequired):
            sign_report(
                session=s,
                study=stroke,
                signer=a,
                status="final",
                now=NOW,
                no_critical_result_reason=" ",
            )
        _critical(s, stroke, a)
        rep = sign_report(session=s, study=stroke, signer=a, status="final", now=NOW)
        assert rep.status == "final" and rep.no_critical_result_reason is None

        chest = _drafted(s, "6.2", a, "胸痛 CTA")
        assert chest.category == "chest_pain"
        rep = sign_report(
            session=s,
            study=chest,
            signer=a,
            status="final",
            now=NOW,
            no_critical_result_reason="未见主动脉夹层及肺栓塞",
        )
        assert rep.no_critical_result_reason == "未见主动脉夹层及肺栓塞" and verify_report(rep)

        routine = _drafted(s, "6.3", a, "腹部CT")
        assert routine.category is None
        assert sign_report(session=s, study=routine, signer=a, status="final", now=NOW)
        s.commit()


def test_critical_result_checks(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        boss = fast_user(s, "boss", "admin")
        nurse = fast_user(s, "c", "clinic", "TS01")
        st = _drafted(s, "7.1", a, "头颅CT平扫 急性脑卒中")
        for who in (boss, nurse):
            with pytest.raises(CriticalResultNotAllowed):
                _critical(s, st, who)
        bad: list[dict[str, object]] = [
            {"finding": " "},
            {"communicated_to_name": ""},
            {"method": "fax"},
            {"communicated_at": NOW - timedelta(seconds=1)},
            {"communicated_at": NOW + timedelta(hours=1)},
            {"identified_at": NOW.replace(tzinfo=None)},
        ]
        for kw in bad:
            with pytest.raises(InvalidCriticalResult):
                _critical(s, st, a, **kw)
        _critical(s, st, a, method="in_person", read_back_confirmed=False)
        _critical(s, st, a, communicated_at=NOW + timedelta(minutes=1))
        s.commit()
        found = critical_results_for(session=s, study_ids=[st.id, 999])
        assert found[999] == []
        first, second = found[st.id]  # in order of communication
        assert first.communicated_at == NOW + timedelta(minutes=1)
        assert (second.method, second.read_back_confirmed) == ("in_person", False)
        assert second.recorded_by.username == "a" and second.recorded_at == NOW + timedelta(
            minutes=3
        )


def test_concurrent_addenda_all_land_and_verify(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        readers = [fast_user(s, f"r{i}", "radiologist") for i in range(6)]
        st = _drafted(s, "8.1", readers[0], "腹部CT")
        sign_report(session=s, study=st, signer=readers[0], status="final", now=NOW)
        s.commit()
        reader_ids = [r.id for r in readers]

    def amend(index: int) -> None:
        with session_factory.begin() as own:
            author = own.get(User, reader_ids[index])
            assert author is not None
            add_addendum(
                session=own,
                study=study(own, "8.1"),
                author=author,
                text=f"补充{index}",
                reason="复阅",
                now=NOW + timedelta(minutes=index + 1),
            )

    with ThreadPoolExecutor(max_workers=len(reader_ids)) as pool:
        list(pool.map(amend, range(len(reader_ids))))

    with session_factory() as s:
        report = get_report(session=s, study=study(s, "8.1"))
        assert report is not None and report.status == "amended" and verify_report(report)
        found = addenda_for(session=s, report_ids=[report.id])[report.id]
        assert sorted(a.text for a in found) == [f"补充{i}" for i in range(6)]
        assert all(verify_addendum(a, report) for a in found)
