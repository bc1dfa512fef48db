"""pynetdicom 3.0.4's acceptor without its polling sleeps: the one patch of its internals.

Why: pynetdicom runs each association as two threads that poll. The DUL thread sleeps 1 ms
whenever its socket and its queue are empty; the association thread sleeps 1 ms before each
look at its DIMSE queue. A C-STORE from a modality is strictly request -> response, so every
instance pays those sleeps three times (DUL picks up the first PDU, the association picks up
the complete message, the DUL picks up the response), and the C-STORE-RSP is encoded through
pydicom's dataset writer. Measured with a no-op handler, dcmtk ``storescu`` sending 300
512x512 CT slices on loopback: ~280 instances/s stock, ~330-500/s with this module (see
``bench/ingest.py`` for the gateway figures).

What changes (nothing else): the DUL thread waits in ``select`` on its socket plus a wake-up
socketpair (written by ``send_pdu`` / ``kill_dul``); the association thread waits on an
``Event`` set whenever the DUL hands it something (DIMSE message queue, ACSE primitives), the
DUL ends or the association is killed. Both still wake every ``POLL_SECONDS`` for the timers
pynetdicom checks by polling (ARTIM, network idle timeout), so idle CPU is lower than stock
(50 wake-ups/s instead of 1,000). A C-STORE-RSP without optional fields is encoded by hand
(the same bytes; ``tests/unit/test_gateway_fastassoc.py`` compares them) when no
``EVT_DIMSE_SENT`` handler wants the message object.

The copies of ``DULServiceProvider.run_reactor`` and ``Association._run_reactor`` below are
pynetdicom 3.0.4's, sleeps replaced; ``PYNETDICOM_VERSION`` is checked at import and by the
unit test, so an upgrade fails loudly instead of running stale copies.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from copy import deepcopy
from datetime import datetime
from typing import Any, cast

import pynetdicom
from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler

PYNETDICOM_VERSION = "3.0.4"
if pynetdicom.__version__ != PYNETDICOM_VERSION:  # pragma: no cover - guarded by a test too
    raise ImportError(
        f"gateway.fastassoc copies pynetdicom {PYNETDICOM_VERSION} internals; "
        f"found {pynetdicom.__version__}: re-check the copies or drop the module"
    )

POLL_SECONDS = 0.02
_DUL_LOGGER = logging.getLogger("pynetdicom.dul")
_ASSOC_LOGGER = logging.getLogger("pynetdicom.assoc")


class _SignallingQueue(queue.Queue[Any]):
    """A queue that sets ``activity`` whenever something is put in it."""

    def __init__(self, activity: threading.Event) -> None:
        super().__init__()
        self._activity = activity

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._activity.set()


class _FastDUL(DULServiceProvider):
    def __init__(self, assoc: Association, activity: threading.Event) -> None:
        super().__init__(assoc)
        self._activity = activity
        self.to_user_queue = _SignallingQueue(activity)
        # socket objects, not raw fds: a write after close raises instead of hitting a
        # reused descriptor
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # already awake (buffer full) or ended

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def _wait(self) -> None:
        """Block until the peer sent data, a primitive was queued, or POLL_SECONDS."""
        waiting: list[Any] = [self._wake_r]
        assoc_sock = self.socket
        sock = assoc_sock.socket if assoc_sock is not None else None
        if sock is not None and assoc_sock is not None and assoc_sock._is_connected:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return  # TLS-buffered bytes select() cannot see
            waiting.append(sock)
        try:
            readable, _, _ = select.select(waiting, [], [], POLL_SECONDS)
        except (OSError, ValueError):  # socket closed under us: the reactor notices
            time.sleep(self._run_loop_delay)
            return
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass

    def run_reactor(self) -> None:
        try:
            self._reactor()
        finally:
            self._activity.set()  # the association thread checks dul.is_alive()
            self._wake_r.close()
            self._wake_w.close()

    def _reactor(self) -> None:
        # pynetdicom 3.0.4 DULServiceProvider.run_reactor, time.sleep -> self._wait()
        self._idle_timer.start()
        self.socket = cast(AssociationSocket, self.socket)
        sleep = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True
            if sleep:
                self._wait()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                _DUL_LOGGER.error("Exception in DUL.run(), aborting association")
                _DUL_LOGGER.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            self.state_machine.do_action(event)
            sleep = False


def _element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _uid_value(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def encode_c_store_rsp(sop_class: str, message_id: int, status: int, sop_instance: str) -> bytes:
    """A C-STORE-RSP command set, Implicit VR Little Endian, as pynetdicom encodes it."""
    body = b"".join(
        (
            _element(0x00000002, _uid_value(sop_class)),
            _element(0x00000100, struct.pack("<H", 0x8001)),
            _element(0x00000120, struct.pack("<H", message_id)),
            _element(0x00000800, struct.pack("<H", 0x0101)),
            _element(0x00000900, struct.pack("<H", status)),
            _element(0x00001000, _uid_value(sop_instance)),
        )
    )
    return _element(0x00000000, struct.pack("<I", len(body))) + body


_RSP_OPTIONAL = ("ErrorComment", "OffendingElement", "MessageID")


class _FastDIMSE(DIMSEServiceProvider):
    def send_msg(self, primitive: Any, context_id: int) -> None:
        if (
            type(primitive) is C_STORE
            and primitive.MessageIDBeingRespondedTo is not None
            and primitive.Status is not None
            and primitive.AffectedSOPClassUID
            and primitive.AffectedSOPInstanceUID
            and not any(getattr(primitive, name, None) for name in _RSP_OPTIONAL[:2])
            and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
        ):
            command = encode_c_store_rsp(
                str(primitive.AffectedSOPClassUID),
                int(primitive.MessageIDBeingRespondedTo),
                int(primitive.Status),
                str(primitive.AffectedSOPInstanceUID),
            )
            max_pdu = self.maximum_pdu_size
            if not max_pdu or len(command) + 6 <= max_pdu:
                pdata = P_DATA()
                pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)


class FastAssociation(Association):
    """An acceptor association whose threads wait for work instead of polling."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._activity = threading.Event()
        self.dul = _FastDUL(self, self._activity)
        self.dimse = _FastDIMSE(self)
        self.dimse.msg_queue = _SignallingQueue(self._activity)

    def kill(self) -> None:
        self._activity.set()
        super().kill()

    def _serve_request(self, msg: Any, context_id: int) -> None:
        # pynetdicom ignores a request missing a required field (an empty Affected SOP
        # Instance UID, say) and answers nothing, so the sender hangs until a timeout while
        # holding an association; abort instead, at once
        if not self._sent_release and not msg.is_valid_request:
            _ASSOC_LOGGER.warning(
                "invalid DIMSE request; association aborted",
                extra={"action": "dimse_invalid_request", "msg_type": msg.msg_type},
            )
            self.abort()
            return
        super()._serve_request(msg, context_id)

    def _run_reactor(self) -> None:
        # pynetdicom 3.0.4 Association._run_reactor, time.sleep(0.001) -> activity wait
        self._is_paused = False
        activity = self._activity
        while not self._kill:
            activity.wait(POLL_SECONDS)
            activity.clear()
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                activity.set()  # look again at once: more may have queued meanwhile
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                _ASSOC_LOGGER.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                _ASSOC_LOGGER.info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                _ASSOC_LOGGER.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class FastRequestHandler(RequestHandler):
    """``RequestHandler`` building a ``FastAssociation`` (pynetdicom 3.0.4's
    ``_create_association`` with the class swapped)."""

    def _create_association(self) -> Association:
        assoc = FastAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(AssociationSocket(assoc, client_socket=self.request))
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)
        assoc.requestor.address_info = self.remote
        handlers: Any = self.server._handlers
        for event in handlers:
            if event.is_intervention and handlers[event]:
                assoc.bind(event, *handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in handlers[event]:
                    assoc.bind(event, handler[0], handler[1])
        return assoc


__all__ = ["POLL_SECONDS", "FastAssociation", "FastRequestHandler", "encode_c_store_rsp"]
