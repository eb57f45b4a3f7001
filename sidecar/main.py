"""The sidecar process: settings, the core, the gRPC server, and signal handling in one place.

``python -m sidecar`` and the ``ruth-sidecar`` console script run :func:`main`; ``ruthgen up``
runs :class:`Sidecar` in its own event loop next to the embedded Triton.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from sidecar.core import RuntimeCore
from sidecar.grpc.server import GrpcServer
from sidecar.http.server import HttpServer
from sidecar.settings import SidecarSettings, load_settings
from sidecar.triton import TritonAdapter

LOGGER = logging.getLogger("sidecar")
GC_THRESHOLDS = (50_000, 50, 100)


class Sidecar:
    """One running sidecar: ``async with Sidecar(settings) as s: ... s.port``."""

    def __init__(self, settings: SidecarSettings) -> None:
        self.settings = settings
        self.core = RuntimeCore(settings, TritonAdapter(settings.triton_url))
        self.server = GrpcServer(settings, self.core)
        operations = getattr(self.core.lifecycle, "operations", None)
        serve_http = operations is not None and settings.http_port is not None
        self.http = HttpServer(settings, operations) if serve_http else None
        self.port: int | None = None
        self.http_port: int | None = None

    async def start(self) -> int:
        if self.http is not None:  # probes answer (not ready) while the initial loads run
            self.http_port = await self.http.start()
        try:
            await self.core.start()
            self.port = await self.server.start()
            if self.settings.port_file is not None:
                _write_port(self.settings.port_file, self.port)
        except BaseException:
            await self.core.stop()
            if self.http is not None:
                await self.http.stop()
            raise
        return self.port

    async def rescan(self) -> None:
        """SIGHUP: rescan the plugin folder (only when the sidecar manages it)."""
        rescan = getattr(self.core.lifecycle, "rescan", None)
        if rescan is None:
            LOGGER.info("SIGHUP ignored: no models_dir is managed by this sidecar")
            return
        try:
            await rescan()
        except Exception:
            LOGGER.exception("rescan failed")

    async def stop(self, grace: float = 5.0) -> None:
        await self.server.stop(grace)
        if self.http is not None:
            await self.http.stop()
        await self.core.stop()

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(settings: SidecarSettings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or until ``stop`` is set); SIGHUP rescans the plugin folder."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    pending: set[asyncio.Task[None]] = set()
    try:
        async with Sidecar(settings) as sidecar:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):

                def on_hup() -> None:
                    task = loop.create_task(sidecar.rescan())
                    pending.add(task)
                    task.add_done_callback(pending.discard)

                loop.add_signal_handler(signal.SIGHUP, on_hup)
                installed.append(signal.SIGHUP)
            await stop.wait()
            LOGGER.info("stopping")
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _write_port(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Every frame allocates short-lived objects; freezing what startup created and collecting the
    # young generation less often saved 5-10% CPU per request in benchmarks/bench_sidecar.py.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    asyncio.run(serve(settings))
    return 0
