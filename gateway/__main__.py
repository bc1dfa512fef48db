"""``python -m gateway``: run the township gateway alone with settings from the environment."""

from __future__ import annotations

import logging
import signal
import threading

from gateway.config import get_settings
from gateway.service import Gateway


def main() -> None:
    import storage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    gateway = Gateway(settings=get_settings(), store=storage.from_settings())
    gateway.start()
    try:
        done.wait()
    finally:
        gateway.stop()


if __name__ == "__main__":
    main()
