"""Whether Triton is ready, as last seen, and who wants to hear when that changes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sidecar.triton_client import TritonAdapter

LOGGER = logging.getLogger(__name__)


class ServerReadiness:
    """Triton's readiness as last asked; listeners hear every change."""

    def __init__(self, adapter: TritonAdapter) -> None:
        self.adapter = adapter
        self.ready = False
        self._listeners: list[Callable[[bool], None]] = []

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(ready)`` whenever the readiness changes (and once now)."""
        self._listeners.append(listener)
        listener(self.ready)

    async def check(self) -> bool:
        """Ask Triton, record the answer, tell the listeners if it changed; return it."""
        ready = await self.adapter.server_ready()
        if ready != self.ready:
            LOGGER.info("inference server %s is %s", self.adapter.url, "ready" if ready else "NOT ready")
            self.ready = ready
            for listener in list(self._listeners):
                listener(ready)
        return ready

    async def wait(self, timeout_s: float) -> bool:
        """Poll until Triton is ready or ``timeout_s`` passed (then log it and go on)."""
        deadline = time.monotonic() + timeout_s
        while not await self.check():
            if time.monotonic() >= deadline:
                LOGGER.error("inference server %s is not ready; will keep trying", self.adapter.url)
                return False
            await asyncio.sleep(0.2)
        return True
