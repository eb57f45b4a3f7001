"""The sidecar process: settings, the core, the gRPC server, and signal handling in one place.

``python -m sidecar`` and the ``ruth-sidecar`` console script run :func:`main`; ``ruthgen up``
runs :class:`Sidecar` in its own event loop next to the embedded Triton.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from sidecar.core import RuntimeCore
from sidecar.grpc.server import GrpcServer
from sidecar.settings import SidecarSettings, load_settings
from sidecar.triton import TritonAdapter

LOGGER = logging.getLogger("sidecar")


class Sidecar:
    """One running sidecar: ``async with Sidecar(settings) as s: ... s.port``."""

    def __init__(self, settings: SidecarSettings) -> None:
        self.settings = settings
        self.core = RuntimeCore(settings, TritonAdapter(settings.triton_url))
        self.server = GrpcServer(settings, self.core)
        self.port: int | None = None

    async def start(self) -> int:
        await self.core.start()
        try:
            self.port = await self.server.start()
        except BaseException:
            await self.core.stop()
            raise
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        await self.server.stop(grace)
        await self.core.stop()

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(settings: SidecarSettings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or until ``stop`` is set)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    try:
        async with Sidecar(settings):
            await stop.wait()
            LOGGER.info("stopping")
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(settings))
    return 0
