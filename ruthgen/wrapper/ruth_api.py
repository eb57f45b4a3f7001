"""The objects a plugin receives: :class:`Frame` and :class:`PluginContext` (docs/plugin-api.md).

They hold data only. Nothing in them leads back to the runtime, Triton or other models.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One decoded input frame.

    ``image`` is ``uint8`` HxWx3, RGB, C-contiguous and owned by the frame (a plugin may keep it).
    ``format`` is the declared input format. ``camera_id``, ``frame_id`` and ``timestamp_ms`` come
    from the request parameters (temporal models: ``camera_id`` falls back to the sequence id) and are
    None when absent. ``sequence_start`` is True on a camera's first frame (temporal models only).
    ``upstreams`` holds, by ``model_id``, the schema-validated result of each upstream the contract
    declares for this very frame (the dict the backend would get from that model); empty otherwise.
    """

    image: np.ndarray
    width: int
    height: int
    format: str
    camera_id: str | None = None
    frame_id: str | None = None
    timestamp_ms: int | None = None
    sequence_start: bool = False
    upstreams: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class PluginContext:
    """What a plugin knows of its surroundings; the same object for every call of one instance.

    ``device`` is ``"gpu"`` or ``"cpu"``: where Triton placed this instance. ``device_id`` is the
    GPU it was placed on (Triton's instance device id, the CUDA device index) and None on the CPU;
    ``torch_device`` spells it for frameworks (``"cuda:1"`` or ``"cpu"``). ``metrics`` makes
    counters, gauges and histograms scoped to this plugin version (:mod:`ruth_metrics`).
    ``scratch_dir`` is the plugin version's own writable folder outside the repository (also its
    ``TMPDIR``); besides it, a plugin may write only inside ``model_dir``.
    """

    model_id: str
    version: str
    model_dir: Path
    weights_dir: Path
    config: Mapping[str, Any]
    logger: logging.LoggerAdapter
    device: str = "cpu"
    device_id: int | None = None
    metrics: Any = None
    scratch_dir: Path | None = None

    @property
    def torch_device(self) -> str:
        if self.device == "gpu" and self.device_id is not None:
            return f"cuda:{self.device_id}"
        return self.device


class ScopedLogger(logging.LoggerAdapter):
    """A logger whose every message starts with ``[model_id:version]``."""

    def __init__(self, model_id: str, version: str) -> None:
        super().__init__(logging.getLogger(f"ruth.plugin.{model_id}"), {})
        self.scope = f"{model_id}:{version}"

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.scope}] {msg}", kwargs


def freeze(value: Any) -> Any:
    """A read-only deep copy of parsed YAML: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value
