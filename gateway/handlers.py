"""pynetdicom event handlers: plain functions, their dependencies passed as arguments."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pynetdicom.events import Event

from gateway import status
from gateway.errors import InvalidInstance, SpoolError, SpoolFull
from gateway.instance import read_instance
from gateway.part10 import PREAMBLE, StoreMeta, encode_meta
from gateway.received import StoreRequest, quick_instance
from gateway.sites import Sites
from gateway.spool import Spool
from worklist.triage import category_for_called_ae

logger = logging.getLogger(__name__)


def _calling_ae(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def _called_ae(event: Event) -> str:
    primitive: Any = event.assoc.requestor.primitive
    called = getattr(primitive, "called_ae_title", None) or event.assoc.acceptor.ae_title
    return str(called).strip()


def handle_association_request(event: Event, sites: Sites) -> None:
    """EVT_REQUESTED: reject (permanent, calling AE title not recognised) unknown AEs."""
    primitive: Any = event.assoc.requestor.primitive
    calling = str(getattr(primitive, "calling_ae_title", "")).strip()
    if sites.site_for(calling) is not None:
        return
    logger.warning(
        "association from unknown calling AE rejected",
        extra={
            "action": "association_rejected",
            "calling_ae": calling,
            "peer": event.assoc.requestor.address,
        },
    )
    event.assoc.acse.send_reject(
        status.REJECTED_PERMANENT,
        status.SOURCE_SERVICE_USER,
        status.REASON_CALLING_AE_NOT_RECOGNISED,
    )
    event.assoc.kill()  # as pynetdicom's own rejection does: lets the DUL send the A-ASSOCIATE-RJ


def handle_echo(event: Event) -> int:
    """C-ECHO: always success (the association itself was already allow-listed)."""
    return status.SUCCESS


def handle_store(
    event: Event,
    spool: Spool,
    sites: Sites,
    urgent_called_aes: Mapping[str, str] | None = None,
) -> int:
    """C-STORE through pynetdicom's DIMSE layer: ``store_received`` on the event's request.
    (With the fast path on, most requests go straight to ``store_received``: its
    ``FastStore``, ``gateway.scp``.)"""
    request: Any = event.request
    store = StoreRequest(
        calling_ae=_calling_ae(event),
        called_ae=_called_ae(event),
        sop_class_uid=str(request.AffectedSOPClassUID or ""),
        sop_instance_uid=str(getattr(request, "AffectedSOPInstanceUID", "") or ""),
        transfer_syntax=str(event.context.transfer_syntax),
    )
    with request.DataSet.getbuffer() as dataset:  # the received bytes, not a copy
        return store_received(store, [dataset], None, spool, sites, urgent_called_aes)


def store_received(
    request: StoreRequest,
    fragments: Sequence[bytes | bytearray | memoryview],
    dataset_sha256: str | None,
    spool: Spool,
    sites: Sites,
    urgent_called_aes: Mapping[str, str] | None = None,
) -> int:
    """C-STORE: spool the dataset as received; SUCCESS only once it is durable.

    ``fragments``: the dataset's bytes as received (joined once, after the file meta);
    ``dataset_sha256``: their sha256 if already taken. Re-sent identical instances are a
    no-op SUCCESS; different bytes under a known SOP Instance UID are kept as a conflict
    (never overwriting the first) and also answered SUCCESS, since the modality cannot fix it
    and must not keep retrying; the conflict is logged and shown by ``teleread gateway
    status``.
    """
    calling, called, sop = request.calling_ae, request.called_ae, request.sop_instance_uid
    site = sites.site_for(calling)
    log: dict[str, Any] = {"calling_ae": calling, "called_ae": called, "sop_uid": sop}
    if site is None:
        logger.warning(
            "C-STORE from an AE no longer allowed", extra={"action": "store_refused", **log}
        )
        return status.REFUSED_NOT_AUTHORISED
    try:
        urgent = urgent_called_aes or {}
        meta = StoreMeta(request.sop_class_uid, sop, request.transfer_syntax)
        explicit = category_for_called_ae(called, urgent)
        prefix = PREAMBLE + encode_meta(
            meta,
            calling_ae=calling,
            called_ae=called,
            spool_info={"site": site, "category": explicit},
        )
        data = b"".join((prefix, *fragments))
        # the UIDs and a structural check now; the header's text and triage after the
        # response (the forwarder reads the spooled file); anything unusual: parse it now
        args: dict[str, Any] = {
            "site": site,
            "calling_ae": calling,
            "called_ae": called,
            "urgent_called_aes": urgent,
        }
        inst = quick_instance(memoryview(data)[len(prefix) :], meta, **args)
        if inst is None:
            inst = read_instance(data, meta, **args)
        log.update(study_uid=inst.study_instance_uid, series_uid=inst.series_instance_uid)
        outcome, row_id = spool.store(
            inst, data, dataset_offset=len(prefix), dataset_sha256=dataset_sha256
        )
    except InvalidInstance as exc:
        logger.warning(
            "malformed dataset refused",
            extra={"action": "store_malformed", "error": str(exc), "status": exc.status, **log},
        )
        return exc.status
    except SpoolFull as exc:
        logger.error(
            "spool full, instance refused",
            extra={"action": "store_spool_full", "error": str(exc), **log},
        )
        return status.OUT_OF_RESOURCES
    except (SpoolError, OSError) as exc:
        logger.error(
            "spool write failed", extra={"action": "store_spool_error", "error": str(exc), **log}
        )
        return status.OUT_OF_RESOURCES
    except Exception as exc:  # never let one instance take the association down
        logger.exception(
            "C-STORE failed", extra={"action": "store_failed", "error": repr(exc)[:300], **log}
        )
        return status.PROCESSING_FAILURE
    level = logging.WARNING if outcome == "conflict" else logging.DEBUG
    logger.log(
        level,
        f"instance {outcome}",
        extra={"action": f"instance_{outcome}", "row_id": row_id, "site": site, **log},
    )
    return status.SUCCESS


__all__ = ["handle_association_request", "handle_echo", "handle_store", "store_received"]
