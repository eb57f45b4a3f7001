"""The camera path: one client stream multiplexing many cameras and models.

Each client stream gets one Triton ``ModelStreamInfer`` stream per model it uses, opened on the
model's first request; requests are matched to replies by request id. One stream per model, not
one for all: Triton answers a stream's requests in the order they were sent, so a hung model on a
shared stream would hold back the answers of every model behind it.

Every request gets exactly one :class:`Outcome` through ``emit``: Triton's reply, a check error,
OVERLOADED, or TIMEOUT from a per-request timer. The window counts requests in flight plus answers
the transport has not yet written (it calls :meth:`StreamSession.written`), so a client that stops
reading its answers is not sent more work. When ``max_in_flight_per_stream`` are in the window
:meth:`StreamSession.submit` waits (the transport stops reading its client: backpressure). A
request for a model that already holds ``max_in_flight_per_model`` requests in flight is answered
OVERLOADED at once, so one stuck model cannot take the whole stream's window.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from sidecar.core import FrameRequest, Outcome, RuntimeCore
from sidecar.errors import ModelNotReady, Overloaded, RequestTimeout, SidecarError
from sidecar.registry import ModelRecord
from sidecar.triton import SequenceNotStarted, TritonStream, build_request

LOGGER = logging.getLogger(__name__)


class _Pending:
    __slots__ = ("epoch", "height", "name", "record", "request", "retried", "started", "timer", "width")

    def __init__(
        self, request: FrameRequest, record: ModelRecord, started: float, width: int, height: int
    ) -> None:
        self.request = request
        self.record = record
        self.name = record.triton_name  # the copy it was routed to (a reload may switch the record)
        self.started = started
        self.width = width
        self.height = height
        self.retried = False
        self.epoch = 0
        self.timer: asyncio.TimerHandle | None = None


class StreamSession:
    """The state of one client stream; ``emit`` receives every :class:`Outcome`."""

    def __init__(self, core: RuntimeCore, emit: Callable[[Outcome], None]) -> None:
        self._core = core
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._max_in_flight = core.settings.max_in_flight_per_stream
        self._max_per_model = core.settings.max_in_flight_per_model
        self._pending: dict[str, _Pending] = {}
        self._per_model: dict[str, int] = {}
        self._streams: dict[str, TritonStream] = {}
        self._space: asyncio.Future | None = None
        self._idle: asyncio.Future | None = None
        self._closed = False
        self._unwritten = 0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def submit(self, request: FrameRequest) -> None:
        """Take one request; waits while the stream's window is full."""
        while len(self._pending) + self._unwritten >= self._max_in_flight:
            self._space = self._loop.create_future()
            await self._space
        core = self._core
        loop = self._loop
        started = loop.time()
        try:
            record, width, height = core.check(request)
        except SidecarError as e:
            self._answer(Outcome(request, None, e, 0.0))
            return
        name = record.triton_name
        count = self._per_model.get(name, 0)
        if count >= self._max_per_model:
            self._answer(
                Outcome(request, None, Overloaded(f"{count} requests for {record.model_id} {record.version} "
                                                  "already in flight on this stream; slow down"), 0.0)
            )
            return
        start, epoch = core.sequence_start(record, request.camera_id) if record.sequence else (False, 0)
        request_id = core.next_id()
        triton_request = build_request(
            record, request_id, request.data, width, height, request.frame_id, request.camera_id,
            request.timestamp_ms, start,
        )
        pending = _Pending(request, record, started, width, height)
        pending.retried = start
        pending.epoch = epoch
        pending.timer = loop.call_at(started + core.deadline_s(request), self._expire, request_id)
        self._pending[request_id] = pending
        self._per_model[name] = count + 1
        core.begin(name)
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = core.adapter.open_stream(
                self._on_reply, functools.partial(self._on_stream_closed, name)
            )
        try:
            await stream.send(triton_request)
        except SidecarError as e:
            self._on_reply(request_id, None, e)

    def _on_reply(self, request_id: str, result: bytes | None, error: SidecarError | None) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is None:  # answered already (timed out)
            return
        if error is not None and type(error) is SequenceNotStarted and not pending.retried:
            self._pending[request_id] = pending
            pending.retried = True
            camera_id = pending.request.camera_id
            start, pending.epoch = self._core.sequence_restart(pending.record, camera_id, pending.epoch)
            self._loop.create_task(self._resend(request_id, pending, start))
            return
        self._finish(pending, result, error)

    def _expire(self, request_id: str) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            pending.timer = None
            waited = round((self._loop.time() - pending.started) * 1000)
            self._finish(pending, None, RequestTimeout(f"no answer from the model within {waited} ms"))

    def _finish(self, pending: _Pending, result: bytes | None, error: SidecarError | None) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        record = pending.record
        self._per_model[pending.name] -= 1
        self._core.end(pending.name)
        elapsed_ms = (self._loop.time() - pending.started) * 1000.0
        self._core.settle(record, error, elapsed_ms)
        self._answer(Outcome(pending.request, result, error, elapsed_ms))
        if not self._pending and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _answer(self, outcome: Outcome) -> None:
        self._unwritten += 1
        self._emit(outcome)

    def written(self, count: int = 1) -> None:
        """The transport wrote ``count`` answers to its client: they leave the window."""
        self._unwritten -= count
        space = self._space
        if space is not None and not space.done():
            space.set_result(None)
            self._space = None

    async def _resend(self, request_id: str, pending: _Pending, start: bool) -> None:
        request = pending.request
        triton_request = build_request(
            pending.record, request_id, request.data, pending.width, pending.height, request.frame_id,
            request.camera_id, request.timestamp_ms, start,
        )
        stream = self._streams.get(pending.name)
        try:
            if stream is None:
                raise ModelNotReady("inference server stream closed")
            await stream.send(triton_request)
        except SidecarError as e:
            self._on_reply(request_id, None, e)

    def _on_stream_closed(self, name: str, error: SidecarError) -> None:
        """A model's Triton stream ended: answer what is pending on it; the next request reopens it."""
        self._streams.pop(name, None)
        if not self._closed:
            LOGGER.warning("inference server stream of %s ended: %s", name, error.message)
        for request_id, pending in list(self._pending.items()):
            if pending.record.triton_name == name:
                del self._pending[request_id]
                self._finish(pending, None, error)

    async def drain(self) -> None:
        """Wait until every request taken so far has been answered (the client stopped sending)."""
        if self._pending:
            self._idle = self._loop.create_future()
            await self._idle
        await self.close()

    async def close(self) -> None:
        """Stop: the client is gone; pending requests are dropped without answers."""
        self._closed = True
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._pending.clear()
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            await stream.close()
