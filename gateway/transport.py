"""The SCP's connections, on either path (``gateway.fastpath`` on or off): PDU size limits,
malformed-PDU refusal, the DIMSE message size cap, read timeouts and DICOM TLS.

pynetdicom (3.0) reads a PDU by trusting its 4-byte length field: it keeps calling
``recv`` until that many bytes arrived, whatever maximum PDU size the association agreed,
and an accepted socket has no timeout. A peer could therefore make the gateway buffer up to
4 GiB for one PDU, or hold an association thread forever by sending half a PDU. This module
closes those holes for every association the gateway runs, through pynetdicom's public
surface only (an ``EVT_CONN_OPEN`` handler and ``AssociationSocket.recv``), so it holds on
the stock path as on the fast one:

- ``GuardedAssociationSocket`` refuses a PDU whose declared length exceeds what we accept
  (a P-DATA-TF longer than our Maximum Length Received, any other PDU longer than
  ``MAX_CONTROL_PDU``), an A-ASSOCIATE-RQ or a DIMSE command set pynetdicom would crash on
  (an even presentation context ID, a context without a transfer syntax, a syntax that is not
  a UID; no known Command Field), and a DIMSE message growing past ``max_message_bytes``: it
  sends an A-ABORT (source: service provider, reason: invalid PDU parameter value) and drops
  the connection before reading more.
- An association whose connection closes before its A-ASSOCIATE-RQ arrived is ended at once
  instead of after ``acse_timeout``.
- ``GatewayRequestHandler`` shakes TLS hands (if any) in the association's own thread with
  ``TLS_HANDSHAKE_TIMEOUT`` (pynetdicom's own server does it inside its accept loop, where
  one silent client would stop every other TLS association), gives the connection
  ``association_request_timeout`` to deliver its A-ASSOCIATE-RQ and ``network_timeout``
  after that, runs the association to its end and then reports it ended
  (``AssociationHost.on_done``).

Connections come to an ``AssociationHost`` from ``gateway.intake`` (which holds plain
connections until their A-ASSOCIATE-RQ has arrived), in this process or in an acceptor
process (``gateway.acceptor``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from gateway.config import GatewaySettings
from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

A_ASSOCIATE_RQ = 0x01
P_DATA_TF = 0x04
# A-ASSOCIATE-RQ/AC/RJ, A-RELEASE, A-ABORT: a request with 128 presentation contexts of a
# dozen transfer syntaxes each is under 64 KiB
MAX_CONTROL_PDU = 1024 * 1024
# our Maximum Length Received is 0 ("no limit"): still refuse a single PDU above this
UNLIMITED_PDU_CEILING = 64 * 1024 * 1024
# some peers count the 6-byte PDU header (or a PDV header) in the negotiated maximum
PDU_SLACK = 1024
TLS_HANDSHAKE_TIMEOUT = 10.0
# A-ABORT PDU: type 7, length 4, source 2 (service provider), reason 6 (invalid parameter)
A_ABORT_INVALID_PDU = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6])
# DIMSE Command Field values (PS3.7 E.1-1): the commands pynetdicom can decode
COMMAND_FIELDS = frozenset(
    (
        *(0x0001, 0x8001, 0x0010, 0x8010, 0x0020, 0x8020, 0x0021, 0x8021, 0x0030, 0x8030),
        *(0x0100, 0x8100, 0x0110, 0x8110, 0x0120, 0x8120, 0x0130, 0x8130, 0x0140, 0x8140),
        *(0x0150, 0x8150, 0x0FFF),
    )
)
NO_DATA_SET = b"\x01\x01"  # Command Data Set Type: no dataset follows


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may do (from the settings)."""

    max_message_bytes: int = 0  # one DIMSE message's PDV bytes; 0: no cap
    association_request_timeout: float = 5.0  # until the A-ASSOCIATE-RQ is in
    network_timeout: float | None = 60.0  # any read after that

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ConnectionLimits:
        return cls(
            max_message_bytes=settings.max_instance_bytes,
            association_request_timeout=settings.association_request_timeout_seconds,
            network_timeout=settings.network_timeout_seconds,
        )


def pdu_limit(pdu_type: int, maximum_length: int) -> int:
    """The largest PDU length field accepted for a PDU of ``pdu_type``."""
    if pdu_type != P_DATA_TF:
        return MAX_CONTROL_PDU
    if maximum_length <= 0:
        return UNLIMITED_PDU_CEILING
    return maximum_length + PDU_SLACK


class GuardedAssociationSocket(AssociationSocket):
    """An ``AssociationSocket`` that refuses oversized or malformed PDUs and messages.

    pynetdicom's DUL (and the fast path's) reads each PDU as ``recv(6)`` (type, reserved,
    length) then ``recv(length)``; the header read is remembered and the body read checked.
    Instances are made by ``on_connection_open`` re-classing the socket pynetdicom created
    and setting ``limits``."""

    limits: ConnectionLimits = ConnectionLimits()
    _pending_pdu_type: int | None = None
    _command: bytes = b""  # command set fragments so far
    _message_bytes = 0  # PDV bytes of the DIMSE message arriving

    def _recv_all(self, nr_bytes: int) -> bytearray:
        """``nr_bytes`` from the socket, fewer if it closed (pynetdicom's ``recv`` contract),
        read straight into the result: pynetdicom reads 4 KiB per call, 130 reads and as
        many polls for one CT slice."""
        sock = self.socket
        assert sock is not None
        data = bytearray(nr_bytes)
        view = memoryview(data)
        got = 0
        while got < nr_bytes:
            n = sock.recv_into(view[got:])
            if not n:
                del view
                del data[got:]
                return data
            got += n
        return data

    def recv(self, nr_bytes: int) -> bytearray:
        pdu_type = self._pending_pdu_type
        if pdu_type is None:
            data = self._recv_all(nr_bytes)
            if nr_bytes == 6 and len(data) == 6 and 0x01 <= data[0] <= 0x07:
                self._pending_pdu_type = data[0]  # the DUL reads the body next
            return data
        self._pending_pdu_type = None
        limit = pdu_limit(pdu_type, int(self.assoc.acceptor.maximum_length or 0))
        if nr_bytes > limit:
            return self._refuse(
                "oversized PDU refused",
                pdu_type=pdu_type,
                declared_length=nr_bytes,
                limit=limit,
            )
        body = self._recv_all(nr_bytes)
        if len(body) == nr_bytes:
            if pdu_type == A_ASSOCIATE_RQ:
                problem = associate_rq_problem(body)
                if problem is not None:
                    return self._refuse("malformed A-ASSOCIATE-RQ refused", error=problem)
                if self.socket is not None:  # in: from now on, the ordinary read timeout
                    self.socket.settimeout(self.limits.network_timeout)
            elif pdu_type == P_DATA_TF:
                problem = self._pdata_problem(body)
                if problem is not None:
                    return self._refuse("DIMSE message refused", error=problem)
        return body

    def _pdata_problem(self, body: bytes | bytearray) -> str | None:
        """Follow the PDVs of a P-DATA-TF: the message's size against the cap, completed
        command sets checked (pynetdicom's DUL thread dies on one without a known Command
        Field)."""
        pos = 0
        cap = self.limits.max_message_bytes
        while pos + 6 <= len(body):
            (length,) = struct.unpack_from(">L", body, pos)
            if length < 2 or pos + 4 + length > len(body):
                return None  # pynetdicom refuses the PDU itself
            control = body[pos + 5]
            self._message_bytes += length - 2
            if cap and self._message_bytes > cap:
                return f"a DIMSE message larger than {cap} bytes"
            if control & 0x01:
                self._command += bytes(body[pos + 6 : pos + 4 + length])
                if len(self._command) > MAX_CONTROL_PDU:
                    return "command set larger than 1 MiB"
                if control & 0x02:
                    command, self._command = self._command, b""
                    fields, problem = command_set_fields(command)
                    if problem is not None:
                        return problem
                    if fields.get(0x0800) == NO_DATA_SET:
                        self._message_bytes = 0  # the message ends with its command
            elif control & 0x02:
                self._message_bytes = 0  # the last dataset fragment: the message is whole
            pos += 4 + length
        return None

    def _refuse(self, message: str, **log: Any) -> bytearray:
        """Log, send an A-ABORT, drop the connection; the DUL sees a short PDU (Evt17)."""
        sock = self.socket
        logger.warning(
            f"{message}; association aborted",
            extra={"action": "pdu_refused", "peer": peer_host(sock), **log},
        )
        if sock is None:
            return bytearray()
        abort_connection(sock)
        return bytearray()


def abort_connection(sock: socket.socket) -> None:
    """Send an A-ABORT (invalid PDU parameter) and shut the connection down."""
    try:
        sock.settimeout(2.0)
        sock.sendall(A_ABORT_INVALID_PDU)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def command_set_fields(command: bytes) -> tuple[dict[int, bytes], str | None]:
    """The group 0000 elements of an encoded command set (implicit VR little endian), and
    what is wrong with it that pynetdicom's decoder would crash on (or None)."""
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(command):
        if pos + 8 > len(command):
            return fields, "command set ends inside an element header"
        group, element, length = struct.unpack_from("<HHL", command, pos)
        if pos + 8 + length > len(command):
            return fields, f"command element (0000,{element:04X}) overruns the command set"
        if group == 0:
            fields[element] = command[pos + 8 : pos + 8 + length]
        pos += 8 + length
    field, data_set_type = fields.get(0x0100, b""), fields.get(0x0800, b"")
    if len(field) != 2 or struct.unpack("<H", field)[0] not in COMMAND_FIELDS:
        return fields, "command set without a known Command Field"
    if len(data_set_type) != 2:
        return fields, "command set without a Command Data Set Type"
    return fields, None


def command_set_problem(command: bytes) -> str | None:
    """What is wrong with an encoded command set that pynetdicom's decoder would crash on."""
    return command_set_fields(command)[1]


_SYNTAX_CHARS = frozenset(b"0123456789.")


def _syntax_ok(value: bytes) -> bool:
    """A proposed abstract or transfer syntax pynetdicom can take: a numeric UID."""
    value = value.rstrip(b"\x00 ")
    return 0 < len(value) <= 64 and set(value) <= _SYNTAX_CHARS


def associate_rq_problem(body: bytes | bytearray) -> str | None:
    """What is wrong with an A-ASSOCIATE-RQ body (after the 6-byte header) that pynetdicom
    3.0 would trip over, or None. Its DUL thread dies on an even presentation context ID
    (ValueError) and its acceptor thread on a context without a transfer syntax
    (IndexError); either way the peer hears nothing for ``acse_timeout``."""
    pos = 68  # protocol version, reserved, called AE, calling AE, reserved
    while pos < len(body):
        if pos + 4 > len(body):
            return "truncated item"
        item_type, _, length = struct.unpack_from(">BBH", body, pos)
        value = body[pos + 4 : pos + 4 + length]
        if len(value) != length:
            return f"item 0x{item_type:02X} overruns the PDU"
        if item_type == 0x20:
            problem = _context_problem(bytes(value))
            if problem is not None:
                return problem
        elif item_type not in (0x10, 0x50):
            return f"unexpected item 0x{item_type:02X} in an A-ASSOCIATE-RQ"
        pos += 4 + length
    return None


def _context_problem(value: bytes) -> str | None:
    if len(value) < 4:
        return "presentation context item too short"
    context_id = value[0]
    if context_id % 2 == 0:
        return f"presentation context ID {context_id} is not odd"
    abstract = syntaxes = 0
    pos = 4
    while pos < len(value):
        if pos + 4 > len(value):
            return f"presentation context {context_id}: truncated sub-item"
        sub_type, _, length = struct.unpack_from(">BBH", value, pos)
        if pos + 4 + length > len(value):
            return f"presentation context {context_id}: sub-item overruns the item"
        syntax = value[pos + 4 : pos + 4 + length]
        if sub_type not in (0x30, 0x40):
            return f"presentation context {context_id}: unexpected sub-item 0x{sub_type:02X}"
        if not _syntax_ok(syntax):
            return f"presentation context {context_id}: a syntax is not a UID"
        if sub_type == 0x30:
            abstract += 1
        else:
            syntaxes += 1
        pos += 4 + length
    if abstract != 1 or syntaxes == 0:
        return f"presentation context {context_id}: no abstract syntax or transfer syntax"
    return None


def peer_host(sock: socket.socket | None) -> str:
    try:
        return str(sock.getpeername()[0]) if sock is not None else ""
    except OSError:
        return ""


def _wake_on_early_close(event: evt.Event) -> None:
    """EVT_FSM_TRANSITION: the connection closed (back to Sta1) before an A-ASSOCIATE-RQ
    arrived. pynetdicom's acceptor would go on waiting ``acse_timeout`` for a request that can
    no longer come, holding an association thread; wake it now (``None``: "nothing came", as
    on its own timeout, after which it tidies up)."""
    assoc = event.assoc
    if event.next_state == "Sta1" and assoc.requestor.primitive is None:
        assoc.dul.to_user_queue.put(None)


_opened = threading.local()  # the association the running request handler just created


def on_connection_open(event: evt.Event, limits: ConnectionLimits) -> None:
    """EVT_CONN_OPEN (bound on every ``AssociationHost``): guard the association's socket
    and let the request handler in this thread find its association."""
    assoc = event.assoc
    sock: Any = assoc.dul.socket
    if isinstance(sock, AssociationSocket) and not isinstance(sock, GuardedAssociationSocket):
        sock.__class__ = GuardedAssociationSocket
        cast(GuardedAssociationSocket, sock).limits = limits
    assoc.bind(evt.EVT_FSM_TRANSITION, _wake_on_early_close)
    _opened.assoc = assoc


class GatewayRequestHandler(RequestHandler):
    """pynetdicom's request handler plus the TLS handshake and timeouts, run to the end of
    its association (the host counts associations, ``AssociationHost.on_done``)."""

    server: AssociationHost

    def setup_connection(self) -> bool:
        """The TLS handshake if the socket is TLS, then the association request timeout;
        False: drop the connection."""
        sock: socket.socket = self.request
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.settimeout(TLS_HANDSHAKE_TIMEOUT)
                sock.do_handshake()
            except (OSError, ValueError) as exc:
                logger.warning(
                    "TLS handshake failed; connection closed",
                    extra={
                        "action": "tls_handshake_failed",
                        "peer": str(self.client_address[0]),
                        "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                    },
                )
                _close(sock)
                return False
        sock.settimeout(self.server.limits.association_request_timeout)
        return True

    def handle(self) -> None:
        try:
            if not self.setup_connection():
                return
            _opened.assoc = None
            super().handle()  # creates the association (EVT_CONN_OPEN) and starts it
            assoc: Association | None = _opened.assoc
            _opened.assoc = None
            if assoc is not None:
                assoc.join()
        finally:
            self.server.association_ended(self.client_address)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class AssociationHost(ThreadedAssociationServer):
    """pynetdicom's threaded association server without a listening socket of its own:
    ``gateway.intake`` (or the gateway process, for an acceptor process) hands it accepted
    connections through ``process_request``; each runs in its own thread. ``on_done(peer)``
    is called when one has ended. Make it with ``AE.make_server(..., server_class=
    AssociationHost, limits=..., on_done=...)``; stop it with ``close()``."""

    daemon_threads = True

    def __init__(
        self,
        *args: Any,
        limits: ConnectionLimits,
        on_done: Callable[[Any], None] | None = None,
        fast_store: Any = None,
        **kw: Any,
    ) -> None:
        self.limits = limits
        self.on_done = on_done
        self.fast_store = fast_store  # the fast path's C-STORE (gateway.fastpath), or None
        kw.setdefault("request_handler", GatewayRequestHandler)
        super().__init__(*args, **kw)

    def server_bind(self) -> None:
        pass

    def server_activate(self) -> None:
        pass

    def association_ended(self, peer: Any) -> None:
        if self.on_done is not None:
            try:
                self.on_done(peer)
            except Exception:  # the count is bookkeeping: never fail the handler thread
                logger.exception("association end not reported", extra={"action": "done_failed"})

    def close(self, timeout: float = 5.0) -> None:
        """Abort the running associations (a peer mid-send gets an abort, not a hang)."""
        for assoc in self.active_associations:
            assoc.abort()
            assoc.join(timeout)
        self.server_close()  # the unused socket socketserver made


def wrap_server_side(context: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
    """Wrap an accepted connection without shaking hands yet (no I/O here)."""
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def server_tls_context(
    cert: Path, key: Path, *, ca: Path | None = None, require_client_cert: bool = False
) -> ssl.SSLContext:
    """A server-side context: TLS 1.2 or later; with ``ca``, client certificates signed by
    it are verified (required when ``require_client_cert``, else checked when offered)."""
    if require_client_cert and ca is None:
        raise GatewayError("requiring client certificates needs a CA (TELEREAD_GATEWAY_TLS_CA)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
        if ca is not None:
            context.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise GatewayError(f"cannot load the DICOM TLS certificate, key or CA: {exc}") from exc
    if ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def tls_context_for(settings: GatewaySettings) -> ssl.SSLContext | None:
    """The DICOM TLS listener's context from the settings (None: TLS is off)."""
    if settings.tls_port is None:
        return None
    if settings.tls_cert is None or settings.tls_key is None:  # the settings refuse this
        raise GatewayError("DICOM TLS needs TELEREAD_GATEWAY_TLS_CERT and _TLS_KEY")
    return server_tls_context(
        settings.tls_cert,
        settings.tls_key,
        ca=settings.tls_ca,
        require_client_cert=settings.tls_require_client_cert,
    )
