"""``python -m gateway``: run the township gateway alone with settings from the environment."""

from __future__ import annotations

import logging
import signal
import time

from gateway.config import get_settings
from gateway.service import Gateway


def main() -> None:
    import storage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # the handlers only record the signal: a handler runs in the main thread between two
    # bytecodes, also inside a lock it holds (Event.set), so one taking a lock can deadlock
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    gateway = Gateway(settings=get_settings(), store=storage.from_settings())
    gateway.start()
    try:
        while not stopping:
            time.sleep(0.2)
    finally:
        gateway.stop()


if __name__ == "__main__":
    main()
