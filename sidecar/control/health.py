"""Request health per model and its aggregation into the runtime's health (docs/architecture.md#health).

Per model, over a sliding window of the last requests (at most ``window_requests``, none older
than ``window_s``):

* error rate > ``unhealthy_error_rate`` (10%) -> UNHEALTHY; >= ``degraded_error_rate`` (1%) ->
  DEGRADED; below -> HEALTHY. With fewer than ``min_requests`` in the window errors can only
  degrade, so one failure out of two requests is not an outage;
* ``max_consecutive_timeouts`` (3) timeouts in a row -> UNHEALTHY (a hung instance);
* average latency above ``latency_factor`` x the contract's ``inference_time_hint_ms`` -> DEGRADED;
  the latency judged is the model's own time per request (what the wrapper spent on it, reported
  with the answer), not the time the request waited behind others: a burst of one camera's frames
  queues in Triton and is backpressure, not a sick model. The wait is kept beside it
  (``avg_wait_ms``, ``p99_wait_ms``). Entries that do not report their own time are judged on the
  whole time, as before;
* health recovers as successes push the failures out of the window; a reload starts a new window.

Only failures that are the model's (see :func:`counts_against_model`) are errors here: a client's
malformed frame or the runtime's own overload says nothing about the model.

Runtime health: HEALTHY when every loaded model is
HEALTHY; UNHEALTHY when none is serving (HEALTHY or DEGRADED), zero loaded models included;
DEGRADED otherwise. The runtime is ready only while at least one model is serving.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sidecar.control.states import ModelRecord, ModelState


class Health(str, enum.Enum):
    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    UNHEALTHY = "UNHEALTHY"


#: Error codes that say nothing about the model itself.
NOT_THE_MODELS_FAULT = frozenset({
    "INVALID_INPUT", "MODEL_NOT_FOUND", "VERSION_REQUIRED", "MODEL_NOT_READY", "OVERLOADED", "UPSTREAM_ERROR",
})


def counts_against_model(code: str | None) -> bool:
    """True when a request that failed with ``code`` counts as an error of the model."""
    return code is not None and code not in NOT_THE_MODELS_FAULT


@dataclass(frozen=True)
class HealthPolicy:
    window_requests: int = 200
    window_s: float = 60.0
    min_requests: int = 10
    degraded_error_rate: float = 0.01
    unhealthy_error_rate: float = 0.10
    latency_factor: float = 3.0
    max_consecutive_timeouts: int = 3


#: One request in the window: (monotonic time, ok, the model's latency ms, the wait ms). A tuple: it
#: is made per request.
_Sample = tuple[float, bool, float, float]


@dataclass(frozen=True)
class HealthSnapshot:
    health: Health
    reason: str
    requests: int
    successes: int
    errors: int
    timeouts: int
    window_requests: int
    error_rate: float
    avg_ms: float | None
    p99_ms: float | None
    last_ms: float | None
    avg_wait_ms: float | None
    p99_wait_ms: float | None
    last_request_at: float | None
    consecutive_timeouts: int
    observed_fps: float
    p50_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "health": self.health.value,
            "reason": self.reason,
            "requests": self.requests,
            "successes": self.successes,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "error_rate": round(self.error_rate, 4),
            "avg_inference_ms": _round(self.avg_ms),
            "p50_inference_ms": _round(self.p50_ms),
            "p99_inference_ms": _round(self.p99_ms),
            "avg_wait_ms": _round(self.avg_wait_ms),
            "p99_wait_ms": _round(self.p99_wait_ms),
            "consecutive_timeouts": self.consecutive_timeouts,
            "requests_per_s": round(self.observed_fps, 2),
        }


class ModelHealthTracker:
    """The request outcomes of one model version; :meth:`record` is cheap (inference path)."""

    def __init__(self, policy: HealthPolicy | None = None, hint_ms: float | None = None) -> None:
        self.policy = policy or HealthPolicy()
        self.hint_ms = hint_ms
        self.requests = self.successes = self.errors = self.timeouts = 0
        self.last_ms: float | None = None
        self.last_request_at: float | None = None
        self.reset()

    def reset(self) -> None:
        """Start a new window (a reloaded model); the lifetime counters stay."""
        self._window: deque[_Sample] = deque()
        self._window_errors = 0
        self._ok_count = 0
        self._ok_sum_ms = 0.0
        self.consecutive_timeouts = 0
        self.health = Health.HEALTHY
        self._reason: tuple[str, tuple[Any, ...]] = ("no requests yet", ())

    @property
    def reason(self) -> str:
        """Why the health is what it is (formatted when asked: :meth:`record` only keeps its parts)."""
        text, values = self._reason
        return text.format(*values) if values else text

    def record(
        self, ok: bool, latency_ms: float, *, timeout: bool = False, now: float | None = None,
        wait_ms: float = 0.0,
    ) -> bool:
        """Add one request's outcome; return True when the health changed.

        ``latency_ms``: the model's own time for the request (what health judges); ``wait_ms``: the
        rest of the time the request took (queued behind others, transport)."""
        now = time.monotonic() if now is None else now
        self.requests += 1
        self.last_ms, self.last_request_at = latency_ms, time.time()
        if ok:
            self.successes += 1
            self.consecutive_timeouts = 0
            self._ok_count += 1
            self._ok_sum_ms += latency_ms
        else:
            self.errors += 1
            self._window_errors += 1
            if timeout:
                self.timeouts += 1
                self.consecutive_timeouts += 1
            else:
                self.consecutive_timeouts = 0
        self._window.append((now, ok, latency_ms, wait_ms))
        self._evict(now)
        return self._classify()

    def refresh(self, now: float | None = None) -> bool:
        """Age the window without a request (called periodically); True when the health changed."""
        self._evict(time.monotonic() if now is None else now)
        return self._classify()

    def snapshot(self, now: float | None = None) -> HealthSnapshot:
        now = time.monotonic() if now is None else now
        ok_latencies = sorted(latency for _, ok, latency, _ in self._window if ok)
        waits = sorted(wait for _, ok, _, wait in self._window if ok)
        span = (now - self._window[0][0]) if self._window else 0.0
        return HealthSnapshot(
            health=self.health,
            reason=self.reason,
            requests=self.requests,
            successes=self.successes,
            errors=self.errors,
            timeouts=self.timeouts,
            window_requests=len(self._window),
            error_rate=self._error_rate(),
            avg_ms=self._ok_sum_ms / self._ok_count if self._ok_count else None,
            p99_ms=_percentile(ok_latencies, 0.99),
            p50_ms=_percentile(ok_latencies, 0.5),
            last_ms=self.last_ms,
            avg_wait_ms=sum(waits) / len(waits) if waits else None,
            p99_wait_ms=_percentile(waits, 0.99),
            last_request_at=self.last_request_at,
            consecutive_timeouts=self.consecutive_timeouts,
            observed_fps=len(self._window) / span if span > 0 else 0.0,
        )

    def _evict(self, now: float) -> None:
        window, policy = self._window, self.policy
        while window and (len(window) > policy.window_requests or now - window[0][0] > policy.window_s):
            _, ok, latency_ms, _ = window.popleft()
            if ok:
                self._ok_count -= 1
                self._ok_sum_ms -= latency_ms
            else:
                self._window_errors -= 1
        if not self._ok_count:
            self._ok_sum_ms = 0.0

    def _error_rate(self) -> float:
        return self._window_errors / len(self._window) if self._window else 0.0

    def _classify(self) -> bool:
        health, self._reason = self._evaluate()
        changed = health is not self.health
        self.health = health
        return changed

    def _evaluate(self) -> tuple[Health, tuple[str, tuple[Any, ...]]]:
        """The health and its reason, as a format string and its values."""
        policy = self.policy
        if self.consecutive_timeouts >= policy.max_consecutive_timeouts:
            return Health.UNHEALTHY, ("{} consecutive timeouts", (self.consecutive_timeouts,))
        rate, count = self._error_rate(), len(self._window)
        if rate > policy.unhealthy_error_rate and count >= policy.min_requests:
            return Health.UNHEALTHY, (_ERROR_RATE, (rate, count))
        if rate >= policy.degraded_error_rate and self._window_errors:
            return Health.DEGRADED, (_ERROR_RATE, (rate, count))
        if self.hint_ms and self._ok_count >= min(policy.min_requests, 3):
            avg = self._ok_sum_ms / self._ok_count
            if avg > policy.latency_factor * self.hint_ms:
                return Health.DEGRADED, (_SLOW, (avg, policy.latency_factor))
        if not count:
            return Health.HEALTHY, ("no recent requests", ())
        return Health.HEALTHY, (_ERROR_RATE, (rate, count))


_ERROR_RATE = "error rate {:.1%} over the last {} requests"
_SLOW = "average latency {:.1f} ms is above {:g}x the hint"


@dataclass(frozen=True)
class RuntimeHealth:
    status: Health
    total: int
    healthy: int
    degraded: int
    unhealthy: int

    @property
    def ready(self) -> bool:
        """Ready only while at least one model is serving (never with zero healthy models)."""
        return self.healthy + self.degraded > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value.lower(),
            "total_models": self.total,
            "healthy_models": self.healthy,
            "degraded_models": self.degraded,
            "unhealthy_models": self.unhealthy,
        }


def model_health(record: ModelRecord, snapshot: HealthSnapshot | None, waiting: str | None = None) -> Health:
    """The health reported for one model version: its request health while READY and serving, else
    UNHEALTHY (``waiting``: why a READY version does not serve, e.g. an upstream that does not)."""
    if record.state is ModelState.READY and waiting is None:
        return snapshot.health if snapshot is not None else Health.HEALTHY
    return Health.UNHEALTHY


def is_loaded(record: ModelRecord) -> bool:
    """True for versions that count in the runtime's health: serving, broken, or being recovered."""
    return record.state in (ModelState.READY, ModelState.ERROR) or (
        record.state is ModelState.LOADING and record.recovery_attempts > 0
    )


def aggregate(healths: Iterable[Health]) -> RuntimeHealth:
    """The runtime's health from the health of every loaded model."""
    values = list(healths)
    healthy = sum(h is Health.HEALTHY for h in values)
    degraded = sum(h is Health.DEGRADED for h in values)
    unhealthy = len(values) - healthy - degraded
    if values and healthy == len(values):
        status = Health.HEALTHY
    elif healthy + degraded == 0:
        status = Health.UNHEALTHY
    else:
        status = Health.DEGRADED
    return RuntimeHealth(status, len(values), healthy, degraded, unhealthy)


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
