"""What each answered request says about its model: request health, and when a model needs recovery.

:meth:`Triage.observe` takes every answered request (the request path's outcomes, through the core)
into the model's health window and decides what a failure means: an out-of-memory or GPU error, a
dead stub or a model the server lost moves a READY version to ERROR at once (recovery reloads it);
``max_consecutive_timeouts`` timeouts in a row start a hang check, which watches Triton's statistics
of the copy: an instance that still finishes work is slow and stays loaded, one that finishes nothing
is hung and is recovered with its stubs killed.

The health of each version and of the runtime (docs/architecture.md#health) is read from here too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ruthgen.interface import declared_limits_ms
from sidecar.control.health import (
    HealthPolicy,
    HealthSnapshot,
    ModelHealthTracker,
    RuntimeHealth,
    aggregate,
    counts_against_model,
    is_loaded,
    model_health,
)
from sidecar.control.recovery import Recovery, RecoveryPolicy, progress
from sidecar.control.sources import Key
from sidecar.control.states import ModelRecord, ModelRegistry, ModelState
from sidecar.control.tasks import Background
from sidecar.errors import RESOURCE_FAILURES, ModelNotLoaded, ModelProcessDied, SidecarError
from sidecar.request.routes import Route, RouteTable

LOGGER = logging.getLogger(__name__)


class Statistics(Protocol):
    async def model_statistics(self, name: str) -> dict[str, Any]: ...


@dataclass(eq=False)
class Triage:
    registry: ModelRegistry
    routes: RouteTable
    recovery: Recovery
    statistics: Statistics
    background: Background
    changed: Callable[[], None]
    health_policy: HealthPolicy = field(default_factory=HealthPolicy)
    policy: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    trackers: dict[Key, ModelHealthTracker] = field(default_factory=dict)
    _hang_checks: set[Key] = field(default_factory=set)

    def new_window(self, record: ModelRecord) -> None:
        """``record`` is served by a new copy: its health starts again."""
        self.trackers[record.key] = ModelHealthTracker(self.health_policy, record.inference_time_hint_ms)

    def observe(
        self, route: Route, error: SidecarError | None, elapsed_ms: float, model_ms: float | None = None
    ) -> None:
        """Take one answered request into the model's health, and start recovery when needed.

        Health judges the model's own time (``model_ms``) when the answer carried it, else the whole
        ``elapsed_ms``; the difference is the request's wait."""
        key = (route.model_id, route.version)
        tracker = self.trackers.get(key)
        record = self.registry.get(*key)
        if tracker is None or record is None or route.triton_name != record.active_name:
            return  # an answer from a copy that no longer serves says nothing about the new one
        if error is None:  # the common case, kept short: it is on every request's path
            if model_ms is None:
                changed = tracker.record(True, elapsed_ms)
            else:
                changed = tracker.record(True, model_ms, wait_ms=max(0.0, elapsed_ms - model_ms))
            if record.state is ModelState.READY:
                record.recovery_attempts = 0
            if changed:
                self.changed()
            return
        code = error.code.value
        changed = False
        if counts_against_model(code):
            changed = tracker.record(False, elapsed_ms, timeout=code == "TIMEOUT")
            record.note_error(f"{code}: {error.message}")
        if record.state is ModelState.READY:
            if error.code in RESOURCE_FAILURES:
                self.recovery.fail(record, f"{code}: {error.message}", hung=False)
            elif isinstance(error, ModelProcessDied):
                self.recovery.fail(record, f"the model's process died: {error.message}", hung=False)
            elif isinstance(error, ModelNotLoaded):
                self.recovery.fail(record, f"the inference server lost it: {error.message}", hung=False,
                                   delay_s=0.0)
            elif tracker.consecutive_timeouts >= self.policy.max_consecutive_timeouts:
                self._check_hung(record, tracker.consecutive_timeouts)
        if changed:
            self.changed()

    # ---- slow or hung ----------------------------------------------------------------------------

    def _check_hung(self, record: ModelRecord, timeouts: int) -> None:
        """Timeouts in a row: hung (no answer at all) or slow (answers, late)? Only hung is killed."""
        name = record.active_name
        if record.key in self._hang_checks or name is None:
            return
        self._hang_checks.add(record.key)
        self.background.spawn(self._hang_check(record, name, timeouts))

    async def _hang_check(self, record: ModelRecord, name: str, timeouts: int) -> None:
        """Watch Triton's statistics of copy ``name`` for ``hang_check_s`` (or the model's own phase
        limits plus a second, when shorter: a live wrapper answers within them): an instance that
        finishes anything meanwhile is slow and stays loaded; one that finishes nothing is hung."""
        limits_s = declared_limits_ms(record.contract) / 1000.0 + 1.0 if record.contract else None
        wait_s = min(self.policy.hang_check_s, limits_s or self.policy.hang_check_s)
        try:
            before = await self._progress(name)
            after = None
            if before is not None:
                await asyncio.sleep(wait_s)
                after = await self._progress(name)
            if record.state is not ModelState.READY or record.active_name != name:
                return
            if before is not None and after is not None and after > before:
                message = (f"TIMEOUT: {timeouts} requests in a row timed out but the instance still answers "
                           f"(late): slow, not hung; it stays loaded")
                LOGGER.warning("%s:%s %s", record.model_id, record.version, message)
                record.note_error(message)
                self.changed()
                return
            silent = f"nothing finished within {wait_s:g} s" if after is not None else "no statistics"
            reason = f"{timeouts} consecutive timeouts and {silent}: instance hung"
            self.recovery.fail(record, reason, hung=True)
        finally:
            self._hang_checks.discard(record.key)

    async def _progress(self, name: str) -> int | None:
        try:
            return progress(await self.statistics.model_statistics(name))
        except Exception as exc:  # statistics unavailable: the timeouts alone decide
            LOGGER.info("statistics of %s unavailable: %s", name, exc)
            return None

    # ---- health ----------------------------------------------------------------------------------

    def snapshots(self) -> dict[Key, HealthSnapshot]:
        return {key: tracker.snapshot() for key, tracker in self.trackers.items()}

    def snapshot(self, key: Key) -> HealthSnapshot | None:
        tracker = self.trackers.get(key)
        return tracker.snapshot() if tracker is not None else None

    def runtime_health(self) -> RuntimeHealth:
        return aggregate(
            model_health(r, self.snapshot(r.key), self.waiting(r)) for r in self.registry if is_loaded(r)
        )

    def waiting(self, record: ModelRecord) -> str | None:
        """Why a READY version does not serve: an upstream of it is missing or not serving."""
        if record.state is not ModelState.READY or record.contract is None or not record.contract.upstreams:
            return None
        route = self.routes.get(*record.key)
        return self.routes.waiting(route) if route is not None else None

    def waiting_all(self) -> dict[Key, str]:
        """:meth:`waiting` of every version that waits."""
        return {r.key: why for r in self.registry if (why := self.waiting(r)) is not None}

    def tick(self) -> None:
        """Age the health windows (called periodically): health recovers when errors grow old."""
        if any([t.refresh() for t in self.trackers.values()]):
            self.changed()
