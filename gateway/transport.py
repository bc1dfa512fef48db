"""The SCP's connections: a PDU size guard, read timeouts and DICOM TLS.

pynetdicom (3.0) reads a PDU by trusting its 4-byte length field: it keeps calling
``recv`` until that many bytes arrived, whatever maximum PDU size the association agreed,
and an accepted socket has no timeout. A peer could therefore make the gateway buffer up to
4 GiB for one PDU, or hold an association thread (one of ``max_associations``) forever by
sending half a PDU. This module closes both holes for every association the gateway accepts:

- ``GuardedAssociationSocket`` refuses a PDU whose declared length exceeds what we accept
  (a P-DATA-TF longer than our Maximum Length Received, any other PDU longer than
  ``MAX_CONTROL_PDU``): it sends an A-ABORT (source: service provider, reason: invalid PDU
  parameter value) and drops the connection before reading the body.
- An association whose connection closes before its A-ASSOCIATE-RQ arrived (garbage, a
  port scan) is ended at once instead of after ``acse_timeout``.
- An A-ASSOCIATE-RQ that pynetdicom's own negotiation would crash on (an even presentation
  context ID, a context without a transfer syntax, a syntax that is not a UID) and a DIMSE
  command set its decoder would crash on (no known Command Field) are refused the same way.
- ``GatewayRequestHandler`` puts ``network_timeout`` on the connection, so a stalled read
  ends the association, and runs the TLS handshake (if any) in the association's own thread
  with ``TLS_HANDSHAKE_TIMEOUT``: pynetdicom's own server does it inside its accept loop,
  where one silent client would stop every other TLS association.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

from gateway.config import GatewaySettings
from gateway.errors import GatewayError
from gateway.fastassoc import FastRequestHandler
from gateway.fastdul import A_ABORT_INVALID_PDU

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


def pdu_limit(pdu_type: int, maximum_length: int) -> int:
    """The largest PDU length field accepted for a PDU of ``pdu_type``."""
    if pdu_type != P_DATA_TF:
        return MAX_CONTROL_PDU
    if maximum_length <= 0:
        return UNLIMITED_PDU_CEILING
    return maximum_length + PDU_SLACK


class GuardedAssociationSocket(AssociationSocket):
    """An ``AssociationSocket`` that refuses declared-oversized PDUs.

    pynetdicom's DUL reads each PDU as ``recv(6)`` (type, reserved, length) then
    ``recv(length)``; the header read is remembered and the body read checked against
    ``pdu_limit``. Instances are made by ``GatewayRequestHandler`` by re-classing the socket
    pynetdicom created (this class adds no state of its own to set up)."""

    _pending_pdu_type: int | None = None

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
            elif pdu_type == P_DATA_TF:
                problem = self._command_problem(body)
                if problem is not None:
                    return self._refuse("malformed DIMSE command refused", error=problem)
        return body

    _command: bytes = b""  # command set fragments so far

    def _command_problem(self, body: bytes | bytearray) -> str | None:
        """Collect the command-set PDVs of a P-DATA-TF; check a completed command set
        (pynetdicom's DUL thread dies on one without a known Command Field)."""
        pos = 0
        while pos + 6 <= len(body):
            (length,) = struct.unpack_from(">L", body, pos)
            if length < 2 or pos + 4 + length > len(body):
                return None  # pynetdicom refuses the PDU itself
            control = body[pos + 5]
            if control & 0x01:
                self._command += bytes(body[pos + 6 : pos + 4 + length])
                if len(self._command) > MAX_CONTROL_PDU:
                    return "command set larger than 1 MiB"
                if control & 0x02:
                    command, self._command = self._command, b""
                    problem = command_set_problem(command)
                    if problem is not None:
                        return problem
            pos += 4 + length
        return None

    def _refuse(self, message: str, **log: Any) -> bytearray:
        """Log, send an A-ABORT, drop the connection; the DUL sees a short PDU (Evt17)."""
        sock = self.socket
        logger.warning(
            f"{message}; association aborted",
            extra={"action": "pdu_refused", "peer": _peer(sock), **log},
        )
        if sock is None:
            return bytearray()
        try:
            sock.settimeout(2.0)
            sock.sendall(A_ABORT_INVALID_PDU)
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return bytearray()


def command_set_problem(command: bytes) -> str | None:
    """What is wrong with an encoded command set (implicit VR little endian) that
    pynetdicom's decoder would crash on, or None."""
    from pynetdicom.dimse_messages import _MESSAGE_TYPES

    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(command):
        if pos + 8 > len(command):
            return "command set ends inside an element header"
        group, element, length = struct.unpack_from("<HHL", command, pos)
        if pos + 8 + length > len(command):
            return f"command element (0000,{element:04X}) overruns the command set"
        if group == 0:
            fields[element] = command[pos + 8 : pos + 8 + length]
        pos += 8 + length
    field, data_set_type = fields.get(0x0100, b""), fields.get(0x0800, b"")
    if len(field) != 2 or struct.unpack("<H", field)[0] not in _MESSAGE_TYPES:
        return "command set without a known Command Field"
    if len(data_set_type) != 2:
        return "command set without a Command Data Set Type"
    return None


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


def _peer(sock: socket.socket | None) -> str:
    try:
        return str(sock.getpeername()[0]) if sock is not None else ""
    except OSError:
        return ""


def _wake_on_early_close(event: evt.Event) -> None:
    """EVT_FSM_TRANSITION: the connection closed (back to Sta1) before an A-ASSOCIATE-RQ
    arrived. pynetdicom's acceptor would go on waiting ``acse_timeout`` for a request that can
    no longer come, holding one of ``max_associations``; wake it now (``None``: "nothing
    came", as on its own timeout, after which it tidies up)."""
    assoc = event.assoc
    if event.next_state == "Sta1" and assoc.requestor.primitive is None:
        assoc.dul.to_user_queue.put(None)


def guard(assoc: Association) -> Association:
    """Make ``assoc``'s socket a ``GuardedAssociationSocket`` (see its docstring)."""
    sock: Any = assoc.dul.socket
    if isinstance(sock, AssociationSocket) and not isinstance(sock, GuardedAssociationSocket):
        sock.__class__ = GuardedAssociationSocket
    return assoc


class GatewayRequestHandler(FastRequestHandler):
    """pynetdicom's request handler plus the read timeout, TLS handshake and PDU guard."""

    def setup_connection(self) -> bool:
        """Timeout, then the TLS handshake if the socket is TLS; False: drop the connection."""
        sock: socket.socket = self.request
        timeout = self.ae.network_timeout
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
        sock.settimeout(timeout)
        return True

    def _create_association(self) -> Association:
        assoc = guard(super()._create_association())
        assoc.bind(evt.EVT_FSM_TRANSITION, _wake_on_early_close)
        return assoc

    def handle(self) -> None:
        if self.setup_connection():
            super().handle()


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class GatewayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with ``GatewayRequestHandler`` and the TLS handshake
    moved out of the accept loop (the socket is wrapped there without I/O; the handler
    shakes hands in the association's thread)."""

    daemon_threads = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("request_handler", GatewayRequestHandler)
        super().__init__(*args, **kw)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        if self.ssl_context is not None:
            client = wrap_server_side(self.ssl_context, client)
        return client, address


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


def serve(
    ae: AE,
    address: tuple[str, int],
    handlers: list[Any],
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> GatewayServer:
    """``ae.start_server(address, block=False, ...)`` with ``GatewayServer``."""
    server = ae.make_server(
        address, ssl_context=ssl_context, evt_handlers=handlers, server_class=GatewayServer
    )
    assert isinstance(server, GatewayServer)
    thread = threading.Thread(
        target=server.serve_forever,
        name=f"gateway-scp-{'tls' if ssl_context else 'dicom'}",
        daemon=True,
    )
    thread.start()
    ae._servers.append(server)  # as start_server does: shutdown() removes it
    return server


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
