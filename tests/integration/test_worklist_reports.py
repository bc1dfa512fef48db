"""Reports (draft, sign, immutable, visibility) and the audit trail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_worklist_ingest import NOW, arrival, fast_user, seed, study
from worklist import audit
from worklist.audit import AuditAction
from worklist.claims import claim_study, release_study
from worklist.errors import NoReport, NotClaimHolder, ReportSigned
from worklist.ingest import record_instances
from worklist.report_hashes import report_content_hash, verify_report
from worklist.reports import (
    get_report,
    list_reports,
    report_visible_to,
    save_draft,
    sign_report,
)


def _study(s: Session, uid: str, site: str = "TS01") -> None:
    record_instances(
        session=s,
        site_code=site,
        calling_ae=f"CT_{site}",
        instances=[arrival(uid, f"{uid}.1", f"{uid}.1.1")],
        now=NOW,
    )


def test_draft_sign_immutable(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        b = fast_user(s, "b", "radiologist")
        _study(s, "3.3")
        st = study(s, "3.3")
        with pytest.raises(NotClaimHolder):
            save_draft(session=s, study=st, author=a, findings="f", impression="i", now=NOW)
        claim_study(session=s, study_uid="3.3", reader=a, now=NOW)
        with pytest.raises(NoReport):
            sign_report(session=s, study=st, signer=a, status="final", now=NOW)
        rep = save_draft(
            session=s,
            study=st,
            author=a,
            findings="右侧基底节区低密度影",
            impression="急性脑梗死",
            now=NOW,
        )
        assert rep.status == "draft" and rep.content_sha256 is None
        assert study(s, "3.3").status == "draft"
        with pytest.raises(NotClaimHolder):
            save_draft(session=s, study=st, author=b, findings="x", impression="y", now=NOW)
        s.commit()

        # releasing keeps the draft; re-claiming keeps status 'draft'
        release_study(session=s, study_uid="3.3", reader=a, now=NOW)
        assert study(s, "3.3").status == "draft"
        claim_study(session=s, study_uid="3.3", reader=a, now=NOW)
        assert study(s, "3.3").status == "draft"

        t1 = NOW + timedelta(minutes=3)
        rep = sign_report(session=s, study=st, signer=a, status="preliminary", now=t1)
        assert rep.status == "preliminary" and rep.signed_at == t1
        st = study(s, "3.3")
        assert st.status == "preliminary" and st.claimed_by_id == a.id
        assert verify_report(rep)

        rep = save_draft(
            session=s,
            study=st,
            author=a,
            findings="补充",
            impression="急性脑梗死",
            recommendation="MRI",
            now=t1,
        )
        assert rep.status == "draft"
        t2 = NOW + timedelta(minutes=9)
        rep = sign_report(session=s, study=st, signer=a, status="final", now=t2)
        assert rep.content_sha256 == report_content_hash(
            findings="补充",
            impression="急性脑梗死",
            recommendation="MRI",
            status="final",
            signer="a",
            signed_at=t2,
        )
        st = study(s, "3.3")
        assert (st.status, st.claimed_by_id, st.claim_expires_at) == ("final", None, None)
        s.commit()

        with pytest.raises(ReportSigned):
            sign_report(session=s, study=st, signer=a, status="final", now=t2)
        with pytest.raises(ReportSigned):
            save_draft(session=s, study=st, author=a, findings="x", impression="y", now=t2)
        with pytest.raises(ValueError, match="amended"):
            sign_report(session=s, study=st, signer=a, status="amended", now=t2)  # type: ignore[arg-type]
        got = get_report(session=s, study=st)
        assert got is not None and verify_report(got)
        got.findings = "tampered"
        assert not verify_report(got)
        s.rollback()


def test_report_visibility(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        c1 = fast_user(s, "c1", "clinic", "TS01")
        c2 = fast_user(s, "c2", "clinic", "TS02")
        for uid, site in (("4.1", "TS01"), ("4.2", "TS01"), ("4.3", "TS02")):
            _study(s, uid, site)
            claim_study(session=s, study_uid=uid, reader=a, now=NOW)
            save_draft(
                session=s, study=study(s, uid), author=a, findings=uid, impression=uid, now=NOW
            )
        sign_report(
            session=s,
            study=study(s, "4.1"),
            signer=a,
            status="final",
            now=NOW + timedelta(minutes=1),
        )
        sign_report(
            session=s,
            study=study(s, "4.3"),
            signer=a,
            status="preliminary",
            now=NOW + timedelta(minutes=2),
        )
        s.commit()

        assert [r.findings for r in list_reports(session=s, viewer=a)] == ["4.3", "4.1", "4.2"]
        mine = list_reports(session=s, viewer=c1)
        assert [r.findings for r in mine] == ["4.1"]  # own site, signed only
        assert [r.findings for r in list_reports(session=s, viewer=c2)] == ["4.3"]
        draft = get_report(session=s, study=study(s, "4.2"))
        assert draft is not None
        assert not report_visible_to(draft, c1) and report_visible_to(draft, a)
        assert report_visible_to(mine[0], c1) and not report_visible_to(mine[0], c2)


def test_audit_append(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        c1 = fast_user(s, "c1", "clinic", "TS01")
        ev = audit.record(
            session=s,
            actor=c1,
            action=AuditAction.REPORT_VIEWED,
            object_type="study",
            object_id="1.2.3",
            client_addr="127.0.0.1",
            detail={"status": "final"},
            now=NOW,
        )
        audit.record(
            session=s,
            actor=None,
            action=AuditAction.LOGIN,
            outcome="failure",
            now=NOW + timedelta(seconds=1),
        )
        s.commit()
        assert (ev.username, ev.role, ev.site_code) == ("c1", "clinic", "TS01")
        events = audit.list_events(session=s)
        assert [e.action for e in events] == ["login", "report_viewed"]
        assert events[0].user_id is None and events[0].outcome == "failure"
        assert events[1].at == NOW and events[1].detail == {"status": "final"}
        assert [e.id for e in audit.list_events(session=s, object_id="1.2.3")] == [ev.id]
        assert audit.list_events(session=s, action="nothing") == []
        assert not hasattr(audit, "delete") and not hasattr(audit, "update")
