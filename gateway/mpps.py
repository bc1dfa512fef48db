"""Modality Performed Procedure Step: knowing a study is complete.

A modality sends N-CREATE (status IN PROGRESS) when it starts a procedure step and N-SET
(status COMPLETED, listing every image it made under PerformedSeriesSequence >
ReferencedImageSequence) when it ends. Both are kept in ``mpps.db`` in the spool directory
(SQLite WAL, ``synchronous=FULL``, shared safely by several acceptor processes), and the
response goes out only after the commit.

``gateway.study_completion.StudyCompletion`` tells the county once
every instance a COMPLETED step lists has been announced. Urgent studies need none of this:
the county lists them from their first instance.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from gateway.private_files import private_dir, private_file
from gateway.sites import Sites

logger = logging.getLogger(__name__)

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"  # Modality Performed Procedure Step
IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
# N-CREATE / N-SET statuses (PS3.7 C, PS3.4 F.7.2)
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110  # also "may no longer be updated" (F.7.2.2.2)
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ATTRIBUTE_VALUE = 0x0106
MISSING_ATTRIBUTE = 0x0120
REFUSED_NOT_AUTHORISED = 0x0124

# announcement states of a step
WAITING, DONE, NOTHING = "waiting", "announced", "nothing_listed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mpps (
    sop_instance_uid TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    status TEXT NOT NULL,
    study_uids TEXT NOT NULL,
    dataset TEXT NOT NULL,
    created_ts REAL NOT NULL,
    updated_ts REAL NOT NULL,
    announce_state TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    announced_ts REAL
);
CREATE INDEX IF NOT EXISTS mpps_waiting ON mpps (announce_state, next_attempt_at);
CREATE TABLE IF NOT EXISTS mpps_instance (
    mpps_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    PRIMARY KEY (mpps_uid, sop_instance_uid)
);
"""


class MppsError(Exception):
    """An MPPS request could not be applied."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class WaitingStep:
    uid: str
    site: str
    study_uids: tuple[str, ...]
    attempts: int


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def listed_instances(ds: Dataset) -> list[tuple[str, str]]:
    """(series UID, SOP Instance UID) of every image and non-image object the step lists."""
    out: list[tuple[str, str]] = []
    for series in ds.get("PerformedSeriesSequence") or []:
        series_uid = _text(series, "SeriesInstanceUID")
        for key in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence"):
            for ref in series.get(key) or []:
                sop = _text(ref, "ReferencedSOPInstanceUID")
                if sop:
                    out.append((series_uid, sop))
    return out


def scheduled_study_uids(ds: Dataset) -> list[str]:
    uids = [
        _text(item, "StudyInstanceUID") for item in ds.get("ScheduledStepAttributesSequence") or []
    ]
    return list(dict.fromkeys(u for u in uids if u))


def _to_json(ds: Dataset) -> str:
    return json.dumps(
        ds.to_json_dict(bulk_data_threshold=1 << 20, suppress_invalid_tags=True),
        ensure_ascii=False,
    )


class MppsStore:
    """``mpps.db``: the procedure steps and the instances they list. Thread-safe; one per
    process (several processes may share the file)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        private_dir(self.path.parent)
        private_file(self.path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(
        self, uid: str, ds: Dataset, *, site: str, calling_ae: str, now: float | None = None
    ) -> None:
        """N-CREATE; raises ``MppsError`` (duplicate, bad status)."""
        now = time.time() if now is None else now
        status = _text(ds, "PerformedProcedureStepStatus")
        if status != IN_PROGRESS:
            raise MppsError(
                f"N-CREATE with PerformedProcedureStepStatus {status!r}, not IN PROGRESS",
                INVALID_ATTRIBUTE_VALUE,
            )
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO mpps (sop_instance_uid, site, calling_ae, status, study_uids, "
                    "dataset, created_ts, updated_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        uid,
                        site,
                        calling_ae,
                        status,
                        json.dumps(scheduled_study_uids(ds)),
                        _to_json(ds),
                        now,
                        now,
                    ),
                )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise MppsError(f"MPPS {uid} exists", DUPLICATE_SOP_INSTANCE) from exc
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def update(self, uid: str, modifications: Dataset, *, now: float | None = None) -> str:
        """N-SET: merge the modification list; return the step's status afterwards."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT status, dataset, study_uids FROM mpps WHERE sop_instance_uid = ?",
                    (uid,),
                ).fetchone()
                if row is None:
                    raise MppsError(f"no MPPS {uid}", NO_SUCH_SOP_INSTANCE)
                if row[0] != IN_PROGRESS:
                    raise MppsError(
                        f"MPPS {uid} is {row[0]} and may no longer be updated", PROCESSING_FAILURE
                    )
                ds = Dataset.from_json(row[1])
                for elem in modifications:
                    ds[elem.tag] = elem
                status = _text(ds, "PerformedProcedureStepStatus")
                if status not in (IN_PROGRESS, COMPLETED, DISCONTINUED):
                    raise MppsError(
                        f"PerformedProcedureStepStatus {status!r} not allowed",
                        INVALID_ATTRIBUTE_VALUE,
                    )
                studies = scheduled_study_uids(ds) or json.loads(row[2])
                announce: str | None = None
                if status == COMPLETED:
                    listed = listed_instances(ds)
                    self._db.execute("DELETE FROM mpps_instance WHERE mpps_uid = ?", (uid,))
                    self._db.executemany(
                        "INSERT OR IGNORE INTO mpps_instance (mpps_uid, sop_instance_uid, "
                        "series_instance_uid) VALUES (?, ?, ?)",
                        [(uid, sop, series) for series, sop in listed],
                    )
                    announce = WAITING if listed else NOTHING
                self._db.execute(
                    "UPDATE mpps SET status = ?, dataset = ?, study_uids = ?, updated_ts = ?, "
                    "announce_state = ?, next_attempt_at = ? WHERE sop_instance_uid = ?",
                    (status, _to_json(ds), json.dumps(studies), now, announce, now, uid),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return status

    # -- the completion side -------------------------------------------------------------

    def waiting(self, now: float) -> list[WaitingStep]:
        with self._lock:
            rows = list(
                self._db.execute(
                    "SELECT sop_instance_uid, site, study_uids, attempts FROM mpps "
                    "WHERE announce_state = ? AND next_attempt_at <= ? ORDER BY updated_ts",
                    (WAITING, now),
                )
            )
        return [WaitingStep(r[0], r[1], tuple(json.loads(r[2])), int(r[3])) for r in rows]

    def instances_of(self, uid: str) -> list[str]:
        with self._lock:
            return [
                r[0]
                for r in self._db.execute(
                    "SELECT sop_instance_uid FROM mpps_instance WHERE mpps_uid = ?", (uid,)
                )
            ]

    def mark_announced(self, uid: str, now: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE mpps SET announce_state = ?, announced_ts = ?, last_error = NULL "
                "WHERE sop_instance_uid = ?",
                (DONE, now, uid),
            )

    def mark_retry(self, uid: str, error: str, retry_at: float, *, count: bool = True) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE mpps SET attempts = attempts + ?, last_error = ?, next_attempt_at = ? "
                "WHERE sop_instance_uid = ?",
                (1 if count else 0, error[:500], retry_at, uid),
            )

    def get(self, uid: str) -> dict[str, Any] | None:
        """One step as a dict (status reports, tests)."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM mpps WHERE sop_instance_uid = ?", (uid,))
            row = cur.fetchone()
            if row is None:
                return None
            return dict(zip([d[0] for d in cur.description], row, strict=True))


# -- pynetdicom handlers -----------------------------------------------------------------


def _calling_ae(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def handle_n_create(event: Event, store: MppsStore, sites: Sites) -> tuple[int, Dataset | None]:
    """EVT_N_CREATE for MPPS: persist the step, then answer."""
    request: Any = event.request
    if str(request.AffectedSOPClassUID) != MPPS_SOP_CLASS:
        return PROCESSING_FAILURE, None
    calling = _calling_ae(event)
    site = sites.site_for(calling)
    if site is None:
        return REFUSED_NOT_AUTHORISED, None
    try:
        ds: Dataset = event.attribute_list
        uid = str(request.AffectedSOPInstanceUID or "")
        if not uid:
            from pydicom.uid import generate_uid

            uid = str(generate_uid())
            ds.AffectedSOPInstanceUID = uid  # pynetdicom puts it in the response
        store.create(uid, ds, site=site, calling_ae=calling)
    except MppsError as exc:
        logger.warning(
            "MPPS N-CREATE refused",
            extra={"action": "mpps_create_refused", "calling_ae": calling, "error": str(exc)},
        )
        return exc.status, None
    except Exception as exc:
        logger.exception(
            "MPPS N-CREATE failed",
            extra={"action": "mpps_create_failed", "calling_ae": calling, "error": repr(exc)[:300]},
        )
        return PROCESSING_FAILURE, None
    logger.info(
        "MPPS created",
        extra={"action": "mpps_created", "mpps_uid": uid, "calling_ae": calling, "site": site},
    )
    return SUCCESS, ds


def handle_n_set(event: Event, store: MppsStore, sites: Sites) -> tuple[int, Dataset | None]:
    """EVT_N_SET for MPPS: merge the changes; COMPLETED starts the completion watch."""
    request: Any = event.request
    if str(request.RequestedSOPClassUID) != MPPS_SOP_CLASS:
        return PROCESSING_FAILURE, None
    calling = _calling_ae(event)
    if sites.site_for(calling) is None:
        return REFUSED_NOT_AUTHORISED, None
    uid = str(request.RequestedSOPInstanceUID or "")
    try:
        mods: Dataset = event.modification_list
        status = store.update(uid, mods)
    except MppsError as exc:
        logger.warning(
            "MPPS N-SET refused",
            extra={"action": "mpps_set_refused", "mpps_uid": uid, "error": str(exc)},
        )
        return exc.status, None
    except Exception as exc:
        logger.exception(
            "MPPS N-SET failed",
            extra={"action": "mpps_set_failed", "mpps_uid": uid, "error": repr(exc)[:300]},
        )
        return PROCESSING_FAILURE, None
    logger.info("MPPS updated", extra={"action": "mpps_set", "mpps_uid": uid, "status": status})
    return SUCCESS, mods


__all__ = [
    "MPPS_SOP_CLASS",
    "MppsError",
    "MppsStore",
    "WaitingStep",
    "handle_n_create",
    "handle_n_set",
    "listed_instances",
]
