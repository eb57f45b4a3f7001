"""The transport-neutral runtime core: routing, input checks, deadlines, unary inference, status.

Transports (``sidecar.grpc``) convert their messages into :class:`FrameRequest` and the
:class:`Outcome` back; all behaviour lives here and in :mod:`sidecar.stream` (the camera path).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.errors import (
    ErrorCode,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    SidecarError,
    VersionRequired,
)
from sidecar.images import jpeg_size, png_size, raw_size
from sidecar.lifecycle import Lifecycle
from sidecar.registry import Health, ModelRecord, ModelState, Registry, worst
from sidecar.settings import SidecarSettings
from sidecar.triton import ModelProcessDied, SequenceNotStarted, TritonAdapter, build_request

LOGGER = logging.getLogger(__name__)

# Errors that say something about the model (counted in its health), as opposed to the caller's.
_MODEL_FAULTS = frozenset(
    {
        ErrorCode.TIMEOUT,
        ErrorCode.PREPROCESS_ERROR,
        ErrorCode.INFERENCE_ERROR,
        ErrorCode.POSTPROCESS_ERROR,
        ErrorCode.OUTPUT_SCHEMA_VIOLATION,
        ErrorCode.MODEL_NOT_READY,
        ErrorCode.INTERNAL,
    }
)
_SIZE_READERS = {"jpeg": jpeg_size, "png": png_size}


class FrameRequest:
    """One inference request, as every transport hands it to the core."""

    __slots__ = (
        "camera_id",
        "data",
        "format",
        "frame_id",
        "height",
        "model_id",
        "timeout_ms",
        "timestamp_ms",
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


class Outcome:
    """The answer to one :class:`FrameRequest`: RESULT JSON bytes or an error, never both."""

    __slots__ = ("error", "inference_ms", "request", "result")

    def __init__(
        self, request: FrameRequest, result: bytes | None, error: SidecarError | None, inference_ms: float
    ) -> None:
        self.request = request
        self.result = result
        self.error = error
        self.inference_ms = inference_ms


@dataclass(frozen=True)
class HealthReport:
    status: Health
    server_ready: bool
    models: list[ModelRecord]

    @property
    def models_ready(self) -> int:
        return sum(1 for m in self.models if m.ready)


def _no_lease(triton_name: str) -> None:
    """In-flight counting where no copy is ever retired while serving (manifest-driven lifecycle)."""


class RuntimeCore:
    """Everything the AIRuntime service does, independent of the transport."""

    def __init__(self, settings: SidecarSettings, adapter: TritonAdapter) -> None:
        self.settings = settings
        self.adapter = adapter
        self.registry = Registry()
        if settings.models_dir is not None:  # the sidecar owns the plugins: hot reload, recovery
            from sidecar.managed import ManagedLifecycle

            self.lifecycle = ManagedLifecycle(settings, adapter, self.registry)
        else:
            self.lifecycle = Lifecycle(settings, adapter, self.registry)
        self._observe = getattr(self.lifecycle, "observe", None)
        # In-flight requests per Triton name, for lifecycles that unload a copy after a reload: a
        # copy is drained of every request routed to it before it is unloaded.
        self.begin: Callable[[str], None] = getattr(self.lifecycle, "begin", _no_lease)
        self.end: Callable[[str], None] = getattr(self.lifecycle, "end", _no_lease)
        self.timeout_s = settings.request_timeout_ms / 1000.0
        self._max_frame_bytes = settings.max_frame_bytes
        self._unary_in_flight = 0
        self._sequences: dict[tuple[str, str], int] = {}  # started (model, camera) -> restarts
        self._ids = 0

    # lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.adapter.connect()
        await self.lifecycle.start()

    async def stop(self) -> None:
        await self.lifecycle.stop()
        await self.adapter.close()

    # routing and checks --------------------------------------------------------------------
    def route(self, model_id: str, version: str) -> ModelRecord:
        """The READY model for ``(model_id, version)``, or the routing error (§5.2, §3.6)."""
        record = self.registry.records.get((model_id, version))
        if record is None:
            versions = self.registry.versions.get(model_id)
            if versions is None:
                raise ModelNotFound(f"no model {model_id!r}")
            if not version:
                raise VersionRequired(
                    f"version is required for {model_id!r} (available: {', '.join(sorted(versions))})"
                )
            raise ModelNotFound(
                f"model {model_id!r} has no version {version!r} (available: {', '.join(sorted(versions))})"
            )
        if record.state is not ModelState.READY:
            reason = f": {record.last_error.strip().splitlines()[0]}" if record.last_error.strip() else ""
            raise ModelNotReady(f"{model_id} {version} is {record.state.value}{reason}")
        return record

    def check(self, request: FrameRequest) -> tuple[ModelRecord, int, int]:
        """Route and validate one request before Triton; returns the model and the frame size."""
        record = self.route(request.model_id, request.version)
        data = request.data
        size = len(data)
        if not size:
            raise InvalidInput("frame.data is empty")
        if size > self._max_frame_bytes:
            raise InvalidInput(f"frame is {size} bytes; the limit is {self._max_frame_bytes}")
        fmt = request.format
        if fmt != record.format:
            if not fmt:
                raise InvalidInput(
                    f"frame.format is missing; {record.model_id} {record.version} takes {record.format}"
                )
            raise InvalidInput(f"{record.model_id} {record.version} takes {record.format} frames, not {fmt}")
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
            width < record.min_width
            or height < record.min_height
            or (record.max_width is not None and width > record.max_width)
            or (record.max_height is not None and height > record.max_height)
        ):
            raise InvalidInput(
                f"frame is {width}x{height}; {record.model_id} {record.version} accepts {_bounds(record)}"
            )
        if record.sequence and not request.camera_id:
            raise InvalidInput(f"{record.model_id} {record.version} is temporal: camera_id is required")
        return record, width, height

    def deadline_s(self, request: FrameRequest, client_remaining_s: float | None = None) -> float:
        """Seconds this request may take: the request timeout, or less if the client asks for less.

        A client's gRPC deadline is shortened by a small margin so that the TIMEOUT answer
        reaches the client before its own deadline expires.
        """
        timeout = self.timeout_s
        if request.timeout_ms:
            timeout = min(timeout, request.timeout_ms / 1000.0)
        if client_remaining_s is not None:
            margin = min(0.05, client_remaining_s * 0.1)
            timeout = min(timeout, max(0.001, client_remaining_s - margin))
        return timeout

    def sequence_start(self, record: ModelRecord, camera_id: str) -> tuple[bool, int]:
        """(start, epoch) for a frame of a temporal model: start is True on a camera's first frame
        for the model on this sidecar; epoch counts the sequence's restarts (see
        :meth:`sequence_restart`)."""
        key = (record.triton_name, camera_id)
        epoch = self._sequences.get(key)
        if epoch is None:
            self._sequences[key] = 0
            return True, 0
        return False, epoch

    def sequence_restart(self, record: ModelRecord, camera_id: str, epoch: int) -> tuple[bool, int]:
        """Triton refused a frame sent in ``epoch`` because the sequence was released: (start, epoch)
        for its resend. Only the first refused frame restarts the sequence; frames sent before that
        restart and refused with it are resent without START, in order behind it."""
        key = (record.triton_name, camera_id)
        current = self._sequences.get(key, 0)
        if current > epoch:
            return False, current
        self._sequences[key] = current + 1
        return True, current + 1

    def next_id(self) -> str:
        self._ids += 1
        return str(self._ids)

    def settle(self, record: ModelRecord, error: SidecarError | None, elapsed_ms: float) -> None:
        """Count one answered request in the model's statistics and react to what it says."""
        if self._observe is not None:  # the managed lifecycle keeps states and health itself
            if error is None or error.code in _MODEL_FAULTS:
                timed_out = error is not None and error.code is ErrorCode.TIMEOUT
                record.stats.record(error is None, timed_out, elapsed_ms)
            self._observe(record, error, elapsed_ms)
            return
        if error is None:
            record.stats.record(True, False, elapsed_ms)
            return
        code = error.code
        if code in _MODEL_FAULTS:
            record.stats.record(False, code is ErrorCode.TIMEOUT, elapsed_ms)
        if isinstance(error, ModelProcessDied):
            if record.state is ModelState.READY:
                record.set_state(ModelState.ERROR, error.message)
            self.lifecycle.wake()
        elif code is ErrorCode.MODEL_NOT_READY:
            record.last_error = error.message
            self.lifecycle.wake()

    # unary ------------------------------------------------------------------------------------
    async def infer(self, request: FrameRequest, client_remaining_s: float | None = None) -> Outcome:
        """Answer one request (never raises a SidecarError: it is in the outcome)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            record, width, height = self.check(request)
        except SidecarError as e:
            return Outcome(request, None, e, 0.0)
        if self._unary_in_flight >= self.settings.max_in_flight_unary:
            return Outcome(request, None, Overloaded("too many requests in flight; retry later"), 0.0)
        deadline = started + self.deadline_s(request, client_remaining_s)
        self._unary_in_flight += 1
        result = error = None
        try:
            result = await self._infer_once(record, request, width, height, deadline, loop)
        except SidecarError as e:
            error = e
        finally:
            self._unary_in_flight -= 1
        elapsed_ms = (loop.time() - started) * 1000.0
        self.settle(record, error, elapsed_ms)
        return Outcome(request, result, error, elapsed_ms)

    async def _infer_once(
        self, record: ModelRecord, request: FrameRequest, width: int, height: int, deadline: float, loop
    ) -> bytes:
        start, epoch = self.sequence_start(record, request.camera_id) if record.sequence else (False, 0)
        triton_request = build_request(
            record, self.next_id(), request.data, width, height, request.frame_id, request.camera_id,
            request.timestamp_ms, start,
        )
        name = record.triton_name
        self.begin(name)
        try:
            try:
                return await self.adapter.infer(triton_request, max(0.001, deadline - loop.time()))
            except SequenceNotStarted:
                if start:
                    raise
            start, _ = self.sequence_restart(record, request.camera_id, epoch)
            triton_request.parameters["sequence_start"].bool_param = start
            return await self.adapter.infer(triton_request, max(0.001, deadline - loop.time()))
        finally:
            self.end(name)

    # status -----------------------------------------------------------------------------------
    def health(self) -> HealthReport:
        """Runtime health from kept state: UNHEALTHY without Triton, else the worst VALID model."""
        models = list(self.registry)
        server_ready = self.lifecycle.server_ready
        status = worst([m.health for m in models if m.valid]) if server_ready else Health.UNHEALTHY
        if server_ready and hasattr(self.lifecycle, "runtime_health"):
            status = self.lifecycle.runtime_health()  # the §6.5 table
        return HealthReport(status, server_ready, models)

    def model_status(self, model_id: str = "", version: str = "") -> list[ModelRecord]:
        """Models matching the filters (empty matches all); MODEL_NOT_FOUND when none does."""
        found = [
            m for m in self.registry
            if (not model_id or m.model_id == model_id) and (not version or m.version == version)
        ]
        if not found and (model_id or version):
            raise ModelNotFound(f"no model matches model_id={model_id!r} version={version!r}")
        return found


def _bounds(record: ModelRecord) -> str:
    high_w = record.max_width if record.max_width is not None else "any"
    high_h = record.max_height if record.max_height is not None else "any"
    return f"{record.min_width}x{record.min_height} to {high_w}x{high_h}"
