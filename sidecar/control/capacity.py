"""Serving capacity (``fps_capacity``) of READY model versions, for the capability registration.

Measured twice over: right after a version becomes READY, :meth:`Capacity.calibrate` sends
synthetic frames of the declared format and minimum size straight to Triton (they are not counted
as traffic): ``frames`` one after the other (batch 1), then twice ``max_batch_size x
instance_count`` at once; the better rate wins. Temporal models are left to the live statistics:
:meth:`Capacity.from_statistics` reads Triton's statistics of the serving copy (compute time per
frame, times the instance count) once enough frames were seen.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import count
from typing import Any

import numpy as np
from PIL import Image

from sidecar.control.states import ModelRecord, ModelRegistry, ModelState
from sidecar.control.tasks import Background
from sidecar.errors import ModelProcessDied, SidecarError
from sidecar.request.messages import build_request
from sidecar.request.routes import Route
from sidecar.triton_client import TritonAdapter

LOGGER = logging.getLogger(__name__)

CALIBRATION_FRAMES = 8
CALIBRATION_TIMEOUT_S = 10.0
_COMPUTE_PHASES = ("compute_input", "compute_infer", "compute_output")


def synthetic_frame(route: Route) -> tuple[bytes, int, int]:
    """A black frame the model accepts: its format, at least its minimum size (64x48 when allowed)."""
    width = max(route.min_width, min(64, route.max_width or 64))
    height = max(route.min_height, min(48, route.max_height or 48))
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    if route.raw:
        return pixels.tobytes(), width, height
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG" if route.format == "png" else "JPEG")
    return buffer.getvalue(), width, height


def fps_from_statistics(stats: Mapping[str, Any], instance_count: int, min_count: int = 20) -> float | None:
    """Frames per second the model's instances can compute, from Triton's statistics of one model.

    ``stats`` is one ``model_stats`` item of Triton's statistics JSON: ``inference_count`` frames in
    ``execution_count`` executions whose compute time (input + infer + output, ns) is summed in
    ``inference_stats``. None until ``min_count`` frames were seen.
    """
    frames = int(stats.get("inference_count") or 0)
    timings = stats.get("inference_stats") or {}
    busy_ns = sum(int((timings.get(k) or {}).get("ns") or 0) for k in _COMPUTE_PHASES)
    if frames < min_count or busy_ns <= 0:
        return None
    return round(max(1, instance_count) * frames / (busy_ns / 1e9), 1)


class Capacity:
    """Measures ``fps_capacity`` against the Triton behind ``adapter``."""

    def __init__(self, adapter: TritonAdapter, frames: int = CALIBRATION_FRAMES) -> None:
        self.adapter = adapter
        self.frames = frames
        self._ids = count(1)

    async def calibrate(self, route: Route, max_batch_size: int, instance_count: int) -> float | None:
        """Frames per second of the copy ``route`` serves; None for temporal models.

        Raises the :class:`~sidecar.errors.SidecarError` of a frame that failed.
        """
        if route.sequence or not route.triton_name:
            return None
        data, width, height = synthetic_frame(route)
        loop = asyncio.get_running_loop()

        async def one() -> None:
            message = build_request(route, f"calibration-{next(self._ids)}", data, width, height,
                                    "calibration", "", 0)
            await self.adapter.infer(message, CALIBRATION_TIMEOUT_S)

        await one()  # first call: caches, lazy imports
        started = loop.time()
        for _ in range(self.frames):
            await one()
        single = self.frames / (loop.time() - started)
        in_flight = max(1, max_batch_size) * max(1, instance_count)
        started = loop.time()
        for _ in range(2):
            await asyncio.gather(*(one() for _ in range(in_flight)))
        batched = 2 * in_flight / (loop.time() - started)
        LOGGER.info("%s calibrated: %.1f fps at batch 1, %.1f fps with %d in flight",
                    route.triton_name, single, batched, in_flight)
        return max(single, batched)

    async def from_statistics(self, name: str, instance_count: int) -> float | None:
        """Frames per second from Triton's live statistics of copy ``name`` (None when too few)."""
        try:
            stats = await self.adapter.model_statistics(name)
        except SidecarError as exc:
            LOGGER.debug("statistics of %s unavailable: %s", name, exc.message)
            return None
        return fps_from_statistics(stats or {}, instance_count)


@dataclass(eq=False)
class CapacityFigures:
    """Keeps each READY version's ``fps_capacity``: calibrated after a load, refreshed from statistics.

    ``observe`` hears of a calibration that found the model's process dead (news for recovery)."""

    capacity: Capacity | None
    registry: ModelRegistry
    background: Background
    changed: Callable[[], None]
    observe: Callable[[Route, SidecarError, float], None]

    def calibrate_later(self, record: ModelRecord, route: Route) -> None:
        """Measure the copy ``route`` serves for ``record``, in the background."""
        if self.capacity is not None:
            self.background.spawn(self._calibrate(self.capacity, record, route))

    async def _calibrate(self, capacity: Capacity, record: ModelRecord, route: Route) -> None:
        try:
            fps = await capacity.calibrate(route, record.max_batch_size, record.instance_count)
        except SidecarError as exc:
            LOGGER.info("calibration of %s failed: %s", route.triton_name, exc.message)
            if isinstance(exc, ModelProcessDied):
                self.observe(route, exc, 0.0)
            return
        if fps is not None and record.state is ModelState.READY and record.active_name == route.triton_name:
            record.fps_capacity = round(fps, 1)
            self.changed()

    async def refresh(self) -> None:
        """Refresh ``fps_capacity`` of READY versions from Triton's live statistics."""
        if self.capacity is None:
            return
        for record in list(self.registry):
            if record.state is not ModelState.READY or record.active_name is None:
                continue
            fps = await self.capacity.from_statistics(record.active_name, record.instance_count)
            if fps is not None and fps != record.fps_capacity:
                record.fps_capacity = fps
                self.changed()
