"""Build the gateway's Application Entity and the association host that runs its SCP.

The host (``gateway.transport.AssociationHost``) has no listening socket: ``gateway.intake``
hands it connections whose A-ASSOCIATE-RQ has arrived, in the gateway process or in an
acceptor process (``gateway.acceptor``). Which request handler runs the associations,
pynetdicom's own or the fast path's copy, is ``gateway.fastpath.choose``'s decision, made
once in the gateway process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydicom import uid
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.config import GatewaySettings, accepted_called_aes
from gateway.fastpath import FastStore, PathChoice
from gateway.handlers import (
    begin_store,
    handle_association_request,
    handle_echo,
    handle_store,
)
from gateway.mpps import MPPS_SOP_CLASS, MppsStore, handle_n_create, handle_n_set
from gateway.sites import Sites
from gateway.spool import Spool
from gateway.transport import (
    AssociationHost,
    ConnectionLimits,
    GatewayRequestHandler,
    on_connection_open,
)

# the common uncompressed and compressed syntaxes; the dataset is stored as received in
# whichever of them was negotiated, so accepting one costs nothing
TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.JPEG2000MCLossless,
    uid.JPEG2000MC,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
    uid.RLELossless,
)

# Every standard storage SOP class pynetdicom knows (170, CT/MR/CR/DX/MG/US/SC/SR, the
# enhanced and multi-frame variants, PET, RT, ...): an acceptor has no 128-context limit,
# and a gateway that refuses an odd SOP class a modality sends would lose a study.
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    str(cx.abstract_syntax) for cx in AllStoragePresentationContexts
)


def build_ae(settings: GatewaySettings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu
    ae.maximum_associations = settings.max_associations
    ae.network_timeout = settings.network_timeout_seconds
    ae.dimse_timeout = settings.dimse_timeout_seconds
    ae.acse_timeout = settings.acse_timeout_seconds
    ae.add_supported_context(Verification, list(TRANSFER_SYNTAXES))
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    ae.add_supported_context(
        MPPS_SOP_CLASS, [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian]
    )
    return ae


def event_handlers(
    settings: GatewaySettings,
    spool: Spool,
    sites: Sites,
    mpps: MppsStore | None = None,
    *,
    urgent_called_aes: Mapping[str, str] | None = None,
) -> list[Any]:
    """The SCP's handlers (the same in this process and in acceptor processes, on either
    path), the transport guard included."""
    urgent = dict(urgent_called_aes or settings.urgent_called_aes)
    called = accepted_called_aes(settings)
    if called is not None:
        called = called | {ae.strip().upper() for ae in urgent}
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, on_connection_open, [ConnectionLimits.from_settings(settings)]),
        (
            evt.EVT_REQUESTED,
            handle_association_request,
            [sites, called, spool.outbox.note_refusal],
        ),
        (evt.EVT_C_ECHO, handle_echo),
        (
            evt.EVT_C_STORE,
            handle_store,
            [spool, sites, urgent],
        ),
    ]
    if mpps is not None:
        handlers += [
            (evt.EVT_N_CREATE, handle_n_create, [mpps, sites]),
            (evt.EVT_N_SET, handle_n_set, [mpps, sites]),
        ]
    return handlers


def build_host(
    settings: GatewaySettings,
    spool: Spool,
    sites: Sites,
    *,
    path: PathChoice,
    mpps: MppsStore | None = None,
    on_done: Callable[[Any], None] | None = None,
    urgent_called_aes: Mapping[str, str] | None = None,
) -> AssociationHost:
    """The association host of this process: feed it with ``process_request(connection,
    peer)``; ``on_done(peer)`` when an association has ended; ``close()`` to stop."""
    ae = build_ae(settings)
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        # pynetdicom's standard handlers format a debug summary of every PDU and DIMSE
        # message (and keep the fast path from answering C-STOREs directly); off unless
        # debugging (pynetdicom's documented setting)
        _config.LOG_HANDLER_LEVEL = "none"
    handlers = event_handlers(settings, spool, sites, mpps, urgent_called_aes=urgent_called_aes)
    if path.fast:  # the copies of pynetdicom internals are imported only now
        from gateway.fastpath.assoc import FastRequestHandler

        request_handler: type[Any] = FastRequestHandler
        fast_store: FastStore | None = FastStore(handler=handle_store, begin=begin_store)
    else:
        request_handler, fast_store = GatewayRequestHandler, None
    host = ae.make_server(
        (settings.host, 0),
        evt_handlers=handlers,
        server_class=AssociationHost,
        request_handler=request_handler,
        limits=ConnectionLimits.from_settings(settings),
        on_done=on_done,
        fast_store=fast_store,
    )
    assert isinstance(host, AssociationHost)
    return host
