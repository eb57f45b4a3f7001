"""The sidecar's Triton client: the only module that talks to Triton (tritonclient's gRPC stubs).

Both the request path (inference, streams, shared-memory regions) and the control plane (loads,
unloads, the repository index, statistics, readiness) use it; it imports neither. The request path
builds its messages (:mod:`sidecar.request.messages`) and holds them as opaque
``ModelInferRequest``s; answers are read with :func:`result_of` and the element helpers here.

Camera traffic goes through :class:`TritonStream`, one Triton ``ModelStreamInfer`` stream per model
per client stream, matched by request id. Unary requests travel on reused streams too
(:class:`_Lane`, one request at a time each): a message on an open stream costs less than a new
``ModelInfer`` call (see ``benchmarks/README.md``). Every Triton or gRPC failure leaves this module
as a :class:`~sidecar.errors.SidecarError` (``raise ... from e``).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ruthgen.interface import MODEL_MS_NAME, REQUEST_CODES, parse_message
from sidecar.deadlines import Deadlines
from sidecar.errors import (
    ErrorCode,
    InferenceServerUnavailable,
    InternalError,
    ModelLoadError,
    ModelNotLoaded,
    ModelNotReady,
    ModelProcessDied,
    PluginError,
    RequestTimeout,
    SequenceNotStarted,
    SharedMemoryLost,
    SidecarError,
)

LOGGER = logging.getLogger(__name__)

_STUB_DEAD = re.compile(r"Stub process '([^']*)' is not healthy")
_NOT_LOADED = ("unknown model", "is not found", "has no available versions", "is not at ready state")
_SEQUENCE_NOT_STARTED = "must specify the START flag"
_SHARED_MEMORY_LOST = "Unable to find shared memory region"
#: what Triton answers once it got SIGTERM: the request was not run
_SERVER_STOPPING = "Server is stopping"
_PHASE = re.compile(r"([a-z_.]+): ")
_FP64 = struct.Struct("<d")
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


@dataclass(frozen=True)
class IndexEntry:
    """One row of Triton's repository index."""

    name: str
    version: str
    state: str
    reason: str


def error_from_triton(message: str, status: grpc.StatusCode | None = None) -> SidecarError:
    """The sidecar error for a failed Triton inference (message of the error and gRPC status)."""
    parsed = parse_message(message)
    if parsed is not None and parsed[0] in REQUEST_CODES:
        code, text = ErrorCode(parsed[0]), parsed[1].strip()
        phase = _PHASE.match(text)
        where = phase.group(1) if phase else None
        if code is ErrorCode.TIMEOUT:
            return RequestTimeout(text, phase=where)
        return PluginError(text, code, where)
    if status is grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimeout("the model did not answer before the deadline")
    if status is grpc.StatusCode.UNAVAILABLE:
        return ModelNotReady(f"inference server unavailable: {message}")
    stub = _STUB_DEAD.search(message)
    if stub:
        return ModelProcessDied(f"the model's process ({stub.group(1)}) died; the model is being reloaded")
    if _SEQUENCE_NOT_STARTED in message:
        return SequenceNotStarted(message)
    if _SHARED_MEMORY_LOST in message:
        return SharedMemoryLost(f"the inference server lost the frame pool's region; send again ({message})")
    if _SERVER_STOPPING in message:
        return ModelNotReady(f"the inference server is stopping ({message})")
    if any(part in message for part in _NOT_LOADED):
        return ModelNotLoaded(f"the model is not loaded in the inference server ({message})")
    return InternalError(f"inference server error: {message}")


def result_of(response: pb.ModelInferResponse) -> tuple[bytes, float | None]:
    """RESULT as Triton serialised it: BYTES elements, each a 4-byte little-endian length then data
    (read them with :func:`first_element` or :func:`elements`); and the model's own milliseconds
    for the request (its first MODEL_MS element), None from an entry built without MODEL_MS."""
    contents = response.raw_output_contents
    if not contents:
        raise InternalError("the model answered without a RESULT tensor")
    if len(contents) > 1 and len(contents[1]) >= 8 and response.outputs[1].name == MODEL_MS_NAME:
        return contents[0], _FP64.unpack_from(contents[1])[0]
    return contents[0], None


def first_element(raw: bytes) -> bytes:
    """The first element of a serialised BYTES tensor: one frame's RESULT JSON."""
    length = int.from_bytes(raw[:4], "little")
    if len(raw) < 4 or length + 4 > len(raw):
        raise InternalError("the model's RESULT tensor is truncated")
    return raw[4 : 4 + length]


def elements(raw: bytes, count: int) -> list[bytes]:
    """The ``count`` elements of a serialised BYTES tensor (a batch's RESULT, one per frame)."""
    found, position = [], 0
    for _ in range(count):
        length = int.from_bytes(raw[position : position + 4], "little")
        position += 4
        if position + length > len(raw):
            raise InternalError(f"the model's RESULT tensor holds fewer than the batch's {count} answers")
        found.append(raw[position : position + length])
        position += length
    return found


def element_error(element: bytes) -> SidecarError | None:
    """The error a batch's RESULT element carries instead of JSON (``[RUTH:<CODE>] ...``), else None."""
    if element[:6] != b"[RUTH:":
        return None
    return error_from_triton(element.decode("utf-8", "replace"))


def _cancelling() -> bool:
    """Whether the current task is being cancelled (Python 3.11+ tells; before, assume not)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False


def _expire_lane(lane: _Lane) -> None:
    future = lane.future
    if future is not None and not future.done():
        future.set_exception(RequestTimeout("the model did not answer before the deadline"))
    if lane.sending and lane.stream is not None:  # the request's write itself did not complete: end it
        lane.stream.abort()


#: ``on_reply(request_id, result, error, model_ms)``; what it returns, when not None, is awaited
#: before the stream's next reply is read (the stream session writes the answer to its client from
#: there). ``model_ms``: the model's own time for the request, None when unknown.
ReplyHandler = Callable[
    [str, "bytes | None", "SidecarError | None", "float | None"], "Awaitable[None] | None"
]


class TritonStream:
    """One Triton ``ModelStreamInfer`` stream; replies go to ``on_reply(id, result, error)``.

    ``on_close(error)`` is called once when the stream ends for any reason other than
    :meth:`close`; requests still pending then will get no reply from Triton.
    """

    def __init__(
        self,
        stub: pb_grpc.GRPCInferenceServiceStub,
        on_reply: ReplyHandler,
        on_close: Callable[[SidecarError], None],
        *,
        one_writer: bool = False,
    ) -> None:
        self._call = stub.ModelStreamInfer()
        self._on_reply = on_reply
        self._on_close = on_close
        # Writes from several tasks take turns; a stream whose owner never writes twice at once
        # (``one_writer``: a unary lane) skips the lock
        self._write_lock = None if one_writer else asyncio.Lock()
        self._closing = False
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def send(self, request: pb.ModelInferRequest) -> None:
        """Write one request; raises :class:`ModelNotReady` when the stream is gone (also when it was
        ended by :meth:`abort` while the write waited)."""
        try:
            if self._write_lock is None:
                await self._call.write(request)
            else:
                async with self._write_lock:
                    await self._call.write(request)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as e:
            raise ModelNotReady(f"inference server stream closed: {e}") from e
        except asyncio.CancelledError:
            # grpc.aio ends a write on a call cancelled meanwhile with CancelledError: when that is
            # our abort and not the caller's own cancellation, it is a stream gone like any other
            if not self._closing or _cancelling():
                raise
            raise ModelNotReady("inference server stream closed while the request was written") from None

    async def _read_loop(self) -> None:
        on_reply = self._on_reply
        read = self._call.read
        eof = grpc.aio.EOF
        try:
            while True:
                message = await read()
                if message is eof:
                    break
                response = message.infer_response
                if message.error_message:
                    then = on_reply(response.id, None, error_from_triton(message.error_message), None)
                else:
                    try:
                        result, model_ms = result_of(response)
                    except SidecarError as e:
                        then = on_reply(response.id, None, e, None)
                    else:
                        then = on_reply(response.id, result, None, model_ms)
                if then is not None:
                    await then
            error: SidecarError = ModelNotReady("inference server closed the stream")
        except grpc.aio.AioRpcError as e:
            error = error_from_triton(e.details() or str(e.code()), e.code())
        except asyncio.CancelledError:
            return
        if not self._closing:
            self._on_close(error)

    def abort(self) -> None:
        """End the stream without waiting; pending requests get no reply."""
        self._closing = True
        self._call.cancel()
        self._reader.cancel()

    async def close(self) -> None:
        """End the stream; pending requests get no reply."""
        self.abort()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class _Lane:
    """A Triton stream that carries one unary request at a time (any model: a stream is not bound
    to one). It goes back to the idle lanes when Triton has answered its request; a lane whose
    caller stopped waiting (timeout, cancellation, a failed send) is closed instead, so a late
    answer can never be taken for another request's and a hung model holds no stream open."""

    __slots__ = ("answered", "closed", "future", "request_id", "sending", "stream")

    def __init__(self) -> None:
        self.closed = False
        self.sending = False  # its request's write has not completed yet: no other write may start
        self.answered = False  # answered while its write was completing: idle once the write is done
        self.future: asyncio.Future[tuple[bytes, float | None]] | None = None
        self.request_id = ""
        self.stream: TritonStream | None = None


class TritonAdapter:
    """A connection to one Triton server (gRPC)."""

    max_idle_lanes = 64

    def __init__(self, url: str) -> None:
        self.url = url
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.GRPCInferenceServiceStub | None = None
        self._idle: list[_Lane] = []
        self._lanes: set[_Lane] = set()
        self._deadlines: Deadlines[_Lane] = Deadlines(_expire_lane)

    async def connect(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.url, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    async def close(self) -> None:
        lanes, self._lanes, self._idle = list(self._lanes), set(), []
        self._deadlines.clear()
        for lane in lanes:
            lane.closed = True
            if lane.stream is not None:
                await lane.stream.close()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    @property
    def stub(self) -> pb_grpc.GRPCInferenceServiceStub:
        if self._stub is None:
            raise InferenceServerUnavailable("not connected to the inference server")
        return self._stub

    async def server_ready(self, timeout_s: float = 2.0) -> bool:
        """True when Triton answers and is ready; never raises."""
        try:
            reply = await self.stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout_s)
        except (grpc.aio.AioRpcError, SidecarError):
            return False
        return reply.ready

    async def repository_index(self, timeout_s: float = 5.0) -> list[IndexEntry]:
        try:
            reply = await self.stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            raise InferenceServerUnavailable(f"repository index failed: {e.details()}") from e
        return [IndexEntry(m.name, m.version, m.state, m.reason) for m in reply.models]

    async def load_model(self, name: str, timeout_s: float = 300.0) -> None:
        """Load (or reload) ``name``; raises :class:`ModelLoadError` with Triton's reason."""
        try:
            request = pb.RepositoryModelLoadRequest(model_name=name)
            await self.stub.RepositoryModelLoad(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            if e.code() is grpc.StatusCode.UNAVAILABLE:
                raise InferenceServerUnavailable(f"cannot load {name}: {e.details()}") from e
            raise ModelLoadError(e.details() or str(e.code())) from e

    async def unload_model(self, name: str, timeout_s: float = 60.0) -> None:
        try:
            await self.stub.RepositoryModelUnload(
                pb.RepositoryModelUnloadRequest(model_name=name), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as e:
            raise InternalError(f"cannot unload {name}: {e.details()}") from e

    async def model_statistics(self, name: str, timeout_s: float = 5.0) -> dict:
        """Triton's statistics of one model as a dict (``inference_count``, ``inference_stats``, ...)."""
        try:
            reply = await self.stub.ModelStatistics(pb.ModelStatisticsRequest(name=name), timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            raise InternalError(f"statistics of {name} failed: {e.details()}") from e
        if not reply.model_stats:
            return {}
        return json_format.MessageToDict(reply.model_stats[0], preserving_proto_field_name=True)

    async def register_system_shared_memory(self, name: str, key: str, byte_size: int) -> None:
        """Register the POSIX shared-memory object ``key`` with Triton as region ``name``."""
        request = pb.SystemSharedMemoryRegisterRequest(name=name, key=key, offset=0, byte_size=byte_size)
        try:
            await self.stub.SystemSharedMemoryRegister(request, timeout=10.0)
        except grpc.aio.AioRpcError as e:
            if e.code() is grpc.StatusCode.ALREADY_EXISTS:
                return
            raise InferenceServerUnavailable(f"cannot register shared memory {name}: {e.details()}") from e

    async def unregister_system_shared_memory(self, name: str) -> None:
        try:
            request = pb.SystemSharedMemoryUnregisterRequest(name=name)
            await self.stub.SystemSharedMemoryUnregister(request, timeout=10.0)
        except grpc.aio.AioRpcError as e:
            raise InternalError(f"cannot unregister shared memory {name}: {e.details()}") from e

    async def system_shared_memory_regions(self) -> dict[str, str]:
        """The system shared-memory regions Triton holds: name -> key."""
        try:
            request = pb.SystemSharedMemoryStatusRequest()
            reply = await self.stub.SystemSharedMemoryStatus(request, timeout=10.0)
        except grpc.aio.AioRpcError as e:
            raise InferenceServerUnavailable(f"shared memory status failed: {e.details()}") from e
        return {name: region.key for name, region in reply.regions.items()}

    async def infer(self, request: pb.ModelInferRequest, timeout_s: float) -> tuple[bytes, float | None]:
        """One unary inference on an idle lane; returns RESULT as Triton serialised it and the
        model's own milliseconds (None when the entry does not report them).

        Raises :class:`RequestTimeout` when Triton has not answered within ``timeout_s``; the lane
        is closed then (Triton's answer, if it ever comes, has nowhere to go).
        """
        lane = self._idle.pop() if self._idle else self._open_lane()
        loop = asyncio.get_running_loop()
        future = lane.future = loop.create_future()
        request_id = lane.request_id = request.id
        deadlines = self._deadlines
        deadlines.add(lane, loop.time() + timeout_s)
        try:
            lane.sending = True
            try:
                await lane.stream.send(request)  # type: ignore[union-attr]
            except SidecarError:
                if not future.done() or future.cancelled():
                    raise
                lane.answered = False
                self._drop_lane(lane)  # its stream is gone
                if future.exception() is not None:
                    raise future.exception() from None  # the deadline passed while writing: TIMEOUT
                return future.result()  # answered, though the write call failed
            finally:
                lane.sending = False
                if lane.answered:  # Triton answered before the write call returned
                    lane.answered = False
                    self._idle_again(lane)
            return await future
        finally:
            # An answered lane may already carry the next request, with its own deadline: only a
            # lane still holding this request is ours to clean up
            if lane.request_id == request_id:  # not answered: the lane cannot be trusted again
                deadlines.discard(lane)
                self._drop_lane(lane)

    def _open_lane(self) -> _Lane:
        lane = _Lane()
        lane.stream = TritonStream(
            self.stub, functools.partial(self._on_lane_reply, lane),
            functools.partial(self._on_lane_closed, lane), one_writer=True,
        )
        self._lanes.add(lane)
        return lane

    def _on_lane_reply(
        self, lane: _Lane, request_id: str, result: bytes | None, error: SidecarError | None,
        model_ms: float | None,
    ) -> None:
        if request_id != lane.request_id:
            return
        lane.request_id = ""
        self._deadlines.discard(lane)
        future, lane.future = lane.future, None
        if future is not None and not future.done():
            if error is None:
                future.set_result((result, model_ms))  # type: ignore[arg-type]
            else:
                future.set_exception(error)
        if lane.sending:
            lane.answered = True
            return
        self._idle_again(lane)

    def _idle_again(self, lane: _Lane) -> None:
        """An answered lane takes the next request (once its own write has completed)."""
        if lane.closed:
            return
        if len(self._idle) < self.max_idle_lanes:
            self._idle.append(lane)
        else:
            self._drop_lane(lane)

    def _on_lane_closed(self, lane: _Lane, error: SidecarError) -> None:
        lane.closed = True
        self._lanes.discard(lane)
        if lane in self._idle:
            self._idle.remove(lane)
        future, lane.future = lane.future, None
        if future is not None and not future.done():
            future.set_exception(error)

    def _drop_lane(self, lane: _Lane) -> None:
        lane.closed = True
        self._lanes.discard(lane)
        future, lane.future = lane.future, None
        if future is not None:
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # the caller has its error already (raised, or the send's)
        if lane.stream is not None:
            lane.stream.abort()

    def open_stream(self, on_reply: ReplyHandler, on_close: Callable[[SidecarError], None]) -> TritonStream:
        return TritonStream(self.stub, on_reply, on_close)

