"""C-STORE requests taken off the wire in the DUL thread, without pynetdicom's DIMSE layer
(the fast path, ``gateway.fastpath``).

pynetdicom turns every P-DATA-TF PDU into PDU objects, primitives, state-machine events and a
queue hand-off to the association thread, which assembles the message, builds a C-STORE
primitive and an ``Event``; the response goes back the same way. For a CT slice that is about
a millisecond of Python and two thread switches per instance, on the gateway's critical path.

``MessageReader`` follows the PDVs of each PDU instead. A message whose command set is a
plain C-STORE-RQ on an accepted context for its SOP class (the owner's ``decide``, with
pynetdicom's own lookups) is taken here: its dataset fragments go to a sink as they arrive
(views of the received PDUs; the gateway's sink, ``gateway.handlers.IncomingStore``, hashes
them and streams a large dataset to its spool file), and the owner finishes the store and
sends the response itself. Every other message (C-ECHO, MPPS, anything unusual) is handed to
pynetdicom whole, as PDUs, so its behaviour there is unchanged. A PDU that carries the end of
one message and the start of the next is split at the boundary (pynetdicom assembles messages
PDV by PDV, so that changes nothing for it).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

P_DATA_TF = 0x04
COMMAND = 0x01
LAST = 0x02
C_STORE_RQ = 0x0001
NO_DATASET = 0x0101
# the C-STORE-RQ command elements (group 0000) a fast request may carry, nothing else
_STORE_ELEMENTS = frozenset(
    (0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000, 0x1030, 0x1031)
)
_REQUIRED = (0x0002, 0x0110, 0x0700, 0x1000)


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


def response_pdu(context_id: int, command: bytes) -> bytes:
    """A P-DATA-TF PDU carrying ``command`` as one last command fragment."""
    header = struct.pack(
        ">BBLLBB", P_DATA_TF, 0, len(command) + 6, len(command) + 2, context_id, 0x03
    )
    return header + command


@dataclass(frozen=True, slots=True)
class StoreCommand:
    """A C-STORE-RQ command set, decoded."""

    context_id: int
    sop_class_uid: str
    sop_instance_uid: str
    message_id: int


def _uid(value: bytes) -> str | None:
    text = value.rstrip(b"\0 ")
    if not text or not text.replace(b".", b"").isdigit():
        return None
    return text.decode("ascii")


def store_command(command: bytes | bytearray, context_id: int) -> StoreCommand | None:
    """The command set as a plain C-STORE-RQ with a dataset, or None (anything else, anything
    odd: pynetdicom decides)."""
    fields: dict[int, bytes] = {}
    pos, end = 0, len(command)
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHL", command, pos)
        pos += 8
        if group != 0 or element not in _STORE_ELEMENTS or element in fields or pos + length > end:
            return None
        fields[element] = bytes(command[pos : pos + length])
        pos += length
    if fields.get(0x0100) != struct.pack("<H", C_STORE_RQ):
        return None
    data_set_type = fields.get(0x0800)
    if data_set_type is None or len(data_set_type) != 2 or data_set_type == b"\x01\x01":
        return None
    if any(tag not in fields for tag in _REQUIRED) or len(fields[0x0110]) != 2:
        return None
    sop_class, sop = _uid(fields[0x0002]), _uid(fields[0x1000])
    if sop_class is None or sop is None:
        return None
    (message_id,) = struct.unpack("<H", fields[0x0110])
    return StoreCommand(context_id, sop_class, sop, message_id)


def pdv_spans(pdu: bytes | bytearray) -> list[tuple[int, int, int, int]] | None:
    """(start, end, context ID, control header) of each PDV's data in a P-DATA-TF PDU (its
    6-byte header included); None when the items do not tile the PDU exactly."""
    spans = []
    pos, end = 6, len(pdu)
    while pos < end:
        if pos + 6 > end:
            return None
        (length,) = struct.unpack_from(">L", pdu, pos)
        if length < 2 or pos + 4 + length > end:
            return None
        spans.append((pos + 6, pos + 4 + length, pdu[pos + 4], pdu[pos + 5]))
        pos += 4 + length
    return spans or None


def _pdu_of(pdu: bytearray, first: int, stop: int) -> bytearray:
    """A P-DATA-TF PDU of the PDV items between ``first`` and ``stop`` (item offsets)."""
    if first == 6 and stop == len(pdu):
        return pdu
    body = pdu[first:stop]
    return bytearray(struct.pack(">BBL", P_DATA_TF, 0, len(body))) + body


class DatasetSink(Protocol):
    """Where a fast C-STORE's dataset fragments go, in order."""

    def write(self, data: memoryview) -> None: ...

    def abandon(self) -> None: ...


@dataclass(slots=True)
class FragmentSink:
    """A sink keeping the fragments (views of the received PDUs) and their sha256."""

    fragments: list[memoryview] = field(default_factory=list)
    sha: Any = field(default_factory=hashlib.sha256)

    def write(self, data: memoryview) -> None:
        self.fragments.append(data)
        self.sha.update(data)

    def abandon(self) -> None:
        self.fragments.clear()

    @property
    def dataset_sha256(self) -> str:
        return str(self.sha.hexdigest())


@dataclass(slots=True)
class _Message:
    mode: str = ""  # "" undecided, "fast", "slow"
    size: int = 0  # bytes of its PDVs so far
    command: bytearray = field(default_factory=bytearray)
    command_done: bool = False
    store: StoreCommand | None = None
    held: list[bytearray] = field(default_factory=list)  # PDUs kept while undecided
    sink: DatasetSink | None = None


class ProtocolError(Exception):
    """The peer broke the message framing inside a message taken by the fast path: the
    association is aborted. (The message size cap is the transport guard's,
    ``gateway.transport``, on every path.)"""


@dataclass(slots=True)
class CompleteStore:
    command: StoreCommand
    sink: DatasetSink


Routed = bytearray | CompleteStore  # a PDU for pynetdicom, or a fast C-STORE to run


class MessageReader:
    """Per association: routes P-DATA-TF PDUs between the fast C-STORE path and pynetdicom.

    ``decide(command)`` says whether a completed C-STORE-RQ command set may take the fast
    path (the association's state and handlers); ``open_sink(command)`` then gives the sink
    its dataset goes to (default: ``FragmentSink``)."""

    def __init__(
        self,
        decide: Callable[[StoreCommand], bool],
        open_sink: Callable[[StoreCommand], DatasetSink] | None = None,
    ) -> None:
        self._decide = decide
        self._open_sink = open_sink or (lambda _command: FragmentSink())
        self._msg: _Message | None = None

    def abandon(self) -> None:
        """The association ended: drop the message arriving (its sink too)."""
        msg, self._msg = self._msg, None
        if msg is not None and msg.sink is not None:
            msg.sink.abandon()

    @property
    def inside_fast_message(self) -> bool:
        """The fast path has taken the message whose PDUs are arriving."""
        return self._msg is not None and self._msg.mode == "fast"

    def take(self, pdu: bytearray) -> list[Routed]:
        """Route one P-DATA-TF PDU: PDUs for pynetdicom and complete fast C-STOREs, in the
        order they must be handled. Raises ``ProtocolError`` when the framing of a message
        already taken by the fast path breaks."""
        spans = pdv_spans(pdu)
        if spans is None:  # malformed: pynetdicom refuses it, as before
            if self.inside_fast_message:
                self.abandon()
                raise ProtocolError("malformed P-DATA-TF PDU inside a message")
            msg, self._msg = self._msg, None
            return [*(msg.held if msg is not None else ()), pdu]
        view = memoryview(pdu)
        routed: list[Routed] = []
        first = 6
        for start, end, context_id, control in spans:
            msg = self._msg
            if msg is None:
                msg = self._msg = _Message()
            if self._follow(msg, view[start:end], context_id, control):
                self._msg = None
                self._segment(msg, pdu, first, end, routed, ended=True)
                first = end
        if first < len(pdu) and self._msg is not None:
            self._segment(self._msg, pdu, first, len(pdu), routed, ended=False)
        return routed

    def _follow(self, msg: _Message, data: memoryview, context_id: int, control: int) -> bool:
        """Account one PDV; True when it ends the message."""
        msg.size += len(data)
        if control & COMMAND:
            if msg.command_done:
                return self._odd(msg, "command fragment after a complete command set")
            msg.command += data
            if not control & LAST:
                return False
            msg.command_done = True
            if msg.mode == "":
                # pynetdicom takes the message's context from its last command fragment
                store = store_command(msg.command, context_id)
                if store is not None and self._decide(store):
                    msg.mode, msg.store = "fast", store
                    msg.sink = self._open_sink(store)
                else:
                    msg.mode = "slow"
            return _no_dataset(msg.command)
        if not msg.command_done:
            return self._odd(msg, "dataset fragment before the command set")
        if msg.sink is not None:
            msg.sink.write(data)
        return bool(control & LAST)

    def _odd(self, msg: _Message, what: str) -> bool:
        if msg.mode == "fast":
            self.abandon()
            raise ProtocolError(what)
        msg.mode = "slow"
        return False

    @staticmethod
    def _segment(
        msg: _Message, pdu: bytearray, first: int, stop: int, routed: list[Routed], *, ended: bool
    ) -> None:
        """The PDV items ``first:stop`` of ``pdu`` belong to ``msg``."""
        if msg.mode == "slow":
            routed.extend(msg.held)
            msg.held.clear()
            routed.append(_pdu_of(pdu, first, stop))
        elif msg.mode == "":
            msg.held.append(_pdu_of(pdu, first, stop))
        elif ended and msg.store is not None and msg.sink is not None:
            routed.append(CompleteStore(msg.store, msg.sink))


def _no_dataset(command: bytes | bytearray) -> bool:
    """The command set says no dataset follows (Command Data Set Type 0x0101)."""
    pos, end = 0, len(command)
    while pos + 8 <= end:
        group, element, length = struct.unpack_from("<HHL", command, pos)
        if group == 0 and element == 0x0800:
            return bytes(command[pos + 8 : pos + 8 + length]) == b"\x01\x01"
        pos += 8 + length
    return False
