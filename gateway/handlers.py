"""pynetdicom event handlers: plain functions, their dependencies passed as arguments; and
``IncomingStore``, one C-STORE's dataset on its way into the spool, which both paths feed
(``handle_store`` from pynetdicom's event, the fast path from the wire, ``gateway.scp``)."""

from __future__ import annotations

import hashlib
import logging
import mmap
import sqlite3
import ssl
import struct
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from gateway import status
from gateway.errors import InvalidInstance, SpoolError, SpoolFull
from gateway.instance import read_instance
from gateway.part10 import PREAMBLE, StoreMeta, encode_meta
from gateway.received import ReceivedInstance, StoreRequest, quick_instance
from gateway.sites import Sites
from gateway.spool import Spool
from worklist.triage import category_for_called_ae

logger = logging.getLogger(__name__)


def _calling_ae(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def _called_ae(event: Event) -> str:
    primitive: Any = event.assoc.requestor.primitive
    called = getattr(primitive, "called_ae_title", None) or event.assoc.acceptor.ae_title
    return str(called).strip()


def _peer_certificate_sha256(event: Event) -> str | None:
    """The SHA-256 of the DICOM TLS client certificate the peer presented (verified by the
    gateway's CA during the handshake), or None (plain connection, no certificate)."""
    raw = getattr(event.assoc.dul.socket, "socket", None)
    if not isinstance(raw, ssl.SSLSocket):
        return None
    try:
        der = raw.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    return hashlib.sha256(der).hexdigest() if der else None


def handle_association_request(
    event: Event,
    sites: Sites,
    called_aes: Collection[str] | None = None,
    refused: Callable[[dict[str, str]], None] | None = None,
) -> None:
    """EVT_REQUESTED: reject (permanent) a request to an AE title that is not ours
    (``called_aes``, upper case; None: any), from an unknown calling AE, or from a device
    its site does not have there (an address outside the site's networks without one of its
    certificates, or a certificate of another site; ``gateway.sites``). ``refused(what)`` is
    told each refusal (``gateway.outbox.REFUSAL_FIELDS``: counted, and reported to the
    county's audit trail)."""
    primitive: Any = event.assoc.requestor.primitive
    calling = str(getattr(primitive, "calling_ae_title", "")).strip()
    called = str(getattr(primitive, "called_ae_title", "")).strip()
    address = str(event.assoc.requestor.address)
    log: dict[str, str] = {"calling_ae": calling, "called_ae": called, "peer": address}
    if called_aes is not None and called.upper() not in called_aes:
        why = "called AE title not ours"
        _reject(event, status.REASON_CALLED_AE_NOT_RECOGNISED, why, log)
    elif (site := sites.site_for(calling)) is None:
        why = "unknown calling AE"
        _reject(event, status.REASON_CALLING_AE_NOT_RECOGNISED, why, log)
    else:
        certificate = _peer_certificate_sha256(event)
        refusal = sites.device_refusal(site, address=address, certificate_sha256=certificate)
        if refusal is None:
            return
        why = f"device: {refusal}"
        log.update(site=site, certificate_sha256=certificate or "")
        _reject(event, status.REASON_CALLING_AE_NOT_RECOGNISED, why, log)
    if refused is not None:
        refused({**log, "reason": why})


def _reject(event: Event, reason: int, why: str, log: dict[str, str]) -> None:
    logger.warning(
        f"association rejected: {why}",
        extra={"action": "association_rejected", "reason": why, **log},
    )
    event.assoc.acse.send_reject(status.REJECTED_PERMANENT, status.SOURCE_SERVICE_USER, reason)
    event.assoc.kill()  # as pynetdicom's own rejection does: lets the DUL send the A-ASSOCIATE-RJ


def handle_echo(event: Event) -> int:
    """C-ECHO: always success (the association itself was already allow-listed)."""
    return status.SUCCESS


def handle_store(
    event: Event,
    spool: Spool,
    sites: Sites,
    urgent_called_aes: Mapping[str, str] | None = None,
) -> int | Dataset:
    """C-STORE through pynetdicom's DIMSE layer: the dataset into ``begin_store``, from
    pynetdicom's buffer (which holds it whole: the stock path costs an instance's size in
    memory while it arrives; the fast path streams it, ``gateway.scp``), or from its
    temporary file if ``STORE_RECV_CHUNKED_DATASET`` is on. That setting stays off: with it,
    pynetdicom builds a file meta header from the request's UIDs in its DUL thread and dies
    on a malformed one instead of letting the handler refuse it. A refusal is answered with
    its Error Comment (``response``)."""
    request: Any = event.request
    store = StoreRequest(
        calling_ae=_calling_ae(event),
        called_ae=_called_ae(event),
        sop_class_uid=str(request.AffectedSOPClassUID or ""),
        sop_instance_uid=str(getattr(request, "AffectedSOPInstanceUID", "") or ""),
        transfer_syntax=str(event.context.transfer_syntax),
    )
    incoming = begin_store(store, spool, sites, urgent_called_aes)
    try:
        chunked: Path | None = event.dataset_path
    except AttributeError:
        chunked = None
    try:
        if chunked is None:
            with request.DataSet.getbuffer() as dataset:  # the received bytes, not a copy
                incoming.write(dataset)
                return response(incoming.finish(), incoming.error_comment)  # view still valid
        with open(chunked, "rb") as part10:
            part10.seek(_dataset_offset(part10))
            while chunk := part10.read(CHUNK_BYTES):
                incoming.write(chunk)
    except BaseException:
        incoming.abandon()
        raise
    return response(incoming.finish(), incoming.error_comment)


def response(code: int, comment: str) -> int | Dataset:
    """A C-STORE handler's answer: the status alone, or with its Error Comment."""
    if not comment:
        return code
    answer = Dataset()
    answer.Status = code
    answer.ErrorComment = comment
    return answer


CHUNK_BYTES = 1 << 20
# a dataset is kept in memory up to this size, then streamed to a file in the spool
SPILL_BYTES = 4 << 20


def _dataset_offset(part10: BinaryIO) -> int:
    """Where the dataset starts in a Part-10 file (after its File Meta group)."""
    head = part10.read(144)
    if len(head) < 144 or head[128:132] != b"DICM":
        raise InvalidInstance("not a Part-10 file")
    return 144 + struct.unpack_from("<L", head, 140)[0]


def begin_store(
    request: StoreRequest,
    spool: Spool,
    sites: Sites,
    urgent_called_aes: Mapping[str, str] | None = None,
) -> IncomingStore:
    """Start receiving one C-STORE's dataset (then ``write`` it as it arrives, ``finish``)."""
    return IncomingStore(request, spool, sites, dict(urgent_called_aes or {}))


class IncomingStore:
    """One C-STORE's dataset as it arrives: hashed as it comes, kept in memory up to
    ``SPILL_BYTES`` and beyond that streamed to a temporary file in the spool behind the
    gateway's file meta header, so a large instance never sits whole in memory.

    ``finish()`` spools it as received and returns the DIMSE status: SUCCESS only once it is
    durable; after a failure ``error_comment`` holds the reason (the response's Error
    Comment). Re-sent identical instances are a no-op SUCCESS; different bytes under a known
    SOP Instance UID (a corrected re-send) are spooled and forwarded as a new version beside
    the first (never over it), and the county's re-send policy decides which version it
    serves (``worklist.resends``). An instance kept but not simply filed, as far as the
    spool knows at this moment, is answered the warning STORED_BUT_HELD with the reason as
    Error Comment (a warning: it is kept, and the modality must not keep retrying): a
    re-send of an instance the county held or did not serve, a study UID another site
    sent first (through this gateway, or held by the county for an earlier instance of the
    study), or another patient than the study's first instance received here. What only the
    county finds out (the first instance of a squatted study, a patient mismatch with
    instances that came another way, a SOP Instance UID filed elsewhere) reaches the modality
    as SUCCESS and is listed by ``teleread gateway status``. ``abandon()``: the association ended
    mid-message."""

    def __init__(
        self,
        request: StoreRequest,
        spool: Spool,
        sites: Sites,
        urgent_called_aes: dict[str, str],
    ) -> None:
        self.request = request
        self._spool = spool
        self._urgent = urgent_called_aes
        self._sha = hashlib.sha256()
        self._size = 0
        self._parts: list[bytes | bytearray | memoryview] = []
        self._temp: Path | None = None
        self._file: BinaryIO | None = None
        self._refusal: InvalidInstance | None = None
        self.error_comment = ""
        self._log: dict[str, Any] = {
            "calling_ae": request.calling_ae,
            "called_ae": request.called_ae,
            "sop_uid": request.sop_instance_uid,
        }
        self.site = sites.site_for(request.calling_ae)
        self._meta = StoreMeta(
            request.sop_class_uid, request.sop_instance_uid, request.transfer_syntax
        )
        self._prefix = b""
        if self.site is not None:
            explicit = category_for_called_ae(request.called_ae, self._urgent)
            try:
                self._prefix = PREAMBLE + encode_meta(
                    self._meta,
                    calling_ae=request.calling_ae,
                    called_ae=request.called_ae,
                    spool_info={"site": self.site, "category": explicit},
                )
            except InvalidInstance as exc:
                self._refusal = exc

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """The next bytes of the dataset (kept as given until spilled: do not reuse them)."""
        self._sha.update(data)
        self._size += len(data)
        if self.site is None or self._refusal is not None:
            return  # refused: read to the end, answered by finish()
        if self._file is not None:
            self._file.write(data)
            return
        self._parts.append(data)
        if self._size > SPILL_BYTES:
            self._temp, self._file = self._spool.open_temp()
            self._file.write(self._prefix)
            for part in self._parts:
                self._file.write(part)
            self._parts.clear()

    def abandon(self) -> None:
        self._parts.clear()
        if self._file is not None:
            self._file.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)

    def _refuse(self, code: int, reason: str) -> int:
        self.error_comment = status.error_comment(reason)
        return code

    def finish(self) -> int:
        log = self._log
        if self.site is None:
            logger.warning(
                "C-STORE from an AE no longer allowed", extra={"action": "store_refused", **log}
            )
            return self._refuse(
                status.REFUSED_NOT_AUTHORISED, f"calling AE {self.request.calling_ae} not allowed"
            )
        try:
            if self._refusal is not None:
                raise self._refusal
            outcome, row_id, inst = self._spool_it()
            log.update(study_uid=inst.study_instance_uid, series_uid=inst.series_instance_uid)
        except InvalidInstance as exc:
            logger.warning(
                "malformed dataset refused",
                extra={"action": "store_malformed", "error": str(exc), "status": exc.status, **log},
            )
            return self._refuse(exc.status, str(exc))
        except SpoolFull as exc:
            logger.error(
                "spool full, instance refused",
                extra={"action": "store_spool_full", "error": str(exc), **log},
            )
            return self._refuse(status.OUT_OF_RESOURCES, "gateway spool full: send again later")
        except (SpoolError, OSError) as exc:
            logger.error(
                "spool write failed",
                extra={"action": "store_spool_error", "error": str(exc), **log},
            )
            return self._refuse(
                status.OUT_OF_RESOURCES, "gateway could not write the instance: send again later"
            )
        except Exception as exc:  # never let one instance take the association down
            logger.exception(
                "C-STORE failed", extra={"action": "store_failed", "error": repr(exc)[:300], **log}
            )
            return self._refuse(status.PROCESSING_FAILURE, f"gateway failure: {type(exc).__name__}")
        finally:
            self.abandon()  # whatever is left: the parts, a temp file not placed
        held = self._held(row_id, inst.study_instance_uid)
        level = logging.WARNING if held else logging.INFO if outcome == "resent" else logging.DEBUG
        logger.log(
            level,
            f"instance {outcome}" + (f" ({held})" if held else ""),
            extra={
                "action": f"instance_{outcome}",
                "row_id": row_id,
                "site": self.site,
                "held": held,
                **log,
            },
        )
        if held:  # kept, but the modality hears that it will not simply be filed
            self._spool.outbox.count(instances_answered_held=1)
            self.error_comment = status.error_comment(held)
            return status.STORED_BUT_HELD
        return status.SUCCESS

    def _held(self, row_id: int, study_uid: str) -> str:
        """Why the durable instance will not simply be filed, as far as the spool knows now
        (``""``: nothing known; the county may still hold it, ``docs/contracts.md``)."""
        assert self.site is not None
        try:
            return self._spool.outbox.held_reason(row_id, study_uid=study_uid, site=self.site)
        except sqlite3.Error as exc:  # durable already: never fail the answer for this
            logger.warning(
                "held check failed", extra={"action": "held_check_failed", "error": str(exc)}
            )
            return ""

    def _spool_it(self) -> tuple[str, int, ReceivedInstance]:
        """Check the dataset (the UIDs and its structure now; the header's text and triage
        after the response: the forwarder reads the spooled file; anything unusual: parsed
        now) and make it durable."""
        sha = self._sha.hexdigest()
        args: dict[str, Any] = {
            "site": self.site,
            "calling_ae": self.request.calling_ae,
            "called_ae": self.request.called_ae,
            "urgent_called_aes": self._urgent,
        }
        offset = len(self._prefix)
        if self._file is None:
            data = b"".join((self._prefix, *self._parts))
            self._parts.clear()
            inst = quick_instance(memoryview(data)[offset:], self._meta, **args)
            if inst is None:
                inst = read_instance(data, self._meta, **args)
            outcome, row_id = self._spool.store(
                inst, data, dataset_offset=offset, dataset_sha256=sha
            )
            return outcome, row_id, inst
        assert self._temp is not None
        self._file.close()
        self._file = None
        with open(self._temp, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = memoryview(m)
            try:
                inst = quick_instance(view[offset:], self._meta, **args)
                if inst is None:
                    inst = read_instance(view, self._meta, **args)
            finally:
                view.release()
        outcome, row_id = self._spool.store_file(
            inst, self._temp, size=offset + self._size, dataset_offset=offset, dataset_sha256=sha
        )
        return outcome, row_id, inst


__all__ = [
    "IncomingStore",
    "begin_store",
    "handle_association_request",
    "handle_echo",
    "handle_store",
    "response",
]
