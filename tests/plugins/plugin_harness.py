"""Run a plugin folder in-process the way the runtime calls it: load, preprocess, infer, postprocess.

The Frame and context objects are the runtime's own (ruthgen/wrapper/ruth_api.py); each entry
module is imported under a name unique to its plugin, so that plugins load side by side in one
test session. Every result is checked against the plugin's compiled output schema.
"""

from __future__ import annotations

import importlib
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

MODELS_DIR = Path(__file__).resolve().parents[2] / "ai" / "models"
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


class LoadedPlugin:
    """One plugin version loaded in this process."""

    def __init__(self, model_id: str, version: str) -> None:
        self.dir = MODELS_DIR / model_id / version
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
        self.package = _package(self.dir, f"test_plugin_{model_id}_{version.replace('.', '_')}")
        entry = self.contract.entry_points
        self.inference = self._import(entry.inference)
        self.pre = self._import(entry.preprocess)
        self.post = self._import(entry.postprocess)
        self.state = self.inference.load(self.context)

    def _import(self, rel: str | None) -> ModuleType | None:
        if rel is None or not (self.dir / rel).is_file():
            return None
        dotted = ".".join(Path(rel).with_suffix("").parts)
        return importlib.import_module(f"{self.package}.{dotted}")

    def frame(self, rgb: np.ndarray, camera_id: str | None = None, sequence_start: bool = False,
              frame_id: str | None = None, timestamp_ms: int | None = None) -> Frame:
        """A Frame as the wrapper builds it; JPEG/PNG plugins get the image through an encode/decode."""
        image = np.ascontiguousarray(rgb[:, :, :3], dtype=np.uint8)
        fmt = self.contract.input.format
        if fmt in ("jpeg", "png"):
            ext = ".jpg" if fmt == "jpeg" else ".png"
            ok, encoded = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            assert ok
            decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
            image = np.ascontiguousarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))
        height, width = image.shape[:2]
        return Frame(image, width, height, fmt, camera_id, frame_id, timestamp_ms, sequence_start)

    def run(self, frame: Frame) -> dict[str, Any]:
        inputs = self.pre.preprocess(frame, self.context) if self.pre else frame
        outputs = self.inference.infer(self.state, inputs)
        result = self.post.postprocess(outputs, self.context) if self.post else outputs
        self.validate(result)
        return result

    def run_batch(self, frames: list[Frame]) -> list[dict[str, Any]]:
        """A ``batch`` plugin: each frame preprocessed, one infer() for them all, each postprocessed."""
        inputs = [self.pre.preprocess(f, self.context) if self.pre else f for f in frames]
        outputs = self.inference.infer(self.state, inputs)
        assert isinstance(outputs, list) and len(outputs) == len(frames)
        results = [self.post.postprocess(o, self.context) if self.post else o for o in outputs]
        for result in results:
            self.validate(result)
        return results

    def __call__(self, rgb: np.ndarray, **frame_fields: Any) -> dict[str, Any]:
        return self.run(self.frame(rgb, **frame_fields))
