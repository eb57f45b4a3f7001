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


def example_files(start: str = "## A complete example", end: str | None = None) -> dict[str, str]:
    text = DOC.read_text("utf-8")
    example = text[text.index(start) : text.index(end) if end else None]
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


def test_plugin_api_upstream_example_reads_its_upstreams_results(tmp_path):
    files = example_files("### Upstream results", "### Imports")
    assert set(files) == {"model.yaml", "inference.py", "postprocessing.py"}
    contract = yaml.safe_load(files.pop("model.yaml"))
    assert contract["upstreams"] == [{"model_id": "person_detection", "version": "1.0.0"}]
    version_dir = write_entry(tmp_path, files, **contract)
    runtime = PluginRuntime.from_version_dir(version_dir, environ={})

    def person(x: int, y: int) -> dict:
        return {"x": x, "y": y, "width": 20, "height": 40, "confidence": 0.9, "label": "person"}

    boxes = [person(5, 10), person(30, 40), person(150, 10), person(10, 50)]  # the third is outside the zone
    detected = {"count": 4, "bounding_boxes": boxes}
    try:
        runtime.load()  # the warmup frame has no upstream results
        image = encode(solid(200, 100, (0, 0, 0)))
        frames = [
            FrameRequest(image, {"upstreams": json.dumps({"person_detection": found})})
            for found in (detected, {"count": 0, "bounding_boxes": []})
        ]
        full, empty = (json.loads(o) for o in runtime.execute(frames))
    finally:
        runtime.close()
    assert full == {"event_type": "zone_full", "in_zone": 3, "people": 4}
    assert empty == {"event_type": "zone_ok", "in_zone": 0, "people": 0}
