"""Fixtures of the generator tests: the fixture plugin trees and a factory of plugins in tmp_path."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ruthgen_testlib import INFERENCE_PY, TESTDATA, contract

PluginFactory = Callable[..., Path]


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def make_plugin(models_dir: Path) -> PluginFactory:
    """``make_plugin("demo", "1.0.0", files={...}, **sections)`` writes a plugin and returns its folder."""

    def make(
        model_id: str = "demo", version: str = "1.0.0", files: dict[str, str] | None = None, **sections: Any
    ) -> Path:
        folder = models_dir / model_id / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.yaml").write_text(yaml.safe_dump(contract(model_id, version, **sections)))
        (folder / "inference.py").write_text(INFERENCE_PY)
        (folder / "weights").mkdir(exist_ok=True)
        (folder / "weights" / "model.bin").write_bytes(b"\x00\x01weights")
        for name, text in (files or {}).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        return folder

    return make


@pytest.fixture
def valid_tree(tmp_path: Path) -> Path:
    """A copy of tests/testdata/plugins/valid that a test may change."""
    dest = tmp_path / "valid"
    shutil.copytree(TESTDATA / "valid", dest, symlinks=True)
    return dest
