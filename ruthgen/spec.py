"""The Triton intermediate representation of one generated entry (no Jinja, no YAML).

:func:`build_spec` turns a validated contract into a :class:`ModelSpec` that
``templates/config.pbtxt.j2`` renders. The rules (docs/plugin-contract.md has the table):

* input ``FRAME``: ``TYPE_UINT8 [-1]`` for jpeg/png (encoded bytes), ``TYPE_UINT8 [-1, -1, 3]`` for
  raw_rgb/raw_bgr; output ``RESULT``: ``TYPE_STRING [1]`` (UTF-8 JSON), and ``MODEL_MS``:
  ``TYPE_FP64 [1]``, the milliseconds the wrapper spent on that request (decode, pre, infer, post,
  validation), which the sidecar's health judges instead of the time the request waited.
* frame and batch: ``max_batch_size = performance.recommended_batch_size`` with
  ``dynamic_batching`` when that is > 1, else ``max_batch_size: 0`` and no batcher.
* temporal: ``sequence_batching`` with the ``oldest`` strategy, so one camera's frames (one
  correlation id) reach one instance in order while different cameras batch together;
  ``max_batch_size = max(recommended_batch_size, 1)``; control inputs ``START`` and ``CORRID``.
  ``CORRID`` is ``TYPE_UINT64``: Triton 2.51 rejects every request of a model whose CORRID control
  is ``TYPE_STRING`` ("unexpected number of string elements 2"); a string sequence id (the camera
  id) arrives hashed there, and intact through ``request.correlation_id()`` in the stub.
* instance kind per ``--target``: cpu -> KIND_CPU; gpu -> KIND_GPU if supports_gpu, else KIND_CPU
  if supports_cpu. A KIND_GPU group lists no ``gpus``, so Triton runs its ``count`` instances on
  every GPU it sees (a multi-GPU machine serves on each); ``count`` is
  ``performance.instances_per_gpu`` when set, else ``instance_count``; jetson -> KIND_CPU when
  supports_jetson (the Python backend on Jetson has no GPU tensor support, so the stub runs on the
  CPU side and the plugin itself uses the GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ruthgen.contract import Hardware, ModelContract
from ruthgen.wrapper.ruth_protocol import ENCODED_FORMATS

TARGETS: tuple[str, ...] = ("cpu", "gpu", "jetson")
INPUT_NAME = "FRAME"
OUTPUT_NAME = "RESULT"
MODEL_MS_NAME = "MODEL_MS"
START_NAME = "START"
CORRID_NAME = "CORRID"
ENV_PARAMETER = "EXECUTION_ENV_PATH"
ENV_PATH_VALUE = "$$TRITON_MODEL_DIRECTORY/env"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str
    dims: tuple[int, ...]
    allow_ragged_batch: bool = False


@dataclass(frozen=True)
class SequenceSpec:
    """``sequence_batching`` with the oldest strategy and the START/CORRID controls."""

    max_candidate_sequences: int
    max_queue_delay_microseconds: int
    max_sequence_idle_microseconds: int
    start_name: str = START_NAME
    corrid_name: str = CORRID_NAME
    corrid_data_type: str = "TYPE_UINT64"


@dataclass(frozen=True)
class ModelSpec:
    """Everything config.pbtxt holds for one entry."""

    name: str
    max_batch_size: int
    input: TensorSpec
    output: TensorSpec
    instance_kind: str
    instance_count: int
    dynamic_batching: bool = False
    max_queue_delay_microseconds: int = 0
    sequence: SequenceSpec | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    model_ms: TensorSpec = TensorSpec(MODEL_MS_NAME, "TYPE_FP64", (1,))

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (self.output, self.model_ms)

    def manifest_triton(self) -> dict:
        """The ``triton`` block of the manifest record."""
        return {
            "max_batch_size": self.max_batch_size,
            "input": self.input.name,
            "input_dims": list(self.input.dims),
            "output": self.output.name,
            "sequence": self.sequence is not None,
            "instance_kind": self.instance_kind,
            "instance_count": self.instance_count,
        }


def instance_kind(hardware: Hardware, target: str) -> str | None:
    """``KIND_CPU``/``KIND_GPU`` for ``target``, or None when the plugin cannot run there."""
    if target == "cpu":
        return "KIND_CPU" if hardware.supports_cpu else None
    if target == "gpu":
        if hardware.supports_gpu:
            return "KIND_GPU"
        return "KIND_CPU" if hardware.supports_cpu else None
    if target == "jetson":
        return "KIND_CPU" if hardware.supports_jetson else None
    raise ValueError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")


def build_spec(contract: ModelContract, name: str, target: str = "cpu", has_env: bool = False) -> ModelSpec:
    """The IR of the entry ``name`` for a validated contract; ``has_env`` sets EXECUTION_ENV_PATH."""
    kind = instance_kind(contract.hardware, target)
    per_gpu = contract.performance.instances_per_gpu
    if kind is None:
        raise ValueError(f"{contract.model_id} {contract.version} cannot run on target {target}")
    perf = contract.performance
    batch = perf.recommended_batch_size
    delay_us = round(perf.max_queue_delay_ms * 1000)
    temporal = contract.input.type == "temporal"
    max_batch_size = max(batch, 1) if temporal else (batch if batch > 1 else 0)
    dims = (-1,) if contract.input.format in ENCODED_FORMATS else (-1, -1, 3)
    sequence = None
    if temporal:
        sequence = SequenceSpec(
            max_candidate_sequences=perf.max_candidate_sequences,
            max_queue_delay_microseconds=delay_us,
            max_sequence_idle_microseconds=perf.sequence_idle_ms * 1000,
        )
    return ModelSpec(
        name=name,
        max_batch_size=max_batch_size,
        input=TensorSpec(INPUT_NAME, "TYPE_UINT8", dims, allow_ragged_batch=max_batch_size > 0),
        output=TensorSpec(OUTPUT_NAME, "TYPE_STRING", (1,)),
        instance_kind=kind,
        instance_count=per_gpu if kind == "KIND_GPU" and per_gpu else perf.instance_count,
        dynamic_batching=not temporal and max_batch_size > 0,
        max_queue_delay_microseconds=delay_us,
        sequence=sequence,
        parameters={ENV_PARAMETER: ENV_PATH_VALUE} if has_env else {},
    )
