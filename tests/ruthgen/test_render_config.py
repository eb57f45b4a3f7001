from __future__ import annotations

import itertools

import pytest
from google.protobuf import text_format
from ruthgen_testlib import contract
from tritonclient.grpc import model_config_pb2

from ruthgen.contract import INPUT_FORMATS, INPUT_TYPES, ModelContract
from ruthgen.render import render_config
from ruthgen.spec import TARGETS, build_spec, instance_kind

HARDWARE = {
    "cpu_only": {"supports_cpu": True, "supports_gpu": False, "supports_jetson": False},
    "gpu_only": {"supports_cpu": False, "supports_gpu": True, "supports_jetson": False},
    "cpu_gpu": {"supports_cpu": True, "supports_gpu": True, "supports_jetson": False},
    "all": {"supports_cpu": True, "supports_gpu": True, "supports_jetson": True},
    "jetson_only": {"supports_cpu": False, "supports_gpu": False, "supports_jetson": True},
}
EXPECTED_KIND = {
    ("cpu_only", "cpu"): "KIND_CPU",
    ("cpu_only", "gpu"): "KIND_CPU",
    ("gpu_only", "gpu"): "KIND_GPU",
    ("cpu_gpu", "cpu"): "KIND_CPU",
    ("cpu_gpu", "gpu"): "KIND_GPU",
    ("all", "cpu"): "KIND_CPU",
    ("all", "gpu"): "KIND_GPU",
    ("all", "jetson"): "KIND_CPU",
    ("jetson_only", "jetson"): "KIND_CPU",
}
CASES = list(itertools.product(INPUT_TYPES, INPUT_FORMATS, HARDWARE, TARGETS, (1, 8), (False, True)))


def _contract(input_type: str, input_format: str, hardware: str, batch: int, **perf) -> ModelContract:
    return ModelContract.model_validate(
        contract(
            "demo",
            input={"type": input_type, "format": input_format},
            hardware=HARDWARE[hardware],
            performance={"recommended_batch_size": batch, **perf},
        )
    )


def _parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize(("input_type", "input_format", "hardware", "target", "batch", "has_env"), CASES)
def test_render_config_parses_as_model_config_for_every_combination(
    input_type: str, input_format: str, hardware: str, target: str, batch: int, has_env: bool
) -> None:
    c = _contract(input_type, input_format, hardware, batch)
    kind = EXPECTED_KIND.get((hardware, target))
    assert instance_kind(c.hardware, target) == kind
    if kind is None:
        with pytest.raises(ValueError):
            build_spec(c, "demo__1.0.0", target, has_env)
        return
    text = render_config(build_spec(c, "demo__1.0.0", target, has_env))
    config = _parse(text)
    assert config.name == "demo__1.0.0"
    assert config.backend == "python"
    assert config.platform == ""
    (frame,) = config.input
    assert frame.name == "FRAME"
    assert frame.data_type == model_config_pb2.TYPE_UINT8
    assert list(frame.dims) == ([-1] if input_format in ("jpeg", "png") else [-1, -1, 3])
    result, model_ms = config.output
    assert (result.name, result.data_type, list(result.dims)) == ("RESULT", model_config_pb2.TYPE_STRING, [1])
    fp64 = model_config_pb2.TYPE_FP64
    assert (model_ms.name, model_ms.data_type, list(model_ms.dims)) == ("MODEL_MS", fp64, [1])
    (group,) = config.instance_group
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == kind
    assert group.count == 1
    if input_type == "temporal":
        assert config.max_batch_size == batch
        assert not config.HasField("dynamic_batching")
        seq = config.sequence_batching
        assert seq.HasField("oldest")
        assert seq.oldest.max_candidate_sequences == 64
        assert seq.max_sequence_idle_microseconds == 60_000_000
        controls = {ci.name: ci.control[0] for ci in seq.control_input}
        assert set(controls) == {"START", "CORRID"}
        assert controls["START"].kind == model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START
        assert list(controls["START"].int32_false_true) == [0, 1]
        assert (
            controls["CORRID"].kind == model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID
        )
        assert controls["CORRID"].data_type == model_config_pb2.TYPE_UINT64
    else:
        assert not config.HasField("sequence_batching")
        assert config.max_batch_size == (batch if batch > 1 else 0)
        assert config.HasField("dynamic_batching") is (batch > 1)
        assert "max_batch_size: 0" in text or batch > 1
    assert frame.allow_ragged_batch is (config.max_batch_size > 0)
    if has_env:
        assert config.parameters["EXECUTION_ENV_PATH"].string_value == "$$TRITON_MODEL_DIRECTORY/env"
    else:
        assert "EXECUTION_ENV_PATH" not in config.parameters


def test_render_config_uses_performance_hints_when_given() -> None:
    c = _contract("frame", "png", "cpu_only", 4, instance_count=3, max_queue_delay_ms=2.5)
    config = _parse(render_config(build_spec(c, "demo__1.0.0")))
    assert config.max_batch_size == 4
    assert config.dynamic_batching.max_queue_delay_microseconds == 2500
    assert config.instance_group[0].count == 3
    seq = _contract("temporal", "jpeg", "cpu_only", 1, max_candidate_sequences=7, sequence_idle_ms=1500)
    config = _parse(render_config(build_spec(seq, "demo__1.0.0")))
    assert config.sequence_batching.oldest.max_candidate_sequences == 7
    assert config.sequence_batching.max_sequence_idle_microseconds == 1_500_000


def test_render_config_is_identical_when_rendered_twice() -> None:
    spec = build_spec(_contract("batch", "raw_rgb", "all", 8), "demo__2.0.0", "gpu", True)
    assert render_config(spec) == render_config(spec)


def test_manifest_triton_block_matches_the_config() -> None:
    spec = build_spec(_contract("temporal", "raw_bgr", "cpu_gpu", 2), "demo__1.0.0", "gpu")
    assert spec.manifest_triton() == {
        "max_batch_size": 2,
        "input": "FRAME",
        "input_dims": [-1, -1, 3],
        "output": "RESULT",
        "sequence": True,
        "instance_kind": "KIND_GPU",
        "instance_count": 1,
    }


def test_render_config_puts_instances_per_gpu_on_every_gpu_of_a_gpu_build() -> None:
    c = _contract("frame", "jpeg", "cpu_gpu", 1, instance_count=3, instances_per_gpu=2)
    gpu = _parse(render_config(build_spec(c, "demo__1.0.0", target="gpu"))).instance_group[0]
    assert (gpu.kind, gpu.count, list(gpu.gpus)) == (model_config_pb2.ModelInstanceGroup.KIND_GPU, 2, [])
    cpu = _parse(render_config(build_spec(c, "demo__1.0.0", target="cpu"))).instance_group[0]
    assert (cpu.kind, cpu.count) == (model_config_pb2.ModelInstanceGroup.KIND_CPU, 3)
