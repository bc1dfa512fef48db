"""gateway.fastpath.pdata: which P-DATA-TF PDUs the fast C-STORE path takes and which go to
pynetdicom, message by message, however the sender fragments and packs them."""

from __future__ import annotations

import hashlib
import struct
from io import BytesIO

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode

from gateway.fastpath.pdata import (
    CompleteStore,
    FragmentSink,
    MessageReader,
    ProtocolError,
    StoreCommand,
    pdv_spans,
    store_command,
)

SOP = "1.2.826.0.1.3680043.8.498.1"


def store_rq(sop: str = SOP, message_id: int = 7, sop_class: str = CTImageStorage) -> bytes:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop
    primitive.Priority = 0x0002
    primitive.DataSet = BytesIO(b"\0\0")  # a dataset follows (Command Data Set Type)
    msg = C_STORE_RQ()
    msg.primitive_to_message(primitive)
    return bytes(encode(msg.command_set, True, True))


def echo_rq() -> bytes:
    primitive = C_ECHO()
    primitive.MessageID = 3
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    msg = C_ECHO_RQ()
    msg.primitive_to_message(primitive)
    return bytes(encode(msg.command_set, True, True))


def pdv(ctx: int, control: int, data: bytes) -> bytes:
    return struct.pack(">LBB", len(data) + 2, ctx, control) + data


def pdu(*items: bytes) -> bytearray:
    body = b"".join(items)
    return bytearray(struct.pack(">BBL", 4, 0, len(body)) + body)


CMD, CMD_LAST, DATA, DATA_LAST = 0x01, 0x03, 0x00, 0x02
DATASET = bytes(range(256)) * 40


def reader(accept: bool = True) -> tuple[MessageReader, list[StoreCommand]]:
    decided: list[StoreCommand] = []

    def decide(command: StoreCommand) -> bool:
        decided.append(command)
        return accept

    return MessageReader(decide), decided


def stores(routed: list[object]) -> list[CompleteStore]:
    return [r for r in routed if isinstance(r, CompleteStore)]


def test_a_c_store_in_one_pdu_each_is_taken_whole() -> None:
    r, decided = reader()
    assert r.take(pdu(pdv(1, CMD_LAST, store_rq()))) == []
    assert r.take(pdu(pdv(1, DATA, DATASET[:1000]))) == []
    (done,) = r.take(pdu(pdv(1, DATA_LAST, DATASET[1000:])))
    assert isinstance(done, CompleteStore)
    assert done.command == StoreCommand(1, CTImageStorage, SOP, 7)
    assert isinstance(done.sink, FragmentSink)
    assert b"".join(done.sink.fragments) == DATASET
    assert done.sink.dataset_sha256 == hashlib.sha256(DATASET).hexdigest()
    assert decided == [done.command]


def test_a_command_split_over_pdus_is_held_until_decided() -> None:
    command = store_rq()
    r, _ = reader()
    assert r.take(pdu(pdv(1, CMD, command[:10]))) == []
    assert r.take(pdu(pdv(1, CMD, command[10:20]))) == []
    assert r.take(pdu(pdv(1, CMD_LAST, command[20:]), pdv(1, DATA_LAST, DATASET))) != []


def test_a_refused_message_goes_to_pynetdicom_with_the_pdus_held_before() -> None:
    command = store_rq()
    r, _ = reader(accept=False)
    first = pdu(pdv(1, CMD, command[:10]))
    assert r.take(first) == []
    second = pdu(pdv(1, CMD_LAST, command[10:]))
    assert r.take(second) == [first, second]
    data = pdu(pdv(1, DATA_LAST, DATASET))
    assert r.take(data) == [data]


def test_c_echo_goes_to_pynetdicom_and_the_next_c_store_is_fast() -> None:
    r, decided = reader()
    echo = pdu(pdv(1, CMD_LAST, echo_rq()))
    assert r.take(echo) == [echo]
    assert decided == []  # not a C-STORE-RQ: never offered
    routed = r.take(pdu(pdv(3, CMD_LAST, store_rq()), pdv(3, DATA_LAST, DATASET)))
    assert [s.command.context_id for s in stores(routed)] == [3]


def test_a_pdu_carrying_two_messages_is_split_at_the_boundary() -> None:
    r, _ = reader()
    r.take(pdu(pdv(1, CMD_LAST, store_rq())))
    routed = r.take(pdu(pdv(1, DATA_LAST, DATASET), pdv(1, CMD_LAST, echo_rq())))
    assert len(routed) == 2
    assert isinstance(routed[0], CompleteStore)  # answered first, in order
    assert routed[1] == pdu(pdv(1, CMD_LAST, echo_rq()))
    # and the other way round: an echo, then a whole C-STORE
    routed = r.take(
        pdu(pdv(1, CMD_LAST, echo_rq()), pdv(1, CMD_LAST, store_rq()), pdv(1, DATA_LAST, DATASET))
    )
    assert routed[0] == pdu(pdv(1, CMD_LAST, echo_rq()))
    assert isinstance(routed[1], CompleteStore)


def test_odd_framing_before_the_decision_goes_to_pynetdicom() -> None:
    r, decided = reader()
    data_first = pdu(pdv(1, DATA_LAST, DATASET))
    assert r.take(data_first) == [data_first]
    assert decided == []


def test_odd_framing_inside_a_fast_message_is_a_protocol_error() -> None:
    r, _ = reader()
    r.take(pdu(pdv(1, CMD_LAST, store_rq())))
    with pytest.raises(ProtocolError):
        r.take(pdu(pdv(1, CMD_LAST, store_rq())))
    r, _ = reader()
    r.take(pdu(pdv(1, CMD_LAST, store_rq())))
    with pytest.raises(ProtocolError):
        r.take(bytearray(b"\x04\x00\x00\x00\x00\x03\x00\x00\x00"))  # items do not tile


def test_a_malformed_pdu_outside_a_fast_message_goes_to_pynetdicom() -> None:
    r, _ = reader()
    bad = bytearray(b"\x04\x00\x00\x00\x00\x04\x00\x00\x00\x01")  # PDV length 1
    assert pdv_spans(bad) is None
    assert r.take(bad) == [bad]


@pytest.mark.parametrize(
    "command",
    [
        echo_rq(),
        store_rq().replace(SOP.encode(), SOP[:-1].encode() + b"x"),  # not a UID
        store_rq()[:-3],  # truncated
        store_rq() + struct.pack("<HHL", 0, 0x0600, 2) + b"AB",  # an element a C-STORE lacks
    ],
)
def test_only_plain_c_store_requests_are_fast(command: bytes) -> None:
    assert store_command(command, 1) is None


def test_a_c_store_command_without_a_dataset_is_not_fast() -> None:
    command = bytearray(store_rq())
    at = command.find(struct.pack("<HHL", 0, 0x0800, 2))
    command[at + 8 : at + 10] = b"\x01\x01"
    assert store_command(command, 1) is None
    r, _ = reader()
    only = pdu(pdv(1, CMD_LAST, bytes(command)))
    assert r.take(only) == [only]  # ends with its command: the next PDU starts a message
    routed = r.take(pdu(pdv(1, CMD_LAST, store_rq()), pdv(1, DATA_LAST, DATASET)))
    assert len(stores(routed)) == 1
