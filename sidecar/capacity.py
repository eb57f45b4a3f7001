"""Serving capacity (``fps_capacity``) of READY model versions, for the capability registration.

:class:`CapacityMixin` is the lifecycle manager's part that measures it: a short calibration after a
version becomes READY (when the manager was given ``calibrate``), and refreshes from Triton's live
statistics (:func:`sidecar.capabilities.fps_from_statistics`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sidecar.capabilities import fps_from_statistics
from sidecar.states import ModelRecord, ModelRegistry, ModelState

LOGGER = logging.getLogger(__name__)
S = ModelState


class CapacityMixin:
    """The capacity part of :class:`sidecar.manager.LifecycleManager`. It relies on the manager's
    ``calibrate``, ``control``, ``registry``, ``_spawn`` and ``_changed``."""

    calibrate: Callable[[ModelRecord], Awaitable[float | None]] | None
    control: Any
    registry: ModelRegistry

    def _calibrate_later(self, record: ModelRecord) -> None:
        if self.calibrate is not None:
            self._spawn(self._calibrate(record))

    async def _calibrate(self, record: ModelRecord) -> None:
        assert self.calibrate is not None
        try:
            fps = await self.calibrate(record)
        except Exception as exc:
            LOGGER.info("calibration of %s:%s failed: %s", record.model_id, record.version, exc)
            return
        if fps is not None and record.state is S.READY:
            record.fps_capacity = round(fps, 1)
            self._changed()

    async def refresh_capacity(self) -> None:
        """Refresh ``fps_capacity`` of READY versions from Triton's live statistics (when offered)."""
        statistics = getattr(self.control, "model_statistics", None)
        if statistics is None:
            return
        for record in list(self.registry):
            if record.state is not S.READY or record.active_name is None:
                continue
            try:
                stats = await statistics(record.active_name)
            except Exception as exc:
                LOGGER.debug("statistics of %s unavailable: %s", record.active_name, exc)
                continue
            fps = fps_from_statistics(stats or {}, record.instance_count)
            if fps is not None and fps != record.fps_capacity:
                record.fps_capacity = fps
                self._changed()
