"""Upload spooled instances to the object store and announce them to the county, urgent first.

Uploading threads (``upload_concurrency``, default 2) each take the most urgent due
``received`` row no other one is uploading, again and again (so an urgent study that lands
behind a routine backlog goes out next, instance by instance; within a priority a study's
first instance goes ahead, then study by study in order of arrival: ``gateway.outbox``'s
order); the headers of new rows are read before a pick (and a pick waits while another
thread reads them), so a stroke's rows being triaged do not lose a free slot to a routine
row; with two, one upload's
requests and the bookkeeping around them (store checks, the server's answer, the outbox)
overlap the other's transfer, so the uplink does not idle between instances. Another thread
announces batches of ``uploaded`` rows (same site and AE titles) once enough have gathered,
the oldest has waited ``announce_delay`` or there is nothing left to upload; an urgent
study's first instance, and its last ones when another study's uploads come next, at once.
Announcing does not hold up the next upload, so the uplink stays busy while the county
records what arrived. (``step`` does either, for ``drain`` and tests.) A row is marked
uploaded only once its object is verified in the store, so after a crash the rows that were in
flight are simply uploaded again (the store check finds what already went up).

Failures never give up. Outages (``StoreUnavailable``, network errors, county 5xx) pause the
whole upload or announce path with exponential backoff and jitter, capped, so the queue order
holds when the service returns; a failure that belongs to one row (integrity mismatch, the
API refusing it) backs off that row only, so it cannot block the rest. While announcements
back off, an urgent (stroke, chest pain) row is still tried on the shortest schedule
(``backoff_initial``): a county that returns after a long outage has it within about a second,
not after the routine back-off (up to ``backoff_max``). The county client has already tried
every county URL before an outage is declared (``gateway.county``).

A row's upload itself (file check, store check, recompression, put and verify) is
``gateway.upload``; here it is picked, retried and backed off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway.county import CountyClient
from gateway.errors import CountyRejected, CountyUnavailable, InvalidInstance
from gateway.instance import HeaderReader, read_instance, spooled_header_json
from gateway.lookahead import RecompressAhead
from gateway.outbox import CONFLICT, COUNTY_HELD, MISSING, OutboxRow
from gateway.received import URGENT_RANK, ReceivedInstance
from gateway.spool import Spool
from gateway.upload import (
    TokenBucket,
    already_stored,
    file_sha256,
    put_verified,
)
from storage.base import ObjectStore
from storage.errors import StorageError, StoreUnavailable
from storage.keys import version_key

logger = logging.getLogger(__name__)

_OUTAGES: tuple[type[BaseException], ...] = (StoreUnavailable, ConnectionError, TimeoutError)
PRUNE_EVERY_SECONDS = 3600.0
# headers read (20 at a time) before a pick at most: a burst from the modalities cannot hold up
# the uploads for long
INDEX_ROUNDS_BEFORE_PICK = 25


class Forwarder:
    def __init__(
        self,
        spool: Spool,
        store: ObjectStore,
        county: CountyClient,
        *,
        batch_size: int = 100,
        announce_delay: float = 0.5,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        bandwidth_limit: int | None = None,
        prune_after: float = 14 * 24 * 3600.0,
        include_dicom_json: bool = True,
        recompress: str = "jpegls",
        upload_concurrency: int = 2,
        header_reader: HeaderReader = "auto",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.store = store
        self.county = county
        self.batch_size = batch_size
        self.announce_delay = announce_delay
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.bucket = TokenBucket(bandwidth_limit) if bandwidth_limit else None
        self.prune_after = prune_after
        self.include_dicom_json = include_dicom_json
        self.recompress = recompress
        self.ahead = RecompressAhead(spool, recompress, clock=clock)
        self.upload_concurrency = max(1, upload_concurrency)
        self.header_reader = header_reader
        self.clock = clock
        self.upload_blocked_until = 0.0
        self.announce_blocked_until = 0.0
        # while announcements back off: when an urgent row may be tried (the shortest schedule)
        self.urgent_announce_at = 0.0
        self._upload_failures = 0
        self._announce_failures = 0
        self._last_prune = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None  # reads headers; uploads unless index-only
        self._uploaders: list[threading.Thread] = []  # the other uploading threads
        self._announcer: threading.Thread | None = None
        self._claim_lock = threading.Lock()
        self._in_flight: set[int] = set()  # row ids being uploaded
        self._housekeeping = threading.Lock()  # one thread reads headers and prunes
        self._uploaded = threading.Event()  # wakes the announcer
        self._shown_urgent: set[str] = set()  # urgent studies announced (their first rows)
        self._index_only = False
        self._nice = 0

    # -- thread --------------------------------------------------------------------------

    def start(self, *, index_only: bool = False, nice: int = 0) -> None:
        """Run in a thread; ``index_only``: read the headers of new rows, upload nothing.
        Called again on a running forwarder (index-only at first), it switches mode.
        ``nice``: the thread's own nice value (Linux), so that acceptor processes receiving
        from modalities keep the CPUs during a burst."""
        self._index_only = index_only
        self._nice = nice
        if not index_only:
            self.ahead.start(nice=nice)
            if self._announcer is None or not self._announcer.is_alive():
                self._announcer = threading.Thread(
                    target=self._run_announcer, name="gateway-announcer", daemon=True
                )
                self._announcer.start()
            self._uploaders = [t for t in self._uploaders if t.is_alive()]
            while len(self._uploaders) < self.upload_concurrency - 1:
                uploader = threading.Thread(
                    target=self._run,
                    name=f"gateway-uploader-{len(self._uploaders) + 2}",
                    daemon=True,
                )
                self._uploaders.append(uploader)
                uploader.start()
        if self._thread is not None and self._thread.is_alive():
            self.spool.outbox.new_work.set()
            return
        self._thread = threading.Thread(target=self._run, name="gateway-forwarder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.spool.outbox.new_work.set()
        self._uploaded.set()
        for thread in (self._thread, self._announcer, *self._uploaders):
            if thread is not None:
                thread.join(timeout)
        self.ahead.stop(timeout)

    def _run(self) -> None:
        if self._nice:
            try:  # on Linux a thread's id names the thread alone
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
            except (OSError, AttributeError):
                pass
        while not self._stop.is_set():
            try:
                worked = self.index_pending() if self._index_only else self.step(announce=False)
            except Exception:  # a bug must not stop forwarding for good
                logger.exception("forwarder step failed", extra={"action": "forwarder_error"})
                worked = False
                self._stop.wait(self.backoff_initial)
            if not worked:
                self.spool.outbox.new_work.wait(self._idle_wait())
                self.spool.outbox.new_work.clear()

    def _run_announcer(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.step(upload=False)
            except Exception:  # a bug must not stop announcing for good
                logger.exception("announcer step failed", extra={"action": "forwarder_error"})
                worked = False
                self._stop.wait(self.backoff_initial)
            if not worked:
                self._uploaded.wait(self._announce_wait())
                self._uploaded.clear()

    def _announce_wait(self) -> float:
        now = self.clock()
        if not self.spool.outbox.uploaded_backlog()[0]:
            return 1.0
        due_at = min(self.announce_blocked_until, max(self.urgent_announce_at, now))
        return max(0.01, min(now + 1.0, max(now + self.announce_delay / 2, due_at)) - now)

    def _idle_wait(self) -> float:
        now = self.clock()
        wakes = [now + 1.0]
        due = self.spool.outbox.next_due_at()
        if due is not None and not (due <= now and self._in_flight):
            # (a due row another thread is uploading: woken when that upload ends)
            wakes.append(max(due, self.upload_blocked_until))
        if self.spool.outbox.uploaded_backlog()[0]:
            due_at = min(self.announce_blocked_until, max(self.urgent_announce_at, now))
            wakes.append(max(now + self.announce_delay / 2, due_at))
        return max(0.01, min(wakes) - now)

    def _delay(self, failures: int) -> float:
        base = min(self.backoff_max, self.backoff_initial * 2 ** max(0, failures - 1))
        return base * (0.5 + random.random() / 2)  # "equal jitter"

    # -- one step ------------------------------------------------------------------------

    def step(self, *, upload: bool = True, announce: bool = True) -> bool:
        """Do one upload or one announcement (only the one asked for); False when nothing is
        due."""
        if upload:
            # priorities are known before the next pick: every new row's header is read
            # first, and while another thread reads them this one waits (a stroke's rows
            # being triaged must not lose the free slot to a routine row)
            with self._housekeeping:
                now = self.clock()
                if now - self._last_prune > PRUNE_EVERY_SECONDS:
                    self._last_prune = now
                    self.spool.outbox.prune(now - self.prune_after)
                for _ in range(INDEX_ROUNDS_BEFORE_PICK):
                    if not self.index_pending():
                        break
                    self.ahead.wake()
        now = self.clock()  # (rows received meanwhile are due in this pick)
        can_upload = now >= self.upload_blocked_until
        head = self.spool.outbox.next_to_upload(now) if can_upload else None
        backing_off = now < self.announce_blocked_until
        if announce and (not backing_off or now >= self.urgent_announce_at):
            count, oldest, rank = self.spool.outbox.uploaded_summary()
            if count and (
                head is None
                or count >= self.batch_size
                or (oldest is not None and now - oldest >= self.announce_delay)
                # an urgent study's last instances are up and less urgent ones come next:
                # the county sees it complete now, not after the delay and more uploads
                or (rank is not None and rank < head.priority_rank)
                # ... or another urgent study's; and it shows a study from its first instance
                or (rank == URGENT_RANK and self._urgent_to_show(now, head))
            ):
                rows = self.spool.outbox.to_announce(now, self.batch_size)
                if rows and backing_off and rows[0].priority_rank != URGENT_RANK:
                    rows = []  # only urgent rows go before the back-off ends
                    if head is None or head.priority_rank != URGENT_RANK:
                        self.urgent_announce_at = now + self._delay(1)
                if rows:
                    self.announce(rows)
                    return True
        if upload and head is not None:
            row = self._claim(now)
            if row is not None:
                try:
                    self.spool.outbox.mark_upload_started(row.id, self.clock())
                    self.upload(row)
                finally:
                    with self._claim_lock:
                        self._in_flight.discard(row.id)
                    self.spool.outbox.new_work.set()  # an uploader waiting on it may go on
                return True
        return False

    def _claim(self, now: float) -> OutboxRow | None:
        """The most urgent due row no other thread is uploading, now counted as in flight."""
        with self._claim_lock:
            rows = self.spool.outbox.due_uploads(now, len(self._in_flight) + 1)
            row = next((r for r in rows if r.id not in self._in_flight), None)
            if row is not None:
                self._in_flight.add(row.id)
            return row

    def _urgent_to_show(self, now: float, upload: OutboxRow) -> bool:
        """The first uploaded (urgent) row is of a study not announced yet (since this
        forwarder started: after a restart a study may be shown early once more), or of
        another study than the next ``upload``'s (its last instances are up)."""
        head = self.spool.outbox.to_announce(now, 1)
        return bool(head) and (
            head[0].study_instance_uid not in self._shown_urgent
            or head[0].study_instance_uid != upload.study_instance_uid
        )

    def drain(self, timeout: float = 30.0) -> None:
        """Run steps in this thread until nothing is due (tests, ``teleread gateway``)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.step():
                count, _ = self.spool.outbox.uploaded_backlog()
                if not count and self.spool.outbox.next_due_at() is None:
                    return
                time.sleep(0.01)

    # -- reading headers -----------------------------------------------------------------

    def index_pending(self, limit: int = 20) -> bool:
        """Read the headers of rows stored with their UIDs only (``quick_instance``): triage,
        announcement fields, the file's sha256. True when there were any."""
        rows = self.spool.outbox.to_index(limit)
        done = []
        for row in rows:
            indexed = self._index(row)
            if indexed is not None:
                done.append((row.id, *indexed))
        self.spool.outbox.set_indexed(done)
        return bool(rows)

    def _index(self, row: OutboxRow) -> tuple[ReceivedInstance, str] | None:
        # not re-hashed against the receipt's dataset sha256 here: read milliseconds after
        # it was written, from the page cache, it could not differ; from here on the file's
        # sha256 is what the object store must hold. A file is mapped, not read: the header
        # read touches its header only, and the hash reads it in chunks.
        try:
            with self.spool.mapped(row) as data:
                inst = read_instance(
                    data,
                    None,
                    site=row.site,
                    calling_ae=row.calling_ae,
                    called_ae=row.called_ae,
                    urgent_called_aes={row.called_ae: row.category} if row.category else {},
                    header_reader=self.header_reader,
                )
                sha256 = (
                    hashlib.sha256(data).hexdigest()
                    if isinstance(data, bytes)
                    else self.spool.sha256_of(row)
                )
        except FileNotFoundError:
            self.spool.mark_state(row, MISSING, "spool file missing before indexing")
            return None
        except InvalidInstance as exc:
            # acknowledged on a clean structure, unreadable in detail: kept and reported
            self.spool.outbox.set_invalid(row.id, f"header not readable: {exc}")
            logger.error(
                "spooled instance header not readable",
                extra={
                    "action": "spool_header_invalid",
                    "sop_uid": row.sop_instance_uid,
                    "error": str(exc),
                },
            )
            return None
        return inst, sha256

    # -- uploading -----------------------------------------------------------------------

    def upload(self, row: OutboxRow) -> None:
        log = {
            "sop_uid": row.sop_instance_uid,
            "study_uid": row.study_instance_uid,
            "key": row.object_key,
        }
        if not self.spool.holds(row):
            self.spool.mark_state(row, MISSING, "spool file missing before upload")
            logger.error("spool file missing", extra={"action": "spool_file_missing", **log})
            return
        size, saved = 0, 0
        if not row.sha256:
            checked = file_sha256(self.spool, row)
            if checked is None:
                return
            row = checked
        try:
            present = already_stored(self.spool, self.store, row)
            if present is False:
                # other bytes under the key (a re-send whose first version's row was
                # pruned): this version goes beside it; the county's policy decides
                key = version_key(
                    row.site,
                    row.study_instance_uid,
                    row.series_instance_uid,
                    row.sop_instance_uid,
                    row.dataset_sha256,
                )
                self.spool.outbox.set_object_key(row.id, key)
                row = dataclasses.replace(row, object_key=key)
                log["key"] = key
                logger.warning(
                    "object store holds other bytes for this instance; uploading a new version",
                    extra={"action": "upload_resent_version", **log},
                )
                present = already_stored(self.spool, self.store, row)
                if present is False:
                    raise StorageError(f"other bytes under the version key {key} too")
            if present is None:
                size, saved = put_verified(
                    self.spool,
                    self.store,
                    row,
                    method=self.recompress,
                    bucket=self.bucket,
                    prepared=self.ahead.take(row.id),
                )
        except _OUTAGES as exc:
            self._upload_failures += 1
            delay = self._delay(self._upload_failures)
            self.upload_blocked_until = self.clock() + delay
            self.spool.outbox.mark_failed([row], f"{type(exc).__name__}: {exc}", self.clock())
            self.spool.outbox.count(upload_failures=1)
            logger.warning(
                "object store unavailable, pausing uploads",
                extra={
                    "action": "upload_outage",
                    "retry_in": round(delay, 2),
                    "error": str(exc),
                    **log,
                },
            )
            return
        except Exception as exc:
            delay = self._delay(row.attempts + 1)
            self.spool.outbox.mark_failed(
                [row], f"{type(exc).__name__}: {exc}", self.clock() + delay
            )
            self.spool.outbox.count(upload_failures=1)
            logger.warning(
                "upload failed",
                extra={
                    "action": "upload_failed",
                    "retry_in": round(delay, 2),
                    "error": repr(exc)[:300],
                    **log,
                },
            )
            return
        self._upload_failures = 0
        self.spool.outbox.mark_uploaded(
            row.id, self.clock(), uploaded_bytes=size, saved_bytes=saved
        )
        self._uploaded.set()
        logger.debug("instance uploaded", extra={"action": "instance_uploaded", **log})

    # -- announcing ----------------------------------------------------------------------

    def _announcement(self, row: OutboxRow) -> dict[str, Any]:
        item = row.announcement()
        if self.include_dicom_json:
            try:
                with self.spool.open(row) as spooled:
                    header = spooled_header_json(spooled, item.get("patient_name", ""))
            except OSError:
                header = None
            if header is not None:
                item["dicom_json"] = header
        return item

    def announce(self, rows: list[OutboxRow]) -> None:
        head = rows[0]
        try:
            answer = self.county.announce(
                site=head.site,
                calling_ae=head.calling_ae,
                called_ae=head.called_ae,
                instances=[self._announcement(r) for r in rows],
            )
        except CountyUnavailable as exc:
            self.spool.outbox.count(announce_failures=1)
            self._announce_failures += 1
            delay = self._delay(self._announce_failures)
            self.announce_blocked_until = self.clock() + delay
            self.urgent_announce_at = self.clock() + self._delay(1)
            self.spool.outbox.mark_failed(rows, str(exc), self.clock())
            logger.warning(
                "county API unavailable, pausing announcements",
                extra={"action": "announce_outage", "retry_in": round(delay, 2), "error": str(exc)},
            )
            return
        except CountyRejected as exc:
            self.spool.outbox.count(announce_failures=1)
            if exc.status_code == 401:  # our credentials: not any row's fault
                self._announce_failures += 1
                self.announce_blocked_until = self.clock() + self._delay(self._announce_failures)
                # urgent rows too: each try is a log-in, and failed log-ins are rate-limited
                self.urgent_announce_at = self.announce_blocked_until
                self.spool.outbox.mark_failed(rows, str(exc), self.clock())
            elif len(rows) > 1:  # find the row(s) refused: one at a time
                for row in rows:
                    self.announce([row])
            else:
                delay = self._delay(head.attempts + 1)
                self.spool.outbox.mark_failed(rows, str(exc), self.clock() + delay)
            logger.warning(
                "county API refused the announcement",
                extra={
                    "action": "announce_refused",
                    "status": exc.status_code,
                    "site": head.site,
                    "sop_uids": [r.sop_instance_uid for r in rows][:20],
                    "error": str(exc)[:300],
                },
            )
            return
        self._announce_failures = 0
        self.announce_blocked_until = 0.0  # the county answered: the rest may follow
        held = {
            str(c.get("sop_instance_uid")): str(c.get("kind", ""))
            for c in answer.get("conflicts") or []
            if isinstance(c, dict)
        }
        # re-sends the county keeps beside the version it serves (its overwrite policy, or
        # older than that one): kept here too, listed as conflicts
        not_served = {
            str(r.get("object_key")): str(r.get("outcome"))
            for r in answer.get("resends") or []
            if isinstance(r, dict) and r.get("outcome") != "replaced"
        }
        kept = 0
        for row in rows:
            if row.sop_instance_uid in held:
                # the county holds it for an admin: kept here too, listed as a conflict
                kind = held[row.sop_instance_uid]
                self.spool.mark_state(row, CONFLICT, f"{COUNTY_HELD}{kind}")
                logger.warning(
                    "county held the instance as a conflict (not in the worklist)",
                    extra={
                        "action": "county_conflict",
                        "kind": kind,
                        "site": row.site,
                        "study_uid": row.study_instance_uid,
                        "sop_uid": row.sop_instance_uid,
                    },
                )
            elif row.object_key in not_served:
                outcome = not_served[row.object_key]
                kept += 1
                self.spool.mark_state(
                    row, CONFLICT, f"county kept the version it serves: {outcome}"
                )
                logger.warning(
                    "county kept the version it serves; this re-send is kept beside it",
                    extra={
                        "action": "county_resend_not_served",
                        "outcome": outcome,
                        "site": row.site,
                        "study_uid": row.study_instance_uid,
                        "sop_uid": row.sop_instance_uid,
                    },
                )
        if held or kept:
            self.spool.outbox.count(instances_held_by_county=len(held) + kept)
        rows = [
            r for r in rows if r.sop_instance_uid not in held and r.object_key not in not_served
        ]
        if not rows:
            return
        self.spool.mark_announced(rows, self.clock())
        if len(self._shown_urgent) > 10_000:
            self._shown_urgent.clear()
        self._shown_urgent.update(
            r.study_instance_uid for r in rows if r.priority_rank == URGENT_RANK
        )
        logger.info(
            "instances announced",
            extra={
                "action": "instances_announced",
                "site": head.site,
                "count": len(rows),
                "study_uids": sorted({r.study_instance_uid for r in rows}),
            },
        )
