"""The gRPC server: AIRuntime, the standard grpc.health.v1 service and server reflection.

No model-management call is served on this port (§8.4).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sidecar._proto import airuntime_pb2 as pb
from sidecar._proto import airuntime_pb2_grpc as pb_grpc
from sidecar.core import RuntimeCore
from sidecar.grpc.servicer import AIRuntimeServicer
from sidecar.settings import SidecarSettings

LOGGER = logging.getLogger("sidecar.grpc")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AIRuntime"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_credentials(settings: SidecarSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings (None: plaintext); mTLS when a client CA is set."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    pair = [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
    if settings.tls_client_ca_file is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(
        pair, root_certificates=settings.tls_client_ca_file.read_bytes(), require_client_auth=True
    )


class GrpcServer:
    """The sidecar's gRPC endpoint; :meth:`start` returns the bound port (0 binds a free one)."""

    def __init__(self, settings: SidecarSettings, core: RuntimeCore) -> None:
        self.settings = settings
        self.core = core
        self.port: int | None = None
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        options = [
            ("grpc.max_receive_message_length", self.settings.max_message_bytes),
            ("grpc.max_send_message_length", self.settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
        pb_grpc.add_AIRuntimeServicer_to_server(AIRuntimeServicer(self.core), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        address = self.settings.grpc_address
        credentials = server_credentials(self.settings)
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
        if port == 0:
            raise OSError(f"cannot bind the gRPC address {address}")
        await server.start()
        self._server = server
        self.port = port
        self.core.on_ready_change(self._serving)
        mode = "TLS" if credentials else "plaintext"
        LOGGER.info("AIRuntime gRPC on %s:%d (%s)", self.settings.grpc_host, port, mode)
        return port

    def _serving(self, ready: bool) -> None:
        status = _SERVING if ready else _NOT_SERVING
        loop = asyncio.get_running_loop()
        for name in ("", SERVICE_NAME):
            task = loop.create_task(self._health.set(name, status))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float | None = 5.0) -> None:
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(grace)
            self._server = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
