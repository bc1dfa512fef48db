"""Sending the signed report's SR to the site's PACS, from the durable queue.

What queues a send, and the queue itself: ``worklist.sr_sends`` (signing, preliminary or
final; an addendum; a corrected re-send served after the report; ``POST .../report/sr?send=true``:
one path for all of them), for sites with a DICOM destination (``Site.sr_destination``).

``SRSender`` (one thread per county API process, started by the composition root; replicas
share the queue through its leases) takes due sends every second: for each it makes (or
finds) the SR of the report as it is now, over the study as it is served now
(``sr_store.store_signed_report_sr``), C-STOREs it (``send.send_sr``), and records the
outcome: sent, or retried after a back-off (``sr_send_retry_seconds`` doubled up to an
hour), or failed after ``sr_send_max_attempts``. Every attempt is audited
(``report_sr_sent``, outcome success or failure, with the destination and the error).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from storage.base import ObjectStore
from viewer_api.outputs.content import ReportNotSigned
from viewer_api.outputs.send import SRSendFailed, send_sr
from viewer_api.outputs.settings import OutputSettings
from viewer_api.outputs.sr_store import store_signed_report_sr
from worklist import audit, reports, sr_sends
from worklist.audit import AuditAction
from worklist.db import utcnow
from worklist.errors import InvalidDestination
from worklist.models import Study
from worklist.settings import DEFAULT_DEADLINES, Deadlines

logger = logging.getLogger(__name__)

IDLE_SECONDS = 1.0


class SRSender:
    """Sends due SRs (see the module docstring); ``start`` / ``stop``; ``run_once`` is one
    pass (what the thread does every second)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        store: ObjectStore,
        *,
        settings: OutputSettings,
        deadlines: Deadlines = DEFAULT_DEADLINES,
        clock: Callable[[], datetime] = utcnow,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self._factory = factory
        self._store = store
        self._settings = settings
        self._deadlines = deadlines
        self._clock = clock
        self._idle = idle_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sr-sender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._settings.sr_send_timeout_seconds * 4 + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                taken = self.run_once()
            except Exception:
                logger.exception("SR send pass failed", extra={"action": "sr_send_pass_failed"})
                taken = 0
            if not taken:
                self._stop.wait(self._idle)

    def run_once(self) -> int:
        """Send every due SR (a batch); how many were taken."""
        with self._factory.begin() as session:
            jobs = sr_sends.take_due(session=session, now=self._clock())
        for job in jobs:
            if self._stop.is_set():
                break  # the rest go back to the queue when their lease runs out
            self._send(job)
        return len(jobs)

    def _send(self, job: sr_sends.SendJob) -> None:
        destination_text = ""
        study_uid = ""
        sop_uid = key = ""
        error: str | None = None
        final = False  # no retry can help
        try:
            with self._factory.begin() as session:
                study = session.get(Study, job.study_id)
                if study is None:
                    return  # deleted with its row
                study_uid = study.study_instance_uid
                destination_text = study.site.sr_destination
                report = reports.get_report(session=session, study=study)
                if not destination_text:
                    error, final = f"no DICOM destination is configured for {study.site.code}", True
                elif report is None:
                    error, final = "the study has no report", True
                else:
                    stored = store_signed_report_sr(
                        session=session,
                        store=self._store,
                        study=study,
                        report=report,
                        now=self._clock(),
                        settings=self._settings,
                        deadlines=self._deadlines,
                    )
                    sop_uid, key = stored.sop_uid, stored.object_key
            if error is None:
                with self._store.open(key) as stream:
                    data = stream.read()
                send_sr(
                    data,
                    destination=sr_sends.Destination.parse(destination_text),
                    calling_ae=self._settings.sr_station_name,
                    timeout=self._settings.sr_send_timeout_seconds,
                )
        except ReportNotSigned:
            error, final = "the report is not signed", True
        except InvalidDestination as exc:
            error, final = str(exc), True
        except SRSendFailed as exc:
            error = str(exc)
        except Exception as exc:  # storage, database, network: tried again later
            logger.exception(
                "SR send attempt failed",
                extra={"action": "sr_send_error", "study_uid": study_uid},
            )
            error = f"{type(exc).__name__}: {exc}"
        self._record(job, study_uid, destination_text, sop_uid, error, final)

    def _record(
        self,
        job: sr_sends.SendJob,
        study_uid: str,
        destination: str,
        sop_uid: str,
        error: str | None,
        final: bool,
    ) -> None:
        now = self._clock()
        with self._factory.begin() as session:
            if error is None:
                sr_sends.record_sent(
                    session=session,
                    job=job,
                    now=now,
                    destination=destination,
                    sop_instance_uid=sop_uid,
                )
            else:
                sr_sends.record_failure(
                    session=session,
                    job=job,
                    now=now,
                    error=error,
                    destination=destination,
                    max_attempts=job.attempts if final else self._settings.sr_send_max_attempts,
                    base_delay=timedelta(seconds=self._settings.sr_send_retry_seconds),
                )
            if study_uid:
                audit.record(
                    session=session,
                    actor=None,
                    action=AuditAction.REPORT_SR_SENT,
                    object_id=study_uid,
                    outcome="success" if error is None else "failure",
                    detail={
                        "destination": destination,
                        "sop_instance_uid": sop_uid,
                        "attempt": job.attempts,
                        "error": error,
                    },
                    now=now,
                )


__all__ = ["IDLE_SECONDS", "SRSender"]
