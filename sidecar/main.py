"""The sidecar process: composes the runtime from the settings and owns start, stop and signals.

:func:`build_core` is the one place where the settings choose the parts: the plugin folder the
sidecar owns (``models_dir`` set: hot reload by watching it) or a repository built elsewhere
(``models_dir`` unset: its manifest is polled), the stub killer of the tritonserver behind
``triton_url``. :class:`Sidecar` runs the core with its gRPC and HTTP transports in one event loop;
``python -m sidecar`` and the ``ruth-sidecar`` console script run :func:`main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from ruthgen.interface import detected_target, write_atomic
from sidecar.control.recovery import StubKiller
from sidecar.control.sources import PluginFolderSource, RepositorySource
from sidecar.control.watcher import ManifestWatcher, ModelsWatcher
from sidecar.core import RuntimeCore, WatcherFactory
from sidecar.grpc.server import GrpcServer
from sidecar.http.server import HttpServer
from sidecar.settings import SidecarSettings, load_settings
from sidecar.triton_client import TritonAdapter

LOGGER = logging.getLogger("sidecar")
GC_THRESHOLDS = (50_000, 50, 100)
#: how long the gRPC server lets the calls still open finish when it stops (after the drain)
SERVER_GRACE_S = 5.0


def build_core(
    settings: SidecarSettings, adapter: TritonAdapter | None = None, **parts: Any
) -> RuntimeCore:
    """The runtime core the settings describe (``parts``: further keyword arguments of the core)."""
    watcher: WatcherFactory | None = None
    if settings.models_dir is not None:
        models_dir = settings.models_dir
        source: PluginFolderSource | RepositorySource = PluginFolderSource(
            models_dir, settings.model_repository, settings.target or detected_target()
        )
        if settings.watch_models:
            def watcher(on_change):
                return ModelsWatcher(models_dir, on_change, debounce_s=settings.watch_debounce_s)
    else:
        repository = source = RepositorySource(settings.model_repository)
        if settings.watch_models:
            def watcher(on_change):
                return ManifestWatcher(repository, on_change, interval_s=settings.manifest_poll_s)
    parts.setdefault("stub_killer", StubKiller.for_server(settings.triton_pid, _port_of(settings.triton_url)))
    adapter = adapter or TritonAdapter(settings.triton_url)
    return RuntimeCore(settings, adapter, source, watcher=watcher, **parts)


class Sidecar:
    """One running sidecar: ``async with Sidecar(settings) as s: ... s.port``."""

    def __init__(self, settings: SidecarSettings, core: RuntimeCore | None = None) -> None:
        self.settings = settings
        self.core = core or build_core(settings)
        self.server = GrpcServer(settings, self.core)
        self.http = HttpServer(settings, self.core) if settings.http_port is not None else None
        self.port: int | None = None
        self.http_port: int | None = None

    async def start(self) -> int:
        if self.http is not None:  # probes answer (not ready) while the initial loads run
            self.http_port = await self.http.start()
        try:
            await self.core.start()
            self.port = await self.server.start()
            if self.settings.port_file is not None:
                write_atomic(self.settings.port_file, f"{self.port}\n")
        except BaseException:
            await self.core.stop()
            if self.http is not None:
                await self.http.stop()
            raise
        return self.port

    async def rescan(self) -> None:
        """SIGHUP: rescan every version."""
        try:
            await self.core.rescan()
        except Exception:
            LOGGER.exception("rescan failed")

    async def drain(self) -> None:
        """SIGTERM: answer what the open streams hold, refuse new work, tell clients to go elsewhere."""
        await self.core.drain(self.settings.shutdown_drain_s)

    async def stop(self, grace: float = SERVER_GRACE_S) -> None:
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
    """Run until SIGINT/SIGTERM (or until ``stop`` is set), then drain; SIGHUP rescans."""
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
            await sidecar.drain()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _port_of(url: str) -> int | None:
    try:
        return int(url.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


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
