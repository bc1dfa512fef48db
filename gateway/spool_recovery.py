"""Start-up recovery of the spool: ``recover(spool)``, run by the process that owns the spool
(the gateway process) after opening it and before anything receives or its slot pool opens
(``Spool.open_slots``); acceptor processes never run it (it would delete another process's
file between its rename and its outbox commit).

Temp files are dropped. A spool file or slot record without an outbox row (a power cut took
the commit, or a crash came between the rename and the commit) gets its row back from the
file alone: its file meta carries the calling and called AE titles and the site
(``gateway.instance.encode_meta``). Files the gateway did not write that way (no spool
information) are removed, torn slot writes (never acknowledged) invalidated. Rows whose file
is gone are flagged ``missing``; the bytes still held are counted.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

from pydicom import dcmread

from gateway import slots
from gateway.instance import read_instance
from gateway.outbox import RECEIVED
from gateway.part10 import spool_info_of
from gateway.spool import Spool

logger = logging.getLogger(__name__)


def recover(spool: Spool) -> None:
    """Drop temp and orphan files; flag rows whose file is gone; count held bytes."""
    held_sha = spool.outbox.held_paths()
    held = dict.fromkeys(held_sha, RECEIVED)
    present = _recover_slots(spool, held_sha)
    orphans = []
    for entry in os.scandir(spool.objects):
        rel = f"objects/{entry.name}"
        if rel not in held:
            if entry.name.startswith(".tmp-") or not _reindex(spool, Path(entry.path)):
                os.unlink(entry.path)
                logger.info(
                    "orphan spool file removed",
                    extra={"action": "spool_orphan_removed", "path": rel},
                )
            else:
                orphans.append(rel)
    held.update(dict.fromkeys(orphans, RECEIVED))
    for path in held:
        if path.startswith("slots/") and path in present:
            continue
        if path.startswith("slots/") or not (spool.root / path).exists():
            spool.outbox.mark_path_missing(path, "spool file missing at start")
            logger.error("spool file missing", extra={"action": "spool_file_missing", "path": path})
    spool.resync_held_bytes()


def _recover_slots(spool: Spool, held_sha: dict[str, str]) -> set[str]:
    """Slots holding a record: kept when their row holds them, else the row rebuilt (or
    the slot freed: a duplicate of a row, e.g. announced before the slot was freed)."""
    present: set[str] = set()
    base = spool.root / "slots"
    if not base.is_dir():
        return present
    for directory in sorted(p for p in base.iterdir() if p.is_dir()):
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith(".tmp-"):
                entry.unlink(missing_ok=True)
                continue
            rel = f"slots/{directory.name}/{entry.name}"
            record = slots.read_record(entry)
            if record is None:
                if slots.has_magic(entry):  # a torn write: never acknowledged
                    slots.invalidate(entry)
                continue
            if held_sha.get(rel) == record.dataset_sha256:
                present.add(rel)
            elif _reindex_data(spool, record.data, record.received_ts, rel, slot=rel):
                present.add(rel)
            else:
                slots.invalidate(entry)
    return present


def _reindex(spool: Spool, path: Path) -> bool:
    """Give a spool file without an outbox row its row back; False: not ours, remove it."""
    try:
        data = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError:
        return False
    return _reindex_data(spool, data, mtime, str(path))


def _reindex_data(
    spool: Spool, data: bytes, now: float, where: str, slot: str | None = None
) -> bool:
    try:
        meta = dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
        info = spool_info_of(meta)
        if info is None:
            return False
        called = str(getattr(meta, "ReceivingApplicationEntityTitle", "") or "").strip()
        category = info.get("category")
        inst = read_instance(
            data,
            meta,
            site=str(info.get("site", "")),
            calling_ae=str(getattr(meta, "SourceApplicationEntityTitle", "")).strip(),
            called_ae=called,
            urgent_called_aes={called: category} if category else {},
        )
        offset = 144 + int.from_bytes(data[140:144], "little")
        outcome, row_id = spool.store(
            inst, data, dataset_offset=offset, now=now, recovery=True, slot=slot
        )
    except Exception as exc:
        logger.error(
            "spool file without outbox row not recoverable",
            extra={"action": "spool_reindex_failed", "path": where, "error": repr(exc)},
        )
        return False
    logger.warning(
        "outbox row rebuilt from its spool file",
        extra={"action": "spool_row_rebuilt", "row_id": row_id, "outcome": outcome},
    )
    return outcome != "duplicate"  # a duplicate's row holds the bytes already
