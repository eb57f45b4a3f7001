"""Many runtimes, one client: each camera pinned to a runtime, moved only when it has to.

    async with Fleet("dns:///ruth-runtime-headless.video.svc.cluster.local:50051") as fleet:
        await fleet.wait_ready([("fall_detection", "1.0.0")])
        answer = await fleet.infer(make_request("fall_detection", "1.0.0", jpeg, frame_id="f7",
                                                camera_id="gate-3"))
        answer.response    # the InferenceResponse: result or error, as from one runtime
        answer.runtime     # the runtime_id of the runtime that answered
        answer.resent      # the frame went to a runtime that failed before answering, then here
        answer.moved       # the camera moved to this runtime with this frame (its sequence restarted)

The rule (docs/sidecar.md#many-runtimes): a camera goes to the runtime that scores highest for it
(:mod:`sidecar.fleet.placement`) among those whose ``HealthCheck`` says READY for the model and that
are not draining. Each runtime carries its cameras on one InferStream. When a runtime fails (its
stream breaks, it drains, or it stops answering its health checks), the frames it had not answered
go to each camera's next runtime, in the order they were sent; the first frame of a camera on a
runtime it moved to carries ``sequence_start``, so a temporal model starts the camera's state again.
Every frame gets exactly one answer. The client polls each runtime's ``HealthCheck`` every
``health_interval_s`` and resolves a DNS name again every ``resolve_interval_s`` and after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from sidecar._proto import airuntime_pb2 as pb
from sidecar.client import CHANNEL_OPTIONS
from sidecar.fleet.endpoints import Endpoints, Resolver
from sidecar.fleet.member import Flight, Key, Member, Models
from sidecar.fleet.placement import pick

LOGGER = logging.getLogger("sidecar.fleet")

#: A runtime that went away is tried again every 0.5-5 s (gRPC's default backs off up to 120 s), so
#: that one coming back gets its cameras again within a few seconds.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


@dataclass(slots=True)
class Answer:
    """The one answer to a frame."""

    response: pb.InferenceResponse
    runtime: str = ""  # the runtime_id of the runtime that answered ("": none could take the frame)
    target: str = ""  # its address
    resent: bool = False  # sent again after the runtime it went to first failed before answering
    moved: bool = False  # the camera moved to this runtime with this frame: its sequence started again

    @property
    def ok(self) -> bool:
        return not self.response.HasField("error")


@dataclass(frozen=True)
class RuntimeView:
    """A runtime as the client sees it now."""

    target: str
    runtime_id: str
    up: bool
    draining: bool
    ready: list[tuple[str, str]]
    pending: int
    problem: str


class Fleet:
    """asyncio client over every runtime behind ``targets``: a list of ``host:port``, or one
    ``dns:///name:port`` (a headless Service). ``credentials`` (grpc.ChannelCredentials) selects TLS."""

    def __init__(
        self,
        targets: str | Sequence[str],
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        health_interval_s: float = 1.0,
        health_timeout_s: float = 1.0,
        resolve_interval_s: float = 10.0,
        max_attempts: int = 3,
        resolver: Resolver | None = None,
    ) -> None:
        self.endpoints = Endpoints(targets, resolve_interval_s, resolver)
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.max_attempts = max_attempts
        self._credentials = credentials
        self._options = [*CHANNEL_OPTIONS, *RECONNECT_OPTIONS, *options]
        self._members: dict[str, Member] = {}
        self._last: dict[tuple[str, Models], str] = {}  # (camera, models) -> the runtime it went to last
        self._routes: dict[tuple[str, Models], Member | None] = {}  # where they go now (cleared on change)
        self._in_flight: dict[Key, Flight] = {}
        self._one_model: dict[tuple[str, str], Models] = {}
        self._ids = itertools.count(1)
        self._watch: asyncio.Task | None = None
        self._resolve_now = asyncio.Event()  # a stream broke: look the name up again at once
        self._resolve_due = False
        self._closed = False

    # ---- start and stop --------------------------------------------------------------------------

    async def start(self) -> Fleet:
        """Find the runtimes and check each once (they need not be up)."""
        await self.endpoints.refresh()
        self._sync_members()
        await self._check_all()
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop(), name="ruth-fleet")
        return self

    async def __aenter__(self) -> Fleet:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop; a frame still unanswered gets a MODEL_NOT_READY answer."""
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for member in list(self._members.values()):
            await member.close()
        self._members.clear()

    # ---- the runtimes ----------------------------------------------------------------------------

    def runtimes(self) -> list[RuntimeView]:
        return [
            RuntimeView(m.target, m.runtime_id, m.up, m.draining, sorted(m.ready), m.pending, m.problem)
            for m in self._members.values()
        ]

    async def wait_ready(self, models: Sequence[tuple[str, str]], timeout_s: float = 60.0) -> None:
        """Wait until some runtime serves every one of ``models`` READY (TimeoutError says why not)."""
        wanted = frozenset(models)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not any(m.serves(wanted) for m in self._members.values()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(self._why_none(wanted))
            await asyncio.sleep(min(0.1, self.health_interval_s))

    def _sync_members(self) -> None:
        targets = set(self.endpoints.targets)
        for target in targets - self._members.keys():
            channel = (
                grpc.aio.insecure_channel(target, options=self._options)
                if self._credentials is None
                else grpc.aio.secure_channel(target, self._credentials, options=self._options)
            )
            self._members[target] = Member(
                target, channel, self._answered, self._lost, self._routes.clear, self.health_timeout_s
            )
        for target in self._members.keys() - targets:
            self._members[target].retired = True  # closed by the watch once it holds nothing
        self._routes.clear()

    async def _check_all(self) -> None:
        members = list(self._members.values())
        await asyncio.gather(*(m.check() for m in members))
        self._name_members()
        # a runtime may have moved, or appeared: the name is looked up again at the next round
        self._resolve_due = self.endpoints.dynamic and (not members or any(not m.up for m in members))

    def _name_members(self) -> None:
        """Cameras hash on the runtime_id (two runtimes reporting the same one: on it and the address)."""
        counts = Counter(m.runtime_id for m in self._members.values() if m.runtime_id)
        for m in self._members.values():
            if not m.runtime_id:
                name = m.target
            else:
                name = m.runtime_id if counts[m.runtime_id] == 1 else f"{m.runtime_id}@{m.target}"
            if name != m.name:
                m.name = name
                self._routes.clear()

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_resolve = loop.time() + self.endpoints.interval_s
        while True:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._resolve_now.wait(), self.health_interval_s)
            due = self._resolve_now.is_set() or self._resolve_due or loop.time() >= next_resolve
            if self.endpoints.dynamic and due:
                self._resolve_now.clear()
                next_resolve = loop.time() + self.endpoints.interval_s
                if await self.endpoints.refresh():
                    self._sync_members()
            self._resolve_now.clear()
            for target, member in list(self._members.items()):
                if member.retired and not member.pending:
                    del self._members[target]
                    self._routes.clear()
                    await member.close()
            await self._check_all()

    # ---- frames ----------------------------------------------------------------------------------

    async def infer(self, request: pb.InferenceRequest, timeout_s: float | None = None) -> Answer:
        """Send one frame to the runtime its camera is pinned to; its one answer (errors included:
        never raised). An empty ``frame_id`` is given one; a frame must not repeat the (camera,
        frame_id, model, version) of one still in flight."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

        def resolve(answer: Answer) -> None:
            if not future.done():  # not when the caller was cancelled meanwhile
                future.set_result(answer)

        flight, member = self._submit(request, resolve)
        if member is not None:
            await member.flush()
        if timeout_s is None:
            return await future
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            if flight.member is not None:
                flight.member.forget(flight)
            answer = self._error(flight, pb.TIMEOUT, f"no answer within {timeout_s:g} s")
            self._finish(flight, answer)
            return answer

    def _submit(
        self, request: pb.InferenceRequest, on_answer: Callable[[Answer], None]
    ) -> tuple[Flight, Member | None]:
        if not request.frame_id:
            request.frame_id = f"fleet-{next(self._ids)}"
        if request.models:
            models = frozenset((m.model_id, m.version) for m in request.models)
        else:
            one = (request.model_id, request.version)
            models = self._one_model.get(one) or self._one_model.setdefault(one, frozenset((one,)))
        camera = request.camera_id or request.frame_id
        flight = Flight(request, on_answer, camera, models, request.sequence_start)
        if flight.key in self._in_flight:
            self._finish(flight, self._error(
                flight, pb.INVALID_INPUT,
                f"frame_id {request.frame_id!r} of camera {request.camera_id!r} for this model is already in "
                "flight through this client: give each frame its own frame_id",
            ))
            return flight, None
        self._in_flight[flight.key] = flight
        return flight, self._dispatch(flight)

    async def stream(
        self, requests: AsyncIterable[pb.InferenceRequest], max_in_flight: int = 64
    ) -> AsyncIterator[Answer]:
        """Send each request as it comes (at most ``max_in_flight`` unanswered); yields each answer
        as it arrives (completion order)."""
        answers: asyncio.Queue = asyncio.Queue()
        room = asyncio.Semaphore(max_in_flight)
        done = object()
        submitted = 0

        async def feed() -> None:
            nonlocal submitted
            try:
                async for request in requests:
                    await room.acquire()
                    _, member = self._submit(request, answers.put_nowait)
                    submitted += 1
                    if member is not None:
                        await member.flush()
            finally:
                answers.put_nowait(done)

        feeder = asyncio.get_running_loop().create_task(feed())
        answered, fed = 0, False
        try:
            while not fed or answered < submitted:
                item = await answers.get()
                if item is done:
                    fed = True
                    continue
                answered += 1
                room.release()
                yield item
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder

    def _choose(self, where: tuple[str, Models]) -> Member | None:
        """The runtime (camera, models) go to now."""
        try:
            return self._routes[where]
        except KeyError:
            camera, models = where
            member = pick(camera, ((m.name, m) for m in self._members.values() if m.serves(models)))
            self._routes[where] = member
            return member

    def _dispatch(self, flight: Flight) -> Member | None:
        """Queue ``flight`` on its camera's runtime (None: none serves it; it is answered so)."""
        if self._closed:
            self._finish(flight, self._error(flight, pb.MODEL_NOT_READY, "the client is closed"))
            return None
        where = (flight.camera, flight.models)
        member = self._choose(where)
        if member is None:
            self._finish(flight, self._error(flight, pb.MODEL_NOT_READY, self._why_none(flight.models)))
            return None
        name = member.name
        last = self._last.get(where)
        if last != name:
            self._last[where] = name
        flight.moved = moved = last is not None and last != name
        if moved or flight.resent or flight.asked_start:  # else it is False, as the caller left it
            flight.request.sequence_start = flight.asked_start or moved
        member.send(flight)
        return member

    def _answered(self, flight: Flight, response: pb.InferenceResponse, member: Member) -> None:
        self._finish(flight, Answer(response, member.runtime_id, member.target, flight.resent, flight.moved))

    def _lost(self, member: Member, flights: list[Flight], reason: str) -> None:
        """``member`` failed before answering ``flights``: each goes to its camera's next runtime."""
        if self.endpoints.dynamic:
            self._resolve_now.set()
        for flight in flights:
            if flight.answered:
                continue
            flight.resent = True
            if flight.attempts >= self.max_attempts:
                message = (f"{flight.attempts} runtimes failed before answering; the last, {member.target}: "
                           f"{reason}")
                self._finish(flight, self._error(flight, pb.MODEL_NOT_READY, message))
            elif (target := self._dispatch(flight)) is not None:
                target.write_soon()

    def _finish(self, flight: Flight, answer: Answer) -> None:
        if flight.answered:
            return
        flight.answered = True
        if self._in_flight.get(flight.key) is flight:
            del self._in_flight[flight.key]
        flight.on_answer(answer)

    def _why_none(self, models: Models) -> str:
        wanted = ", ".join(f"{m} {v}" for m, v in sorted(models))
        reasons = []
        for m in self._members.values():
            if m.up and not models <= m.ready:
                missing = ", ".join(f"{i} {v}" for i, v in sorted(models - m.ready))
                reasons.append(f"{m.target} ({m.runtime_id}) does not serve {missing} READY")
            elif not m.up:
                reasons.append(m.problem)
        if self.endpoints.error:
            reasons.append(self.endpoints.error)
        if not self._members and not self.endpoints.error:
            reasons.append(f"no runtime found at {self.endpoints.describe()}")
        return f"no runtime serves {wanted} READY: " + "; ".join(reasons)

    @staticmethod
    def _error(flight: Flight, code: int, message: str) -> Answer:
        request = flight.request
        response = pb.InferenceResponse(
            frame_id=request.frame_id, camera_id=request.camera_id, model_id=request.model_id,
            version=request.version, timestamp_ms=request.timestamp_ms,
            error=pb.Error(code=code, message=message),
        )
        return Answer(response, resent=flight.resent)
