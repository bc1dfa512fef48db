"""Telling the county a study is complete, from the modality's MPPS (``gateway.mpps``).

``StudyCompletion`` (one thread, in the process that forwards) watches COMPLETED steps; once
every instance a step lists has been announced to the county (its outbox row is
``announced``), it tells the county ``POST /api/v1/ingest/study-complete`` per study with the
number of instances the step listed, retrying with backoff and never giving up. Urgent
studies need none of this: the county lists them from their first instance.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway.county import CountyClient
from gateway.errors import CountyRejected, CountyUnavailable
from gateway.mpps import MppsStore, WaitingStep
from gateway.outbox import Outbox

logger = logging.getLogger(__name__)


class StudyCompletion:
    """The thread that tells the county a study is complete (see the module docstring)."""

    def __init__(
        self,
        store: MppsStore,
        outbox: Outbox,
        county: CountyClient,
        *,
        poll_seconds: float = 1.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.county = county
        self.poll_seconds = poll_seconds
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-mpps", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                logger.exception("MPPS completion step failed", extra={"action": "mpps_error"})
            self._stop.wait(self.poll_seconds)

    def _delay(self, attempts: int) -> float:
        base = min(self.backoff_max, self.backoff_initial * 2 ** max(0, attempts))
        return base * (0.5 + random.random() / 2)

    def step(self) -> int:
        """Check every due COMPLETED step once; return how many were announced."""
        done = 0
        for step in self.store.waiting(self.clock()):
            if self._stop.is_set():
                break
            sops = self.store.instances_of(step.uid)
            known = self.outbox.announced_among(sops)
            if len(known) < len(sops):
                continue  # still arriving or uploading: look again at the next poll
            per_study: dict[tuple[str, str], int] = {}
            for site, study in known.values():
                per_study[(site, study)] = per_study.get((site, study), 0) + 1
            if self._announce(step, per_study):
                done += 1
        return done

    def _announce(self, step: WaitingStep, per_study: dict[tuple[str, str], int]) -> bool:
        log: dict[str, Any] = {"mpps_uid": step.uid}
        try:
            not_ready = []
            for (site, study), count in sorted(per_study.items()):
                answer = self.county.study_complete(
                    site=site, study_instance_uid=study, expected_instances=count
                )
                if not answer.get("ready", False):
                    not_ready.append(study)
        except (CountyUnavailable, CountyRejected) as exc:
            delay = self._delay(step.attempts)
            self.store.mark_retry(step.uid, str(exc), self.clock() + delay)
            logger.warning(
                "study-complete announcement failed",
                extra={
                    "action": "study_complete_failed",
                    "retry_in": round(delay, 2),
                    "error": str(exc)[:300],
                    **log,
                },
            )
            return False
        if not_ready:
            delay = self._delay(step.attempts)
            self.store.mark_retry(step.uid, f"county not ready: {not_ready}", self.clock() + delay)
            logger.warning(
                "county does not hold every listed instance yet",
                extra={"action": "study_complete_not_ready", "study_uids": not_ready, **log},
            )
            return False
        self.store.mark_announced(step.uid, self.clock())
        logger.info(
            "study complete announced",
            extra={
                "action": "study_complete_announced",
                "study_uids": sorted(s for _, s in per_study),
                "instances": sum(per_study.values()),
                **log,
            },
        )
        return True
