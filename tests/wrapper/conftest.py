"""In-process fixtures for the plugin runtime: entries built on disk, runtimes, the generated model.py.

``triton_python_backend_utils`` is replaced by :mod:`fake_pb_utils` for the adapter tests only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fake_pb_utils
import pytest
from wrapper_testlib import load_generated_model, ruth_runtime, write_entry


@pytest.fixture
def entry(tmp_path: Path) -> Callable[..., Path]:
    def make(files: dict[str, str], **overrides: Any) -> Path:
        return write_entry(tmp_path, files, **overrides)

    return make


@pytest.fixture
def runtime(entry: Callable[..., Path]) -> Iterator[Callable[..., ruth_runtime.PluginRuntime]]:
    """``runtime(files, environ=..., **contract_overrides)`` -> a loaded runtime, closed at teardown."""
    made: list[ruth_runtime.PluginRuntime] = []

    def make(files: dict[str, str], environ: dict[str, str] | None = None, **overrides: Any):
        rt = ruth_runtime.PluginRuntime.from_version_dir(entry(files, **overrides), environ=environ or {})
        made.append(rt)
        rt.load()
        return rt

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def triton_model(entry: Callable[..., Path]) -> Iterator[Callable[..., Any]]:
    """The generated ``model.py`` of an entry, imported with the fake pb_utils and initialized."""
    made: list[Any] = []
    sys.modules["triton_python_backend_utils"] = fake_pb_utils  # type: ignore[assignment]

    def make(files: dict[str, str], **overrides: Any) -> Any:
        model = load_generated_model(entry(files, **overrides))
        made.append(model)
        model.initialize({"model_instance_kind": "CPU", "model_name": "demo__1.0.0", "model_version": "1"})
        return model

    yield make
    for model in made:
        model.finalize()
    sys.modules.pop("triton_python_backend_utils", None)
