"""The request path's records: a frame request (one frame, a batch, or several models), the
request in flight (:class:`Pending`) and its answer (:class:`Outcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sidecar.errors import SidecarError
from sidecar.request.routes import Route
from sidecar.request.shared_frames import FrameReference, SharedSlot, Slot


@dataclass(slots=True, eq=False)
class BatchItem:
    """One frame of a batch request."""

    frame_id: str
    camera_id: str
    data: bytes
    format: str
    width: int = 0
    height: int = 0
    timestamp_ms: int = 0
    reference: FrameReference | None = None
    upstreams: str | None = field(default=None, init=False)  # the upstreams' results for this frame (JSON)


@dataclass(slots=True, eq=False)
class FrameRequest:
    """One inference request, as every transport hands it to the pipeline (``batch``: its frames,
    when it carries a batch instead of one frame)."""

    frame_id: str
    camera_id: str
    model_id: str
    version: str
    data: bytes
    format: str
    width: int = 0
    height: int = 0
    timestamp_ms: int = 0
    timeout_ms: int = 0
    batch: list[BatchItem] | None = None
    reference: FrameReference | None = None
    #: a temporal model's sequence for the camera starts again with this frame (the caller says so)
    sequence_start: bool = False
    #: the upstreams' results for this frame (JSON), once fetched
    upstreams: str | None = field(default=None, init=False)
    #: several models for this frame (a call naming several models)
    models: list[tuple[str, str]] | None = field(default=None, init=False)
    #: the frame decoded once, for several models
    pixels: SharedSlot | None = field(default=None, init=False)

    def for_model(self, model_id: str, version: str) -> FrameRequest:
        """The same frame, for another model."""
        request = FrameRequest(
            self.frame_id, self.camera_id, model_id, version, self.data, self.format, self.width, self.height,
            self.timestamp_ms, self.timeout_ms, None, self.reference, self.sequence_start,
        )
        request.pixels = self.pixels
        return request


@dataclass(slots=True, eq=False)
class FrameOutcome:
    """The answer for one frame of a batch: its RESULT JSON bytes or its error."""

    item: BatchItem
    result: bytes | None
    error: SidecarError | None


@dataclass(slots=True, eq=False)
class Outcome:
    """The answer to one :class:`FrameRequest`: RESULT JSON bytes or an error, never both; for a
    batch, ``frames`` (one per frame, in order) unless the batch as a whole was refused.

    ``elapsed_ms``: from the request's arrival to its answer; ``model_ms``: the model's own time for
    it (decode, pre, infer, post in the wrapper), None when the model did not report it (an error,
    or an entry built without MODEL_MS); the rest is the wait (queued behind earlier frames,
    transport, the sidecar)."""

    request: FrameRequest
    result: bytes | None
    error: SidecarError | None
    elapsed_ms: float
    frames: list[FrameOutcome] | None = None
    model_ms: float | None = None
    #: a request for several models: one outcome per model, in order
    answers: list[Outcome] | None = field(default=None, init=False)

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
