"""The complete example of docs/plugin-api.md runs through the runtime as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import yaml
from ruth_runtime import FrameRequest, PluginRuntime
from wrapper_testlib import encode, solid, write_entry

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugin-api.md"


def example_files() -> dict[str, str]:
    text = DOC.read_text("utf-8")
    example = text[text.index("## A complete example") :]
    files = {}
    for body in re.findall(r"```(?:yaml|python)\n(.*?)```", example, re.S):
        name = body.splitlines()[0].removeprefix("# ").strip()
        if name.endswith((".py", ".yaml")):
            files[name] = body
    return files


def test_plugin_api_example_loads_and_answers_its_schema(tmp_path):
    files = example_files()
    assert set(files) == {
        "model.yaml",
        "config.yaml",
        "inference.py",
        "preprocessing.py",
        "postprocessing.py",
    }
    version_dir = write_entry(tmp_path, files, **yaml.safe_load(files.pop("model.yaml")))
    weights = version_dir / "plugin" / "weights"
    weights.mkdir()
    filters = np.full((4, 128, 128), 0.0002, dtype=np.float32)
    np.savez(weights / "blob_model.npz", filters=filters, bias=0.0)
    runtime = PluginRuntime.from_version_dir(version_dir, environ={})
    try:
        runtime.load()
        frames = [FrameRequest(encode(solid(200, 100, (v, v, v))), {}) for v in (0, 255)]
        dark, bright = (json.loads(o) for o in runtime.execute(frames))
    finally:
        runtime.close()
    assert dark == {"event_type": "no_crowd", "count": 0, "confidence": 1.0}
    assert bright["count"] == round(4 * 128 * 128 * 0.0002) and bright["event_type"] == "crowd"
