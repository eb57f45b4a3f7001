"""The AIRuntime servicer: converts messages and calls the core; no behaviour of its own."""

from __future__ import annotations

import grpc

from sidecar._proto import airuntime_pb2 as pb
from sidecar._proto import airuntime_pb2_grpc as pb_grpc
from sidecar.core import RuntimeCore
from sidecar.errors import Draining, SidecarError
from sidecar.grpc import converters
from sidecar.grpc.status import abort, handle_errors, unexpected
from sidecar.request.shared_frames import REGION_METADATA
from sidecar.request.stream import serve_stream


class AIRuntimeServicer(pb_grpc.AIRuntimeServicer):
    def __init__(self, core: RuntimeCore) -> None:
        self._core = core
        self._infer = core.infer

    async def Infer(self, request: pb.InferenceRequest, context: grpc.aio.ServicerContext):
        # The hot path maps errors as handle_errors does, without the decorator's extra coroutine
        core = self._core
        core.unary_calls += 1
        try:
            if core.draining:
                raise Draining()
            if names := _region_names(context):
                regions = await core.open_regions(names)
                try:
                    outcome = await self._infer(
                        converters.frame_request(request), context.time_remaining(), regions
                    )
                finally:
                    regions.close()
            else:
                outcome = await self._infer(converters.frame_request(request), context.time_remaining())
            if outcome.error is None:
                return converters.response(outcome)
            error = outcome.error
        except SidecarError as e:
            error = e
        except Exception:  # the handler's bug must not leak details to the caller
            error = unexpected("Infer")
        finally:
            core.unary_calls -= 1
        await abort(context, error)

    async def InferStream(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        # One place per stream, per connection (the peer's address and port: one HTTP/2 connection)
        try:
            admitted = self._core.admit_stream(context.peer())
        except SidecarError as e:
            await abort(context, e)
        try:
            regions = await self._core.open_regions(names) if (names := _region_names(context)) else None
        except SidecarError as e:
            admitted.release()
            await abort(context, e)
        open_stream = self._core.open_stream
        to_response = converters.response
        frame_request = converters.frame_request
        read_message, write_message, eof = context.read, context.write, grpc.aio.EOF

        async def read():
            message = await read_message()
            return None if message is eof else frame_request(message)

        async def write(outcome) -> None:
            await write_message(to_response(outcome))

        try:
            await serve_stream(
                lambda emit, deliver: open_stream(emit, deliver, regions), read, write, admitted
            )
        except SidecarError as e:  # the idle timeout closed it
            await abort(context, e)
        finally:
            admitted.release()
        if admitted.draining:  # what it read is answered: the client sends the rest elsewhere
            await abort(context, admitted.drain_error())

    @handle_errors
    async def HealthCheck(self, request: pb.HealthCheckRequest, context) -> pb.HealthCheckResponse:
        return converters.health_response(self._core.health())

    @handle_errors
    async def GetModelStatus(self, request: pb.ModelStatusRequest, context) -> pb.ModelStatusResponse:
        return converters.status_response(self._core.model_status(request.model_id, request.version))


def _region_names(context: grpc.aio.ServicerContext) -> list[str]:
    """The shared-memory regions the call registers (metadata ``ruth-frame-region``, one per value)."""
    return [value for key, value in context.invocation_metadata() or () if key == REGION_METADATA]
