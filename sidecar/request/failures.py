"""One structured log line per failed request, rate-limited per model.

What it holds: docs/sidecar.md#failed-requests-in-the-log.

Every request that reached a model and failed (the model's error, a timeout, a dead process) is
logged once at WARNING by the ``sidecar.requests`` logger, as ``key=value`` pairs::

    request failed model_id=m version=1.0.0 frame_id=f17 camera_id=cam3 code=TIMEOUT phase=infer
    latency_ms=812.4 message="infer: exceeded 800 ms"

The same fields are on the record as ``record.ruth`` (a dict), for JSON log formatters. A flood
must not drown the log: each model version has a token bucket of ``burst`` lines refilled at
``per_s`` lines a second; lines beyond it are counted, and the next line logged for that version
says how many were left out (``suppressed=N``). Requests refused before they were sent (routing,
INVALID_INPUT found by the sidecar, OVERLOADED) are not logged here: they are the caller's.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

from sidecar.errors import SidecarError

LOGGER = logging.getLogger("sidecar.requests")


class _Bucket:
    __slots__ = ("suppressed", "tokens", "updated")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.updated = now
        self.suppressed = 0


class FailureLog:
    """Logs failed requests, at most ``burst`` at once and ``per_s`` a second per model version."""

    def __init__(
        self,
        per_s: float = 5.0,
        burst: int = 20,
        *,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = LOGGER,
    ) -> None:
        self.per_s = per_s
        self.burst = max(1, burst)
        self._clock = clock
        self._logger = logger
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def record(
        self,
        model_id: str,
        version: str,
        frame_id: str,
        camera_id: str,
        error: SidecarError,
        latency_ms: float,
    ) -> bool:
        """Log one failed request unless its model's budget is spent; True when it was logged."""
        if self.per_s <= 0:
            return False
        now = self._clock()
        key = (model_id, version)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_s)
            bucket.updated = now
        if bucket.tokens < 1.0:
            bucket.suppressed += 1
            return False
        bucket.tokens -= 1.0
        fields: dict[str, object] = {
            "model_id": model_id,
            "version": version,
            "frame_id": frame_id,
            "camera_id": camera_id,
            "code": error.code.value,
            "phase": error.phase or "runtime",
            "latency_ms": round(latency_ms, 1),
            "message": error.message,
        }
        if bucket.suppressed:
            fields["suppressed"] = bucket.suppressed
            bucket.suppressed = 0
        self._logger.warning("request failed %s", _logfmt(fields), extra={"ruth": fields})
        return True


_BARE = re.compile(r"[\w.:-]+")


def _logfmt(fields: dict[str, object]) -> str:
    """``key=value`` pairs; a value with spaces or quotes (or an empty one) is JSON-quoted."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not _BARE.fullmatch(text):
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return " ".join(parts)
