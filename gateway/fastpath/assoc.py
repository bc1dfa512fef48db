"""pynetdicom 3.0.4's acceptor without its polling sleeps and, for C-STORE, without its DIMSE
layer: the one patch of its internals.

Why: pynetdicom runs each association as two threads that poll. The DUL thread sleeps 1 ms
whenever its socket and its queue are empty; the association thread sleeps 1 ms before each
look at its DIMSE queue. A C-STORE from a modality is strictly request -> response, so every
instance paid those sleeps three times, plus PDU objects, primitives, state-machine events,
a thread hand-off each way and pydicom's encoding of the response: with a handler that does
nothing, ~280 instances/s from dcmtk ``storescu`` on loopback.

What changes:

- The DUL thread waits in ``select`` on its socket plus a wake-up socketpair (written by
  ``send_pdu`` / ``kill_dul``); the association thread waits on an ``Event`` set whenever the
  DUL hands it something (DIMSE message queue, ACSE primitives), the DUL ends or the
  association is killed. Both still wake every ``POLL_SECONDS`` for the timers pynetdicom
  checks by polling (ARTIM, network idle timeout), so idle CPU is lower than stock (50
  wake-ups/s instead of 1,000).
- P-DATA-TF PDUs of an established association go through ``gateway.fastpath.pdata``: a
  plain C-STORE-RQ on an accepted context for its SOP class, with the ``FastStore``'s
  ``EVT_C_STORE`` handler bound (its raw form: ``gateway.handlers.store_received``) and nobody
  watching PDUs or DIMSE messages, is assembled, stored and answered in the DUL thread; the
  rest of such a message is read PDU after PDU without a round through the reactor. Every
  other message goes to pynetdicom as before (``tests/integration/test_gateway_fast_store.py``
  checks both paths answer and spool alike).
- A C-STORE-RSP without optional fields is encoded by hand (the same bytes;
  ``tests/unit/test_gateway_fastassoc.py`` compares them).
- The acceptor copies its presentation contexts without ``deepcopy`` (20 ms per association
  for the gateway's 172 contexts).

The copies of ``DULServiceProvider.run_reactor``, ``_read_pdu_data`` (``gateway.fastpath.dul``)
and ``Association._run_reactor`` below are pynetdicom 3.0.4's, changed as said; they run only
when ``gateway.fastpath.choose`` says so (that exact version, or ``off``), and the unit test
pins the source of every pynetdicom function copied or stood in for and every private name
used. Figures: ``bench/ingest.py``.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket

from gateway.fastpath import FastStore
from gateway.fastpath.dul import POLL_SECONDS, FastDUL, SignallingQueue
from gateway.fastpath.pdata import encode_c_store_rsp
from gateway.transport import GatewayRequestHandler

_ASSOC_LOGGER = logging.getLogger("pynetdicom.assoc")

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

    def __init__(self, ae: Any, mode: str, fast_store: FastStore | None = None) -> None:
        super().__init__(ae, mode)
        self._activity = threading.Event()
        self.dul = FastDUL(self, self._activity, fast_store)
        self.dimse = _FastDIMSE(self)
        self.dimse.msg_queue = SignallingQueue(self._activity)

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


def _copy_contexts(contexts: list[PresentationContext]) -> list[PresentationContext]:
    """What ``deepcopy`` gives for a list of presentation contexts (their attributes are
    UIDs, which are immutable strings, flags and the list of transfer syntaxes), in 0.2 ms
    instead of 20 ms for the gateway's 172 contexts."""
    copies = []
    for cx in contexts:
        copy = object.__new__(PresentationContext)
        attrs = dict(vars(cx))
        attrs["_transfer_syntax"] = list(attrs["_transfer_syntax"])
        copy.__dict__.update(attrs)
        copies.append(copy)
    return copies


class FastRequestHandler(GatewayRequestHandler):
    """The gateway's request handler building a ``FastAssociation`` (pynetdicom 3.0.4's
    ``RequestHandler._create_association`` with the class swapped)."""

    def _create_association(self) -> Association:
        assoc = FastAssociation(self.ae, MODE_ACCEPTOR, getattr(self.server, "fast_store", None))
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(AssociationSocket(assoc, client_socket=self.request))
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = _copy_contexts(self.server.contexts)
        assoc.requestor.address_info = self.remote
        handlers: Any = self.server._handlers
        for event in handlers:
            if event.is_intervention and handlers[event]:
                assoc.bind(event, *handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in handlers[event]:
                    assoc.bind(event, handler[0], handler[1])
        return assoc


__all__ = ["FastAssociation", "FastRequestHandler"]
