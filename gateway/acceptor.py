"""One acceptor process (``python -m gateway.acceptor <fd>``, config JSON on stdin): receives
connections from the gateway process (``gateway.workers.AcceptorPool``) over a Unix
socketpair and runs their associations in its own association host (``gateway.scp``, the
same handlers as in the gateway process, on the path the gateway process chose), writing to
the same spool and ``mpps.db``.

Config JSON: ``{"settings": {...}, "address": [host, port], "fast": bool, "sites": {ae:
site}, "logging": {...}}``. ``logging`` is the gateway process's own set-up as
``logging.config.dictConfig`` data (``describe_logging``): the same format (text or JSON),
filters (the patient-data redaction) and levels, rebuilt here by dotted class path, so this
package never imports whoever set logging up (``teleread.logs``). Without it (or if it cannot
be applied), plain text lines.

Messages to the gateway process: ``ready``; ``done <host>`` (an association from that address
ended); ``work`` (an instance was stored); ``sites?`` (an unknown calling AE: look again and
push the list). From the gateway process: ``{"peer": [host, port], "tls": bool}`` with one
descriptor (a connection to run), ``{"sites": {...}}`` (the allow-list, pushed whenever it
changes). EOF on the socketpair: the gateway is gone; abort and exit.
"""

from __future__ import annotations

import json
import logging
import logging.config
import signal
import socket
import sys
import threading
from types import TracebackType
from typing import Any

from gateway.config import GatewaySettings
from gateway.spool import Spool
from gateway.transport import tls_context_for, wrap_server_side

logger = logging.getLogger(__name__)

READY, WORK, ASK_SITES = b"ready", b"work", b"sites?"
DONE = b"done "  # + the peer's host
RESYNC_SECONDS = 5.0
# an acceptor tells the gateway process about new instances at most this often
NOTIFY_EVERY = 0.05
FALLBACK_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"


# -- logging: described in the gateway process, applied in the acceptor --------------------


def _class_path(obj: object) -> str | None:
    """``module.QualName`` of ``obj``'s class if importing that path gives the class back."""
    cls = type(obj)
    module = sys.modules.get(cls.__module__)
    found: Any = module
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    return f"{cls.__module__}.{cls.__qualname__}" if found is cls else None


def describe_logging() -> dict[str, Any] | None:
    """This process's logging set-up as ``dictConfig`` data: the root level, each root
    handler writing to stderr with its formatter and filters (by class path), and every
    logger with a level of its own. None if a stderr handler's formatter or filters cannot be
    named (a class defined in a function, a plain function as filter): dropping the patient
    filter silently would be worse than the plain fallback format."""
    root = logging.getLogger()
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {},
        "filters": {},
        "handlers": {},
        "root": {"level": root.level, "handlers": []},
        "loggers": {},
    }
    for i, handler in enumerate(root.handlers):
        stream = getattr(handler, "stream", None)
        if type(handler) is not logging.StreamHandler or stream not in (sys.stderr, sys.__stderr__):
            continue  # a file, a test's capture handler...: not the process's stderr
        formatter = handler.formatter or logging.Formatter()
        path = _class_path(formatter)
        if path is None:
            return None
        style = {logging.StrFormatStyle: "{", logging.StringTemplateStyle: "$"}
        config["formatters"][f"f{i}"] = {
            "()": path,
            "fmt": formatter._fmt,
            "datefmt": formatter.datefmt,
            "style": style.get(type(formatter._style), "%"),
        }
        filter_ids = []
        for j, flt in enumerate(handler.filters):
            flt_path = _class_path(flt)
            if flt_path is None or not isinstance(flt, logging.Filter):
                return None
            config["filters"][f"r{i}_{j}"] = {"()": flt_path}
            filter_ids.append(f"r{i}_{j}")
        config["handlers"][f"h{i}"] = {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "level": handler.level,
            "formatter": f"f{i}",
            "filters": filter_ids,
        }
        config["root"]["handlers"].append(f"h{i}")
    if not config["handlers"]:
        return None
    for name, item in sorted(logging.root.manager.loggerDict.items()):
        if isinstance(item, logging.Logger) and item.level != logging.NOTSET:
            config["loggers"][name] = {"level": item.level}
    return config


def apply_logging(config: dict[str, Any] | None, level: int = logging.WARNING) -> None:
    """Set up this process's logging from ``describe_logging`` data; plain text lines at
    ``level`` if there is none or it does not apply. Uncaught exceptions and Python warnings
    become log records, so in JSON mode every line this process writes parses."""
    applied = False
    if config:
        try:
            logging.config.dictConfig({**config, "disable_existing_loggers": False})
            applied = True
        except (ValueError, TypeError, AttributeError, ImportError):
            pass
    if not applied:
        logging.basicConfig(level=level, format=FALLBACK_FORMAT, force=True)
        if config:
            logger.warning(
                "the gateway's logging set-up did not apply here; logging plain text",
                extra={"action": "acceptor_logging_fallback"},
            )
    logging.captureWarnings(True)

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        logger.critical(
            "uncaught exception", exc_info=(kind, exc, tb), extra={"action": "acceptor_crash"}
        )

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        logger.critical(
            "uncaught exception in a thread",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
            extra={
                "action": "thread_crash",
                "thread_name": args.thread.name if args.thread else "",
            },
        )

    sys.excepthook = hook
    threading.excepthook = thread_hook


# -- the acceptor process ------------------------------------------------------------------


class _Notifier:
    """Messages to the gateway process, one at a time (several threads send)."""

    def __init__(self, ctrl: socket.socket) -> None:
        self.ctrl = ctrl
        self._lock = threading.Lock()

    def __call__(self, message: bytes) -> None:
        with self._lock:
            try:
                self.ctrl.send(message)
            except OSError:
                pass  # the gateway is gone; the main loop notices the EOF


def main(ctrl_fd: int) -> None:
    # the gateway process stops this one by closing the control socket; a terminal's Ctrl-C
    # reaches the whole process group and would only cut requests short with a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from gateway.fastpath import PathChoice, installed_pynetdicom
    from gateway.mpps import MppsStore
    from gateway.scp import build_host
    from gateway.sites import PushedSites, split_table

    config = json.loads(sys.stdin.read())
    apply_logging(config.get("logging"), int(config.get("log_level", logging.WARNING)))
    settings = GatewaySettings.model_validate(config["settings"])
    address = (str(config["address"][0]), int(config["address"][1]))
    ctrl = socket.socket(fileno=ctrl_fd)
    notify = _Notifier(ctrl)
    spool = Spool(  # no start-up recovery here: the gateway process ran it
        settings.spool_dir,
        max_bytes=settings.spool_max_bytes,
        min_free_bytes=settings.spool_min_free_bytes,
        slot_count=settings.spool_slots,
        slot_size=settings.spool_slot_bytes,
    )
    spool.open_slots()
    mpps = MppsStore(spool.root / "mpps.db")
    mapping, devices = split_table(config.get("sites") or {})
    sites = PushedSites(mapping, devices=devices, ask=lambda: notify(ASK_SITES))
    tls = tls_context_for(settings)
    path = PathChoice(settings.fast_path, bool(config.get("fast")), installed_pynetdicom())
    host = build_host(
        settings,
        spool,
        sites,
        path=path,
        mpps=mpps,
        on_done=lambda peer: notify(DONE + str(peer[0]).encode()),
    )
    host.server_address = address
    stop = threading.Event()

    def forward_work() -> None:
        while not stop.is_set():
            if spool.outbox.new_work.wait(1.0):
                spool.outbox.new_work.clear()
                notify(WORK)
                stop.wait(NOTIFY_EVERY)  # one message for a burst's instances, not one each

    def resync() -> None:
        while not stop.wait(RESYNC_SECONDS):
            spool.resync_held_bytes()

    for target in (forward_work, resync):
        threading.Thread(target=target, daemon=True).start()
    notify(READY)
    try:
        while True:
            try:
                message, fds, _flags, _addr = socket.recv_fds(ctrl, 1 << 20, 4)
            except InterruptedError:
                continue
            except ConnectionResetError:  # the gateway process ended: so do we
                break
            if not message:
                break
            data = json.loads(message)
            if "sites" in data:
                sites.replace(*split_table(data["sites"]))
            peer = tuple(data.get("peer") or ("", 0))
            for fd in fds:
                conn = socket.socket(fileno=fd)
                if data.get("tls"):
                    if tls is None:  # cannot happen: same settings as the gateway process
                        conn.close()
                        notify(DONE + str(peer[0]).encode())
                        continue
                    conn = wrap_server_side(tls, conn)  # handshake in the request thread
                host.process_request(conn, peer)
    finally:
        stop.set()
        host.close()
        mpps.close()
        spool.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
