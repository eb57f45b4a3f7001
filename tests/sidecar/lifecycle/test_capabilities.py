from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from lifecycle_fakes import FakePlugin, contract

from ruthgen.manifest import TritonFacts
from sidecar.control.capacity import fps_from_statistics
from sidecar.control.health import HealthPolicy, ModelHealthTracker
from sidecar.control.states import ModelRegistry, ModelState
from sidecar.report.capabilities import build_declaration
from sidecar.report.hardware import GpuInfo, HardwareInfo

S = ModelState


def _ready(registry, model_id, version, fps, batch=1):
    record = registry.add(model_id, version)
    for state in (S.VALIDATING, S.LOADING, S.READY):
        record.transition(state, "x")
    record.contract = contract(model_id, version, FakePlugin(max_batch_size=batch))
    record.triton = TritonFacts(max_batch_size=batch)
    record.fps_capacity = fps
    return record


def _tracker(outcomes: str, latency: float = 20.0) -> ModelHealthTracker:
    tracker = ModelHealthTracker(HealthPolicy())
    for i, outcome in enumerate(outcomes):
        tracker.record(outcome == ".", latency, timeout=outcome == "t", now=i * 0.1, wait_ms=5.0)
    return tracker


def test_declaration_has_the_7_2_shape_with_measured_figures():
    registry = ModelRegistry()
    _ready(registry, "fall_detection", "1.0.0", 50.0, batch=4)
    helmet = _ready(registry, "helmet_detection", "0.1.0", 30.0)
    failed = registry.add("broken", "1.0.0")
    failed.transition(S.VALIDATING, "x")
    failed.transition(S.INVALID, "model_yaml_missing: model.yaml not found")
    failed.last_error_at = 1_768_384_000.0  # older than the helmet error below
    health = {
        ("fall_detection", "1.0.0"): _tracker("." * 100).snapshot(now=10.0),
        ("helmet_detection", "0.1.0"): _tracker("." * 97 + "xxx").snapshot(now=10.0),
    }
    helmet.note_error("inference timeout", at=1_768_384_935.0)
    hardware = HardwareInfo(type="gpu", supports_gpu=True, gpu_name="NVIDIA Tesla T4",
                            gpu_memory_total_mb=16384, gpu_memory_available_mb=12000, cuda_version="12.1")
    declaration = build_declaration(runtime_id="rt-1", runtime_version="1.0.0", records=list(registry),
                                    health=health, hardware=hardware, now=1_768_384_800.0)
    assert declaration["runtime_id"] == "rt-1" and declaration["timestamp"] == "2026-01-14T10:00:00.000Z"
    assert declaration["hardware"]["gpu_name"] == "NVIDIA Tesla T4"
    assert declaration["capacity"] == {
        "max_fps_total": 80.0, "max_concurrent_streams": 8, "recommended_batch_size": 4,
        "current_utilization_percent": 25.0,  # 2 x 10 fps observed over 80
        "supported_hardware": ["cpu"],
    }
    models = {m["model_id"]: m for m in declaration["models"]}
    assert models["fall_detection"]["health"] == "HEALTHY"
    assert models["fall_detection"]["performance"] == {
        "avg_inference_time_ms": 20.0, "p99_inference_time_ms": 20.0,
        "avg_wait_time_ms": 5.0, "p99_wait_time_ms": 5.0, "fps_capacity": 50.0,
    }
    assert models["helmet_detection"]["health"] == "DEGRADED"
    assert models["broken"]["state"] == "INVALID" and models["broken"]["health"] == "UNHEALTHY"
    assert declaration["health_summary"] == {
        "status": "degraded", "total_models": 2, "healthy_models": 1, "degraded_models": 1,
        "unhealthy_models": 0,
        "last_error": "helmet_detection:0.1.0: inference timeout at 2026-01-14T10:02:15.000Z",
    }


def test_declaration_is_unhealthy_with_zero_capacity_when_nothing_is_loaded():
    declaration = build_declaration(runtime_id="r", runtime_version="v", records=[], health={},
                                    hardware=HardwareInfo(type="cpu", supports_gpu=False), now=0.0)
    assert declaration["health_summary"]["status"] == "unhealthy"
    assert declaration["capacity"]["max_fps_total"] == 0 and declaration["models"] == []


def test_declaration_falls_back_to_the_latency_hint_when_not_measured():
    registry = ModelRegistry()
    record = _ready(registry, "m", "1.0.0", None)
    record.contract = contract("m", "1.0.0", FakePlugin(hint_ms=25.0))
    record.triton = TritonFacts(instance_count=2)
    declaration = build_declaration(runtime_id="r", runtime_version="v", records=[record], health={},
                                    hardware=HardwareInfo(type="cpu", supports_gpu=False), now=0.0)
    assert declaration["models"][0]["performance"]["fps_capacity"] == 80.0


def test_fps_from_statistics_uses_compute_time_per_frame():
    stats = {
        "inference_count": 100, "execution_count": 50,
        "inference_stats": {"compute_input": {"count": 50, "ns": 100_000_000},
                            "compute_infer": {"count": 50, "ns": 800_000_000},
                            "compute_output": {"count": 50, "ns": 100_000_000}},
    }
    assert fps_from_statistics(stats, instance_count=2) == 200.0
    assert fps_from_statistics({"inference_count": 5, "inference_stats": stats["inference_stats"]}, 1) is None


SCHEMA = json.loads(
    (Path(__file__).resolve().parents[3] / "docs" / "schemas" / "registration.schema.json").read_text()
)


def validate_declaration(declaration: dict) -> None:
    """Validate against docs/schemas/registration.schema.json, formats (date-time) included."""
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    jsonschema.Draft202012Validator(SCHEMA, format_checker=checker).validate(declaration)


def test_declaration_validates_against_the_documented_json_schema():
    registry = ModelRegistry()
    ready = _ready(registry, "fall_detection", "1.0.0", 50.0, batch=4)
    ready.output_schema = ready.contract.output_json_schema()
    ready.note_error("TIMEOUT: infer: exceeded 5000 ms", at=1_768_384_935.0)
    ready.warnings = ["timeouts_exceed_runtime: the phase limits add up to 9000 ms"]
    failed = registry.add("broken", "1.0.0")
    failed.transition(S.VALIDATING, "x")
    failed.transition(S.INVALID, "model_yaml_empty: model.yaml is empty")
    gpu = HardwareInfo.of_gpus([GpuInfo(0, uuid="GPU-1", memory_total_mb=16384, memory_available_mb=12000,
                                        utilization_percent=3.0)], "triton-metrics", cuda_version="12.4")
    for hardware in (gpu, HardwareInfo(type="cpu", supports_gpu=False)):
        declaration = build_declaration(runtime_id="rt-1", runtime_version="1.0.0", records=list(registry),
                                        health={}, hardware=hardware, now=1_768_384_800.0)
        validate_declaration(declaration)
    models = {m["model_id"]: m for m in declaration["models"]}
    fall = models["fall_detection"]
    assert fall["output_schema"]["type"] == "object" and fall["output_schema_version"].startswith("sha256:")
    assert fall["hardware"] == {"supports": ["cpu"], "min_gpu_memory_mb": None, "instance_kind": "cpu",
                                "instance_count": 1}
    assert fall["last_error"] == "TIMEOUT: infer: exceeded 5000 ms"
    assert fall["last_error_at"] == "2026-01-14T10:02:15.000Z" and fall["warnings"]
    broken = models["broken"]
    assert broken["output_schema"] is None and broken["reason"].startswith("model_yaml_empty")
    with pytest.raises(jsonschema.ValidationError):
        validate_declaration({**declaration, "models": [{**fall, "state": "SLEEPING"}]})


def test_output_schema_version_identifies_the_shape_or_is_the_declared_one():
    base = contract("m", "1.0.0", FakePlugin())
    same = base.model_copy(update={"version": "1.0.1", "display_name": "other"})
    changed = contract("m", "1.0.0", FakePlugin()).model_validate(
        {**base.normalized(), "output": {"schema": {"ok": {"type": "boolean"}, "n": {"type": "integer"}}}}
    )
    declared = base.model_validate({**base.normalized(), "output": {**base.normalized()["output"],
                                                                    "schema_version": "2.1"}})
    assert base.output_schema_version() == same.output_schema_version()
    assert len(base.output_schema_version()) == len("sha256:") + 12
    assert changed.output_schema_version() != base.output_schema_version()
    assert declared.output_schema_version() == "2.1"
