"""The capability declaration, built from the runtime's state (a pure function).

What it holds: docs/lifecycle.md#capability-registration.

Inputs: the model records (lifecycle), their request-health snapshots, the hardware and the clock.
The same JSON is POSTed to the backend (:mod:`sidecar.report.registration`) and served at
``GET /capabilities``.

* ``models``: every known version but UNLOADED ones, with ``state`` and ``health`` (READY: its
  request health; ERROR: UNHEALTHY; any other state: UNHEALTHY, as it cannot serve), the
  ``output_schema_version`` that identifies its output schema (declared, or a hash of it), the
  ``output_schema`` itself (JSON Schema), the ``hardware`` its contract supports and where its
  instances run, its ``last_error`` (lifecycle or request failure, with its time) and ``warnings``.
* ``hardware``: the machine (:mod:`sidecar.report.hardware`: Triton's GPU metrics, else the local
  probe).
* ``capacity``: ``max_fps_total`` sums the ``fps_capacity`` of READY models;
  ``max_concurrent_streams = min(10, floor(max_fps_total / 10))``; ``recommended_batch_size`` is the
  largest batch a READY model takes; utilisation is the observed rate over the capacity;
  ``supported_hardware`` is the union of what the READY models' contracts support.
* ``health_summary``: the runtime's health over loaded models (docs/architecture.md#health), and the
  newest error with its model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sidecar.control.health import Health, HealthSnapshot, aggregate, is_loaded, model_health
from sidecar.control.states import ModelRecord, ModelState, iso_time
from sidecar.report.hardware import HardwareInfo

HARDWARE_KINDS = ("cpu", "gpu", "jetson")
MAX_STREAMS = 10
FPS_PER_STREAM = 10


def fps_capacity(record: ModelRecord) -> float | None:
    """Measured capacity when known, else what the contract's latency hint allows."""
    if record.fps_capacity is not None:
        return record.fps_capacity
    if record.inference_time_hint_ms:
        return round(1000.0 / record.inference_time_hint_ms * max(1, record.instance_count), 1)
    return None


def build_declaration(
    *,
    runtime_id: str,
    runtime_version: str,
    records: Iterable[ModelRecord],
    health: Mapping[tuple[str, str], HealthSnapshot],
    hardware: HardwareInfo,
    now: float | None = None,
    waiting: Mapping[tuple[str, str], str] | None = None,
) -> dict[str, Any]:
    """``waiting``: why a READY version does not serve (an upstream that does not), by key."""
    now = time.time() if now is None else now
    waiting = waiting or {}
    records = [r for r in records if r.state is not ModelState.UNLOADED]
    models, loaded_health = [], []
    total_fps, observed_fps, batch = 0.0, 0.0, 1
    supported: set[str] = set()
    for record in records:
        snapshot = health.get(record.key)
        why = waiting.get(record.key)
        status = model_health(record, snapshot, why)
        if is_loaded(record):
            loaded_health.append(status)
        fps = fps_capacity(record)
        if record.state is ModelState.READY and why is None:
            total_fps += fps or 0.0
            observed_fps += snapshot.observed_fps if snapshot else 0.0
            batch = max(batch, record.max_batch_size or 1)
            supported.update(_supported(record))
        models.append(_model_entry(record, status, snapshot, fps, why))
    summary = aggregate(loaded_health).to_dict()
    summary["last_error"] = _last_error(records)
    return {
        "runtime_id": runtime_id,
        "version": runtime_version,
        "timestamp": iso_time(now),
        "hardware": hardware.to_dict(),
        "capacity": {
            "max_fps_total": round(total_fps, 1),
            "max_concurrent_streams": min(MAX_STREAMS, math.floor(total_fps / FPS_PER_STREAM)),
            "recommended_batch_size": batch,
            "current_utilization_percent": (
                round(min(100.0, 100.0 * observed_fps / total_fps), 1) if total_fps else 0.0
            ),
            "supported_hardware": [kind for kind in HARDWARE_KINDS if kind in supported],
        },
        "models": models,
        "health_summary": summary,
    }


def _model_entry(
    record: ModelRecord, status: Health, snapshot: HealthSnapshot | None, fps: float | None,
    waiting: str | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model_id": record.model_id,
        "version": record.version,
        "state": record.state.value,
        "health": status.value,
        "input_type": record.input_type,
        "max_batch_size": record.frames_per_request,
        "output_schema_version": record.output_schema_version,
        "output_schema": record.output_schema,
        "hardware": _hardware(record),
        "performance": {
            "avg_inference_time_ms": _ms(snapshot.avg_ms if snapshot else None),
            "p99_inference_time_ms": _ms(snapshot.p99_ms if snapshot else None),
            "avg_wait_time_ms": _ms(snapshot.avg_wait_ms if snapshot else None),
            "p99_wait_time_ms": _ms(snapshot.p99_wait_ms if snapshot else None),
            "fps_capacity": fps,
        },
        "last_error": record.last_error,
        "last_error_at": iso_time(record.last_error_at) if record.last_error_at is not None else None,
    }
    if record.warnings:
        entry["warnings"] = list(record.warnings)
    if record.isolation is not None:
        entry["isolation"] = record.isolation.to_dict()
    if record.contract is not None and record.contract.upstreams:
        entry["upstreams"] = [u.model_dump() for u in record.contract.upstreams]
    if waiting is not None:
        entry["reason"] = f"not serving: {waiting}"
    elif record.state is not ModelState.READY and record.last_error:
        entry["reason"] = record.reason
    if record.rejected_change is not None:
        entry["rejected_change"] = record.rejected_change.to_dict()
    return entry


def _supported(record: ModelRecord) -> list[str]:
    hardware = record.contract.hardware if record.contract else None
    return [kind for kind in HARDWARE_KINDS if hardware is not None and getattr(hardware, f"supports_{kind}")]


def _hardware(record: ModelRecord) -> dict[str, Any] | None:
    """What the contract supports, its minimum GPU memory, and where its instances run now."""
    if record.contract is None:
        return None
    found: dict[str, Any] = {
        "supports": _supported(record),
        "min_gpu_memory_mb": record.contract.hardware.min_gpu_memory_mb,
    }
    if record.triton is not None:
        found["instance_kind"] = "gpu" if record.triton.instance_kind == "KIND_GPU" else "cpu"
        found["instance_count"] = record.triton.instance_count
    return found


def _last_error(records: list[ModelRecord]) -> str | None:
    dated = [r for r in records if r.last_error and r.last_error_at is not None]
    if not dated:
        return None
    newest = max(dated, key=lambda r: r.last_error_at or 0.0)
    at = iso_time(newest.last_error_at or 0.0)
    return f"{newest.model_id}:{newest.version}: {newest.last_error} at {at}"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)

