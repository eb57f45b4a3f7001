"""Tiny hand-written Python-backend models for the launcher's tests (no generator involved)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

ECHO_CONFIG = """\
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_UINT8 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_UINT8 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

ECHO_MODEL = """\
import os
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            out = (data.astype(np.uint16) + 1).astype(np.uint8)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out)]))
        return responses
"""

BROKEN_MODEL = """\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights.bin is missing")

    def execute(self, requests):
        return []
"""


def write_model(repository: Path, name: str, source: str = ECHO_MODEL, config: str = ECHO_CONFIG) -> Path:
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config)
    (model_dir / "1" / "model.py").write_text(source)
    return model_dir


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A repository with ``echo`` (adds 1 to every byte) and ``broken`` (its initialize raises)."""
    repo = tmp_path / "repo"
    write_model(repo, "echo")
    write_model(repo, "broken", BROKEN_MODEL)
    return repo


@pytest.fixture
def model_writer() -> Callable[..., Path]:
    return write_model
