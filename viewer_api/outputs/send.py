"""Send a report's SR back to the township (its PACS or modality workstation) by C-STORE.

Destinations are per site, ``AE@host:port`` (``Site.sr_destination``, ``worklist.sr_sends``). One
association per send, Explicit VR Little Endian (the SR is stored that way); a refused
association or a non-success status raises ``SRSendFailed`` with the reason.
"""

from __future__ import annotations

import logging
from io import BytesIO

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from worklist.sr_sends import Destination

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
# warnings (coercion, elements discarded) still mean the object was stored
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})


class SRSendFailed(Exception):
    """The SR could not be sent to the site's DICOM destination."""


def send_sr(data: bytes, *, destination: Destination, calling_ae: str, timeout: float) -> int:
    """C-STORE the Part-10 ``data`` to ``destination``; the DIMSE status it answered."""
    ds = dcmread(BytesIO(data))
    ae = AE(ae_title=calling_ae[:16])
    ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        logger.warning(
            "SR send: association not established",
            extra={"action": "sr_send_failed", "destination": str(destination)},
        )
        raise SRSendFailed(f"{destination} did not accept an association")
    try:
        status = assoc.send_c_store(ds)
    finally:
        if assoc.is_established:
            assoc.release()
    code = int(status.Status) if status and "Status" in status else None
    if code is None:
        logger.warning(
            "SR send: no response",
            extra={"action": "sr_send_failed", "destination": str(destination)},
        )
        raise SRSendFailed(f"{destination} gave no C-STORE response")
    if code != SUCCESS and code not in WARNING_STATUSES:
        logger.warning(
            "SR send refused",
            extra={
                "action": "sr_send_failed",
                "destination": str(destination),
                "status": f"0x{code:04X}",
                "sop_uid": str(ds.SOPInstanceUID),
            },
        )
        raise SRSendFailed(f"{destination} answered C-STORE status 0x{code:04X}")
    logger.info(
        "SR sent",
        extra={
            "action": "sr_sent",
            "destination": str(destination),
            "sop_uid": str(ds.SOPInstanceUID),
            "status": f"0x{code:04X}",
        },
    )
    return code


__all__ = ["SRSendFailed", "send_sr"]
