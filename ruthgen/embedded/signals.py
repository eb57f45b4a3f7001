"""Signal handling for the programs that own an embedded tritonserver (the CLI commands).

Within `interrupt_on_signals()`, SIGINT and SIGTERM raise `KeyboardInterrupt` in the main thread,
so that ``with EmbeddedTriton(...)`` blocks unwind and stop their servers. Later signals are
ignored while that shutdown runs, so a second Ctrl-C cannot leave a half-stopped server behind
(the shutdown itself is bounded in time).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

LOGGER = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Turn the first SIGINT/SIGTERM into `KeyboardInterrupt`; ignore (and log) the next ones."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            LOGGER.warning("%s received: already stopping", signal.Signals(signum).name)
            return
        received.append(signum)
        LOGGER.info("%s received: stopping", signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, handler) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
