"""Helpers of the runtime tests: entries laid out as the writer lays them, frames, requests.

The runtime modules are imported the way the Triton stub imports them (top-level ``ruth_*``
modules from ``ruthgen/wrapper``), which this module puts on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ruthgen.contract import parse_contract
from ruthgen.naming import triton_name
from ruthgen.render import render_model_py
from ruthgen.spec import build_spec
from ruthgen.wrapper import RUNTIME_DIR, RUNTIME_FILES

HERE = Path(__file__).resolve().parent
for folder in (str(RUNTIME_DIR), str(HERE)):
    if folder not in sys.path:
        sys.path.insert(0, folder)

import ruth_runtime  # noqa: E402

DEFAULT_SCHEMA = {"label": {"type": "string"}, "score": {"type": "float", "min": 0.0, "max": 1.0}}


def contract_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model_id": "demo",
        "version": "1.0.0",
        "display_name": "Demo",
        "input": {"type": "frame", "format": "jpeg", "min_width": 8, "min_height": 8},
        "output": {"schema": DEFAULT_SCHEMA},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def write_entry(root: Path, files: dict[str, str], **overrides: Any) -> Path:
    """A generated entry as the writer lays it out; returns its version folder ``<entry>/1``."""
    parsed = parse_contract(contract_data(**overrides))
    assert parsed.contract is not None, parsed.errors
    contract = parsed.contract
    name = triton_name(contract.model_id, contract.version)
    spec = build_spec(contract, name)
    record = {
        "model_id": contract.model_id,
        "version": contract.version,
        "triton_name": name,
        "contract": contract.normalized(),
        "output_json_schema": contract.output_json_schema(),
        "triton": spec.manifest_triton(),
    }
    version_dir = root / f"{name}-{uuid.uuid4().hex[:6]}" / "1"
    plugin_dir = version_dir / "plugin"
    plugin_dir.mkdir(parents=True)
    for source in RUNTIME_FILES:
        shutil.copyfile(source, version_dir / source.name)
    context = {
        "entry": record,
        "model_id": contract.model_id,
        "version": contract.version,
        "triton_name": name,
    }
    (version_dir / "model.py").write_text(render_model_py(context), "utf-8")
    (version_dir / "ruth_entry.json").write_text(json.dumps(record), "utf-8")
    for rel, text in files.items():
        path = plugin_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), "utf-8")
    return version_dir


def encode(rgb: np.ndarray, fmt: str = "jpeg") -> np.ndarray:
    out = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(out, format="JPEG" if fmt == "jpeg" else "PNG", quality=95)
    return np.frombuffer(out.getvalue(), dtype=np.uint8)


def solid(width: int, height: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.full((height, width, 3), rgb, dtype=np.uint8)


def request(frame: np.ndarray | None, **parameters: Any) -> ruth_runtime.FrameRequest:
    return ruth_runtime.FrameRequest(frame=frame, parameters=parameters)


def load_generated_model(version_dir: Path) -> Any:
    """The ``TritonPythonModel`` of an entry's generated model.py (not initialized); the caller
    puts a ``triton_python_backend_utils`` into ``sys.modules`` first."""
    name = f"generated_model_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, version_dir / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel()
