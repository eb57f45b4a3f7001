"""How many InferStream streams may be open, and when an idle one is closed.

:class:`StreamLimits` admits a new stream only below ``max_streams`` in the process and below
``max_streams_per_connection`` on the client connection it arrived on; beyond either the stream is
refused with OVERLOADED (RESOURCE_EXHAUSTED on gRPC) before anything is allocated for it, and the
streams already open are not touched. A connection is an opaque key the transport gives (gRPC: the
peer address with its port, one per HTTP/2 connection).

When the runtime shuts down, :meth:`StreamLimits.drain` refuses new streams (:class:`Draining`)
and tells every open one to stop reading: each answers what it has read, then ends.

Each admitted stream holds a :class:`AdmittedStream` until the transport releases it. It closes
its stream through ``on_idle`` once no request has arrived for ``idle_timeout_s`` and ``busy()``
says nothing is in flight, so a client that went quiet (or a backend that forgot a stream) does
not hold a Triton stream and its memory forever. One timer per stream, moved only when it fires;
the transport marks each request with :meth:`AdmittedStream.touch`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sidecar.errors import Draining, Overloaded, RequestTimeout

LOGGER = logging.getLogger(__name__)

#: With requests in flight at its idle deadline a stream is looked at again this much later.
BUSY_RECHECK_S = 1.0


class StreamLimits:
    """The open streams of one process, counted in total and per connection."""

    def __init__(self, max_streams: int, max_per_connection: int, idle_timeout_s: float = 0.0) -> None:
        self.max_streams = max_streams
        self.max_per_connection = max_per_connection
        self.idle_timeout_s = idle_timeout_s
        self.refused = {"process": 0, "connection": 0}
        self.closed_idle = 0
        self.draining = False
        self._per_connection: dict[str, int] = {}
        self._admitted: set[AdmittedStream] = set()
        self._all_closed: asyncio.Event | None = None

    @property
    def open(self) -> int:
        """Streams open in the process."""
        return len(self._admitted)

    @property
    def connections(self) -> int:
        """Client connections holding at least one open stream."""
        return len(self._per_connection)

    def admit(self, connection: str) -> AdmittedStream:
        """A place for a new stream on ``connection``, or :class:`Overloaded` when a cap is reached
        (:class:`Draining` once the runtime is shutting down)."""
        if self.draining:
            raise Draining()
        on_connection = self._per_connection.get(connection, 0)
        if on_connection >= self.max_per_connection:
            self.refused["connection"] += 1
            raise Overloaded(
                f"this connection already has {on_connection} InferStream streams open, the most one "
                f"connection may hold (max_streams_per_connection); multiplex cameras and models on "
                "fewer streams, or close the streams you no longer use"
            )
        if self.open >= self.max_streams:
            self.refused["process"] += 1
            raise Overloaded(
                f"the runtime already serves {self.open} InferStream streams, its maximum (max_streams); "
                "retry later or on another replica"
            )
        self._per_connection[connection] = on_connection + 1
        admitted = AdmittedStream(self, connection)
        self._admitted.add(admitted)
        return admitted

    def drain(self) -> None:
        """Refuse new streams; each open one answers what it has read, then ends."""
        self.draining = True
        for admitted in list(self._admitted):
            admitted.drain()

    async def closed(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every stream to end; False when some are still open."""
        if self.open:
            self._all_closed = self._all_closed or asyncio.Event()
            try:
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
            except (TimeoutError, asyncio.TimeoutError):
                return False
        return True

    def _release(self, admitted: AdmittedStream) -> None:
        connection = admitted.connection
        self._admitted.discard(admitted)
        left = self._per_connection[connection] - 1
        if left:
            self._per_connection[connection] = left
        else:
            del self._per_connection[connection]
        if not self.open and self._all_closed is not None:
            self._all_closed.set()


class AdmittedStream:
    """One admitted stream: :meth:`touch` on every request, :meth:`release` when the stream ends."""

    __slots__ = ("_busy", "_limits", "_loop", "_on_drain", "_on_idle", "_timer", "connection", "draining",
                 "idle", "last_request", "released")  # fmt: skip

    def __init__(self, limits: StreamLimits, connection: str) -> None:
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        self.connection = connection
        self.last_request = self._loop.time()
        self.idle = False  # closed by the idle timeout
        self.released = False
        self.draining = False  # the runtime is shutting down: read no more, answer, end
        self._busy: Callable[[], bool] | None = None
        self._on_idle: Callable[[], None] | None = None
        self._on_drain: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def touch(self) -> None:
        """A request arrived on the stream."""
        self.last_request = self._loop.time()

    def watch(self, busy: Callable[[], bool], on_idle: Callable[[], None]) -> None:
        """Call ``on_idle`` once the stream has been idle for the limits' ``idle_timeout_s``
        (never when it is 0): no request for that long and ``busy()`` false."""
        self._busy = busy
        self._on_idle = on_idle
        if self._limits.idle_timeout_s > 0:
            self._timer = self._loop.call_at(self.last_request + self._limits.idle_timeout_s, self._check)

    def on_drain(self, stop_reading: Callable[[], None]) -> None:
        """Call ``stop_reading`` when the runtime starts draining (at once if it has)."""
        self._on_drain = stop_reading
        if self.draining:
            stop_reading()

    def drain(self) -> None:
        self.draining = True
        if self._on_drain is not None:
            self._on_drain()

    def drain_error(self) -> Draining:
        """The answer that ends a stream the runtime drained."""
        return Draining(
            "the runtime is shutting down (draining): every request read from this stream was answered; "
            "send the others to another runtime"
        )

    def unwatch(self) -> None:
        """No idle timeout from now on: the stream is ending and its close must not be interrupted."""
        self._on_idle = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self.released or self._on_idle is None:
            return
        now = self._loop.time()
        due = self.last_request + self._limits.idle_timeout_s
        if now < due:
            self._timer = self._loop.call_at(due, self._check)
            return
        if self._busy is not None and self._busy():
            self._timer = self._loop.call_at(now + BUSY_RECHECK_S, self._check)
            return
        self.idle = True
        self._limits.closed_idle += 1
        LOGGER.info("closing an idle InferStream of %s (no request for %.0f s)", self.connection,
                    now - self.last_request)  # fmt: skip
        if self._on_idle is not None:
            self._on_idle()

    def idle_error(self) -> RequestTimeout:
        """The answer that ends a stream closed for idleness."""
        return RequestTimeout(
            f"no request for {self._limits.idle_timeout_s:g} s and nothing in flight: the stream is "
            "closed (stream_idle_timeout_s); open a new one when there are frames to send"
        )

    def release(self) -> None:
        """The stream ended: its place is free (idempotent)."""
        if self.released:
            return
        self.released = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._on_drain = None
        self._limits._release(self)
