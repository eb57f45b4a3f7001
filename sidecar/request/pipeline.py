"""The one request pipeline of both transports: prepare -> send -> settle.

* :meth:`Pipeline.prepare` routes a :class:`FrameRequest` (the published :class:`Route`), checks
  the frame against it (format, size, bounds, camera of a temporal model), computes its deadline
  and builds the Triton message (a sequence's START flag included): a :class:`Pending`;
* the transport-specific part sends it: :meth:`Pipeline.infer` on a unary lane, the stream
  session (:mod:`sidecar.request.stream`) on its client stream's Triton streams. Both begin a lease
  on the copy (:meth:`Pipeline.begin`), and both resend once with START when Triton released an
  idle sequence (:mod:`sidecar.request.sequences`);
* :meth:`Pipeline.settle` ends the lease and returns the :class:`Outcome`; on the loop's next turn,
  once the answer is on its way, it reports the outcome to the control plane's ``observe`` callback
  and logs a failure (one rate-limited line per failed request, :mod:`sidecar.request.failures`).

Every request gets exactly one :class:`Outcome`; a request refused before it was sent (a routing or
input error, OVERLOADED) is answered without a lease and is not observed.

A batch request (:attr:`FrameRequest.batch`, for a model whose input type is ``batch``) travels as
one Triton request; its outcome holds one :class:`FrameOutcome` per frame, in order. A frame that
fails its checks is answered INVALID_INPUT alone and the others go on; each frame sent counts in the
model's health as one request.

A frame by reference (``reference``: a region the call registered) is copied into a slot of the
frame pool, which Triton reads, and a JPEG or PNG frame that one call sends to several models is
decoded once into a slot (:mod:`sidecar.request.frame_memory`); the slot is released when the
requests that read it settle (later, when Triton did not answer them). A call naming several models,
and a model's upstreams, are :mod:`sidecar.request.fanout`'s: their requests come back here.

The request records (:class:`FrameRequest`, :class:`Pending`, :class:`Outcome`, ...) are
:mod:`sidecar.request.records`'s, also importable from here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sidecar.errors import (
    InvalidInput,
    Overloaded,
    PluginError,
    SequenceNotStarted,
    SharedMemoryLost,
    SidecarError,
)
from sidecar.request.failures import FailureLog
from sidecar.request.fanout import Fanout
from sidecar.request.frame_memory import FrameMemory
from sidecar.request.images import SIZE_READERS, raw_size
from sidecar.request.messages import SharedInput, build_batch_request, build_request
from sidecar.request.records import BatchItem, FrameOutcome, FrameRequest, Outcome, Pending
from sidecar.request.routes import Leases, Route, RouteTable
from sidecar.request.sequences import Sequences
from sidecar.request.shared_frames import CallRegions, FramePool
from sidecar.request.upstreams import parse as parse_upstreams
from sidecar.settings import SidecarSettings
from sidecar.triton_client import TritonAdapter, element_error, elements, first_element

LOGGER = logging.getLogger(__name__)

__all__ = ["BatchItem", "FrameOutcome", "FrameRequest", "Observer", "Outcome", "Pending", "Pipeline"]

#: ``observe(route, error, elapsed_ms, model_ms)``: one answered request (``error`` None on success;
#: ``elapsed_ms`` from its arrival to its answer; ``model_ms`` the model's own part of it, None when
#: the model did not say).
Observer = Callable[[Route, "SidecarError | None", float, "float | None"], None]


class Pipeline:
    """Routing, checks, deadlines, sequences and outcomes: what every request goes through."""

    def __init__(
        self,
        settings: SidecarSettings,
        adapter: TritonAdapter,
        routes: RouteTable,
        leases: Leases,
        observe: Observer,
        pool: FramePool | None = None,
    ) -> None:
        self.settings = settings
        self.adapter = adapter
        self.routes = routes
        self.leases = leases
        self._observe = observe
        self.failures = FailureLog(settings.failed_request_log_per_s, settings.failed_request_log_burst)
        self._timeout_s = settings.request_timeout_ms / 1000.0
        self._margin_ms = settings.request_timeout_margin_ms
        self._max_frame_bytes = settings.max_frame_bytes
        self._max_unary = settings.max_in_flight_unary
        self._unary_in_flight = 0
        self._ids = 0
        self.frames = FrameMemory(settings, adapter, routes, pool)
        self.sequences = Sequences()
        self.fanout = Fanout(self, settings)

    # ---- prepare ---------------------------------------------------------------------------------

    def prepare(
        self,
        request: FrameRequest,
        started: float,
        client_remaining_s: float | None = None,
        regions: CallRegions | None = None,
    ) -> Pending:
        """Route and check ``request`` and build its Triton message; raises the refusal.

        ``regions``: the shared-memory regions the call registered (frames by reference)."""
        route = self.routes.resolve(request.model_id, request.version)
        if request.batch is not None or route.input_type == "batch":
            return self._prepare_batch(request, route, started, client_remaining_s, regions)
        slot = None
        pixels = request.pixels
        data: bytes | SharedInput = request.data
        if request.reference is None:
            width, height = self._check(route, request, data)
            if pixels is not None and not route.raw and (pixels.width, pixels.height) == (width, height):
                data = pixels.input  # type: ignore[assignment]
            else:
                pixels = None
        else:
            pixels = None
            slot = self.frames.copy_in(request.reference, regions)
            try:
                width, height = self._check(route, request, slot.view if route.raw else bytes(slot.view))
            except SidecarError:
                self.frames.pool.release(slot)  # type: ignore[union-attr]
                raise
            data = SharedInput(self.frames.pool.name, slot.offset, slot.size)  # type: ignore[union-attr]
        if route.sequence:
            start, epoch = self.sequences.start(route.triton_name, request.camera_id, request.sequence_start)
        else:
            start, epoch = False, 0
        self._ids += 1
        request_id = str(self._ids)
        message = build_request(
            route, request_id, data, width, height, request.frame_id, request.camera_id,
            request.timestamp_ms, start, request.upstreams, pixels is not None,
        )
        deadline = started + self.deadline_s(request, client_remaining_s, route)
        pending = Pending(request, route, request_id, message, started, deadline, start, epoch)
        pending.slot = slot
        if pixels is not None:
            self.frames.hold(pending, pixels)
        return pending

    def _prepare_batch(
        self,
        request: FrameRequest,
        route: Route,
        started: float,
        client_remaining_s: float | None,
        regions: CallRegions | None,
    ) -> Pending:
        if route.input_type != "batch":
            raise InvalidInput(
                f"{route.model_id} {route.version} takes one frame per request (its input type is "
                f"{route.input_type}): send a batch to a model whose input type is batch"
            )
        items = request.batch
        pixels = None
        if items is None:  # one frame sent the usual way: a batch of one
            items = [BatchItem(request.frame_id, request.camera_id, request.data, request.format,
                               request.width, request.height, request.timestamp_ms, request.reference)]
            items[0].upstreams = request.upstreams
            if request.reference is None:
                pixels = request.pixels
        elif request.data or request.reference is not None:
            raise InvalidInput("a request carries either frame or batch, not both")
        if not items or len(items) > route.max_batch:
            limit = f"{route.model_id} {route.version} takes 1 to {route.max_batch}"
            raise InvalidInput(f"a batch of {len(items)} frames; {limit}")
        answers: list[SidecarError | None] = []
        frames: list[tuple[bytes | SharedInput, int, int]] = []
        ids: list[dict[str, object]] = []
        for item in items:
            try:
                if item.reference is not None:
                    item.data = self.frames.read(item.reference, regions)
                width, height = self._check(route, item, item.data)
                if route.raw and frames and (width, height) != frames[0][1:]:
                    first = f"{frames[0][1]}x{frames[0][2]}"
                    raise InvalidInput(f"frame is {width}x{height}; the batch's raw frames are {first}")
            except InvalidInput as e:
                answers.append(e)
                continue
            answers.append(None)
            if pixels is not None and not route.raw and (pixels.width, pixels.height) == (width, height):
                frames.append((pixels.input, width, height))  # type: ignore[arg-type]
            else:
                pixels = None
                frames.append((item.data, width, height))
            ids.append({"frame_id": item.frame_id, "camera_id": item.camera_id or request.camera_id,
                        "timestamp_ms": item.timestamp_ms or request.timestamp_ms})
            if pixels is not None:
                ids[-1]["pixels"] = f"{width}x{height}"
            if item.upstreams is not None:
                ids[-1]["upstreams"] = parse_upstreams(item.upstreams)
        self._ids += 1
        request_id = str(self._ids)
        message = build_batch_request(route, request_id, frames, ids) if frames else None
        deadline = started + self.deadline_s(request, client_remaining_s, route)
        pending = Pending(request, route, request_id, message, started, deadline, False, 0)
        pending.answers = answers
        if frames and pixels is not None:
            self.frames.hold(pending, pixels)
        return pending

    def _check(self, route: Route, request: FrameRequest | BatchItem, data: Any) -> tuple[int, int]:
        """(width, height) of ``data``, the frame's bytes (``request`` gives its declared fields)."""
        size = len(data)
        if not size:
            raise InvalidInput("frame.data is empty")
        if size > self._max_frame_bytes:
            raise InvalidInput(f"frame is {size} bytes; the limit is {self._max_frame_bytes}")
        fmt = request.format
        if fmt != route.format:
            if not fmt:
                raise InvalidInput(
                    f"frame.format is missing; {route.model_id} {route.version} takes {route.format}"
                )
            raise InvalidInput(f"{route.model_id} {route.version} takes {route.format} frames, not {fmt}")
        reader = SIZE_READERS.get(fmt)
        if reader is None:
            width, height = raw_size(data, request.width, request.height)
        else:
            width, height = reader(data)
            if (request.width and request.width != width) or (request.height and request.height != height):
                raise InvalidInput(
                    f"frame.width/height {request.width}x{request.height} disagree with the "
                    f"{fmt} header ({width}x{height})"
                )
        if (
            width < route.min_width
            or height < route.min_height
            or (route.max_width is not None and width > route.max_width)
            or (route.max_height is not None and height > route.max_height)
        ):
            raise InvalidInput(
                f"frame is {width}x{height}; {route.model_id} {route.version} accepts {route.bounds()}"
            )
        if route.sequence and not request.camera_id:
            raise InvalidInput(f"{route.model_id} {route.version} is temporal: camera_id is required")
        return width, height

    def deadline_s(
        self, request: FrameRequest, client_remaining_s: float | None = None, route: Route | None = None
    ) -> float:
        """Seconds this request may take (docs/sidecar.md#deadlines): the model's phase limits added up plus
        ``request_timeout_margin_ms``, capped by the runtime's ``request_timeout_ms``, or less if
        the client asks for less.

        A client's gRPC deadline is shortened by a small margin so that the TIMEOUT answer
        reaches the client before its own deadline expires.
        """
        timeout = self._timeout_s
        if route is not None and route.limits_ms:
            timeout = min(timeout, (route.limits_ms + self._margin_ms) / 1000.0)
        if request.timeout_ms:
            timeout = min(timeout, request.timeout_ms / 1000.0)
        if client_remaining_s is not None:
            margin = min(0.05, client_remaining_s * 0.1)
            timeout = min(timeout, max(0.001, client_remaining_s - margin))
        return timeout

    # ---- send and settle -------------------------------------------------------------------------

    def begin(self, pending: Pending) -> None:
        """The request is about to be sent: its copy is not unloaded until it is settled."""
        self.leases.begin(pending.name)

    def settle(
        self, pending: Pending, result: bytes | None, error: SidecarError | None, now: float,
        model_ms: float | None = None,
    ) -> Outcome:
        """End the request's lease and answer (``result``: RESULT as Triton serialised it;
        ``model_ms``: the model's own time for it); the control plane hears of it on the loop's
        next turn (a batch's frames: at once)."""
        elapsed_ms = (now - pending.started) * 1000.0
        if pending.restarts:  # the restart is over, whatever its answer
            self.sequences.restarted(pending)
        if pending.slot is not None or pending.pixels is not None:
            # Triton answered unless the request timed out or its stream broke
            self.frames.release(pending, result is not None or isinstance(error, (PluginError, InvalidInput)))
            if type(error) is SharedMemoryLost:
                self.frames.pool.forget()  # type: ignore[union-attr]
        if pending.answers is not None:
            return self._settle_batch(pending, result, error, elapsed_ms, model_ms)
        self.leases.end(pending.name)
        if result is not None:
            try:
                result = first_element(result)
            except SidecarError as e:
                result, error = None, e
        # The control plane hears of it once the answer is on its way (the loop's next turn)
        if error is not None:
            model_ms = None
        asyncio.get_running_loop().call_soon(self._account, pending, error, elapsed_ms, model_ms)
        return Outcome(pending.request, result, error, elapsed_ms, None, model_ms)

    def _account(
        self, pending: Pending, error: SidecarError | None, elapsed_ms: float, model_ms: float | None
    ) -> None:
        """Tell the control plane of one answered request, and log it if it failed."""
        route = pending.route
        self._observe(route, error, elapsed_ms, model_ms)
        if error is not None:
            request = pending.request
            self.failures.record(route.model_id, route.version, request.frame_id, request.camera_id, error,
                                 elapsed_ms)

    def _settle_batch(
        self, pending: Pending, result: bytes | None, error: SidecarError | None, elapsed_ms: float,
        model_ms: float | None,
    ) -> Outcome:
        answers = pending.answers or []
        sent = answers.count(None)
        results: list[bytes | None] = [None] * sent
        errors: list[SidecarError | None] = [error] * sent
        if pending.message is not None:
            self.leases.end(pending.name)
            if result is not None:
                try:
                    results = list(elements(result, sent))
                    errors = [element_error(e) for e in results]
                except SidecarError as e:
                    results, errors = [None] * sent, [e] * sent
        items = pending.request.batch or [None] * len(answers)
        frames, replies = [], iter(zip(results, errors, strict=True))
        for item, refused in zip(items, answers, strict=True):
            if refused is not None:
                frames.append(FrameOutcome(item, None, refused))
                continue
            data, failed = next(replies)
            self._observe(pending.route, failed, elapsed_ms, None if failed else model_ms)
            if failed is not None:
                frame_id = item.frame_id if item is not None else pending.request.frame_id
                camera_id = (item.camera_id if item is not None else "") or pending.request.camera_id
                self.failures.record(pending.route.model_id, pending.route.version, frame_id, camera_id,
                                     failed, elapsed_ms)
            frames.append(FrameOutcome(item, None if failed else data, failed))
        if pending.request.batch is None:  # one frame sent the usual way: answered the usual way
            (only,) = frames
            return Outcome(pending.request, only.result, only.error, elapsed_ms, None,
                           None if only.error else model_ms)
        return Outcome(pending.request, None, None, elapsed_ms, frames, model_ms)

    async def infer(
        self,
        request: FrameRequest,
        client_remaining_s: float | None = None,
        regions: CallRegions | None = None,
        shared: dict | None = None,
    ) -> Outcome:
        """Answer one unary request (a refusal or failure is in the outcome, never raised).

        ``shared``: the upstream results of the call this request is part of
        (:meth:`Fanout.infer_many <sidecar.request.fanout.Fanout.infer_many>`)."""
        if request.models is not None:
            return await self.fanout.infer_many(request, client_remaining_s, regions)
        if (request.frame_id and request.batch is None
                and (request.model_id, request.version) in self.routes.upstream_keys):
            return await self.fanout.infer_shared(request, client_remaining_s, regions, shared)
        return await self.infer_one(request, client_remaining_s, regions, shared)

    async def infer_one(
        self, request: FrameRequest, client_remaining_s: float | None, regions: CallRegions | None,
        shared: dict | None,
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if regions is not None:
                await self.frames.register(request)
            if request.upstreams is None:
                route = self.routes.resolve(request.model_id, request.version)
                if route.upstreams:
                    await self.fanout.attach_upstreams(route, request, regions, shared, client_remaining_s)
                    now = loop.time()  # the model's own budget starts once its upstreams answered
                    if client_remaining_s is not None:
                        client_remaining_s -= now - started
                    started = now
            pending = self.prepare(request, started, client_remaining_s, regions)
        except SidecarError as e:
            return Outcome(request, None, e, 0.0)
        if self._unary_in_flight >= self._max_unary:
            self.frames.release(pending, answered=True)  # never sent
            return Outcome(request, None, Overloaded("too many requests in flight; retry later"), 0.0)
        if pending.message is None:  # a batch none of whose frames passed its checks
            return self.settle(pending, None, None, loop.time())
        self._unary_in_flight += 1
        self.begin(pending)
        result = error = model_ms = None
        try:
            result, model_ms = await self.adapter.infer(
                pending.message, max(0.001, pending.deadline - loop.time())
            )
        except SequenceNotStarted as e:
            error = e
            if self.sequences.restart(pending):
                result, model_ms, error = await self._resend_unary(pending, loop)
        except SidecarError as e:
            error = e
        finally:
            self._unary_in_flight -= 1
        return self.settle(pending, result, error, loop.time(), model_ms)

    async def _resend_unary(
        self, pending: Pending, loop: asyncio.AbstractEventLoop
    ) -> tuple[bytes | None, float | None, SidecarError | None]:
        try:
            result, model_ms = await self.adapter.infer(
                pending.message, max(0.001, pending.deadline - loop.time())
            )
        except SidecarError as e:
            return None, None, e
        return result, model_ms, None
