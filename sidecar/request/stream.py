"""The camera path: one client stream multiplexing many cameras and models.

Each client stream gets one Triton ``ModelStreamInfer`` stream per model copy it uses, opened on
the copy's first request; requests are matched to replies by request id. One stream per copy, not
one for all: Triton answers a stream's requests in the order they were sent, so a hung model on a
shared stream would hold back the answers of every model behind it.

Every request gets exactly one :class:`~sidecar.request.pipeline.Outcome`: Triton's reply, a check
error, OVERLOADED, or TIMEOUT at its deadline (:class:`~sidecar.deadlines.Deadlines`).
Triton's replies are written to the client by ``deliver`` from the task that read them (no hop
through another task: it measured cheaper at one request in flight); the others go through
``emit``, to the transport's writer. The window counts
requests in flight plus answers the transport has not yet written (it calls
:meth:`StreamSession.written`), so a client that stops reading its answers is not sent more work.
When ``max_in_flight_per_stream`` are in the window :meth:`StreamSession.submit` waits (the
transport stops reading its client: backpressure). A request for a model that already holds
``max_in_flight_per_model`` requests in flight is answered OVERLOADED at once, so one stuck model
cannot take the whole stream's window.

A request to a model that declares upstreams first waits for their results (:mod:`sidecar.request.
upstreams`) in a task of its own, so the stream goes on reading; it holds its place in the window
meanwhile. A temporal model's requests still reach Triton in the order the client sent them: each
waits until the camera's previous one for that model was sent.

A request naming several models (:meth:`~sidecar.request.pipeline.Pipeline.infer_many`) runs in a
task of its own too and is answered once, with every model's answer. When it names a temporal model,
the camera's next such request starts once it is answered, so that model sees the camera's frames
in order. So does a request with a ``frame_id`` to a (frame or batch) model that others take as
their upstream: it goes the unary way, where its result for the frame is kept for theirs and one
kept or running already answers it (:mod:`sidecar.request.upstreams`).

:func:`serve_stream` runs one client stream for a transport: it reads the client's requests into a
session and writes every answer back, one write at a time, until the client ends the stream, goes
away, or leaves it idle past the stream's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

from sidecar.deadlines import Deadlines
from sidecar.errors import ModelNotReady, Overloaded, RequestTimeout, SequenceNotStarted, SidecarError
from sidecar.request.limits import AdmittedStream
from sidecar.request.pipeline import FrameRequest, Outcome, Pending, Pipeline
from sidecar.request.shared_frames import CallRegions
from sidecar.triton_client import TritonStream

LOGGER = logging.getLogger(__name__)

Emit = Callable[[Outcome], None]
Deliver = Callable[[Outcome], Awaitable[None]]


class StreamSession:
    """The state of one client stream: ``deliver`` writes Triton's answers (awaited by the reader of
    the Triton stream), ``emit`` takes every other :class:`Outcome` (and Triton's too when there is
    no ``deliver``); ``regions``, the shared-memory regions the stream registered, close with it."""

    def __init__(
        self,
        pipeline: Pipeline,
        emit: Callable[[Outcome], None],
        deliver: Callable[[Outcome], Awaitable[None]] | None = None,
        regions: CallRegions | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._regions = regions
        self._emit = emit
        self._deliver = deliver
        self._delivering = 0
        self._loop = asyncio.get_running_loop()
        settings = pipeline.settings
        self._max_in_flight = settings.max_in_flight_per_stream
        self._max_per_model = settings.max_in_flight_per_model
        self._pending: dict[str, Pending] = {}
        self._per_model: dict[str, int] = {}
        self._streams: dict[str, TritonStream] = {}
        self._space: asyncio.Future | None = None
        self._idle: asyncio.Future | None = None
        self._closed = False
        self._unwritten = 0
        self._deadlines: Deadlines[str] = Deadlines(self._expire)
        self._upstream_waits: set[asyncio.Task[None]] = set()
        # the last request of each (model, version, camera) of a temporal model waiting for upstreams
        self._sent_in_order: dict[tuple[str, str, str], asyncio.Future[None]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def submit(self, request: FrameRequest) -> None:
        """Take one request; waits while the stream's window is full."""
        while len(self._pending) + self._unwritten + len(self._upstream_waits) >= self._max_in_flight:
            self._space = self._loop.create_future()
            await self._space
        if request.models is not None:
            self._start(self._unary(request, *self._turn(request, self._names_temporal(request.models))))
            return
        route = self._pipeline.routes.get(request.model_id, request.version)
        if (route is not None and request.frame_id and request.batch is None and not route.sequence
                and (request.model_id, request.version) in self._pipeline.routes.upstream_keys):
            # others take this model as their upstream: its result for the frame is shared with theirs
            self._start(self._unary(request, None, None))
            return
        if route is not None and route.upstreams and request.upstreams is None:
            self._start(self._after_upstreams(request, *self._turn(request, route.sequence)))
            return
        await self._send(request)

    def _names_temporal(self, models: list[tuple[str, str]]) -> bool:
        routes = self._pipeline.routes
        return any((route := routes.get(*key)) is not None and route.sequence for key in models)

    def _turn(
        self, request: FrameRequest, ordered: bool
    ) -> tuple[asyncio.Future[None] | None, asyncio.Future[None] | None]:
        """(the previous request's turn to wait for, this one's turn) of the camera, when ``ordered``."""
        if not ordered:
            return None, None
        key = (request.model_id, request.version, request.camera_id)
        previous = self._sent_in_order.get(key)
        turn = self._sent_in_order[key] = self._loop.create_future()
        return previous, turn

    def _start(self, work: Awaitable[None]) -> None:
        task = self._loop.create_task(work)  # type: ignore[arg-type]
        self._upstream_waits.add(task)
        task.add_done_callback(self._upstream_done)

    async def _unary(
        self, request: FrameRequest, previous: asyncio.Future[None] | None, turn: asyncio.Future[None] | None
    ) -> None:
        """A request the pipeline answers on its unary path: one naming several models, or one to a
        model others take as their upstream (its result for the frame shared with theirs)."""
        try:
            if previous is not None:
                await previous
            outcome = await self._pipeline.infer(request, None, self._regions)
            if not self._closed:
                self._answer(outcome)
        finally:
            self._take_turn(request, turn)

    async def _after_upstreams(
        self, request: FrameRequest, previous: asyncio.Future[None] | None, turn: asyncio.Future[None] | None
    ) -> None:
        pipeline = self._pipeline
        try:
            route = pipeline.routes.resolve(request.model_id, request.version)
            await pipeline.fanout.attach_upstreams(route, request, self._regions)
        except SidecarError as e:
            try:
                if previous is not None:
                    await previous
                self._answer(Outcome(request, None, e, 0.0))
            finally:
                self._take_turn(request, turn)
            return
        try:
            if previous is not None:
                await previous
            if not self._closed:
                await self._send(request)
        finally:
            self._take_turn(request, turn)

    def _take_turn(self, request: FrameRequest, turn: asyncio.Future[None] | None) -> None:
        """The camera's next request for this model may go now."""
        if turn is None:
            return
        turn.set_result(None)
        key = (request.model_id, request.version, request.camera_id)
        if self._sent_in_order.get(key) is turn:
            del self._sent_in_order[key]

    def _upstream_done(self, task: asyncio.Task[None]) -> None:
        self._upstream_waits.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOGGER.error("a request waiting for its upstreams failed", exc_info=task.exception())
        self.written(0)  # its place in the window is free
        self._check_idle()

    async def _send(self, request: FrameRequest) -> None:
        pipeline = self._pipeline
        try:
            if self._regions is not None:
                await pipeline.frames.register(request)
            pending = pipeline.prepare(request, self._loop.time(), None, self._regions)
        except SidecarError as e:
            self._answer(Outcome(request, None, e, 0.0))
            return
        if pending.message is None:  # a batch none of whose frames passed its checks
            self._answer(pipeline.settle(pending, None, None, self._loop.time()))
            return
        name = pending.name
        count = self._per_model.get(name, 0)
        if count >= self._max_per_model:
            route = pending.route
            error = Overloaded(f"{count} requests for {route.model_id} {route.version} already in flight "
                               "on this stream; slow down")
            pipeline.frames.release(pending, answered=True)  # never sent
            self._answer(Outcome(request, None, error, 0.0))
            return
        request_id = pending.request_id
        self._deadlines.add(request_id, pending.deadline)
        self._pending[request_id] = pending
        self._per_model[name] = count + 1
        pipeline.begin(pending)
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = pipeline.adapter.open_stream(
                self._on_reply, functools.partial(self._on_stream_closed, name)
            )
        try:
            await stream.send(pending.message)
        except SidecarError as e:
            self._on_reply(request_id, None, e)

    def _on_reply(
        self, request_id: str, result: bytes | None, error: SidecarError | None, model_ms: float | None = None
    ) -> Awaitable[None] | None:
        pending = self._pending.get(request_id)
        if pending is None:  # answered already (timed out)
            return None
        if type(error) is SequenceNotStarted and self._pipeline.sequences.restart(pending):
            self._loop.create_task(self._resend(pending))
            return None
        del self._pending[request_id]
        outcome = self._settle(pending, result, error, model_ms)
        if self._deliver is None or self._closed:
            self._answer(outcome)
            self._check_idle()
            return None
        self._delivering += 1
        self._unwritten += 1
        return self._write(outcome)

    async def _write(self, outcome: Outcome) -> None:
        try:
            await self._deliver(outcome)  # type: ignore[misc]
        except Exception:  # the client is gone: what is left is dropped when the call ends
            LOGGER.debug("InferStream answer not written", exc_info=True)
        finally:
            self._delivering -= 1
            self.written()
            self._check_idle()

    def _expire(self, request_id: str) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            waited = round((self._loop.time() - pending.started) * 1000)
            self._finish(pending, None, RequestTimeout(f"no answer from the model within {waited} ms"))

    def _settle(
        self, pending: Pending, result: bytes | None, error: SidecarError | None,
        model_ms: float | None = None,
    ) -> Outcome:
        self._deadlines.discard(pending.request_id)
        self._per_model[pending.name] -= 1
        return self._pipeline.settle(pending, result, error, self._loop.time(), model_ms)

    def _finish(self, pending: Pending, result: bytes | None, error: SidecarError | None) -> None:
        self._answer(self._settle(pending, result, error))
        self._check_idle()

    def _check_idle(self) -> None:
        if (not self._pending and not self._delivering and not self._upstream_waits and self._idle is not None
                and not self._idle.done()):
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

    async def _resend(self, pending: Pending) -> None:
        stream = self._streams.get(pending.name)
        try:
            if stream is None:
                raise ModelNotReady("inference server stream closed")
            await stream.send(pending.message)
        except SidecarError as e:
            self._on_reply(pending.request_id, None, e)

    def _on_stream_closed(self, name: str, error: SidecarError) -> None:
        """A copy's Triton stream ended: answer what is pending on it; the next request reopens it."""
        self._streams.pop(name, None)
        if not self._closed:
            LOGGER.warning("inference server stream of %s ended: %s", name, error.message)
        for request_id, pending in list(self._pending.items()):
            if pending.name == name:
                del self._pending[request_id]
                self._finish(pending, None, error)

    async def drain(self) -> None:
        """Wait until every request taken so far has been answered (the client stopped sending)."""
        if self._pending or self._delivering or self._upstream_waits:
            self._idle = self._loop.create_future()
            await self._idle
        await self.close()

    async def close(self) -> None:
        """Stop: the client is gone; pending requests are dropped without answers."""
        self._closed = True
        waits, self._upstream_waits = list(self._upstream_waits), set()
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        leases = self._pipeline.leases
        self._deadlines.clear()
        for pending in self._pending.values():
            leases.end(pending.name)
            self._pipeline.frames.release(pending, answered=False)
        self._pending.clear()
        if self._regions is not None:
            self._regions.close()
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            await stream.close()


_END = object()


async def serve_stream(
    open_session: Callable[[Emit, Deliver], StreamSession],
    read: Callable[[], Awaitable[FrameRequest | None]],
    write: Callable[[Outcome], Awaitable[None]],
    admitted: AdmittedStream,
) -> None:
    """One client stream, whatever its transport: each request ``read`` returns (None at the stream's
    end) goes into the session ``open_session`` makes, and each answer to ``write``, once.

    Triton's answers are written from the tasks that read them, the others from here, one write at a
    time. When ``admitted``'s idle timeout closes the stream, this raises its idle error; when the
    client goes away (the task is cancelled), the session's pending requests are dropped unanswered.
    The admitted stream is released once the session has given back what it held (leases, regions).
    """
    task = asyncio.current_task()
    assert task is not None
    try:
        await _pump(open_session, read, write, admitted, task)
    except asyncio.CancelledError:
        if not admitted.idle:  # the client went away (or the server stops)
            raise
        if hasattr(task, "uncancel"):  # Python >= 3.11: this cancellation is handled
            task.uncancel()
        raise admitted.idle_error() from None


async def _pump(
    open_session: Callable[[Emit, Deliver], StreamSession],
    read: Callable[[], Awaitable[FrameRequest | None]],
    write: Callable[[Outcome], Awaitable[None]],
    admitted: AdmittedStream,
    task: asyncio.Task,
) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    writing = asyncio.Lock()

    async def deliver(outcome: Outcome) -> None:
        async with writing:
            await write(outcome)

    session = open_session(queue.put_nowait, deliver)
    admitted.watch(lambda: session.in_flight > 0, task.cancel)
    reading = _Reading(read, admitted)
    reader = asyncio.get_running_loop().create_task(_read(reading, session, queue, admitted.touch))
    admitted.on_drain(lambda: reading.stop(reader))
    written = session.written
    get = queue.get
    try:
        while True:
            outcome = await get()
            if outcome is _END:
                break
            async with writing:
                await write(outcome)
            written()
    finally:
        admitted.unwatch()  # the stream is ending: no idle timeout may interrupt its close
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await session.close()
        admitted.release()  # its place is free once what it held (leases, regions) is given back


class _Reading:
    """The client's requests, read one at a time until the stream ends or the runtime drains: a
    drain interrupts only a wait for the next request, never a request being taken."""

    __slots__ = ("_admitted", "_read", "waiting")

    def __init__(self, read: Callable[[], Awaitable[FrameRequest | None]], admitted: AdmittedStream) -> None:
        self._read = read
        self._admitted = admitted
        self.waiting = False

    async def next(self) -> FrameRequest | None:
        if self._admitted.draining:
            return None
        self.waiting = True
        try:
            return await self._read()
        finally:
            self.waiting = False

    def stop(self, reader: asyncio.Task) -> None:
        """The runtime drains: read no more (the reader then answers what it has taken)."""
        if self.waiting:
            reader.cancel()

    @property
    def draining(self) -> bool:
        return self._admitted.draining


async def _read(
    reading: _Reading, session: StreamSession, queue: asyncio.Queue, touch: Callable[[], None]
) -> None:
    submit = session.submit
    try:
        try:
            while (request := await reading.next()) is not None:
                touch()
                await submit(request)
        except asyncio.CancelledError:
            if not reading.draining:
                raise
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):  # Python >= 3.11: handled here
                task.uncancel()
        await session.drain()
    except asyncio.CancelledError:
        raise
    except Exception:  # a broken client stream ends the call; what is pending is dropped
        LOGGER.debug("client stream reader ended", exc_info=True)
    queue.put_nowait(_END)
