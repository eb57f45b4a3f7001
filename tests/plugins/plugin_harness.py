"""Run a plugin folder in-process the way the runtime calls it: load, preprocess, infer, postprocess.

The Frame and context objects are the runtime's own (ruthgen/wrapper/ruth_api.py); each entry
module is imported under a name unique to its plugin (and models folder), so that plugins load side
by side in one test session. Every result is checked against the plugin's compiled output schema.
A plugin that declares upstreams gets, on each frame, each upstream's result for that very frame:
the upstream (from the same models folder) runs first on the same decoded image, and its validated
result reaches ``frame.upstreams`` as the JSON the runtime passes.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import sys
import types
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import fastjsonschema
import numpy as np
import yaml
from skimage import data

from ruthgen.contract import parse_contract
from ruthgen.wrapper.ruth_api import Frame, PluginContext, freeze

ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = ROOT / "ai" / "models"
#: Today's plugins before upstreams, each with its own person detector (benchmarks/fixtures/islands).
ISLANDS_DIR = ROOT / "benchmarks" / "fixtures" / "islands"
PERSON_PHOTOS = ("astronaut", "camera")
NO_PERSON_PHOTOS = ("chelsea", "coffee", "rocket")


def photo(name: str) -> np.ndarray:
    """An RGB uint8 photograph shipped with scikit-image (grey ones are stacked to three channels)."""
    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8))


def _package(plugin_dir: Path, name: str) -> str:
    """A synthetic package whose path is the plugin folder: relative imports work, names never clash."""
    package = types.ModuleType(name)
    package.__path__ = [str(plugin_dir)]
    package.__package__ = name
    sys.modules[name] = package
    return name


_LOADED: dict[tuple[Path, str, str], LoadedPlugin] = {}


def load(model_id: str, version: str, models_dir: Path = MODELS_DIR) -> LoadedPlugin:
    """The plugin version of ``models_dir``, loaded once per test session (its upstreams with it)."""
    key = (models_dir, model_id, version)
    if key not in _LOADED:
        _LOADED[key] = LoadedPlugin(model_id, version, models_dir)
    return _LOADED[key]


def _takes_frame(func: Any) -> bool:
    """``postprocess(outputs, context, frame)``: the wrapper's rule (ruth_runtime._takes_frame)."""
    if func is None:
        return False
    parameters = list(inspect.signature(func).parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


class LoadedPlugin:
    """One plugin version loaded in this process."""

    def __init__(self, model_id: str, version: str, models_dir: Path = MODELS_DIR) -> None:
        self.dir = models_dir / model_id / version
        parsed = parse_contract(yaml.safe_load((self.dir / "model.yaml").read_text("utf-8")))
        assert parsed.contract is not None, parsed.errors
        self.contract = parsed.contract
        self.validate = fastjsonschema.compile(self.contract.output_json_schema())
        config = yaml.safe_load((self.dir / "config.yaml").read_text("utf-8")) or {}
        self.context = PluginContext(
            model_id=model_id,
            version=version,
            model_dir=self.dir,
            weights_dir=self.dir / "weights",
            config=freeze(config),
            logger=logging.getLogger(f"{model_id}:{version}"),
        )
        folder = "" if models_dir == MODELS_DIR else f"_{models_dir.name}"
        self.package = _package(self.dir, f"test_plugin{folder}_{model_id}_{version.replace('.', '_')}")
        entry = self.contract.entry_points
        self.inference = self._import(entry.inference)
        self.pre = self._import(entry.preprocess)
        self.post = self._import(entry.postprocess)
        self._post_takes_frame = _takes_frame(self.post.postprocess if self.post else None)
        declared = self.contract.upstreams
        self.upstreams = {up.model_id: load(up.model_id, up.version, models_dir) for up in declared}
        self.state = self.inference.load(self.context)

    def _import(self, rel: str | None) -> ModuleType | None:
        if rel is None or not (self.dir / rel).is_file():
            return None
        dotted = ".".join(Path(rel).with_suffix("").parts)
        return importlib.import_module(f"{self.package}.{dotted}")

    def frame(self, rgb: np.ndarray, camera_id: str | None = None, sequence_start: bool = False,
              frame_id: str | None = None, timestamp_ms: int | None = None, upstreams: bool = True) -> Frame:
        """A Frame as the wrapper builds it; JPEG/PNG plugins get the image through an encode/decode.

        With ``upstreams`` (and declared ones), each upstream runs on the same decoded image first and
        its result is in ``frame.upstreams``; without, the frame has none, as the warmup frame.
        """
        image = np.ascontiguousarray(rgb[:, :, :3], dtype=np.uint8)
        fmt = self.contract.input.format
        if fmt in ("jpeg", "png"):
            ext = ".jpg" if fmt == "jpeg" else ".png"
            ok, encoded = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            assert ok
            decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
            image = np.ascontiguousarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))
        height, width = image.shape[:2]
        results = {}
        if upstreams:
            for model_id, upstream in self.upstreams.items():
                seen = Frame(image.copy(), width, height, upstream.contract.input.format, camera_id,
                             frame_id, timestamp_ms)
                results[model_id] = json.loads(json.dumps(upstream.run(seen)))  # what the runtime passes
        return Frame(image, width, height, fmt, camera_id, frame_id, timestamp_ms, sequence_start,
                     upstreams=results)

    def _finish(self, outputs: Any, frame: Frame) -> dict[str, Any]:
        if self.post is None:
            result = outputs
        elif self._post_takes_frame:
            result = self.post.postprocess(outputs, self.context, frame)
        else:
            result = self.post.postprocess(outputs, self.context)
        self.validate(result)
        return result

    def run(self, frame: Frame) -> dict[str, Any]:
        inputs = self.pre.preprocess(frame, self.context) if self.pre else frame
        return self._finish(self.inference.infer(self.state, inputs), frame)

    def run_batch(self, frames: list[Frame]) -> list[dict[str, Any]]:
        """A ``batch`` plugin: each frame preprocessed, one infer() for them all, each postprocessed."""
        inputs = [self.pre.preprocess(f, self.context) if self.pre else f for f in frames]
        outputs = self.inference.infer(self.state, inputs)
        assert isinstance(outputs, list) and len(outputs) == len(frames)
        return [self._finish(o, f) for o, f in zip(outputs, frames, strict=True)]

    def __call__(self, rgb: np.ndarray, **frame_fields: Any) -> dict[str, Any]:
        return self.run(self.frame(rgb, **frame_fields))


def assert_same_boxes(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], px: int = 2) -> None:
    """The same boxes in the same order and with the same labels, every side within ``px`` pixels."""
    assert [b["label"] for b in ours] == [b["label"] for b in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert all(abs(a[k] - b[k]) <= px for k in ("x", "y", "width", "height")), (a, b)


def sides(boxes: list[dict[str, Any]]) -> list[tuple[int, int, int, int]]:
    """x, y, width and height of each box, in order."""
    return [(b["x"], b["y"], b["width"], b["height"]) for b in boxes]
