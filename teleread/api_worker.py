"""One API worker process (``python -m teleread.api_worker``, started by
``teleread.api_workers.ApiWorkers``): the app built from the environment, served on the
listening socket inherited from the parent, until SIGTERM / SIGINT or the parent's death."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Sequence

from teleread.signals import StopSignals

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux; elsewhere the parent check
    in ``main`` does it within a second)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def main(argv: Sequence[str] | None = None) -> int:
    """One worker: build the app from the environment, serve on the inherited socket until
    SIGTERM / SIGINT or the parent's death."""
    parser = argparse.ArgumentParser(prog="teleread.api_worker")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    parent = os.getppid()
    _die_with_parent()
    # from now on a signal stops the worker in order (no KeyboardInterrupt mid-import)
    signals = StopSignals().install()
    os.umask(0o077)

    import storage
    from teleread.logs import configure_logging
    from teleread.services import ApiServer, build_api, wait_for_signal

    configure_logging(verbose=args.verbose)
    sock = socket.socket(fileno=args.listen_fd)
    app = build_api(os.environ["TELEREAD_WORKLIST_DATABASE_URL"], storage.from_settings())
    server = ApiServer(app, sock=sock)
    server.start()
    os.write(args.ready_fd, b"ready")
    os.close(args.ready_fd)
    try:
        wait_for_signal(signals, keep_going=lambda: os.getppid() == parent)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
