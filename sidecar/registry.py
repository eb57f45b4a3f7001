"""Per-model state the sidecar keeps: what the manifest declares, what Triton reports, counters.

Health and status calls answer from here without a Triton round trip. States use the lifecycle
names of the architecture (§3.1); health follows §7.4 (error rate over the recent window,
consecutive timeouts, the state).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.errors import ManifestError
from sidecar.health import Health
from sidecar.states import ModelState

__all__ = ["Health", "ModelRecord", "ModelState", "Registry", "read_manifest", "worst"]

LOGGER = logging.getLogger(__name__)

ENCODED_FORMATS = ("jpeg", "png")
HEALTH_WINDOW = 100
UNHEALTHY_AFTER_TIMEOUTS = 3
_EWMA_ALPHA = 0.1

_HEALTH_ORDER = {Health.HEALTHY: 0, Health.DEGRADED: 1, Health.UNHEALTHY: 2}


def worst(healths: list[Health]) -> Health:
    """The worst of ``healths`` (HEALTHY for none)."""
    return max(healths, key=_HEALTH_ORDER.__getitem__, default=Health.HEALTHY)


@dataclass
class ModelStats:
    """Counters of one model version, updated once per answered request."""

    requests: int = 0
    successes: int = 0
    errors: int = 0
    timeouts: int = 0
    consecutive_timeouts: int = 0
    avg_inference_ms: float = 0.0
    last_inference_ms: float = 0.0
    last_request_unix_ms: int = 0
    window: deque = field(default_factory=lambda: deque(maxlen=HEALTH_WINDOW))
    window_errors: int = 0

    def record(self, ok: bool, timed_out: bool, elapsed_ms: float) -> None:
        self.requests += 1
        self.last_request_unix_ms = int(time.time() * 1000)
        window = self.window
        if len(window) == HEALTH_WINDOW and not window[0]:
            self.window_errors -= 1
        window.append(ok)
        if ok:
            self.successes += 1
            self.consecutive_timeouts = 0
            self.last_inference_ms = elapsed_ms
            avg = self.avg_inference_ms
            self.avg_inference_ms = elapsed_ms if avg == 0.0 else avg + _EWMA_ALPHA * (elapsed_ms - avg)
            return
        self.errors += 1
        self.window_errors += 1
        if timed_out:
            self.timeouts += 1
            self.consecutive_timeouts += 1

    @property
    def error_rate(self) -> float:
        return self.window_errors / len(self.window) if self.window else 0.0


@dataclass
class ModelRecord:
    """One model version: its contract facts, its Triton entry, its state and counters.

    The fields read on every request (``triton_name``, ``format``, bounds, ``batched``, ``raw``,
    ``sequence``) are computed once, when the manifest is read.
    """

    model_id: str
    version: str
    triton_name: str
    valid: bool
    input_type: str = ""
    format: str = ""
    min_width: int = 1
    min_height: int = 1
    max_width: int | None = None
    max_height: int | None = None
    batched: bool = False
    sequence: bool = False
    output_schema: dict[str, Any] | None = None
    digest: str = ""
    state: ModelState = ModelState.DISCOVERED
    last_error: str = ""
    stats: ModelStats = field(default_factory=ModelStats)

    @property
    def raw(self) -> bool:
        return self.format not in ENCODED_FORMATS

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    @property
    def health(self) -> Health:
        if self.state in (ModelState.ERROR, ModelState.FAILED, ModelState.INVALID):
            return Health.UNHEALTHY
        if self.state is not ModelState.READY:
            return Health.DEGRADED
        stats = self.stats
        if stats.consecutive_timeouts >= UNHEALTHY_AFTER_TIMEOUTS:
            return Health.UNHEALTHY
        rate = stats.error_rate
        if rate > 0.10:
            return Health.UNHEALTHY
        if rate >= 0.01 or stats.consecutive_timeouts:
            return Health.DEGRADED
        return Health.HEALTHY

    def set_state(self, state: ModelState, reason: str = "") -> None:
        if state is not self.state:
            LOGGER.info(
                "%s %s: %s -> %s %s", self.model_id, self.version, self.state.value, state.value, reason
            )
        self.state = state
        if reason:
            self.last_error = reason


def record_from_manifest(entry: dict[str, Any]) -> ModelRecord:
    """A :class:`ModelRecord` from one ``models[]`` item of ``ruth-manifest.json``."""
    model_id, version = entry["model_id"], entry["version"]
    name = entry.get("triton_name") or f"{model_id}__{version}"
    if entry.get("state") != "VALID" or not entry.get("triton"):
        errors = entry.get("errors") or []
        reason = "; ".join(
            f"{e.get('check', '')}: {e.get('message', '')}" for e in errors if isinstance(e, dict)
        )
        return ModelRecord(
            model_id, version, name, valid=False, state=ModelState.INVALID, last_error=reason or "invalid"
        )
    contract = entry.get("contract") or {}
    spec = contract.get("input") or {}
    triton = entry["triton"]
    return ModelRecord(
        model_id,
        version,
        name,
        valid=True,
        input_type=spec.get("type", "frame"),
        format=spec.get("format", "jpeg"),
        min_width=int(spec.get("min_width") or 1),
        min_height=int(spec.get("min_height") or 1),
        max_width=spec.get("max_width"),
        max_height=spec.get("max_height"),
        batched=int(triton.get("max_batch_size", 0)) > 0,
        sequence=bool(triton.get("sequence", False)),
        output_schema=entry.get("output_json_schema"),
        digest=f"{entry.get('contract_digest', '')}/{entry.get('source_digest', '')}",
        state=ModelState.UNLOADED,
    )


def read_manifest(path: Path) -> list[ModelRecord]:
    """Every model of the manifest at ``path``; raises :class:`ManifestError`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["models"]
        return [record_from_manifest(e) for e in entries]
    except FileNotFoundError as e:
        raise ManifestError(f"no manifest at {path}: build the repository with `ruthgen build`") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ManifestError(f"cannot read the manifest {path}: {e}") from e


@dataclass(frozen=True)
class IndexEntry:
    """One row of Triton's repository index."""

    name: str
    version: str
    state: str
    reason: str


def state_from_index(entry: IndexEntry | None) -> tuple[ModelState, str]:
    """The lifecycle state (and reason) of a VALID model from its Triton index row."""
    if entry is None or not entry.state:
        return ModelState.UNLOADED, ""
    if entry.state == "READY":
        return ModelState.READY, ""
    if entry.state == "LOADING":
        return ModelState.LOADING, ""
    if entry.state == "UNLOADING":
        return ModelState.UNLOADING, ""
    if entry.state == "UNAVAILABLE" and entry.reason in ("", "unloaded"):
        return ModelState.UNLOADED, ""
    return ModelState.FAILED, entry.reason or entry.state


class Registry:
    """Every model version the sidecar knows, by ``(model_id, version)``."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], ModelRecord] = {}
        self.versions: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(sorted(self.records.values(), key=lambda r: (r.model_id, r.version)))

    def get(self, model_id: str, version: str) -> ModelRecord | None:
        return self.records.get((model_id, version))

    def by_triton_name(self, name: str) -> ModelRecord | None:
        for record in self.records.values():
            if record.triton_name == name:
                return record
        return None

    def replace(self, records: list[ModelRecord]) -> tuple[list[ModelRecord], list[ModelRecord]]:
        """Take a new manifest's records; returns (new ones, changed ones).

        An unchanged record keeps its state and counters; a changed one (other digest or
        validity) keeps its counters only.
        """
        table: dict[tuple[str, str], ModelRecord] = {}
        new: list[ModelRecord] = []
        changed: list[ModelRecord] = []
        for record in records:
            key = (record.model_id, record.version)
            old = self.records.get(key)
            if old is None:
                new.append(record)
            elif old.valid == record.valid and old.digest == record.digest:
                record.state, record.last_error, record.stats = old.state, old.last_error, old.stats
            else:
                record.stats = old.stats
                if record.valid:
                    record.state = old.state if old.valid else ModelState.UNLOADED
                changed.append(record)
            table[key] = record
        versions: dict[str, list[str]] = {}
        for model_id, version in table:
            versions.setdefault(model_id, []).append(version)
        self.records, self.versions = table, versions
        return new, changed

    def apply_index(self, index: list[IndexEntry]) -> None:
        """Update the states of VALID models from Triton's repository index.

        A model the sidecar marked ERROR (its process died) stays ERROR until Triton reloads it.
        """
        by_name = {e.name: e for e in index}
        for record in self.records.values():
            if not record.valid:
                continue
            state, reason = state_from_index(by_name.get(record.triton_name))
            if record.state is ModelState.ERROR and state is ModelState.READY:
                continue
            record.set_state(state, reason)
