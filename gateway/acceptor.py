"""One acceptor process (``python -m gateway.acceptor <fd>``, config JSON on stdin): receives
connections from the gateway process's ``AcceptorPool`` (``gateway/workers.py``) over a Unix
socketpair and runs their associations with its own pynetdicom AE and the same handlers as
the one-process SCP, writing to the same spool and ``mpps.db``.

Config JSON: ``{"settings": {...}, "address": [host, port], "logging": {...}}``.
``logging`` is the gateway process's own set-up as ``logging.config.dictConfig`` data
(``describe_logging``): the same format (text or JSON), filters (the patient-data redaction)
and levels, rebuilt here by dotted class path, so this package never imports whoever set
logging up (``teleread.logs``). Without it (or if it cannot be applied), plain text lines.

Messages to the gateway process: ``ready``, ``done`` (an association ended), ``work`` (an
instance was stored). EOF on the socketpair: the gateway is gone; abort and exit.
"""

from __future__ import annotations

import json
import logging
import logging.config
import socket
import sys
import threading
from types import TracebackType
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import ThreadedAssociationServer

from gateway.config import GatewaySettings
from gateway.spool import Spool
from gateway.transport import GatewayRequestHandler, tls_context_for, wrap_server_side

logger = logging.getLogger(__name__)

READY, DONE, WORK = b"ready", b"done", b"work"
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


class _CountingHandler(GatewayRequestHandler):
    """Runs the association to its end in the request thread, then says ``done``."""

    def handle(self) -> None:
        try:
            if not self.setup_connection():  # TLS handshake failed
                return
            assoc = self._create_association()
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            assoc.join()
        finally:
            server: Any = self.server
            server.notify(DONE)


class _DispatchedServer(ThreadedAssociationServer):
    """An association server without a listening socket of its own: connections come in
    through ``process_request`` from the dispatcher."""

    daemon_threads = True

    def __init__(self, *args: Any, ctrl: socket.socket, **kw: Any) -> None:
        self.ctrl = ctrl
        self._send_lock = threading.Lock()
        super().__init__(*args, **kw)

    def server_bind(self) -> None:
        pass

    def server_activate(self) -> None:
        pass

    def notify(self, message: bytes) -> None:
        with self._send_lock:
            try:
                self.ctrl.send(message)
            except OSError:
                pass  # the gateway is gone; the main loop notices the EOF


def main(ctrl_fd: int) -> None:
    from gateway.mpps import MppsStore
    from gateway.scp import build_ae, event_handlers
    from gateway.sites import SiteDirectory

    config = json.loads(sys.stdin.read())
    apply_logging(config.get("logging"), int(config.get("log_level", logging.WARNING)))
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # pynetdicom's standard handlers format a debug summary of every PDU and DIMSE
        # message; this process is ours alone, so switch them off unless debugging
        from pynetdicom import _config

        _config.LOG_HANDLER_LEVEL = "none"
    settings = GatewaySettings.model_validate(config["settings"])
    address = (str(config["address"][0]), int(config["address"][1]))
    ctrl = socket.socket(fileno=ctrl_fd)
    spool = Spool(  # no start-up recovery here: the gateway process ran it
        settings.spool_dir,
        max_bytes=settings.spool_max_bytes,
        min_free_bytes=settings.spool_min_free_bytes,
        slot_count=settings.spool_slots,
        slot_size=settings.spool_slot_bytes,
    )
    mpps = MppsStore(spool.root / "mpps.db")
    sites = SiteDirectory()
    tls = tls_context_for(settings)
    ae = build_ae(settings)
    server = ae.make_server(
        (settings.host, 0),
        evt_handlers=event_handlers(settings, spool, sites, mpps),
        server_class=_DispatchedServer,
        ctrl=ctrl,
        request_handler=_CountingHandler,
    )
    assert isinstance(server, _DispatchedServer)
    server.server_address = address
    stop = threading.Event()

    def forward_work() -> None:
        while not stop.is_set():
            if spool.outbox.new_work.wait(1.0):
                spool.outbox.new_work.clear()
                server.notify(WORK)
                stop.wait(NOTIFY_EVERY)  # one message for a burst's instances, not one each

    def resync() -> None:
        while not stop.wait(RESYNC_SECONDS):
            spool.resync_held_bytes()

    for target in (forward_work, resync):
        threading.Thread(target=target, daemon=True).start()
    server.notify(READY)
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
                sites.replace(data["sites"])
            for fd in fds:
                conn = socket.socket(fileno=fd)
                if data.get("tls"):
                    if tls is None:  # cannot happen: same settings as the gateway process
                        conn.close()
                        server.notify(DONE)
                        continue
                    conn = wrap_server_side(tls, conn)  # handshake in the request thread
                server.process_request(conn, tuple(data.get("peer") or ("", 0)))
    finally:
        stop.set()
        for assoc in ae.active_associations:
            assoc.abort()
            assoc.join(5)
        mpps.close()
        spool.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
