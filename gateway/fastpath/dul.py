"""The DUL thread of a fast-path association (``gateway.fastpath.assoc``): pynetdicom 3.0.4's
reactor waiting on its socket instead of polling, and P-DATA-TF PDUs of an established
association routed through ``gateway.fastpath.pdata``, whose plain C-STORE requests are stored
and answered here, in this thread. The copies of ``DULServiceProvider.run_reactor`` and
``_read_pdu_data`` are pynetdicom 3.0.4's (``gateway.fastpath.VERIFIED_PYNETDICOM``; the unit
test pins their sources and every private name used here).
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
from typing import Any, cast

from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import InvalidEventError
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class
from pynetdicom.transport import AssociationSocket

from gateway.fastpath import FastStore, Receiving, pdata
from gateway.fastpath.pdata import CompleteStore, MessageReader, StoreCommand, encode_c_store_rsp
from gateway.received import StoreRequest
from gateway.transport import abort_connection

POLL_SECONDS = 0.02
# anyone bound to these sees PDUs or DIMSE messages, which the fast C-STORE path skips
_WATCHERS = (
    evt.EVT_DATA_RECV,
    evt.EVT_PDU_RECV,
    evt.EVT_DIMSE_RECV,
    evt.EVT_DIMSE_SENT,
    evt.EVT_PDU_SENT,
)
_DUL_LOGGER = logging.getLogger("pynetdicom.dul")
_ASSOC_LOGGER = logging.getLogger("pynetdicom.assoc")
# the DUL states in which the transport is closing or closed (PS3.8 9.2: Sta13 awaits the
# peer's close after an A-ABORT; Sta1 is idle)
CLOSING_STATES = frozenset({"Sta13", "Sta1"})


class SignallingQueue(queue.Queue[Any]):
    """A queue that sets ``activity`` whenever something is put in it."""

    def __init__(self, activity: threading.Event) -> None:
        super().__init__()
        self._activity = activity

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._activity.set()


class FastDUL(DULServiceProvider):
    def __init__(
        self, assoc: Association, activity: threading.Event, fast_store: FastStore | None
    ) -> None:
        super().__init__(assoc)
        self._activity = activity
        self._fast_store = fast_store
        self.to_user_queue = SignallingQueue(activity)
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

    # -- the fast C-STORE path (gateway.fastpath.pdata) ---------------------------------

    _reader: MessageReader | None = None
    fast_stores = 0  # C-STORE requests this association answered on the fast path

    def _read_pdu_data(self) -> None:
        """Read a PDU; P-DATA-TF goes through ``pdata.MessageReader`` while the association is
        established. The rest of a message the fast path has taken is read here too, PDU
        after PDU, without a trip through the reactor (its select and queue checks) each."""
        while True:
            bytestream = self._read_pdu()
            if bytestream is None:
                return
            if bytestream[0] != pdata.P_DATA_TF:
                self._hand_over(bytestream)
                return
            if self._reader is None:
                self._reader = MessageReader(self._may_store_fast, self._open_store)
            try:
                routed = self._reader.take(bytestream)
            except pdata.ProtocolError as exc:
                _DUL_LOGGER.warning(
                    "DIMSE message refused; association aborted",
                    extra={"action": "dimse_message_refused", "error": str(exc)},
                )
                self._drop_connection()
                return
            for item in routed:
                if isinstance(item, CompleteStore):
                    self._store(item)
                else:
                    self._hand_over(item)
            if not self._reader.inside_fast_message or self._kill_thread:
                return
            self._idle_timer.restart()

    def _read_pdu(self) -> bytearray | None:
        # pynetdicom 3.0.4 DULServiceProvider._read_pdu_data up to the decoding; None: the
        # event for what went wrong is queued
        bytestream = bytearray()
        self.socket = cast(AssociationSocket, self.socket)
        try:
            bytestream.extend(self.socket.recv(6))
        except (OSError, TimeoutError) as exc:
            _DUL_LOGGER.error("Connection closed before the entire PDU was received")
            _DUL_LOGGER.exception(exc)
            self.event_queue.put("Evt17")
            return None
        try:
            pdu_type, _, pdu_length = struct.unpack(">BBL", bytestream)
        except struct.error:
            self.event_queue.put("Evt17")
            return None
        if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
            _DUL_LOGGER.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
            self.event_queue.put("Evt19")
            return None
        try:
            bytestream += self.socket.recv(pdu_length)
        except (OSError, TimeoutError) as exc:
            _DUL_LOGGER.error("Connection closed before the entire PDU was received")
            _DUL_LOGGER.exception(exc)
            self.event_queue.put("Evt17")
            return None
        if len(bytestream) != 6 + pdu_length:
            _DUL_LOGGER.error(
                f"The received PDU is shorter than expected ({len(bytestream)} of "
                f"{6 + pdu_length} bytes received)"
            )
            self.event_queue.put("Evt17")
            return None
        return bytestream

    def _drop_connection(self) -> None:
        """A-ABORT (service provider, invalid PDU parameter) and close: the state machine
        sees the transport close (Evt17), as for a PDU the transport guard refuses."""
        sock = cast(AssociationSocket, self.socket).socket
        if sock is not None:
            abort_connection(sock)
        self.event_queue.put("Evt17")

    def _hand_over(self, bytestream: bytearray) -> None:
        """Give one received PDU to pynetdicom (the rest of ``_read_pdu_data``)."""
        try:
            pdu, event = self._decode_pdu(bytestream)
            self.event_queue.put(event)
        except Exception as exc:
            _DUL_LOGGER.error("Unable to decode the received PDU data")
            _DUL_LOGGER.exception(exc)
            self.event_queue.put("Evt19")
            return
        self._recv_pdu.put(pdu)

    def _may_store_fast(self, command: StoreCommand) -> bool:
        """The fast path takes this C-STORE-RQ: pynetdicom would hand it, as it is, to the
        storage service's ``EVT_C_STORE`` handler, which is the ``FastStore``'s handler, and
        nobody watches PDUs or DIMSE messages."""
        assoc = self.assoc
        if self._fast_store is None:
            return False
        if not assoc.is_established or assoc._sent_release or assoc.is_aborted:
            return False
        if self.state_machine.current_state != "Sta6" or _config.UNRESTRICTED_STORAGE_SERVICE:
            return False
        context = assoc._accepted_cx.get(command.context_id)
        if context is None or context.abstract_syntax != command.sop_class_uid:
            return False
        if command.sop_class_uid in assoc.acceptor.accepted_common_extended:
            return False
        if uid_to_service_class(command.sop_class_uid) is not StorageServiceClass:
            return False
        if any(assoc.get_handlers(event) for event in _WATCHERS):
            return False
        bound: Any = assoc.get_handlers(evt.EVT_C_STORE)
        return bool(bound) and bound[0] is self._fast_store.handler

    def _open_store(self, command: StoreCommand) -> Receiving:
        """Where a fast C-STORE's dataset goes as it arrives: the ``FastStore``'s ``begin``
        with the bound handler's arguments (pynetdicom would build the request the same)."""
        assoc = self.assoc
        context = assoc._accepted_cx[command.context_id]
        _handler, args = cast(Any, assoc.get_handlers(evt.EVT_C_STORE))
        primitive: Any = assoc.requestor.primitive
        called = getattr(primitive, "called_ae_title", None) or assoc.acceptor.ae_title
        request = StoreRequest(
            calling_ae=str(assoc.requestor.ae_title).strip(),
            called_ae=str(called).strip(),
            sop_class_uid=command.sop_class_uid,
            sop_instance_uid=command.sop_instance_uid,
            transfer_syntax=str(context.transfer_syntax[0]),
        )
        return cast(FastStore, self._fast_store).begin(request, *args)

    def _store(self, item: CompleteStore) -> None:
        """Finish the store and send the response (pynetdicom's ``StorageServiceClass.SCP``
        for a handler returning a status, in this thread)."""
        assoc, command = self.assoc, item.command
        sink = cast(Receiving, item.sink)
        comment = ""
        try:
            status = int(sink.finish())
            comment = sink.error_comment
        except Exception as exc:
            _ASSOC_LOGGER.error("Exception in handler bound to 'evt.EVT_C_STORE'")
            _ASSOC_LOGGER.exception(exc)
            status = 0xC211
        self.fast_stores += 1
        if not assoc.is_established:
            return
        rsp = encode_c_store_rsp(
            command.sop_class_uid, command.message_id, status, command.sop_instance_uid
        )
        max_pdu = assoc.dimse.maximum_pdu_size
        # an Error Comment, or a peer with a tiny PDU (split): pynetdicom encodes the response
        if comment or (max_pdu and len(rsp) + 6 > max_pdu):
            primitive = C_STORE()
            primitive.MessageIDBeingRespondedTo = command.message_id
            primitive.AffectedSOPClassUID = command.sop_class_uid
            primitive.AffectedSOPInstanceUID = command.sop_instance_uid
            primitive.Status = status
            if comment:
                primitive.ErrorComment = comment  # type: ignore[assignment]
            assoc.dimse.send_msg(primitive, command.context_id)
            return
        cast(AssociationSocket, self.socket).send(pdata.response_pdu(command.context_id, rsp))

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
            if self._reader is not None:  # a message cut off: drop what came of it
                self._reader.abandon()
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
            try:
                self.state_machine.do_action(event)
            except InvalidEventError:
                # A local abort (Evt15: the association's own timeout, a handler giving up, or
                # the gateway stopping) can race the reactor, which has already sent an A-ABORT
                # for a bad PDU and is waiting for the peer to close (Sta13), or has closed
                # (Sta1): nothing is left to abort. Stock pynetdicom raises here and the
                # reactor thread dies with an unhandled exception; any other invalid event
                # still does. In Sta13 the transport is closed now (Evt17, back to Sta1)
                # rather than when the ARTIM timer runs out (acse_timeout, 30 s): the abort's
                # caller waits for Sta1, and a peer that never closes held a stop that long.
                state = self.state_machine.current_state
                if event != "Evt15" or state not in CLOSING_STATES:
                    raise
                _DUL_LOGGER.debug("abort requested in %s, the connection is closing", state)
                if state == "Sta13":
                    self.socket.close()
            sleep = False


__all__ = ["POLL_SECONDS", "FastDUL", "SignallingQueue"]
