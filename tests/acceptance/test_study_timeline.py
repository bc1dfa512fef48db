"""A stroke CT's timeline, scanner to clinic: dcmtk's storescu into the real `teleread serve`,
a radiologist claims, records a critical result and signs preliminary, the clinic opens the
report and acknowledges; every hop is on the timeline, in order, each at the time its record
holds (the gateway's outbox, the audit trail, the critical result, the headers)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pydicom
import pytest

from teleread.demo import write_demo_studies
from tests.acceptance.conftest import Pipeline
from tests.acceptance.test_end_to_end import storescu, wait_for

pytestmark = pytest.mark.dcmtk

CHINA = timezone(timedelta(hours=8))
EXPECTED = [  # every hop this study passes
    "acquired",
    "acquired_last",
    "received_first",
    "received_last",
    "uploaded_first",
    "uploaded_last",
    "listed",
    "flagged_urgent",
    "arrived_last",
    "claimed",
    "opened",
    "critical_result_communicated",
    "preliminary_signed",
    "clinic_notified",
    "clinic_opened",
    "critical_result_acknowledged",
]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stamp_acquisition(files: list[Path], start: datetime) -> list[datetime]:
    """Give the slices acquisition times a second apart from ``start`` (China time, no
    Timezone Offset From UTC in the header, as most modalities write it)."""
    times = []
    for i, path in enumerate(sorted(files)):
        ds = pydicom.dcmread(path)
        when = start + timedelta(seconds=i)
        ds.AcquisitionDate = ds.ContentDate = when.astimezone(CHINA).strftime("%Y%m%d")
        ds.AcquisitionTime = ds.ContentTime = when.astimezone(CHINA).strftime("%H%M%S")
        ds.save_as(path)
        times.append(when)
    return times


def test_stroke_timeline_has_every_hop_in_order_at_its_recorded_time(
    shared_pipeline: Pipeline, tmp_path: Path
) -> None:
    stroke = next(
        s
        for s in write_demo_studies(tmp_path, seed=23, ct_slices=4, ct_size=64)
        if s.expected_category == "stroke"
    )
    scanned = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    acquired = _stamp_acquisition(stroke.files, scanned)
    sent = storescu(shared_pipeline, "CT_TS01", stroke.directory)
    assert sent.returncode == 0, sent.stderr
    uid = stroke.study_uid

    reader = shared_pipeline.client("dr_li")
    wait_for(
        lambda: (
            reader.get(f"/api/v1/studies/{uid}").json().get("num_instances") == len(stroke.files)
        )
    )
    assert reader.post(f"/api/v1/worklist/{uid}/claim").status_code == 200
    assert reader.get(f"/api/v1/studies/{uid}").status_code == 200  # opened
    r = reader.put(
        f"/api/v1/studies/{uid}/report",
        json={"findings": "右侧基底节区见高密度影。", "impression": "右侧基底节区脑出血。"},
    )
    assert r.status_code == 200, r.text
    now = datetime.now(UTC)
    r = reader.post(
        f"/api/v1/studies/{uid}/report/critical-results",
        json={
            "finding": "右侧基底节区脑出血",
            "identified_at": now.isoformat(),
            "communicated_to_name": "张医生",
            "communicated_to_role": "急诊医生",
            "communicated_at": now.isoformat(),
            "method": "phone",
            "read_back_confirmed": False,
        },
    )
    assert r.status_code == 201, r.text
    critical = r.json()
    r = reader.post(f"/api/v1/studies/{uid}/report/sign", json={"status": "preliminary"})
    assert r.status_code == 200, r.text

    nurse = shared_pipeline.client("nurse_ts01")
    assert nurse.get(f"/api/v1/studies/{uid}/report").status_code == 200
    r = nurse.post(f"/api/v1/studies/{uid}/report/critical-results/{critical['id']}/acknowledge")
    assert r.status_code == 200, r.text
    acknowledged_at = _at(r.json()["acknowledged_at"])

    def whole() -> dict[str, Any] | None:
        """The timeline once every hop is on it: the views (opened) are audited in batches,
        written within a second of the request (``viewer_api.auditing.AuditWriter``)."""
        r = reader.get(f"/api/v1/studies/{uid}/timeline")
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found if {h["hop"] for h in found["hops"]} >= set(EXPECTED) else None

    timeline = wait_for(whole, timeout=15)
    hops = {h["hop"]: h for h in timeline["hops"]}
    # every hop, none missing, none extra, in time order; what causes what comes after it (an
    # urgent study is listed from its first instance, so its last may be uploaded later)
    assert sorted(h["hop"] for h in timeline["hops"]) == sorted(EXPECTED), timeline["hops"]
    times = [_at(h["at"]) for h in timeline["hops"]]
    assert times == sorted(times)
    order = [h["hop"] for h in timeline["hops"]]
    for chain in (
        EXPECTED[:2],
        ["received_first", "uploaded_first", "listed", "opened"],
        ["listed", "claimed"],
        ["received_last", "uploaded_last", "arrived_last"],
        ["flagged_urgent", "claimed", "critical_result_communicated", "preliminary_signed"],
        ["preliminary_signed", "clinic_notified", "clinic_opened"],
        ["critical_result_communicated", "critical_result_acknowledged"],
    ):
        assert [h for h in order if h in chain] == chain, order
    assert timeline["hops"][0]["since_previous_seconds"] is None
    for before, after in zip(timeline["hops"], timeline["hops"][1:], strict=False):
        gap = (_at(after["at"]) - _at(before["at"])).total_seconds()
        assert after["since_previous_seconds"] == pytest.approx(gap, abs=0.002)

    # each hop at the time its own record holds
    assert _at(hops["acquired"]["recorded_at"]) == acquired[0]
    assert _at(hops["acquired_last"]["recorded_at"]) == acquired[-1]
    assert hops["acquired"]["clock"] == "modality"
    outbox = sqlite3.connect(shared_pipeline.data_dir / "spool" / "outbox.db")
    try:
        received_ts, last_received_ts, uploaded, last_uploaded = outbox.execute(
            "SELECT MIN(received_ts), MAX(received_ts), MIN(uploaded_at), MAX(uploaded_at) "
            "FROM outbox WHERE study_instance_uid = ?",
            (uid,),
        ).fetchone()
    finally:
        outbox.close()
    for hop, ts in (
        ("received_first", received_ts),
        ("received_last", last_received_ts),
        ("uploaded_first", uploaded),
        ("uploaded_last", last_uploaded),
    ):
        assert hops[hop]["clock"] == "gateway"
        recorded = _at(hops[hop]["recorded_at"])
        assert abs(recorded.timestamp() - ts) < 0.001, hop
    admin = shared_pipeline.client("admin")
    trail = admin.get("/api/v1/audit", params={"object_id": uid, "limit": 500}).json()

    def audited(action: str, **match: Any) -> datetime:
        return min(
            _at(e["at"])
            for e in trail
            if e["action"] == action and all(e.get(k) == v for k, v in match.items())
        )

    assert _at(hops["claimed"]["at"]) == audited("study_claimed")
    assert hops["claimed"]["by"] == "dr_li"
    assert _at(hops["opened"]["at"]) == audited("study_viewed", username="dr_li")
    assert _at(hops["preliminary_signed"]["at"]) == audited("report_signed")
    assert _at(hops["clinic_opened"]["at"]) == audited("report_viewed", username="nurse_ts01")
    assert (hops["opened"]["by"], hops["clinic_opened"]["by"]) == ("dr_li", "nurse_ts01")
    assert _at(hops["critical_result_communicated"]["at"]) == _at(critical["communicated_at"])
    assert _at(hops["critical_result_acknowledged"]["at"]) == acknowledged_at
    # the clinic was told when the signature was committed (no webhook here)
    assert hops["clinic_notified"]["source"] == "events:report_signed"
    assert hops["clinic_notified"]["at"] == hops["preliminary_signed"]["at"]
    # the gateway's clock was measured (its status report), here the county's own
    assert timeline["gateway_clock_offset_seconds"] is not None
    assert abs(timeline["gateway_clock_offset_seconds"]) < 5

    stages = {s["stage"]: s["seconds"] for s in timeline["stages"]}
    listed, signed = _at(hops["listed"]["at"]), _at(hops["preliminary_signed"]["at"])
    assert stages["listed_to_report"] == pytest.approx((signed - listed).total_seconds(), abs=0.002)
    targets = {t["target"]: t for t in timeline["targets"]}
    assert targets["stroke_read_45min"]["state"] == "met"
    assert targets["read_deadline"]["state"] in ("met", "missed")

    # the study's visibility: its own site's clinic sees it, the other site's gets 404
    assert nurse.get(f"/api/v1/studies/{uid}/timeline").status_code == 200
    assert (
        shared_pipeline.client("nurse_ts02").get(f"/api/v1/studies/{uid}/timeline").status_code
        == 404
    )
