"""The one request pipeline of both transports: prepare -> send -> settle.

* :meth:`Pipeline.prepare` routes a :class:`FrameRequest` (the published :class:`Route`), checks
  the frame against it (format, size, bounds, camera of a temporal model), computes its deadline
  and builds the Triton message (a sequence's START flag included): a :class:`Pending`;
* the transport-specific part sends it: :meth:`Pipeline.infer` on a unary lane, the stream
  session (:mod:`sidecar.request.stream`) on its client stream's Triton streams. Both begin a lease
  on the copy (:meth:`Pipeline.begin`), and both resend once with START when Triton released an
  idle sequence (:meth:`Pipeline.restart_sequence`);
* :meth:`Pipeline.settle` ends the lease and returns the :class:`Outcome`; on the loop's next turn,
  once the answer is on its way, it reports the outcome to the control plane's ``observe`` callback
  and logs a failure (one rate-limited line per failed request, :mod:`sidecar.request.failures`).

Every request gets exactly one :class:`Outcome`; a request refused before it was sent (a routing or
input error, OVERLOADED) is answered without a lease and is not observed.

A batch request (:attr:`FrameRequest.batch`, for a model whose input type is ``batch``) travels as
one Triton request; its outcome holds one :class:`FrameOutcome` per frame, in order. A frame that
fails its checks is answered INVALID_INPUT alone and the others go on; each frame sent counts in the
model's health as one request.

A frame by reference (``reference``: a region the call registered, see
:mod:`sidecar.request.shared_frames`) is copied into a slot of the frame pool, which Triton reads; the
slot is released when the request settles (later, when Triton did not answer it). Frames by reference
inside a batch are read into the batch's tensor instead.

A JPEG or PNG frame that one request sends to several models that take it encoded (:meth:`Pipeline.
infer_many`, their upstreams included) is decoded once, into a slot of the frame pool
(``decode_once``, on by default; the pool is reserved at its first use): each model's Triton request
names that slot with the ``pixels`` parameter, and its wrapper takes the pixels instead of decoding.
The slot is free again once every request that read it has settled. Where the pool cannot be used
(Triton does not share the sidecar's ``/dev/shm``, or it is full) the frame goes encoded, as to one
model.
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
from sidecar.request.images import decode_rgb_into, jpeg_size, png_size, raw_size
from sidecar.request.messages import SharedInput, build_batch_request, build_request, set_sequence_start
from sidecar.request.routes import Leases, Route, RouteTable
from sidecar.request.shared_frames import CallRegions, FramePool, FrameReference, SharedSlot, Slot
from sidecar.request.upstreams import UpstreamMemo, Upstreams
from sidecar.request.upstreams import parse as parse_upstreams
from sidecar.settings import SidecarSettings
from sidecar.triton_client import TritonAdapter, element_error, elements, first_element

LOGGER = logging.getLogger(__name__)

_SIZE_READERS = {"jpeg": jpeg_size, "png": png_size}

#: The most models one request may name (``InferenceRequest.models``).
MAX_MODELS_PER_REQUEST = 16

#: ``observe(route, error, elapsed_ms, model_ms)``: one answered request (``error`` None on success;
#: ``elapsed_ms`` from its arrival to its answer; ``model_ms`` the model's own part of it, None when
#: the model did not say).
Observer = Callable[[Route, "SidecarError | None", float, "float | None"], None]


class BatchItem:
    """One frame of a batch request."""

    __slots__ = (
        "camera_id", "data", "format", "frame_id", "height", "reference", "timestamp_ms", "upstreams",
        "width",
    )

    def __init__(
        self, frame_id: str, camera_id: str, data: bytes, format: str, width: int = 0, height: int = 0,
        timestamp_ms: int = 0, reference: FrameReference | None = None,
    ) -> None:
        self.frame_id = frame_id
        self.camera_id = camera_id
        self.data = data
        self.format = format
        self.width = width
        self.height = height
        self.timestamp_ms = timestamp_ms
        self.reference = reference
        self.upstreams: str | None = None  # the upstreams' results for this frame (JSON)


class FrameRequest:
    """One inference request, as every transport hands it to the pipeline (``batch``: its frames,
    when it carries a batch instead of one frame)."""

    __slots__ = (
        "batch",
        "camera_id",
        "data",
        "format",
        "frame_id",
        "height",
        "model_id",
        "models",
        "pixels",
        "reference",
        "timeout_ms",
        "timestamp_ms",
        "upstreams",
        "version",
        "width",
    )

    def __init__(
        self,
        frame_id: str,
        camera_id: str,
        model_id: str,
        version: str,
        data: bytes,
        format: str,
        width: int = 0,
        height: int = 0,
        timestamp_ms: int = 0,
        timeout_ms: int = 0,
        batch: list[BatchItem] | None = None,
        reference: FrameReference | None = None,
    ) -> None:
        self.frame_id = frame_id
        self.camera_id = camera_id
        self.model_id = model_id
        self.version = version
        self.data = data
        self.format = format
        self.width = width
        self.height = height
        self.timestamp_ms = timestamp_ms
        self.timeout_ms = timeout_ms
        self.batch = batch
        self.reference = reference
        self.upstreams: str | None = None  # the upstreams' results for this frame (JSON), once fetched
        self.models: list[tuple[str, str]] | None = None  # several models for this frame (infer_many)
        self.pixels: SharedSlot | None = None  # the frame decoded once, for several models

    def for_model(self, model_id: str, version: str) -> FrameRequest:
        """The same frame, for another model."""
        request = FrameRequest(
            self.frame_id, self.camera_id, model_id, version, self.data, self.format, self.width, self.height,
            self.timestamp_ms, self.timeout_ms, None, self.reference,
        )
        request.pixels = self.pixels
        return request


class FrameOutcome:
    """The answer for one frame of a batch: its RESULT JSON bytes or its error."""

    __slots__ = ("error", "item", "result")

    def __init__(self, item: BatchItem, result: bytes | None, error: SidecarError | None) -> None:
        self.item = item
        self.result = result
        self.error = error


class Outcome:
    """The answer to one :class:`FrameRequest`: RESULT JSON bytes or an error, never both; for a
    batch, ``frames`` (one per frame, in order) unless the batch as a whole was refused.

    ``elapsed_ms``: from the request's arrival to its answer; ``model_ms``: the model's own time for
    it (decode, pre, infer, post in the wrapper), None when the model did not report it (an error,
    or an entry built without MODEL_MS); the rest is the wait (queued behind earlier frames,
    transport, the sidecar)."""

    __slots__ = ("answers", "elapsed_ms", "error", "frames", "model_ms", "request", "result")

    def __init__(
        self,
        request: FrameRequest,
        result: bytes | None,
        error: SidecarError | None,
        elapsed_ms: float,
        frames: list[FrameOutcome] | None = None,
        model_ms: float | None = None,
    ) -> None:
        self.request = request
        self.result = result
        self.error = error
        self.elapsed_ms = elapsed_ms
        self.frames = frames
        self.model_ms = model_ms
        self.answers: list[Outcome] | None = None  # a request for several models: one per model, in order

    @property
    def inference_ms(self) -> float:
        """The model's own time when known, else the whole time in the runtime."""
        return self.elapsed_ms if self.model_ms is None else self.model_ms

    @property
    def wait_ms(self) -> float:
        """The time besides the model's own: in queues, transport and the sidecar (0 when unknown)."""
        return 0.0 if self.model_ms is None else max(0.0, self.elapsed_ms - self.model_ms)


class Pending:
    """A prepared request on its way: its route, deadline and Triton message (opaque here; None for
    a batch none of whose frames passed its checks). ``answers`` holds a batch's frames: the error
    of each frame that failed its checks, None for those sent."""

    __slots__ = ("answers", "deadline", "epoch", "message", "name", "pixels", "request", "request_id",
                 "resendable", "restarts", "route", "slot", "started")

    def __init__(
        self, request: FrameRequest, route: Route, request_id: str, message: Any, started: float,
        deadline: float, start: bool, epoch: int,
    ) -> None:
        self.request = request
        self.route = route
        self.name = route.triton_name  # the copy it is sent to, whatever the route becomes meanwhile
        self.request_id = request_id
        self.message = message
        self.started = started
        self.deadline = deadline
        self.resendable = not start  # a request that started its sequence is never resent with START
        self.restarts = False  # resent with START to restart its released sequence
        self.epoch = epoch
        self.answers: list[SidecarError | None] | None = None
        self.slot: Slot | None = None  # the frame's copy in the frame pool
        self.pixels: SharedSlot | None = None  # the frame decoded once, which this request reads


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
        self.pool = pool
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
        self._sequences: dict[tuple[str, str], int] = {}  # started (copy, camera) -> restarts
        self._restarting: dict[tuple[str, str], int] = {}  # (copy, camera) -> epoch whose START is out
        self._ids = 0
        #: why frames are not decoded once (None while they are): off, or the pool is unusable
        self.decode_off: str | None = (
            "decode_once is off" if not settings.decode_once else "no frame pool" if pool is None else None
        )
        #: frames decoded once, and the model requests that read them instead of decoding
        self.decoded = {"frames": 0, "reads": 0}
        self.upstreams = Upstreams(
            self._run_upstream,
            UpstreamMemo(settings.upstream_memo_entries, settings.upstream_memo_bytes,
                         settings.upstream_memo_age_s),
        )

    # ---- upstreams -------------------------------------------------------------------------------

    async def attach_upstreams(
        self, route: Route, request: FrameRequest, regions: CallRegions | None = None,
        shared: dict | None = None, client_remaining_s: float | None = None,
    ) -> None:
        """Run ``route``'s upstreams on the request's frame (each frame of a batch) and give the
        request their results; raises UPSTREAM_ERROR for an upstream that failed. The upstreams'
        requests keep the request's own limits (``timeout_ms``, the client's deadline)."""
        results = self.upstreams.results
        limits = (request.timeout_ms, client_remaining_s)
        if request.batch is None:
            request.upstreams = await results(route.upstreams, (request, regions, limits), request.camera_id,
                                              request.frame_id, shared)
            return
        items = request.batch
        cameras = [item.camera_id or request.camera_id for item in items]
        found = await asyncio.gather(
            *(results(route.upstreams, (item, regions, limits), camera, item.frame_id, shared)
              for item, camera in zip(items, cameras, strict=True)),
            return_exceptions=True,
        )
        for item, value in zip(items, found, strict=True):
            if isinstance(value, BaseException):
                raise value
            item.upstreams = value

    async def _run_upstream(
        self, model_id: str, version: str, frame: object
    ) -> tuple[bytes | None, SidecarError | None]:
        """One upstream request for the frame of ``frame``: the dependent's request or batch item, the
        call's shared-memory regions, and the dependent's limits (timeout_ms, the client's deadline)."""
        source, regions, (timeout_ms, client_remaining_s) = frame  # type: ignore[misc]
        request = FrameRequest(
            source.frame_id, source.camera_id, model_id, version, source.data, source.format, source.width,
            source.height, source.timestamp_ms, timeout_ms, reference=source.reference,
        )
        request.pixels = getattr(source, "pixels", None)  # a batch's item has none
        outcome = await self._infer_one(request, client_remaining_s, regions, None)  # the memo's own run
        return outcome.result, outcome.error

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
            slot = self._copy_to_pool(request.reference, regions)
            try:
                width, height = self._check(route, request, slot.view if route.raw else bytes(slot.view))
            except SidecarError:
                self.pool.release(slot)  # type: ignore[union-attr]
                raise
            data = SharedInput(self.pool.name, slot.offset, slot.size)  # type: ignore[union-attr]
        if route.sequence:
            start, epoch = self._sequence_start(route.triton_name, request.camera_id)
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
        self._hold(pending, pixels)
        return pending

    def _hold(self, pending: Pending, pixels: SharedSlot | None) -> None:
        if pixels is not None:
            pixels.hold()
            pending.pixels = pixels
            self.decoded["reads"] += 1

    def _copy_to_pool(self, reference: FrameReference, regions: CallRegions | None) -> Slot:
        """The referenced frame, copied into a slot of the frame pool."""
        regions = self._regions_for(reference, regions)
        slot = self.pool.allocate(reference.size)  # type: ignore[union-attr]
        try:
            regions.read_into(reference, slot.view)
        except SidecarError:
            self.pool.release(slot)  # type: ignore[union-attr]
            raise
        return slot

    def _read_reference(self, reference: FrameReference, regions: CallRegions | None) -> bytes:
        """A batch's frame by reference: read into the batch's tensor (no pool slot)."""
        return self._regions_for(reference, regions).read(reference)

    def _regions_for(self, reference: FrameReference, regions: CallRegions | None) -> CallRegions:
        """The call's regions, when frames by reference are on and ``reference`` may be read."""
        if self.pool is None or not self.settings.shared_memory:
            raise InvalidInput("frames by reference are off on this runtime (RUTH_SHARED_MEMORY=true turns "
                               "them on, for backends on the same host)")
        if regions is None:
            raise InvalidInput(f"frame.reference.region {reference.region!r} is not registered on this call "
                               "(metadata ruth-frame-region)")
        if not 0 < reference.size <= self._max_frame_bytes:
            raise InvalidInput(f"frame.reference.size is {reference.size} bytes; frames hold 1 to "
                               f"{self._max_frame_bytes}")
        return regions

    async def register_pool(self, request: FrameRequest) -> None:
        """Before a frame by reference: register the frame pool with Triton if Triton forgot it."""
        pool = self.pool
        if pool is not None and not pool.registered and request.reference is not None:
            await pool.ensure_registered(self.adapter)

    def release(self, pending: Pending, answered: bool) -> None:
        """Free the request's pool slot, if it has one, and let go of the decoded frame it read
        (``answered``: Triton answered it)."""
        slot = pending.slot
        if slot is not None:
            pending.slot = None
            self.pool.release(slot, answered)  # type: ignore[union-attr]
        pixels = pending.pixels
        if pixels is not None:
            pending.pixels = None
            pixels.let_go(answered)

    # ---- one decode for several models -----------------------------------------------------------

    async def decode_once(self, request: FrameRequest, models: list[tuple[str, str]]) -> SharedSlot | None:
        """The request's frame decoded into a pool slot, when two or more of ``models`` take it
        encoded in its format; None when it goes encoded (one such model, a frame by reference, a
        frame that does not decode to its header's size, the pool full or unusable)."""
        fmt = request.format
        if self.decode_off is not None or request.reference is not None or fmt not in _SIZE_READERS:
            return None
        routes = self.routes
        takers = sum(1 for key in models if (route := routes.get(*key)) is not None and route.format == fmt)
        if takers < 2 or not 0 < len(request.data) <= self._max_frame_bytes:
            return None
        try:
            width, height = _SIZE_READERS[fmt](request.data)
        except InvalidInput:
            return None  # each model says why
        pool = self.pool
        assert pool is not None  # decode_off says so otherwise
        if not pool.registered and not await self._register_for_decoding(pool):
            return None
        try:
            slot = pool.allocate(width * height * 3)
        except Overloaded:
            return None
        work = asyncio.get_running_loop().run_in_executor(
            None, decode_rgb_into, request.data, slot.view, width, height
        )
        try:
            decoded = await asyncio.shield(work)
        except BaseException:
            work.add_done_callback(lambda _: pool.release(slot))  # the decoder writes on: free it after
            raise
        if not decoded:
            pool.release(slot)
            return None
        self.decoded["frames"] += 1
        return SharedSlot(pool, slot, width, height, SharedInput(pool.name, slot.offset, slot.size))

    async def _register_for_decoding(self, pool: FramePool) -> bool:
        """Register the pool for decoded frames; a Triton that is up and still refuses it cannot read
        this sidecar's /dev/shm: frames go encoded from then on (the reason in ``decode_off``)."""
        try:
            await pool.ensure_registered(self.adapter)
        except SidecarError as e:
            if await self.adapter.server_ready():
                self.decode_off = f"the inference server cannot read the frame pool: {e}"
                LOGGER.warning("frames sent to several models go encoded to each: %s (Triton must share "
                               "the sidecar's /dev/shm to read decoded frames)", self.decode_off)
                if not self.settings.shared_memory:
                    await pool.close(self.adapter)
            return False
        return True

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
                    item.data = self._read_reference(item.reference, regions)
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
        if frames:
            self._hold(pending, pixels)
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
        reader = _SIZE_READERS.get(fmt)
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

    # ---- sequences (temporal models) -------------------------------------------------------------

    def _sequence_start(self, name: str, camera_id: str) -> tuple[bool, int]:
        """(start, epoch): start is True on a camera's first frame for the copy on this sidecar;
        epoch counts the sequence's restarts."""
        key = (name, camera_id)
        epoch = self._sequences.get(key)
        if epoch is None:
            self._sequences[key] = 0
            return True, 0
        return False, epoch

    def restart_sequence(self, pending: Pending) -> bool:
        """Triton refused ``pending`` because its sequence was released: prepare the resend.

        False when it must not be resent (it was already sent with START). Only the first refused
        frame of a sequence restarts it; frames refused while that restart is under way (sent before
        it, or after it but ahead of its resend) are resent without START, in order behind it.
        """
        if not pending.resendable:
            return False
        pending.resendable = False
        key = (pending.name, pending.request.camera_id)
        current = self._sequences.get(key, 0)
        if current > pending.epoch or self._restarting.get(key) == current:
            pending.epoch = current
            set_sequence_start(pending.message, False)
            return True
        self._sequences[key] = pending.epoch = current + 1
        self._restarting[key] = current + 1
        pending.restarts = True
        set_sequence_start(pending.message, True)
        return True

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
            key = (pending.name, pending.request.camera_id)
            if self._restarting.get(key) == pending.epoch:
                del self._restarting[key]
        if pending.slot is not None or pending.pixels is not None:
            # Triton answered unless the request timed out or its stream broke
            self.release(pending, result is not None or isinstance(error, (PluginError, InvalidInput)))
            if type(error) is SharedMemoryLost:
                self.pool.forget()  # type: ignore[union-attr]
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

        ``shared``: the upstream results of the call this request is part of (:meth:`infer_many`)."""
        if request.models is not None:
            return await self.infer_many(request, client_remaining_s, regions)
        if (request.frame_id and request.batch is None
                and (request.model_id, request.version) in self.routes.upstream_keys):
            return await self._infer_shared(request, client_remaining_s, regions, shared)
        return await self._infer_one(request, client_remaining_s, regions, shared)

    async def _infer_shared(
        self, request: FrameRequest, client_remaining_s: float | None, regions: CallRegions | None,
        shared: dict | None,
    ) -> Outcome:
        """A request to a model that others take as their upstream: its result for the frame is kept
        (and a result kept or running already answers it), so that the model runs once per frame."""
        key = (request.model_id, request.version, request.camera_id, request.frame_id)
        memo = self.upstreams.memo
        loop = asyncio.get_running_loop()
        started = loop.time()
        found = memo.lookup(key)
        if found is not None and (shared is None or shared.get(key) is not found):
            try:
                result = await asyncio.shield(found)
            except SidecarError:
                pass  # a failure is not kept: run it
            else:
                return Outcome(request, result, None, (loop.time() - started) * 1000.0)
        future = loop.create_future()
        future.add_done_callback(_seen)
        memo.start(key, future)
        try:
            outcome = await self._infer_one(request, client_remaining_s, regions, shared)
        except BaseException as exc:
            future.set_exception(SidecarError(f"{type(exc).__name__}: {exc}"))
            memo.settle(key, future)
            raise
        if outcome.error is not None:
            future.set_exception(outcome.error)
        else:
            future.set_result(outcome.result)
        memo.settle(key, future)
        return outcome

    async def _infer_one(
        self, request: FrameRequest, client_remaining_s: float | None, regions: CallRegions | None,
        shared: dict | None,
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if regions is not None:
                await self.register_pool(request)
            if request.upstreams is None:
                route = self.routes.resolve(request.model_id, request.version)
                if route.upstreams:
                    await self.attach_upstreams(route, request, regions, shared, client_remaining_s)
                    now = loop.time()  # the model's own budget starts once its upstreams answered
                    if client_remaining_s is not None:
                        client_remaining_s -= now - started
                    started = now
            pending = self.prepare(request, started, client_remaining_s, regions)
        except SidecarError as e:
            return Outcome(request, None, e, 0.0)
        if self._unary_in_flight >= self._max_unary:
            self.release(pending, answered=True)  # never sent
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
            if self.restart_sequence(pending):
                result, model_ms, error = await self._resend_unary(pending, loop)
        except SidecarError as e:
            error = e
        finally:
            self._unary_in_flight -= 1
        return self.settle(pending, result, error, loop.time(), model_ms)

    async def infer_many(
        self,
        request: FrameRequest,
        client_remaining_s: float | None = None,
        regions: CallRegions | None = None,
    ) -> Outcome:
        """Answer a request that names several models for one frame: each model's outcome in
        ``answers``, in the order asked. A named model that another named model declares as an
        upstream runs once: its own answer is the result the dependents get."""
        started = asyncio.get_running_loop().time()
        models = request.models or []
        try:
            self._check_models(request, models)
        except SidecarError as e:
            return Outcome(request, None, e, 0.0)
        shared: dict = {}
        members = [request.for_model(m, v) for m, v in models]
        named = {(m.model_id, m.version): m for m in members}
        needed = {u for m in members if (r := self.routes.get(m.model_id, m.version)) for u in r.upstreams}
        for key in needed & named.keys():  # dependents wait for the answer of the named upstream
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_seen)
            shared[(*key, request.camera_id, request.frame_id)] = future
        pixels = await self.decode_once(request, [*named, *(needed - named.keys())])
        for member in members:
            member.pixels = pixels
        try:
            answers = await asyncio.gather(
                *(self._infer_member(m, shared, client_remaining_s, regions) for m in members)
            )
        finally:
            if pixels is not None:
                pixels.let_go()
        outcome = Outcome(request, None, None, (asyncio.get_running_loop().time() - started) * 1000.0)
        outcome.answers = list(answers)
        return outcome

    async def _infer_member(
        self, member: FrameRequest, shared: dict, client_remaining_s: float | None,
        regions: CallRegions | None,
    ) -> Outcome:
        future = shared.get((member.model_id, member.version, member.camera_id, member.frame_id))
        try:
            outcome = await self.infer(member, client_remaining_s, regions, shared)
        except BaseException as exc:
            if future is not None and not future.done():
                future.set_exception(SidecarError(f"{type(exc).__name__}: {exc}"))
            raise
        if future is not None and not future.done():
            if outcome.error is not None:
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome.result)
        return outcome

    def _check_models(self, request: FrameRequest, models: list[tuple[str, str]]) -> None:
        if request.model_id or request.version:
            raise InvalidInput("name the models either in model_id/version or in models, not both")
        if request.batch is not None:
            raise InvalidInput("a request naming several models carries one frame, not a batch")
        if not 1 <= len(models) <= MAX_MODELS_PER_REQUEST:
            limit = MAX_MODELS_PER_REQUEST
            raise InvalidInput(f"models names {len(models)} models; a request names 1 to {limit}")
        if len(set(models)) != len(models):
            raise InvalidInput("models names a model version more than once")

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


def _seen(future: asyncio.Future) -> None:
    """A failure nobody waited for is not an error to log."""
    if not future.cancelled():
        future.exception()
