"""The content hashes of signed reports and their addenda.

A report's hash is sha256 over canonical JSON of what was signed, so a later change is
detectable; an addendum's hash is chained to the hash of the report it amends.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from worklist.models import REPORT_AMENDED, REPORT_FINAL, Report, ReportAddendum


def report_content_hash(
    *,
    findings: str,
    impression: str,
    recommendation: str,
    status: str,
    signer: str,
    signed_at: datetime,
) -> str:
    """sha256 (hex) of the canonical JSON of a signed report's content."""
    canonical = json.dumps(
        {
            "findings": findings,
            "impression": impression,
            "recommendation": recommendation,
            "status": status,
            "signer": signer,
            "signed_at": signed_at.astimezone(UTC).isoformat(),
        },
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def verify_report(report: Report) -> bool:
    """True when a signed report's stored hash matches its content.

    An amended report was signed 'final' (only final reports take addenda), so that is the
    status its hash covers; the addenda carry their own hashes (``verify_addendum``).
    """
    if report.content_sha256 is None or report.signed_at is None or report.signed_by is None:
        return False
    signed_status = REPORT_FINAL if report.status == REPORT_AMENDED else report.status
    return report.content_sha256 == report_content_hash(
        findings=report.findings,
        impression=report.impression,
        recommendation=report.recommendation,
        status=signed_status,
        signer=report.signed_by.username,
        signed_at=report.signed_at,
    )


def addendum_hash(
    *, report_sha256: str, text: str, reason: str, author: str, created_at: datetime
) -> str:
    """sha256 (hex) of an addendum, chained to the hash of the report it amends."""
    canonical = json.dumps(
        {
            "report_sha256": report_sha256,
            "text": text,
            "reason": reason,
            "author": author,
            "created_at": created_at.astimezone(UTC).isoformat(),
        },
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def verify_addendum(addendum: ReportAddendum, report: Report) -> bool:
    """True when the addendum's stored hash matches its content and the report's hash."""
    if report.content_sha256 is None:
        return False
    return addendum.content_sha256 == addendum_hash(
        report_sha256=report.content_sha256,
        text=addendum.text,
        reason=addendum.reason,
        author=addendum.author.username,
        created_at=addendum.created_at,
    )
