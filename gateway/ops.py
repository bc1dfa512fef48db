"""``teleread gateway status``: how the gateway runs (``gateway-state.json``, written by the
running gateway), what the spool holds and how forwarding is going."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.outbox import (
    CONFLICT,
    COUNTERS,
    HELD_STATES,
    INVALID,
    MISSING,
    PENDING_STATES,
    RECEIVED,
)
from gateway.spool import Spool

logger = logging.getLogger(__name__)

Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
STATE_FILE = "gateway-state.json"


def write_state(spool_dir: Path, state: dict[str, Any]) -> None:
    """Record how the running gateway runs, for ``teleread gateway status`` (mode 0600)."""
    path = spool_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(state, out, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning(
            "state file not written", extra={"action": "state_failed", "error": str(exc)}
        )


def clear_state(spool_dir: Path) -> None:
    try:
        (spool_dir / STATE_FILE).unlink(missing_ok=True)
    except OSError:
        pass


def read_state(spool_dir: Path) -> dict[str, Any] | None:
    """The running gateway's state (``running`` False when its process is gone)."""
    try:
        state: dict[str, Any] = json.loads((spool_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(state.get("pid", 0)), 0)
        state["running"] = True
    except (OSError, ValueError, OverflowError):
        state["running"] = False
    return state


def spool_status(spool: Spool | Path | str) -> dict[str, Any]:
    """Spool bytes, queue counts by state and priority, last error, oldest unsent item.

    Given a path, the outbox is opened read-only: safe while the gateway runs (opening a
    ``Spool`` would run its start-up recovery)."""
    if isinstance(spool, Spool):
        status = _status(str(spool.root), spool.outbox.query)
        status["gateway"] = read_state(spool.root)
        return status
    root = Path(spool).absolute()
    db = root / "outbox.db"
    if not db.exists():
        status = _status(str(root), _no_rows)
    else:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:

            def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
                return list(conn.execute(sql, params))

            status = _status(str(root), query)
        finally:
            conn.close()
    status["gateway"] = read_state(root)
    return status


def _no_rows(_sql: str, _params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return []


def _counters(q: Query) -> dict[str, int]:
    try:
        rows: dict[str, int] = dict(q("SELECT name, value FROM counters", ()))
    except sqlite3.Error:  # a spool from before the counters table
        rows = {}
    return {name: int(rows.get(name, 0)) for name in COUNTERS}


def _priority(rank: int) -> str:
    return "urgent" if rank == 0 else "routine"


def _status(root: str, q: Query) -> dict[str, Any]:
    by_state: dict[str, int] = {}
    by_priority: dict[str, int] = {"urgent": 0, "routine": 0}
    by_priority_state: dict[str, dict[str, int]] = {"urgent": {}, "routine": {}}
    for state, rank, count in q(
        "SELECT state, priority_rank, COUNT(*) FROM outbox GROUP BY state, priority_rank", ()
    ):
        by_state[state] = by_state.get(state, 0) + int(count)
        cell = by_priority_state[_priority(rank)]
        cell[state] = cell.get(state, 0) + int(count)
        if state in PENDING_STATES:
            by_priority[_priority(rank)] += int(count)
    oldest_urgent = q(
        "SELECT MIN(received_ts) FROM outbox WHERE state IN (?, ?) AND priority_rank = 0",
        PENDING_STATES,
    )
    last = q(
        "SELECT last_error, sop_instance_uid, state, attempts FROM outbox "
        "WHERE last_error IS NOT NULL AND state IN (?, ?) "
        "ORDER BY next_attempt_at DESC LIMIT 1",
        PENDING_STATES,
    )
    oldest = q(
        "SELECT received_at, received_ts, sop_instance_uid, study_instance_uid, state "
        "FROM outbox WHERE state IN (?, ?) ORDER BY received_ts, id LIMIT 1",
        PENDING_STATES,
    )
    # uploads begun and not ended: a row still to upload whose last upload began when it
    # was due (one that failed is due again later than it began). After a crash the row
    # shows here until the gateway starts it again: "began", not "running"
    uploading = q(
        "SELECT sop_instance_uid, priority_rank, COALESCE(upload_size, size), "
        "upload_started_at FROM outbox WHERE state = ? AND upload_started_at IS NOT NULL "
        "AND upload_started_at >= next_attempt_at ORDER BY upload_started_at, id LIMIT 5",
        (RECEIVED,),
    )
    problems = q(
        "SELECT id, state, sop_instance_uid, study_instance_uid, calling_ae, last_error "
        "FROM outbox WHERE state IN (?, ?, ?) ORDER BY id DESC LIMIT 20",
        (CONFLICT, MISSING, INVALID),
    )
    return {
        "spool_dir": root,
        "spool_bytes": int(
            (
                q(f"SELECT COALESCE(SUM(size), 0) FROM outbox WHERE state IN {HELD_STATES}", ())
                or [(0,)]
            )[0][0]
        ),
        "queue": {
            "by_state": by_state,
            "pending_by_priority": by_priority,
            "by_priority_and_state": by_priority_state,
        },
        "pending": sum(by_priority.values()),
        "last_error": (
            {
                "error": last[0][0],
                "sop_instance_uid": last[0][1],
                "state": last[0][2],
                "attempts": last[0][3],
            }
            if last
            else None
        ),
        "oldest_unsent": (
            {
                "received_at": oldest[0][0],
                "age_seconds": round(time.time() - float(oldest[0][1]), 1),
                "sop_instance_uid": oldest[0][2],
                "study_instance_uid": oldest[0][3],
                "state": oldest[0][4],
            }
            if oldest
            else None
        ),
        "oldest_urgent_unsent_age_seconds": (
            round(time.time() - float(oldest_urgent[0][0]), 1)
            if oldest_urgent and oldest_urgent[0][0] is not None
            else None
        ),
        "uploading": [
            {
                "sop_instance_uid": r[0],
                "priority": _priority(r[1]),
                "bytes": int(r[2]),
                "started_at": datetime.fromtimestamp(float(r[3]), UTC).isoformat(),
                "seconds": round(max(0.0, time.time() - float(r[3])), 1),
            }
            for r in uploading
        ],
        "counters": _counters(q),
        "problems": [
            {
                "id": r[0],
                "state": r[1],
                "sop_instance_uid": r[2],
                "study_instance_uid": r[3],
                "calling_ae": r[4],
                "error": r[5],
            }
            for r in problems
        ],
        "checked_at": datetime.now(UTC).isoformat(),
    }


def format_status(status: dict[str, Any]) -> str:
    """The status as a few human-readable lines."""
    q = status["queue"]
    lines = [*_gateway_lines(status.get("gateway"))]
    lines += [
        f"spool: {status['spool_dir']} ({status['spool_bytes'] / 1e6:.1f} MB held)",
        "pending: {pending} (urgent {u}, routine {r})".format(
            pending=status["pending"],
            u=q["pending_by_priority"]["urgent"],
            r=q["pending_by_priority"]["routine"],
        ),
        "by state: " + (", ".join(f"{k} {v}" for k, v in sorted(q["by_state"].items())) or "empty"),
    ]
    if status["oldest_unsent"]:
        o = status["oldest_unsent"]
        lines.append(
            f"oldest unsent: {o['sop_instance_uid']} ({o['state']}, {o['age_seconds']} s old)"
        )
    if status.get("oldest_urgent_unsent_age_seconds") is not None:
        lines.append(f"oldest urgent unsent: {status['oldest_urgent_unsent_age_seconds']} s old")
    for u in status.get("uploading") or []:
        lines.append(
            f"upload began {u['seconds']} s ago: {u['sop_instance_uid']} ({u['priority']}, "
            f"{u['bytes'] / 1e6:.1f} MB)"
        )
    c = status.get("counters") or {}
    if any(c.values()):
        lines.append(
            "since start of the spool: received {r}, stored {s}, duplicates {d}, re-sent {x}, "
            "refused (spool full) {f}; uploads {u} ({mb:.1f} MB, {saved:.1f} MB saved by "
            "recompression), upload failures {uf}, announce failures {af}, held by the county as "
            "conflicts {h}, answered the held warning {w}; associations refused {ar}".format(
                r=c.get("instances_received", 0),
                s=c.get("instances_stored", 0),
                d=c.get("instances_duplicate", 0),
                x=c.get("instances_resent", 0),
                f=c.get("instances_refused_spool_full", 0),
                u=c.get("uploads", 0),
                mb=c.get("bytes_uploaded", 0) / 1e6,
                saved=c.get("bytes_saved_recompression", 0) / 1e6,
                uf=c.get("upload_failures", 0),
                af=c.get("announce_failures", 0),
                h=c.get("instances_held_by_county", 0),
                w=c.get("instances_answered_held", 0),
                ar=c.get("associations_refused", 0),
            )
        )
    if status["last_error"]:
        e = status["last_error"]
        lines.append(f"last error: {e['error']} ({e['sop_instance_uid']}, {e['attempts']} tries)")
    for p in status["problems"]:
        lines.append(f"{p['state']}: {p['sop_instance_uid']} from {p['calling_ae']}: {p['error']}")
    return "\n".join(lines)


def _gateway_lines(state: dict[str, Any] | None) -> list[str]:
    if state is None:
        return ["gateway: not running on this spool (no state file)"]
    running = "running" if state.get("running") else "not running (last state)"
    path = state.get("fast_path") or {}
    lines = [
        f"gateway: {running}, pid {state.get('pid')}, AE {state.get('ae_title')}, "
        f"port {state.get('port')}"
        + (f", TLS port {state['tls_port']}" if state.get("tls_port") else ""),
        f"receiving: {state.get('receiving')} (TELEREAD_GATEWAY_WORKERS="
        f"{state.get('workers_setting')}, {state.get('cpus')} CPUs)",
        f"fast path: {path.get('mode')} (TELEREAD_GATEWAY_FAST_PATH={path.get('setting')}, "
        f"pynetdicom {path.get('pynetdicom')}, verified on {path.get('verified_pynetdicom')})",
    ]
    if path.get("warning"):
        lines.append(f"warning: {path['warning']}")
    if state.get("header_reader"):
        lines.append(f"spooled headers read {state['header_reader']}")
    return lines
