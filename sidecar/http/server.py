"""``HttpServer``: uvicorn serving :func:`sidecar.http.app.create_app` inside the sidecar's loop.

The orchestrator (:mod:`sidecar.main`) alone handles signals, so uvicorn's own handlers are off.
``start()`` returns the bound port (0 in the settings picks a free one). With ``http_tls`` the port
serves HTTPS with the gRPC port's certificate and key (``tls_cert_file``, ``tls_key_file``); client
certificates are not asked for here (probes and scrapers could not present one), ``tls_client_ca_file``
is the gRPC port's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import uvicorn

from sidecar.http.app import create_app
from sidecar.http.endpoints import OperationsCore

LOGGER = logging.getLogger(__name__)


class _NoSignalServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, settings: Any, core: OperationsCore) -> None:
        self.settings = settings
        tls = settings.http_tls
        self.app = create_app(settings, core)
        config = uvicorn.Config(
            self.app, host=settings.http_host, port=settings.http_port or 0,
            lifespan="off", log_config=None, access_log=True,
            ssl_certfile=settings.tls_cert_file if tls else None,
            ssl_keyfile=settings.tls_key_file if tls else None,
        )
        self._server = _NoSignalServer(config)
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> int:
        self._task = asyncio.get_running_loop().create_task(self._server.serve(), name="ruth-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        LOGGER.info("HTTP%s (probes, status, metrics, admin) on %s:%d", "S" if self.settings.http_tls else "",
                    self.settings.http_host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
