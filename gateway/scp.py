"""Build the gateway's Application Entity and start its SCP (non-blocking)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any

from pydicom import uid
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from gateway.config import GatewaySettings
from gateway.fastdul import set_message_cap
from gateway.handlers import handle_association_request, handle_echo, handle_store
from gateway.mpps import MPPS_SOP_CLASS, MppsStore, handle_n_create, handle_n_set
from gateway.sites import Sites
from gateway.spool import Spool
from gateway.transport import serve

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
    set_message_cap(ae, settings.max_instance_bytes)
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
    """The SCP's handlers (the same in this process and in acceptor processes)."""
    handlers: list[Any] = [
        (evt.EVT_REQUESTED, handle_association_request, [sites]),
        (evt.EVT_C_ECHO, handle_echo),
        (
            evt.EVT_C_STORE,
            handle_store,
            [spool, sites, dict(urgent_called_aes or settings.urgent_called_aes)],
        ),
    ]
    if mpps is not None:
        handlers += [
            (evt.EVT_N_CREATE, handle_n_create, [mpps, sites]),
            (evt.EVT_N_SET, handle_n_set, [mpps, sites]),
        ]
    return handlers


def start_scp(
    settings: GatewaySettings,
    spool: Spool,
    sites: Sites,
    *,
    mpps: MppsStore | None = None,
    urgent_called_aes: Mapping[str, str] | None = None,
    port: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> ThreadedAssociationServer:
    """Start listening on (host, port) in this process; returns the server (``shutdown()``).

    ``port`` overrides ``settings.port``; with ``ssl_context`` the listener speaks DICOM TLS.
    Connections get gateway.transport's PDU guard, read timeout and off-loop handshake."""
    ae = build_ae(settings)
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        # pynetdicom's standard handlers format a debug summary of every PDU and DIMSE
        # message (and stop gateway.fastassoc's direct C-STORE-RSP); off unless debugging
        _config.LOG_HANDLER_LEVEL = "none"
    handlers = event_handlers(settings, spool, sites, mpps, urgent_called_aes=urgent_called_aes)
    address = (settings.host, settings.port if port is None else port)
    return serve(ae, address, handlers, ssl_context=ssl_context)
