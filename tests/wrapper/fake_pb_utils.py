"""A stand-in for ``triton_python_backend_utils`` with the calls the generated model.py makes.

Only for testing the adapter in front of the runtime in-process; tests/integration proves the same
path against the real Triton Python backend.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS = range(7)

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor], error: TritonError | None = None) -> None:
        self.output_tensors, self._error = output_tensors, error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


class InferenceRequest:
    """What a Triton request offers the model: named input tensors, parameters, a sequence id."""

    def __init__(
        self,
        inputs: dict[str, np.ndarray],
        parameters: dict[str, Any] | None = None,
        correlation_id: int | str = 0,
    ) -> None:
        self.inputs = [Tensor(k, v) for k, v in inputs.items()]
        self._parameters = parameters or {}
        self._correlation_id = correlation_id

    def parameters(self) -> str:
        return json.dumps(self._parameters)

    def correlation_id(self) -> int | str:
        return self._correlation_id


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    for tensor in request.inputs:
        if tensor.name() == name:
            return tensor
    return None


class Logger:
    records: list[tuple[str, str]] = []

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.records.append(("info", message))

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.records.append(("warn", message))

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.records.append(("error", message))

    @classmethod
    def log_verbose(cls, message: str) -> None:
        cls.records.append(("verbose", message))


class MetricFamily:
    """The custom-metrics API's shape: families of COUNTER, GAUGE or HISTOGRAM series."""

    COUNTER, GAUGE, HISTOGRAM = 0, 1, 2
    created: list[MetricFamily] = []

    def __init__(self, name: str, description: str, kind: int) -> None:
        self.name, self.description, self.kind = name, description, kind
        self.metrics: list[_FakeMetric] = []
        MetricFamily.created.append(self)

    def Metric(self, labels: dict[str, str] | None = None, buckets: list[float] | None = None) -> _FakeMetric:
        metric = _FakeMetric(labels or {}, buckets)
        self.metrics.append(metric)
        return metric


class _FakeMetric:
    def __init__(self, labels: dict[str, str], buckets: list[float] | None) -> None:
        self.labels, self.buckets, self.observed = labels, buckets, []
        self._value = 0.0

    def increment(self, value: float) -> None:
        self._value += value

    def set(self, value: float) -> None:
        self._value = value

    def observe(self, value: float) -> None:
        self.observed.append(value)

    def value(self) -> float:
        return self._value
