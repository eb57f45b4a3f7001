"""The gRPC server: AIRuntime, the standard grpc.health.v1 service and server reflection.

No model-management call is served on this port (docs/architecture.md#parts). Dead clients are
noticed by keepalive:
the server pings every connection each ``grpc_keepalive_time_s`` (with calls or without) and
closes it, cancelling its streams, when a ping is not answered within ``grpc_keepalive_timeout_s``.
Clients may ping too, as often as every :data:`CLIENT_PING_MIN_INTERVAL_MS` even without calls
(``sidecar.client`` pings every 30 s); more often, the server ends the connection (GOAWAY
"too_many_pings").
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

#: The shortest interval between a client's pings the server accepts (gRPC's default: 5 minutes).
CLIENT_PING_MIN_INTERVAL_MS = 10_000


def keepalive_options(settings: SidecarSettings) -> list[tuple[str, int]]:
    """Server channel arguments: ping every connection, accept the clients' keepalive pings.

    The ping timeout is set as well: grpcio 1.85's server timed its keepalive pings out with it
    (60 s by default), not with ``grpc.keepalive_timeout_ms``.
    """
    timeout_ms = round(settings.grpc_keepalive_timeout_s * 1000)
    return [
        ("grpc.keepalive_time_ms", round(settings.grpc_keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),  # also ping connections without calls
        ("grpc.http2.max_pings_without_data", 0),  # an idle stream sends no data: keep pinging
        ("grpc.http2.min_ping_interval_without_data_ms", CLIENT_PING_MIN_INTERVAL_MS),
    ]


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
            *keepalive_options(self.settings),
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
