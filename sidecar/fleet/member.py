"""One runtime of the fleet: its health as it reports it, and one InferStream carrying its cameras.

:meth:`Member.check` asks the runtime's ``HealthCheck``: its name (``runtime_id``), whether it is
draining, and which model versions are READY. :meth:`Member.send` queues a frame on the member's one
stream (opened when needed) and returns at once; frames are written in the order they were queued. A
reader matches each answer to its frame by (camera, frame, model, version). When the stream ends with
frames unanswered (the runtime died, was drained, or stopped answering), the member is down until its
health says otherwise, and ``on_lost`` gets those frames, in the order they were sent, to send
elsewhere: a frame is never answered twice, because a stream that ended answers nothing more.

A member whose stream holds frames stays where its cameras go until that stream ends, even when its
health check says draining (the runtime then ends the stream): so a camera's later frames never
overtake its earlier ones at a move. A member is taken for down after :data:`DOWN_AFTER_FAILED_CHECKS`
failed health checks in a row (its stream, if it holds frames, is then ended by the member); a dead
runtime is noticed sooner, by its stream breaking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from sidecar._proto import airuntime_pb2 as pb
from sidecar._proto import airuntime_pb2_grpc as pb_grpc

LOGGER = logging.getLogger("sidecar.fleet")

#: (camera_id, frame_id, model_id, version): what an answer on a stream is matched by
Key = tuple[str, str, str, str]
Models = frozenset[tuple[str, str]]

#: health checks in a row that must fail before a member is taken for down (one slow answer from a
#: busy runtime is not enough); if its stream holds frames, it is then ended and they go elsewhere
DOWN_AFTER_FAILED_CHECKS = 2


def key_of(message: pb.InferenceRequest | pb.InferenceResponse) -> Key:
    return (message.camera_id, message.frame_id, message.model_id, message.version)


@dataclass(slots=True, eq=False)
class Flight:
    """One frame on its way: sent, perhaps sent again, answered once (``on_answer`` is called with
    its answer)."""

    request: pb.InferenceRequest
    on_answer: Callable[[Any], None]
    camera: str
    models: Models
    asked_start: bool  # the caller's own sequence_start
    key: Key = field(init=False)
    resent: bool = False  # sent again after the runtime it went to failed before answering
    moved: bool = False  # the camera moved with this frame (sequence_start set on it)
    attempts: int = 0
    member: Member | None = None
    answered: bool = False

    def __post_init__(self) -> None:
        self.key = key_of(self.request)


class Member:
    """One runtime behind ``target``; ``name`` is what cameras hash on."""

    def __init__(
        self,
        target: str,
        channel: grpc.aio.Channel,
        on_answer: Callable[[Flight, pb.InferenceResponse, Member], None],
        on_lost: Callable[[Member, list[Flight], str], None],
        on_change: Callable[[], None],
        health_timeout_s: float = 1.0,
    ) -> None:
        self.target = target
        self.name = target
        self.runtime_id = ""
        self.up = False  # answering its health checks, not draining
        self.draining = False
        self.ready: Models = frozenset()
        self.problem = "not checked yet"
        self.retired = False  # no longer among the endpoints: it gets no new frames
        self._channel = channel
        self._stub = pb_grpc.AIRuntimeStub(channel)
        self._on_answer = on_answer
        self._on_lost = on_lost
        self._on_change = on_change  # where cameras go may have changed
        self._health_timeout_s = health_timeout_s
        self._failed_checks = 0
        self._call: grpc.aio.StreamStreamCall | None = None
        self._pending: dict[Key, Flight] = {}
        self._queue: deque[Flight] = deque()
        self._writing = False
        self._tasks: set[asyncio.Task] = set()

    # ---- health ----------------------------------------------------------------------------------

    def serves(self, models: Models) -> bool:
        return self.up and not self.retired and models <= self.ready

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def check(self) -> bool:
        """Ask the runtime's health once; False when it did not answer."""
        try:
            health = await self._stub.HealthCheck(pb.HealthCheckRequest(), timeout=self._health_timeout_s)
        except grpc.aio.AioRpcError as e:
            self._failed_checks += 1
            self.problem = f"{self.target} does not answer its health check ({e.code().name}: {e.details()})"
            if self._failed_checks < DOWN_AFTER_FAILED_CHECKS:
                return False
            if self._holding() and self._call is not None:
                self._call.cancel()  # taken for hung: what it holds goes to the cameras' next runtimes
            else:
                self._down()
            return False
        self._failed_checks = 0
        self.draining = health.draining
        was = (self.up, self.ready, self.runtime_id)
        self.runtime_id = health.runtime_id
        self.ready = frozenset((m.model_id, m.version) for m in health.models if m.state == pb.READY)
        # Draining, it ends its stream once it has answered what it read; the frames queued behind
        # are then sent elsewhere in order. So a camera moves away only when its stream ends.
        self.up = not health.draining or self._holding()
        if health.draining:
            self.problem = f"{self.target} is draining (shutting down)"
        elif not self.ready:
            self.problem = f"{self.target} has no model READY"
        else:
            self.problem = ""
        if was != (self.up, self.ready, self.runtime_id):
            if was[0] != self.up:
                state = "up" if self.up else self.problem
                LOGGER.info("runtime %s (%s) is %s", self.name, self.target, state)
            self._on_change()
        return True

    def _holding(self) -> bool:
        """Its stream is open with frames unanswered: a camera moving away now could overtake them."""
        return self._call is not None and bool(self._pending)

    def _down(self) -> None:
        if self.up:
            LOGGER.warning("runtime %s is down: %s", self.name, self.problem)
            self.up = False
            self._on_change()

    # ---- frames ----------------------------------------------------------------------------------

    def send(self, flight: Flight) -> None:
        """Queue ``flight`` on this runtime's stream; :meth:`flush` (or :meth:`write_soon`) writes it,
        in queue order."""
        flight.member = self
        flight.attempts += 1
        self._pending[flight.key] = flight
        self._queue.append(flight)

    def write_soon(self) -> None:
        """Write what is queued from a task of its own."""
        if not self._writing and self._queue:
            self._spawn(self.flush())

    async def flush(self) -> None:
        """Write what is queued (one writer at a time; a send during a write is written by it)."""
        if self._writing:
            return
        self._writing = True
        call = None
        try:
            while self._queue:
                flight = self._queue.popleft()
                if self._pending.get(flight.key) is not flight:
                    continue  # answered, or taken back when the stream ended
                call = self._call or self._open()
                await call.write(flight.request)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, RuntimeError):
            # the stream ended under the write: its reader gives what it held back (on_lost)
            LOGGER.debug("write to %s failed", self.target, exc_info=True)
            if call is not None and call is self._call:
                call.cancel()
        finally:
            self._writing = False
        if self._queue:  # queued while the stream was ending: on the next stream
            self._spawn(self.flush())

    def forget(self, flight: Flight) -> None:
        """The caller gave up on ``flight`` (its deadline): an answer to it is dropped."""
        if self._pending.get(flight.key) is flight:
            del self._pending[flight.key]

    def _open(self) -> grpc.aio.StreamStreamCall:
        call = self._stub.InferStream()
        self._call = call
        self._spawn(self._read(call))
        return call

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        reason, failed = "the stream ended", False
        try:
            async for response in call:
                flight = self._pending.pop(key_of(response), None)
                if flight is None:
                    continue
                if response.HasField("error") and response.error.code == pb.MODEL_NOT_READY:
                    self._not_ready(flight, response.error.message)
                else:
                    self._on_answer(flight, response, self)
        except grpc.aio.AioRpcError as e:
            reason = f"{e.code().name}: {e.details()}"
            # UNAVAILABLE: connection lost, or the runtime drained; CANCELLED: taken for hung
            failed = e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                  grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
        finally:
            self._ended(call, reason, failed)

    def _not_ready(self, flight: Flight, message: str) -> None:
        """The runtime did not run the frame, its model not being ready there (its Triton died or
        stops): the model is not served here until the next health check says so, and the frame
        goes to the camera's next runtime."""
        self.ready = self.ready - flight.models
        self._on_change()
        self._on_lost(self, [flight], f"MODEL_NOT_READY: {message}")

    def _ended(self, call: grpc.aio.StreamStreamCall, reason: str, failed: bool) -> None:
        if call is self._call:
            self._call = None
        lost = list(self._pending.values())
        self._pending.clear()
        self._queue.clear()
        if failed or lost:
            self.problem = f"{self.target}: its stream ended ({reason})"
            if self.up:
                LOGGER.warning("runtime %s (%s) is down: its stream ended (%s), %d frames unanswered",
                               self.name, self.target, reason, len(lost))
                self.up = False
                self._on_change()
        if lost:
            self._on_lost(self, lost, reason)

    def _spawn(self, coroutine: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """End the stream (what is still pending goes to ``on_lost``) and the channel."""
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._channel.close()
