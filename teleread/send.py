"""A small C-STORE SCU for admins testing a link: send files and folders as they are.

Each file goes out in its own transfer syntax, its dataset bytes as they are on disk (never
decoded), over presentation contexts built from the files' (SOP class, transfer syntax)
pairs, at most 128 per association (more files open more associations). Nothing is printed
here: progress goes through the ``progress`` callback.

Every response is counted. pynetdicom's ``Association.send_c_store`` loses about one
C-STORE response in a thousand: it pauses the association's reactor thread by clearing an
event and waiting for a flag the reactor may not yet have reset since the previous request,
so the reactor can take the response off the queue first, discard it as "unexpected", and
leave the sender waiting out its DIMSE timeout before aborting the association. Here a
request goes out with ``assoc.dimse.send_msg`` and its response is caught by an
``EVT_DIMSE_RECV`` handler, which pynetdicom calls in its network thread for every complete
message before any queue: nothing can take it first. (The reactor still sees each response
and drops it; its "unexpected" warning is filtered out while we send.)
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset
from pynetdicom.presentation import PresentationContext, build_context

logger = logging.getLogger(__name__)

# DIMSE C-STORE statuses (PS3.4 B.2.3, PS3.7 C)
SUCCESS = 0x0000
WARNING_COERCION_OF_DATA_ELEMENTS = 0xB000
WARNING_ELEMENTS_DISCARDED = 0xB006
WARNING_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xB007
WARNINGS = frozenset(
    {
        WARNING_COERCION_OF_DATA_ELEMENTS,
        WARNING_ELEMENTS_DISCARDED,
        WARNING_DATASET_DOES_NOT_MATCH_SOP_CLASS,
    }
)

MAX_CONTEXTS = 128  # presentation context IDs are odd numbers 1..255
C_STORE_RSP = 0x8001  # (0000,0100) Command Field of a C-STORE response (PS3.7 E.1)
PRIORITY_MEDIUM = 0x0000  # (0000,0700) Priority (PS3.7 C.4.1.1.3)
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: not an instance to store

ProgressCallback = Callable[[int, int, int], None]


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file: ``status`` is the peer's DIMSE status, None if not sent."""

    path: Path
    size: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    status: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and (self.status == SUCCESS or self.status in WARNINGS)


@dataclass
class SendResult:
    """Per-file outcomes plus totals; ``skipped`` lists files that are not DICOM instances."""

    files: list[FileOutcome] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    associations: int = 0
    elapsed: float = 0.0

    @property
    def sent(self) -> int:
        return sum(1 for f in self.files if f.ok)

    @property
    def failed(self) -> int:
        return sum(1 for f in self.files if not f.ok)

    @property
    def bytes_sent(self) -> int:
        return sum(f.size for f in self.files if f.ok)

    @property
    def instances_per_second(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes_sent / 1e6 / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"sent {self.sent}, failed {self.failed}, skipped {len(self.skipped)}; "
            f"{self.bytes_sent / 1e6:.1f} MB in {self.elapsed:.2f} s "
            f"({self.instances_per_second:.1f} instances/s, {self.mb_per_second:.1f} MB/s) "
            f"over {self.associations} association(s)"
        ]
        lines.extend(f"error: {e}" for e in self.errors)
        for f in self.files:
            if not f.ok:
                status = "no status" if f.status is None else f"status 0x{f.status:04X}"
                lines.append(f"failed: {f.path} ({status}) {f.error}".rstrip())
        lines.extend(f"skipped: {p} ({why})" for p, why in self.skipped)
        return "\n".join(lines)


def format_progress(
    done: int, total: int, nbytes: int, *, elapsed: float | None = None, width: int = 30
) -> str:
    """A one-line text progress bar, e.g. ``[#######.......]  12/40  6.3 MB``."""
    filled = width if total <= 0 else min(width, width * done // total)
    text = f"[{'#' * filled}{'.' * (width - filled)}] {done:>{len(str(total))}}/{total}"
    text += f"  {nbytes / 1e6:.1f} MB"
    if elapsed and elapsed > 0:
        text += f"  {done / elapsed:.1f} inst/s  {nbytes / 1e6 / elapsed:.1f} MB/s"
    return text


def gather_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Files named directly, and every file under a named folder (sorted, recursive)."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _inspect(path: Path) -> FileOutcome | str:
    """The file's SOP class/instance and transfer syntax from its meta header, or why not."""
    try:
        size = path.stat().st_size
        meta = read_file_meta_info(path)
    except FileNotFoundError:
        return "no such file"
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return f"not a DICOM Part-10 file: {exc}"
    sop_class, sop_instance, syntax = (
        str(meta.get(kw, "")).strip()
        for kw in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
    )
    if not (sop_class and sop_instance and syntax):
        return "file meta lacks SOP class, SOP instance or transfer syntax UID"
    if sop_class == MEDIA_STORAGE_DIRECTORY:
        return "DICOMDIR"
    return FileOutcome(path, size, sop_class, sop_instance, syntax)


def _batches(items: list[FileOutcome], max_contexts: int) -> Iterator[list[FileOutcome]]:
    """Consecutive runs of files needing at most ``max_contexts`` distinct contexts."""
    batch: list[FileOutcome] = []
    pairs: set[tuple[str, str]] = set()
    for item in items:
        pair = (item.sop_class_uid, item.transfer_syntax_uid)
        if pair not in pairs and len(pairs) == max_contexts:
            yield batch
            batch, pairs = [], set()
        pairs.add(pair)
        batch.append(item)
    if batch:
        yield batch


class _Responses:
    """C-STORE responses of one association, caught as pynetdicom's network thread decodes
    them (``EVT_DIMSE_RECV``), by the message ID they answer."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[int, int, str]] = queue.Queue()

    def on_dimse_recv(self, event: Any) -> None:
        command = event.message.command_set
        if command.get("CommandField") != C_STORE_RSP:
            return
        comment = str(command.get("ErrorComment", "") or "")
        self._queue.put((int(command.MessageIDBeingRespondedTo), int(command.Status), comment))

    def wait(self, assoc: Association, msg_id: int, timeout: float) -> tuple[int, str] | None:
        """The (status, error comment) answering ``msg_id``; None when the association ends
        or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                answered, status, comment = self._queue.get(timeout=min(left, 0.05))
            except queue.Empty:
                if not assoc.is_established and self._queue.empty():
                    return None
                continue
            if answered == msg_id:
                return status, comment
            # an answer to an earlier request we stopped waiting for: not ours


class _DropStolenResponse(logging.Filter):
    """pynetdicom's reactor thread also sees each response and drops it with a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Received unexpected C-STORE")


@contextmanager
def _quiet_reactor() -> Iterator[None]:
    target = logging.getLogger("pynetdicom.association")
    dropper = _DropStolenResponse()
    target.addFilter(dropper)
    try:
        yield
    finally:
        target.removeFilter(dropper)


def client_tls_context(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A DICOM TLS client context: TLS 1.2 or later, the server's certificate checked
    against ``ca`` (or the system CAs), our certificate (``cert``, ``key``) when the peer
    asks for one. The server name is not checked: DICOM peers are addressed by IP address
    and AE title, and a township's gateway certificate is issued by the county's own CA."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def _associate(
    ae: AE,
    batch: list[FileOutcome],
    host: str,
    port: int,
    called_aet: str,
    responses: _Responses,
    tls: ssl.SSLContext | None = None,
) -> tuple[Association, str]:
    pairs = sorted({(f.sop_class_uid, f.transfer_syntax_uid) for f in batch})
    contexts: list[PresentationContext] = [build_context(a, [t]) for a, t in pairs]
    seen: dict[str, str] = {}

    def on_open(event: Any) -> None:
        seen["connected"] = "yes"
        _no_delay(event.assoc)

    def on_acse(event: Any) -> None:
        primitive = event.primitive
        result = getattr(primitive, "result", None)
        if result == 0x00:
            seen["accepted"] = "yes"
        elif result in (0x01, 0x02):
            seen["rejection"] = (
                f"{primitive.result_str}, {primitive.source_str}: {primitive.reason_str}"
            )

    assoc = ae.associate(
        host,
        port,
        contexts=contexts,
        ae_title=called_aet,
        evt_handlers=[
            (evt.EVT_CONN_OPEN, on_open),
            (evt.EVT_ACSE_RECV, on_acse),
            (evt.EVT_DIMSE_RECV, responses.on_dimse_recv),
        ],
        tls_args=(tls, host) if tls is not None else None,
    )
    if assoc.is_established:
        return assoc, ""
    where = f"{called_aet}@{host}:{port}"
    if "connected" not in seen:
        return assoc, f"could not connect to {where}: connection refused, unreachable or timed out"
    if assoc.is_rejected:
        return assoc, f"association rejected by {where} ({seen.get('rejection', 'no reason')})"
    if "accepted" in seen:
        return assoc, f"{where} accepted none of the {len(contexts)} presentation context(s)"
    return assoc, f"association with {where} failed: aborted, or no answer in time"


def _no_delay(assoc: Association) -> None:
    """Turn off Nagle: a C-STORE is a small command PDU then the data, and waiting for the
    peer's delayed ACK costs ~40 ms per instance."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _accepted(assoc: Association) -> dict[tuple[str, str], int]:
    """Accepted (SOP class, transfer syntax) -> presentation context ID."""
    return {
        (str(cx.abstract_syntax), str(cx.transfer_syntax[0])): int(cx.context_id)
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax and cx.transfer_syntax and cx.context_id is not None
    }


def _store(
    assoc: Association,
    item: FileOutcome,
    *,
    context_id: int,
    msg_id: int,
    responses: _Responses,
    dimse_timeout: float,
) -> FileOutcome:
    try:
        _meta, offset = split_dataset(item.path)
        with item.path.open("rb") as fh:
            fh.seek(offset)
            dataset = fh.read()
    except (OSError, ValueError, AttributeError) as exc:
        return replace(item, error=f"cannot read the file: {exc}")
    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = PRIORITY_MEDIUM
    req.AffectedSOPClassUID = item.sop_class_uid
    req.AffectedSOPInstanceUID = item.sop_instance_uid
    req.DataSet = BytesIO(dataset)
    try:
        assoc.dimse.send_msg(req, context_id)
    except (OSError, RuntimeError) as exc:
        return replace(item, error=str(exc))
    answer = responses.wait(assoc, msg_id, dimse_timeout)
    if answer is None:
        if assoc.is_established:  # no answer in time: the association is no longer usable
            assoc.abort()
        return replace(item, error="no response (timeout or abort)")
    status, comment = answer
    return replace(item, status=status, error=comment)


def send_paths(
    paths: Sequence[Path],
    *,
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str,
    progress: ProgressCallback | None = None,
    max_contexts: int = MAX_CONTEXTS,
    timeout: float = 10.0,
    dimse_timeout: float = 60.0,
    tls: ssl.SSLContext | None = None,
) -> SendResult:
    """C-STORE every DICOM file in ``paths`` (folders recursively) to ``called_aet``.

    ``progress(done, total, bytes_sent)`` is called once before sending and after each file.
    ``timeout`` bounds the TCP connect and the association negotiation, ``dimse_timeout``
    the wait for each C-STORE response. ``tls`` (``client_tls_context``): DICOM TLS.
    Never raises for network trouble: problems land in the result's ``errors`` and per-file
    outcomes.
    """
    started = time.monotonic()
    result = SendResult()
    todo: list[FileOutcome] = []
    for path in gather_files(paths):
        found = _inspect(path)
        if isinstance(found, str):
            result.skipped.append((path, found))
        else:
            todo.append(found)
    total = len(todo)
    if progress:
        progress(0, total, 0)

    nbytes = 0

    def record(outcome: FileOutcome) -> None:
        nonlocal nbytes
        result.files.append(outcome)
        nbytes += outcome.size if outcome.ok else 0
        if progress:
            progress(len(result.files), total, nbytes)

    ae = AE(ae_title=calling_aet)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = dimse_timeout
    ae.network_timeout = dimse_timeout
    max_contexts = max(1, min(max_contexts, MAX_CONTEXTS))

    with _quiet_reactor():
        for batch in _batches(todo, max_contexts):
            if result.errors:  # the link is down or refused: do not retry for every batch
                for item in batch:
                    record(replace(item, error="not sent"))
            else:
                _send_batch(ae, batch, host, port, called_aet, result, record, tls, dimse_timeout)
    result.elapsed = time.monotonic() - started
    logger.info(
        "send finished",
        extra={
            "action": "send_finished",
            "sent": result.sent,
            "failed": result.failed,
            "associations": result.associations,
        },
    )
    return result


def _send_batch(
    ae: AE,
    batch: list[FileOutcome],
    host: str,
    port: int,
    called_aet: str,
    result: SendResult,
    record: Callable[[FileOutcome], None],
    tls: ssl.SSLContext | None,
    dimse_timeout: float,
) -> None:
    responses = _Responses()
    assoc, error = _associate(ae, batch, host, port, called_aet, responses, tls)
    if error:
        logger.warning(error, extra={"action": "send_association_failed"})
        result.errors.append(error)
        for item in batch:
            record(replace(item, error=error))
        return
    result.associations += 1
    accepted = _accepted(assoc)
    try:
        for i, item in enumerate(batch):
            if not assoc.is_established:
                record(replace(item, error="association ended before this file was sent"))
            elif (item.sop_class_uid, item.transfer_syntax_uid) not in accepted:
                error = (
                    f"peer accepted no presentation context for SOP class "
                    f"{item.sop_class_uid} in transfer syntax {item.transfer_syntax_uid}"
                )
                record(replace(item, error=error))
            else:
                outcome = _store(
                    assoc,
                    item,
                    context_id=accepted[item.sop_class_uid, item.transfer_syntax_uid],
                    msg_id=i % 65535 + 1,
                    responses=responses,
                    dimse_timeout=dimse_timeout,
                )
                if not outcome.ok:
                    logger.warning(
                        "C-STORE failed",
                        extra={
                            "action": "send_failed",
                            "sop_instance_uid": item.sop_instance_uid,
                            "status": outcome.status,
                        },
                    )
                record(outcome)
    finally:
        if assoc.is_established:
            assoc.release()
