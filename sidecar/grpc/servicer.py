"""The AIRuntime servicer: converts messages and calls the core; no behaviour of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from sidecar._proto import airuntime_pb2 as pb
from sidecar._proto import airuntime_pb2_grpc as pb_grpc
from sidecar.core import RuntimeCore
from sidecar.errors import SidecarError
from sidecar.grpc import converters
from sidecar.grpc.status import abort, handle_errors, unexpected
from sidecar.request.limits import StreamSlot
from sidecar.request.shared_frames import REGION_METADATA, CallRegions
from sidecar.request.stream import StreamSession

LOGGER = logging.getLogger("sidecar.grpc")

_END = object()


class AIRuntimeServicer(pb_grpc.AIRuntimeServicer):
    def __init__(self, core: RuntimeCore) -> None:
        self._core = core
        self._infer = core.infer

    async def Infer(self, request: pb.InferenceRequest, context: grpc.aio.ServicerContext):
        # The hot path maps errors as handle_errors does, without the decorator's extra coroutine
        try:
            if names := _region_names(context):
                regions = await self._core.open_regions(names)
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
        await abort(context, error)

    async def InferStream(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        # One place per stream, per connection (the peer's address and port: one HTTP/2 connection)
        try:
            slot = self._core.admit_stream(context.peer())
        except SidecarError as e:
            await abort(context, e)
        regions = None
        if names := _region_names(context):
            try:
                regions = await self._core.open_regions(names)
            except SidecarError as e:
                slot.release()
                await abort(context, e)
        task = asyncio.current_task()
        try:
            await self._stream(context, slot, task, regions)
        except asyncio.CancelledError:
            if not slot.idle:  # the client went away (or the server stops)
                raise
            if hasattr(task, "uncancel"):  # Python >= 3.11: this cancellation is handled
                task.uncancel()
            await abort(context, slot.idle_error())
        finally:
            slot.release()

    async def _stream(
        self, context: grpc.aio.ServicerContext, slot: StreamSlot, task, regions: CallRegions | None
    ) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        write = context.write
        to_response = converters.response
        writing = asyncio.Lock()  # Triton's answers are written from their readers' tasks

        async def deliver(outcome) -> None:
            message = to_response(outcome)
            async with writing:
                await write(message)

        session = self._core.open_stream(queue.put_nowait, deliver, regions)
        slot.watch(lambda: session.in_flight > 0, task.cancel)
        reader = asyncio.get_running_loop().create_task(self._read(context, session, queue, slot.touch))
        written = session.written
        get = queue.get
        try:
            while True:
                outcome = await get()
                if outcome is _END:
                    break
                message = to_response(outcome)
                async with writing:
                    await write(message)
                written()
        finally:
            slot.unwatch()  # the stream is ending: no idle timeout may interrupt its close
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await session.close()
            slot.release()  # its place is free once what it held (leases, regions) is given back

    @staticmethod
    async def _read(
        context: grpc.aio.ServicerContext, session: StreamSession, queue: asyncio.Queue, touch
    ) -> None:
        read = context.read
        eof = grpc.aio.EOF
        submit = session.submit
        frame_request = converters.frame_request
        try:
            while True:
                message = await read()
                if message is eof:
                    break
                touch()
                await submit(frame_request(message))
            await session.drain()
        except asyncio.CancelledError:
            raise
        except Exception:  # a broken client stream ends the call; what is pending is dropped
            LOGGER.debug("InferStream reader ended", exc_info=True)
        queue.put_nowait(_END)

    @handle_errors
    async def HealthCheck(self, request: pb.HealthCheckRequest, context) -> pb.HealthCheckResponse:
        return converters.health_response(self._core.health())

    @handle_errors
    async def GetModelStatus(self, request: pb.ModelStatusRequest, context) -> pb.ModelStatusResponse:
        return converters.status_response(self._core.model_status(request.model_id, request.version))


def _region_names(context: grpc.aio.ServicerContext) -> list[str]:
    """The shared-memory regions the call registers (metadata ``ruth-frame-region``, one per value)."""
    return [value for key, value in context.invocation_metadata() or () if key == REGION_METADATA]
