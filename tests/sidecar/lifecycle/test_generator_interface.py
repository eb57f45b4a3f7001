"""The sidecar uses the generator through ruthgen.interface, and loads the plugin builder only when
it owns a plugin folder: serving a repository built elsewhere needs no Jinja2, YAML or environments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BUILDER = ("ruthgen.builder", "ruthgen.writer", "ruthgen.discovery", "ruthgen.envs", "jinja2", "yaml")

PROGRAM = """
import asyncio, json, sys
from sidecar.main import build_core
from sidecar.settings import SidecarSettings

async def main():
    settings = SidecarSettings(model_repository=sys.argv[1], models_dir=sys.argv[2] or None,
                               triton_url="127.0.0.1:9", target="cpu", watch_models=False)
    core = build_core(settings)
    await core.adapter.close()

asyncio.run(main())
print(json.dumps(sorted(m for m in sys.argv[3:] if m in sys.modules)))
"""


def loaded_by_a_sidecar(repository: Path, models_dir: Path | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUTH_")}
    command = [sys.executable, "-c", PROGRAM, str(repository), str(models_dir or ""), *BUILDER]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_a_sidecar_serving_a_built_repository_never_loads_the_plugin_builder(tmp_path):
    assert loaded_by_a_sidecar(tmp_path / "repository", None) == []


def test_a_sidecar_that_owns_a_plugin_folder_loads_it(tmp_path):
    (tmp_path / "models").mkdir()
    loaded = loaded_by_a_sidecar(tmp_path / "repository", tmp_path / "models")
    assert "ruthgen.builder" in loaded and "jinja2" in loaded, loaded


@pytest.mark.parametrize("module", ["ruthgen.interface", "ruthgen.builder"])
def test_the_interface_and_the_builder_import_alone(module):
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
